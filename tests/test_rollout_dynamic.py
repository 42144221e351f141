"""DAPO's dynamic sampling (grpokit.rollout.dynamic): which prompts are kept, how many each
refill round draws, the budget counters; then in the training loop, alone and around
another grouper, and across a resume."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from grpokit import cli
from grpokit.rewards.manager import RewardScores
from grpokit.rollout.batch import build_rollout_batch
from grpokit.rollout.dynamic import next_draw, refill, spread_mask
from grpokit.tasks.prompt_sampler import PromptSampler


def test_spread_mask_keeps_prompts_whose_rewards_differ():
    r = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.5, 0.5, 2.0])
    ex = torch.tensor([0, 0, 1, 1, 2, 2, 3])
    # prompt 3 has one completion, prompt 4 none: neither has spread
    assert spread_mask(r, ex, 5).tolist() == [False, True, False, False, False]


def test_spread_mask_sees_differences_below_float32_rounding():
    r = torch.tensor([0.1, 0.1 + 1e-7])
    assert spread_mask(r, torch.tensor([0, 0]), 1).tolist() == [True]


@pytest.mark.parametrize("missing, kept, drawn, cap, want", [
    (0, 4, 6, 4, 0),  # full: no round
    (4, 0, 4, 4, 4),  # nothing kept yet: a whole step's prompts
    (2, 2, 4, 4, 4),  # keep rate 1/2: 2 missing -> 4
    (1, 3, 4, 4, 2),  # keep rate 3/4: ceil(4/3) = 2
    (3, 1, 8, 4, 4),  # keep rate 1/8 would ask 24: capped at one step's prompts
])
def test_next_draw(missing, kept, drawn, cap, want):
    assert next_draw(missing, kept, drawn, cap) == want


# Fake rounds: G = 2 completions per prompt; prompt i's rewards come from REWARDS[i]; the
# completion text names prompt and completion, so the kept rows can be read back.
REWARDS = {0: [1, 0], 1: [1, 1], 2: [0, 0], 3: [0, 1], 4: [1, 1], 5: [0.5, 1], 6: [0, 0], 7: [1, 0],
           8: [1, 0], 9: [0, 1], 10: [0, 0], 11: [1, 1]}


def _round(indices: list[int], rewards=REWARDS):
    texts = [f"{i}:{k}" for i in indices for k in range(2)]
    batch = build_rollout_batch([[1] * (1 + i % 3) for i in indices for _ in range(2)],  # prompts of unequal length
                                [[7] * (1 + k) for _ in indices for k in range(2)], [[-0.5] * (1 + k) for _ in indices
                                                                                     for k in range(2)],
                                pad_id=0, example_index=[p for p in range(len(indices)) for _ in range(2)],
                                finished=[True] * len(texts), completions=texts,
                                metadata={"tool_calls": list(range(len(texts))), "forward_calls": 10,
                                          "own_rows": range(len(texts))})
    total = torch.tensor([float(x) for i in indices for x in rewards[i]])
    scores = RewardScores(total=total, per_reward={"r": total.clone()}, parts={}, not_applicable={"r": 1})
    return batch, scores


def _run(target: int, max_rounds: int, rewards=REWARDS):
    prompts = PromptSampler(len(rewards), seed=0, shuffle=False)  # draws 0, 1, 2, ...
    firsts = []

    def sample(idx, first):
        firsts.append((list(idx), first))
        return _round(idx, rewards)

    idx = prompts.next(target)
    out = refill(idx, *_round(idx, rewards), draw=prompts.next, sample=sample, target=target, max_rounds=max_rounds)
    return out, firsts, prompts


def test_refill_draws_missing_over_keep_rate_and_keeps_draw_order():
    out, firsts, prompts = _run(target=4, max_rounds=3)
    # round 0: prompts 0-3, spread at 0 and 3 (keep rate 1/2) -> 2 missing, draw 4: prompts 4-7, spread at 5 and 7
    assert firsts == [([4, 5, 6, 7], 4)]
    assert out.indices == [0, 3, 5, 7]
    assert out.batch.completions == ["0:0", "0:1", "3:0", "3:1", "5:0", "5:1", "7:0", "7:1"]
    assert out.batch.example_index.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert out.scores.total.tolist() == [1, 0, 0, 1, 0.5, 1, 1, 0]
    assert out.scores.per_reward["r"].tolist() == [1, 0, 0, 1, 0.5, 1, 1, 0]
    assert out.scores.not_applicable == {"r": 2}  # counted over both rounds
    assert out.batch.metadata["tool_calls"] == [0, 1, 6, 7, 2, 3, 6, 7]  # each round's own rows
    assert out.batch.metadata["forward_calls"] == 20 and "own_rows" not in out.batch.metadata
    # rows laid out as one batch: prompt lengths 1 + i % 3 left-padded to 3, completions 1-2 tokens
    assert out.batch.input_ids.shape == (8, 3 + 2) and out.batch.prompt_len == 3
    assert out.batch.input_ids[4][out.batch.attention_mask[4] == 1].tolist() == [1, 1, 1, 7]  # prompt 5, k = 0
    assert out.batch.loss_mask.sum().item() == 12
    assert out.sampled == 16 and prompts.state_dict() == {"epoch": 0, "pos": 8}
    assert out.dropped_index == [1, 1, 2, 2, 4, 4, 6, 6] and out.dropped_rewards.tolist() == [1, 1, 0, 0, 1, 1, 0, 0]
    assert out.metrics == {"dynamic/sampled_completions": 16.0, "dynamic/kept_prompts": 4.0,
                           "dynamic/drawn_prompts": 8.0, "dynamic/rounds": 2.0, "dynamic/keep_rate": 0.5,
                           "dynamic/short": 0.0, "dynamic/reward_sampled": 8.5 / 16}


def test_refill_stops_when_rounds_run_out_and_trains_on_what_was_kept():
    out, firsts, _ = _run(target=4, max_rounds=0)
    assert firsts == [] and out.indices == [0, 3]
    assert out.metrics["dynamic/short"] == 1.0 and out.metrics["dynamic/rounds"] == 1.0
    assert out.metrics["dynamic/kept_prompts"] == 2.0 and out.sampled == 8


def test_refill_keeps_only_target_prompts_when_a_round_overshoots():
    # 3 of 4 kept at first (1 missing, keep rate 3/4): draws ceil(4/3) = 2 prompts, both with spread
    rewards = {0: [1, 0], 1: [0, 1], 2: [1, 1], 3: [0, 1], 4: [1, 0], 5: [0, 1]}
    out, firsts, _ = _run(target=4, max_rounds=3, rewards=rewards)
    assert firsts == [([4, 5], 4)]
    assert out.indices == [0, 1, 3, 4]  # prompt 5 had spread too, but the step was full
    assert out.metrics["dynamic/keep_rate"] == 5 / 6 and out.sampled == 12
    assert out.dropped_index == [2, 2, 5, 5]  # the overshoot is dropped too


def test_refill_without_any_spread_returns_round_zero():
    rewards = {i: [1, 1] for i in range(20)}
    out, firsts, _ = _run(target=3, max_rounds=2, rewards=rewards)
    # nothing kept: each refill round draws a whole step's prompts, positions 3 and 6
    assert firsts == [([3, 4, 5], 3), ([6, 7, 8], 6)]
    assert out.indices == [0, 1, 2] and out.batch.size == 6  # round 0 as it was: every advantage is 0
    assert out.metrics["dynamic/kept_prompts"] == 0.0 and out.metrics["dynamic/short"] == 1.0
    assert out.metrics["dynamic/rounds"] == 3.0 and out.sampled == 18
    assert out.dropped_index == [3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8]  # round 0 is trained, the refills are not


# ----------------------------------------------------------------------------- in the training loop

# Odd prompts are "flat": every completion gets 1, so they are always dropped; even ones
# score 1 when the completion holds an "a" (some groups split, some not).
REWARD_FILE = '''
def some_a(completion, flat=False, **_):
    return 1.0 if flat else float("a" in completion)
'''


def _setup(tmp_path: Path, n_prompts: int = 16) -> list[str]:
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Write {i}:", "flat": i % 2 == 1}) + "\n"
                            for i in range(n_prompts)))
    (tmp_path / "my_rewards.py").write_text(REWARD_FILE)
    return ["train", "--model", "tiny:xs", "--data", str(data), "--reward", f"{tmp_path / 'my_rewards.py'}:some_a",
            "rollout.max_new_tokens=8", "rollout.prompts_per_step=4", "rollout.num_generations=4", "optim.lr=3e-3",
            "run.progress=false", "run.threads=1", "algorithm.dynamic_sampling=true"]


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _check_budget(rows: list[dict], per_prompt: bool = True) -> None:
    total = 0.0
    for r in rows:
        if per_prompt:  # 4 completions per prompt
            assert r["dynamic/sampled_completions"] == 4 * r["dynamic/drawn_prompts"]
        total += r["dynamic/sampled_completions"]
        assert r["completions_total"] == total
        assert r["dynamic/kept_prompts"] <= 4 and r["dynamic/rounds"] <= 4
        if r["dynamic/kept_prompts"] == 4:
            assert r["dynamic/short"] == 0.0
    # half the prompts are flat: some step drew more than its 4
    assert sum(r["dynamic/drawn_prompts"] for r in rows) > 4 * len(rows)


@pytest.mark.parametrize("extra", [[], ["algorithm.grouping=multiscale", "algorithm.group.clusters=2"]])
def test_dynamic_sampling_trains_on_prompts_with_spread(tmp_path, extra):
    out = tmp_path / "run"
    assert cli.main(_setup(tmp_path) + ["--out", str(out), "--steps", "3", "run.log_samples=16"] + extra) == 0
    rows = _metrics(out)
    assert len(rows) == 3
    _check_budget(rows)
    for r in rows:
        if r["dynamic/kept_prompts"] > 0:
            assert r["groups"] >= 1 and r["trained_rows"] == 4 * r["dynamic/kept_prompts"]
            if not extra:  # prompt groups: every kept group has spread
                assert r["zero_std_groups"] == 0.0 and r["groups"] == r["dynamic/kept_prompts"]
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    if all(r["dynamic/kept_prompts"] > 0 for r in rows):  # (a step that kept none trains on its first round)
        assert not any(s["prompt"] in {f"Write {i}:" for i in range(1, 16, 2)} for s in samples)  # flat: dropped


def test_dynamic_sampling_resumes_exactly(tmp_path):
    """Around a stateful grouper (success rates that also count the dropped prompts) with a
    self-tuned sample budget (each round plans its own prompts' completions)."""
    out = tmp_path / "run"
    args = _setup(tmp_path, n_prompts=8) + ["--out", str(out), "--steps", "4", "run.save_every=2",
                                            "algorithm.grouping=reward", "algorithm.group.budget=0.75"]
    assert cli.main(args) == 0
    rows = _metrics(out)
    shutil.rmtree(out / "checkpoints" / "step-000004")
    assert cli.main(args + ["--resume"]) == 0
    again = _metrics(out)
    keys = ("reward", "loss", "grad_norm", "trained_rows", "completions_total", "dynamic/drawn_prompts",
            "dynamic/kept_prompts", "dynamic/rounds", "dynamic/sampled_completions", "groups")
    assert [[r.get(k) for k in keys] for r in again[2:]] == [[r.get(k) for k in keys] for r in rows[2:]]
    _check_budget(again, per_prompt=False)
    assert any(r["dynamic/sampled_completions"] != 4 * r["dynamic/drawn_prompts"] for r in again)  # budgeted


def test_max_completions_ends_the_run_at_the_budget(tmp_path):
    """run.max_completions: the step whose sampling reaches the budget is the last (saved,
    final model written); a resume from it trains nothing more."""
    out = tmp_path / "run"
    args = _setup(tmp_path) + ["--out", str(out), "--steps", "10", "run.max_completions=40"]
    assert cli.main(args) == 0
    rows = _metrics(out)
    totals = [r["completions_total"] for r in rows]
    assert totals[-1] >= 40 and all(t < 40 for t in totals[:-1]) and len(rows) < 10
    last = rows[-1]["step"]
    assert (out / "checkpoints" / f"step-{last:06d}").is_dir() and (out / "model").is_dir()
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e.get("event") == "end"] == [last]
    assert cli.main(args + ["--resume"]) == 0
    assert _metrics(out) == rows


def test_max_completions_without_dynamic_sampling_counts_full_batches(tmp_path):
    out = tmp_path / "run"
    args = [a for a in _setup(tmp_path) if a != "algorithm.dynamic_sampling=true"]
    assert cli.main(args + ["--out", str(out), "--steps", "10", "run.max_completions=40"]) == 0
    assert [r["completions_total"] for r in _metrics(out)] == [16.0, 32.0, 48.0]  # 4 prompts x 4 per step
