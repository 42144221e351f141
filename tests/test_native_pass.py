"""The policy's training pass in C (native_pass, native/train.c): log-probs, entropy and
every parameter's gradient equal autograd's through transformers' forward."""
from __future__ import annotations

import pytest
import torch

from grpokit.engine import native
from grpokit.model.forward import sequence_logprobs
from grpokit.engine.native_pass import native_logprobs, native_pass_reason
from grpokit.types import RolloutBatch
from grpokit.engine.native_pass import NativePass, native_applies
from grpokit.model.forward import TorchPass
from grpokit.update import LossSettings, reference_logprobs, update_policy

pytestmark = pytest.mark.skipif(native.library() is None, reason="no C compiler: passes stay with torch")

P, C = 5, 7  # prompt and completion columns


def _model(arch: str = "qwen2", *, heads: int = 4, kv: int = 2, tied: bool = False, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    biases = arch == "llama-biases"  # q/k/v/o and MLP biases: every bias slot of train.c in use
    cfg_cls, model_cls = {"qwen2": (Qwen2Config, Qwen2ForCausalLM), "llama": (LlamaConfig, LlamaForCausalLM),
                          "llama-biases": (LlamaConfig, LlamaForCausalLM)}[arch]
    kw = {"attention_bias": True, "mlp_bias": True} if biases else {}
    cfg = cfg_cls(vocab_size=45, hidden_size=64, num_hidden_layers=2, num_attention_heads=heads,
                  num_key_value_heads=kv, intermediate_size=96, max_position_embeddings=64,
                  tie_word_embeddings=tied, pad_token_id=0, **kw)
    torch.manual_seed(seed)
    model = model_cls(cfg).train()
    if biases:  # transformers initialises biases to zero; make their gradients' use visible
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("bias"):
                    p.normal_(0, 0.1)
    return model


def _batch(seed: int = 0):
    """3 prompts (one of them left-padded) x 3 rows, one row alone; completions of
    different lengths, right-padded; a stretch of tool output (attended, not scored)."""
    g = torch.Generator().manual_seed(seed)
    n = 10
    ids = torch.randint(2, 45, (n, P + C), generator=g)
    for r in range(9):
        ids[r, :P] = ids[r // 3 * 3, :P]
    mask = torch.ones(n, P + C, dtype=torch.long)
    mask[3:6, :2] = 0
    ids[3:6, :2] = 0
    lengths = [7, 3, 5, 1, 7, 6, 2, 7, 4, 5]
    for r, k in enumerate(lengths):
        mask[r, P + k:] = 0
        ids[r, P + k:] = 0
    loss = mask.float()
    loss[:, :P] = 0
    loss[1, P + 1] = 0  # a tool result inside a completion
    return ids, mask, loss


def _grads(model, fn, temperature, **kw):
    ids, mask, loss = _batch()
    model.zero_grad()
    lp, ent = fn(model, ids, mask, loss, temperature=temperature, with_entropy=True, prompt_len=P, **kw)
    weights = torch.linspace(-1, 2, lp.numel()).view_as(lp)
    ((lp * weights).sum() + lp.exp().sum()).backward()
    return lp.detach(), ent.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("arch,heads,kv,tied", [("qwen2", 4, 2, False), ("llama", 2, 2, False),
                                                ("qwen2", 2, 1, True), ("llama-biases", 4, 2, False)])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_log_probs_entropy_and_gradients_equal_autograd(arch, heads, kv, tied, temperature):
    model = _model(arch, heads=heads, kv=kv, tied=tied)
    assert native_pass_reason(model) is None
    lp0, ent0, g0 = _grads(model, sequence_logprobs, temperature)
    lp1, ent1, g1 = _grads(model, native_logprobs, temperature)
    assert torch.allclose(lp0, lp1, atol=1e-5) and (lp1 != 0).sum() == (lp0 != 0).sum()
    assert torch.allclose(ent0, ent1, atol=1e-5)
    for name, want in g0.items():  # embedding, norms, q/k/v (with biases for Qwen2), o, MLP, head
        scale = want.abs().max().clamp_min(1e-6)
        assert (g1[name] - want).abs().max() / scale < 2e-5, name


def test_one_and_two_threads_give_the_same_numbers(monkeypatch):
    model = _model()
    out = []
    for threads in (1, 2):
        monkeypatch.setattr("grpokit.engine.native_pass.available_threads", lambda: threads)
        out.append(_grads(model, native_logprobs, 1.0))
    assert torch.allclose(out[0][0], out[1][0], atol=1e-6)
    for name in out[0][2]:
        assert torch.allclose(out[0][2][name], out[1][2][name], atol=1e-6), name


def test_no_grad_pass_equals_the_forward_and_keeps_nothing():
    from grpokit.engine import native_pass

    model = _model().eval()
    ids, mask, loss = _batch()
    with torch.no_grad():
        want, _ = sequence_logprobs(model, ids, mask, loss, prompt_len=P)
        got, ent = native_logprobs(model, ids, mask, loss, prompt_len=P)
    assert torch.allclose(want, got, atol=1e-5) and ent is None and not got.requires_grad
    assert native_pass._free, "the no-grad pass hands its buffers back at once"


def test_bad_batches_are_refused():
    model = _model()
    ids, mask, loss = _batch()
    loss[0, 2] = 1.0  # a scored prompt token
    with pytest.raises(ValueError, match="prompt"):
        native_logprobs(model, ids, mask, loss, prompt_len=P)
    batch = RolloutBatch(ids, mask, loss, torch.zeros_like(loss), P, [], [], torch.zeros(10, dtype=torch.long),
                         torch.zeros(10, dtype=torch.bool))
    assert not native_applies(model, batch.input_ids, batch.loss_mask, batch.prompt_len)
    loss[0, 2] = 0.0
    ids[0, P] = 45  # past the 45-token vocabulary: refused before the kernel indexes with it
    with pytest.raises((ValueError, IndexError)):
        native_logprobs(model, ids, mask, loss, prompt_len=P)
    model.config.attention_dropout = 0.1
    assert native_pass_reason(model) == "dropout"


def test_training_passes_stop_at_their_own_size_bound(monkeypatch):
    """Sampling takes the C step up to WHOLE_STEP_MAX_BYTES; the training passes only up
    to the smaller NATIVE_PASS_MAX_BYTES."""
    from grpokit.engine import native_pass
    from grpokit.engine.lean import WHOLE_STEP_MAX_BYTES, whole_step_reason

    assert native_pass.NATIVE_PASS_MAX_BYTES < WHOLE_STEP_MAX_BYTES
    model = _model()
    monkeypatch.setattr(native_pass, "NATIVE_PASS_MAX_BYTES", 1000)
    assert whole_step_reason(model) is None
    assert "MiB of weights" in native_pass_reason(model)


def _rollout():
    ids, mask, loss = _batch(1)
    return RolloutBatch(ids, mask, loss, torch.zeros_like(loss), P, [], [], torch.zeros(10, dtype=torch.long),
                        torch.zeros(10, dtype=torch.bool))


def test_update_with_native_passes_equals_the_torch_update():
    """One GRPO update (KL term, reference pass) through the C passes and through torch:
    the same loss and the same weights after the optimizer step."""
    batch = _rollout()
    assert native_applies(_model(), batch.input_ids, batch.loss_mask, batch.prompt_len)
    adv = torch.linspace(-1, 1, 10)
    settings = LossSettings(clip_low=0.2, clip_high=0.28, ratio="token", loss_agg="token_mean", beta=0.04,
                            kl_estimator="k3", mu=1)
    results = []
    for native_on in (False, True):
        model, ref = _model(seed=0), _model(seed=1).eval()
        # SGD: the step is linear in the gradient (Adam's first step is lr * sign(g), which
        # float rounding flips where a gradient is ~0)
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        passes = NativePass(TorchPass()) if native_on else TorchPass()
        ref_lp = reference_logprobs(ref, batch, temperature=0.9, passes=passes)
        stats = update_policy(model, opt, batch, adv, settings, ref_logp=ref_lp, temperature=0.9, passes=passes)
        results.append((ref_lp, stats, [p.detach().clone() for p in model.parameters()]))
    (r0, s0, w0), (r1, s1, w1) = results
    assert torch.allclose(r0, r1, atol=1e-5)
    assert abs(s0["loss"] - s1["loss"]) < 1e-5 and abs(s0["grad_norm"] - s1["grad_norm"]) < 1e-4 * s0["grad_norm"]
    for a, b in zip(w0, w1):
        assert torch.allclose(a, b, atol=1e-5)
