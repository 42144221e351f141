"""The demos' control arm (demos/control.py), the resumable SFT run it continues, and the
cold start's stop rule: literal values on hand-made runs."""
import pytest
import torch

from grpokit.demos.control import Budget, anneal_steps, control_lines, grpo_budget, noise_margin, run_control, verdict
from grpokit.demos.demo import DemoSettings, probe_stop
from grpokit.sft import SFTRun
from grpokit.types import SFTExample


def test_grpo_budget_sums_step_time_and_sampled_tokens():
    rows = [{"step": 1, "step_time": 1.5, "len": 10.0}, {"step": 2, "step_time": 2.5, "len": 12.5}]
    assert grpo_budget(rows, completions_per_step=4) == Budget(seconds=4.0, tokens=90)  # 4*10 + 4*12.5


class FakeRun:
    """An SFTRun stand-in: each step costs 0.3 s of training and 100 tokens."""

    def __init__(self, seconds=10.0, tokens=1000, steps=7):
        self.train_seconds, self.tokens, self.step_count = seconds, tokens, steps
        self.model = torch.nn.Linear(1, 1)

    def step(self):
        self.train_seconds += 0.3
        self.tokens += 100
        self.step_count += 1
        return {"step": self.step_count, "loss": 1.0, "tokens": self.tokens, "train_seconds": self.train_seconds}


def test_control_evaluates_at_each_budget_and_along_the_curve():
    run, calls = FakeRun(), []

    def evaluate():
        calls.append(run.step_count)
        return run.step_count / 100

    res = run_control(run, Budget(seconds=1.0, tokens=250), evaluate, points=1, progress=False)
    # The curve's point is at half the time budget (0.5 s: step 2 of the control, 0.6 s);
    # tokens reach 250 at step 3 (300), time reaches 1.0 s at step 4 (1.2 s).
    assert calls == [9, 10, 11]
    assert (res.steps_tokens, res.accuracy_tokens) == (3, 0.10)
    assert (res.steps_time, res.accuracy_time) == (4, 0.11)
    assert [c["step"] for c in res.curve] == [2, 3, 4]
    assert res.curve[0]["seconds"] == pytest.approx(0.6) and res.curve[0]["tokens"] == 200
    assert res.seconds == pytest.approx(1.2) and res.tokens == 400 and len(res.history) == 4
    assert not res.capped
    assert res.summary("accuracy") == {
        "accuracy_control_time": 0.11, "accuracy_control_tokens": 0.10, "control_steps_time": 4,
        "control_steps_tokens": 3, "control_train_seconds": res.seconds, "control_tokens": 400,
        "control_curve": res.curve, "control_capped": False, "control_annealed": False}


def test_control_measures_once_when_both_budgets_end_on_one_step():
    run, calls = FakeRun(), []
    res = run_control(run, Budget(seconds=0.5, tokens=200), lambda: calls.append(1) or 0.5, points=0,
                      progress=False)
    assert len(calls) == 1 and res.steps_time == res.steps_tokens == 2


def test_control_cap_reads_the_last_step_for_the_budget_not_reached():
    run = FakeRun()
    res = run_control(run, Budget(seconds=100.0, tokens=150), lambda: run.step_count / 100, points=0,
                      max_steps=3, progress=False)
    assert res.capped and (res.steps_tokens, res.accuracy_tokens) == (2, 0.09)
    assert (res.steps_time, res.accuracy_time) == (3, 0.10)


def test_control_rejects_a_zero_step_cap():
    with pytest.raises(ValueError, match="max_steps"):
        run_control(FakeRun(), Budget(1.0, 1), lambda: 0.0, max_steps=0, progress=False)


@pytest.mark.parametrize("accs, stops", [
    ([0.1, 0.25], False),  # mean 0.175
    ([0.25, 0.2], True),  # mean 0.225
    ([0.3], False),  # one evaluation is not a window of two
    ([0.0, 0.19, 0.21], True),  # the last two: mean 0.20
])
def test_probe_stop_uses_the_mean_of_the_last_window(accs, stops):
    rule = probe_stop(DemoSettings(sft_stop_at=0.2, sft_stop_window=2))
    history = [{"step": i} for i in range(3)] + [{"step": 10 + i, "accuracy": a} for i, a in enumerate(accs)]
    assert rule(history) is stops


def test_probe_stop_off_without_a_threshold():
    assert probe_stop(DemoSettings(sft_stop_at=None)) is None


def _tiny():
    from grpokit.model.policy import create_tiny

    traces = [SFTExample(prompt=f"Compute {a}+{b}.", completion=f"<answer>{a + b}</answer>")
              for a in range(1, 5) for b in range(1, 4)]
    model, tok = create_tiny("tiny:xs", [t.prompt + t.completion for t in traces], seed=0)
    return model, tok, traces


def test_a_continued_sft_run_equals_one_uninterrupted_run():
    """The control continues the cold start's own run: 3 steps then 2 more must be the
    same 5 steps (optimizer state, schedule and data order carried over)."""
    kw = dict(total_steps=5, batch_size=4, lr=1e-3, warmup_steps=2, schedule="constant", seed=3)
    torch.manual_seed(0)
    m1, tok, traces = _tiny()
    torch.manual_seed(0)
    m2, _, _ = _tiny()
    one = SFTRun(m1, tok, traces, **kw)
    h1 = one.run(5, progress=False)
    two = SFTRun(m2, tok, traces, **kw)
    h2 = two.run(3, progress=False) + two.run(2, progress=False)
    assert [r["step"] for r in h2] == [1, 2, 3, 4, 5]
    assert [r["loss"] for r in h1] == [r["loss"] for r in h2]
    assert [r["tokens"] for r in h1] == [r["tokens"] for r in h2]
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(a, b)
    # tokens: completion tokens trained on (4 traces a step, loss mask only)
    assert h1[0]["tokens"] > 0 and h1[-1]["tokens"] == one.tokens and one.step_count == 5
    assert h1[-1]["train_seconds"] == pytest.approx(one.train_seconds)


def test_sft_run_until_and_stop_end_it_early():
    torch.manual_seed(0)
    model, tok, traces = _tiny()
    run = SFTRun(model, tok, traces, total_steps=10, batch_size=4, lr=1e-3, seed=0)
    assert len(run.run(10, until=lambda row: row["step"] == 2, progress=False)) == 2
    seen = iter([0.1, 0.6, 0.9])
    h = run.run(10, eval_fn=lambda: next(seen), eval_every=2, stop=lambda hist: hist[-1]["accuracy"] > 0.5,
                progress=False)
    # evaluations at global steps 4 and 6 (every 2 of the run's own count); stops at the second
    assert [r["step"] for r in h] == [3, 4, 5, 6] and [r.get("accuracy") for r in h] == [None, 0.1, None, 0.6]


def test_anneal_decays_the_rate_from_its_peak_to_zero_by_cosine():
    torch.manual_seed(0)
    model, tok, traces = _tiny()
    run = SFTRun(model, tok, traces, total_steps=100, batch_size=4, lr=1e-3, schedule="constant", seed=0)
    assert [r["lr"] for r in run.run(2, progress=False)] == [1e-3, 1e-3]
    run.anneal(4)
    lrs = [r["lr"] for r in run.run(4, progress=False)]
    # after k of 4 steps: 1e-3 * (1 + cos(pi k / 4)) / 2
    assert lrs == pytest.approx([8.5355339e-4, 5e-4, 1.4644661e-4, 0.0], abs=1e-10)
    with pytest.raises(ValueError, match="at least 1"):
        run.anneal(0)


def test_anneal_steps_spend_the_token_budget_at_the_mean_rate_so_far():
    assert anneal_steps(Budget(seconds=1.0, tokens=1000), tokens=300, steps=3) == 10
    assert anneal_steps(Budget(seconds=1.0, tokens=1000), tokens=700, steps=3) == 5  # ceil(4.29)
    with pytest.raises(ValueError, match="trained steps"):
        anneal_steps(Budget(seconds=1.0, tokens=1000), tokens=0, steps=0)


def test_an_annealed_control_lowers_its_rate_every_step():
    torch.manual_seed(0)
    model, tok, traces = _tiny()
    run = SFTRun(model, tok, traces, total_steps=100, batch_size=4, lr=1e-3, schedule="constant", seed=0)
    run.run(3, progress=False)
    res = run_control(run, Budget(seconds=0.0, tokens=3 * run.tokens), lambda: 0.5, points=1, anneal=True,
                      progress=False)
    lrs = [r["lr"] for r in res.history]
    assert lrs[0] < 1e-3 and all(b < a for a, b in zip(lrs, lrs[1:]))
    assert res.annealed and res.summary("accuracy")["control_annealed"] is True
    lines = control_lines({"accuracy_cold_start": 0.2, "accuracy_grpo": 0.4, **res.summary("accuracy")},
                          "held-out accuracy", "accuracy")
    assert lines[0].startswith("control, more SFT, rate decayed to 0, for the same training time: 50.0% (+30.0 points")


def test_noise_margin_is_two_standard_errors_of_a_difference_of_accuracies():
    assert noise_margin(0.5, 0.5, 100) == pytest.approx(2 * (0.5 / 100) ** 0.5)  # 0.1414
    # make demo's seed 0: 33.4% against 32.2% on 1,000 problems
    assert noise_margin(0.334, 0.322, 1000) == pytest.approx(0.0419886, abs=1e-7)
    assert noise_margin(0.0, 1.0, 10) == 0.0


def test_the_verdict_reads_the_same_token_margin_against_the_noise():
    level = verdict(0.334, 0.322, 1000)
    assert level == ("verdict (same tokens): GRPO and more SFT are level, +1.2 points against a noise of +-4.2 "
                     "(1000 problems, two standard errors); this run does not show that RL adds what more SFT "
                     "on the traces would not")
    assert verdict(0.45, 0.30, 1000) == ("verdict (same tokens): GRPO beats more SFT, +15.0 points against a "
                                         "noise of +-4.3 (1000 problems, two standard errors)")
    # the search demo's seed 0 on the AVX2 machine: 37.1% against 67.5% on 456 questions
    assert verdict(0.371, 0.675, 456, "questions") == ("verdict (same tokens): more SFT beats GRPO, -30.4 points "
                                                       "against a noise of +-6.3 (456 questions, two standard errors)")


def test_control_lines_end_with_the_verdict_when_the_evaluation_size_is_known():
    s = {"accuracy_cold_start": 0.2, "accuracy_grpo": 0.40, "accuracy_control_time": 0.30,
         "accuracy_control_tokens": 0.39, "control_steps_time": 10, "control_steps_tokens": 20}
    lines = control_lines(s, "held-out accuracy", "accuracy")
    assert lines[-1] == "GRPO minus control (held-out accuracy): +10.0 points (same time), +1.0 (same tokens)"
    lines = control_lines({**s, "eval_size": 1000}, "held-out accuracy", "accuracy")
    assert lines[-1].startswith("verdict (same tokens): GRPO and more SFT are level, +1.0 points against a noise "
                                "of +-4.4 (1000 ")
