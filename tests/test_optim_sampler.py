import math

import pytest

from grpokit.optim import lr_factor
from grpokit.tasks.prompt_sampler import PromptSampler


def test_lr_schedule_literal_values():
    assert lr_factor(0, warmup=4, total=10, schedule="constant") == 0.25
    assert lr_factor(3, warmup=4, total=10, schedule="linear") == 1.0
    assert lr_factor(7, warmup=4, total=10, schedule="linear") == pytest.approx(0.5)
    assert lr_factor(7, warmup=4, total=10, schedule="cosine") == pytest.approx(0.5)
    assert lr_factor(5, warmup=4, total=10, schedule="cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi / 6)))
    with pytest.raises(ValueError, match="constant, linear, cosine"):
        lr_factor(0, warmup=0, total=1, schedule="step")


def test_prompt_sampler_covers_epochs_and_resumes():
    s = PromptSampler(5, seed=1)
    first = s.next(5)
    assert sorted(first) == [0, 1, 2, 3, 4]
    s.next(2)
    state = s.state_dict()
    a = s.next(6)
    t = PromptSampler(5, seed=1)
    t.load_state_dict(state)
    assert t.next(6) == a
    assert PromptSampler(5, seed=1, shuffle=False).next(7) == [0, 1, 2, 3, 4, 0, 1]


def test_fused_adamw_makes_the_same_update_as_the_default():
    import torch

    from grpokit.optim import make_optimizer

    def net():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))

    def flat(model):
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    def run(fused: bool):
        model = net()
        opt = make_optimizer(model, lr=1e-2, weight_decay=0.1, fused=fused)
        assert opt.defaults["fused"] is (True if fused else None)
        x = torch.randn(16, 7)
        for _ in range(5):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
        return flat(model)

    plain, fused = run(False), run(True)
    assert (plain - flat(net())).abs().max() > 1e-3  # the parameters did move
    assert torch.allclose(plain, fused, atol=1e-6), (plain - fused).abs().max()


def test_release_free_memory_returns_heap_pages_to_the_os():
    import sys

    import pytest

    from grpokit.engine.memory import heap_free_bytes, release_free_memory

    if not sys.platform.startswith("linux"):
        pytest.skip("malloc_trim is glibc's")

    def rss_mib() -> float:
        import os

        return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    # Many medium blocks (below glibc's mmap threshold) land in the heap and stay there once freed.
    blocks = [bytearray(64 * 1024) for _ in range(3000)]  # ~190 MiB
    keep = blocks[-1]
    del blocks
    before = rss_mib()
    free = heap_free_bytes()
    if free is not None:  # glibc >= 2.33 reports it; less free than asked for: nothing is released
        assert free > 150 * 2**20
        assert release_free_memory(min_free=1 << 40) is False
        assert rss_mib() > before - 20
    assert release_free_memory() is True
    after = rss_mib()
    assert before - after > 100, (before, after)
    del keep


def test_grpo_lr_default_by_model_size():
    from grpokit.optim import default_lr

    # the tiny models (tiny:l is 22M parameters) train at the demo's 1e-4; real LMs at 1e-6
    assert (default_lr(999_424), default_lr(49_999_999), default_lr(50_000_000), default_lr(135_000_000)) == \
        (1e-4, 1e-4, 1e-6, 1e-6)


def test_warmup_longer_than_the_run_is_a_warning_not_a_problem():
    from grpokit.config import SFTConfig, TrainConfig, validate
    from grpokit.config.validation import advisories

    cfg = TrainConfig()
    cfg.run.steps, cfg.optim.warmup_steps = 8, 10
    assert advisories(cfg) == ["optim.warmup_steps = 10 is longer than the run (8 steps): the learning rate never "
                               "reaches its peak (it ends at 80% of it)"]
    assert not any("warmup" in p for p in validate(cfg))
    cfg.optim.warmup_steps = 8
    assert advisories(cfg) == []
    assert advisories(SFTConfig(steps=10, warmup_steps=20))[0].startswith("warmup_steps = 20 is longer than the run")
