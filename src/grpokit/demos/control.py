"""The demos' control arm: the cold-start model trained on with more SFT instead of GRPO.

A skeptic's question about any "SFT then RL" gain is whether the same compute spent on
more supervised training would have gained as much. The control answers it: the cold
start's own run (same optimizer state, same stream of annotated traces) continues from
where it stopped, for the budget GRPO spent, and is evaluated on the same held-out set.
Two budgets are matched, because either alone can be argued with:

- time: seconds in optimizer steps, evaluations excluded on both sides;
- tokens: completion tokens the SFT trained on, against completion tokens GRPO sampled.

Its learning rate either goes on at the cold start's, or (anneal) decays to 0 over the token
budget as GRPO's does: a constant-rate control is read wherever its step-to-step swing happens
to be, and ends below what the same steps reach annealed (docs/demo.md, section 4).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from grpokit.demos.study_table import difference_se
from grpokit.sft import SFTRun


@dataclass(frozen=True)
class Budget:
    seconds: float  # GRPO's training time: the sum of its steps' step_time (evaluations excluded)
    tokens: int  # completion tokens GRPO sampled


def grpo_budget(rows: Sequence[dict], completions_per_step: int) -> Budget:
    """What a GRPO run spent, from its metrics.jsonl rows (step_time and mean length `len`
    over the step's completions)."""
    seconds = sum(float(r["step_time"]) for r in rows)
    tokens = sum(round(float(r["len"]) * completions_per_step) for r in rows)
    return Budget(seconds, tokens)


@dataclass
class ControlResult:
    accuracy_time: float  # at the first step whose training time reached the GRPO budget's seconds
    accuracy_tokens: float  # at the first step whose trained tokens reached the budget's tokens
    steps_time: int
    steps_tokens: int
    seconds: float  # training time actually spent (>= budget.seconds unless the cap ended it)
    tokens: int
    curve: list[dict] = field(default_factory=list)  # {"seconds", "tokens", "step", "accuracy"} per evaluation
    history: list[dict] = field(default_factory=list)  # one row per SFT step (loss, lr, tokens, train_seconds)
    capped: bool = False  # max_steps ended it before both budgets were spent
    annealed: bool = False  # its rate decayed to 0 over the token budget (run_control's anneal)

    def summary(self, metric: str) -> dict:
        """The fields a demo's summary.json carries, `metric` naming the score
        (`accuracy_control_time`, ...; what `control_lines` reads)."""
        return {f"{metric}_control_time": self.accuracy_time, f"{metric}_control_tokens": self.accuracy_tokens,
                "control_steps_time": self.steps_time, "control_steps_tokens": self.steps_tokens,
                "control_train_seconds": self.seconds, "control_tokens": self.tokens,
                "control_curve": self.curve, "control_capped": self.capped, "control_annealed": self.annealed}


def run_control(sft: SFTRun, budget: Budget, evaluate: Callable[[], float], *, points: int = 4,
                max_steps: int = 100_000, anneal: bool = False, progress: bool = True,
                desc: str = "control (more SFT)") -> ControlResult:
    """Continue `sft` until both budgets are spent, evaluating at each budget's step and at
    `points` evenly spaced moments of the time budget (the curve on the plot). anneal: decay
    the rate to 0 (cosine) over the token budget's steps, estimated from the run's tokens per
    step so far (tokens do not depend on the machine's load; seconds do)."""
    from grpokit.logging import progress as progress_bar

    if max_steps < 1:
        raise ValueError(f"run_control: max_steps must be at least 1, got {max_steps}")
    if anneal:
        sft.anneal(anneal_steps(budget, sft.tokens, sft.step_count))
    t0, k0, s0 = sft.train_seconds, sft.tokens, sft.step_count
    marks = [budget.seconds * (i + 1) / (points + 1) for i in range(points)]  # the curve's interior points
    curve: list[dict] = []
    history: list[dict] = []
    got: dict[str, tuple[float, int]] = {}  # "time"/"tokens" -> (accuracy, steps)

    def measure(row: dict) -> float:
        if curve and curve[-1]["step"] == row["step"] - s0:  # measured at this step already
            return curve[-1]["accuracy"]
        acc = evaluate()
        curve.append({"seconds": row["train_seconds"] - t0, "tokens": row["tokens"] - k0,
                      "step": row["step"] - s0, "accuracy": acc})
        return acc

    bar = progress_bar(None, desc, enabled=progress)
    while len(got) < 2 and len(history) < max_steps:
        row = sft.step()
        history.append(row)
        spent, tokens = row["train_seconds"] - t0, row["tokens"] - k0
        while marks and spent >= marks[0]:
            marks.pop(0)
            measure(row)
        if "tokens" not in got and tokens >= budget.tokens:
            got["tokens"] = (measure(row), row["step"] - s0)
        if "time" not in got and spent >= budget.seconds:
            got["time"] = (measure(row), row["step"] - s0)
        bar.set_postfix({"s": f"{spent:.0f}/{budget.seconds:.0f}", "tokens": f"{tokens}/{budget.tokens}"})
        bar.update(1)
    bar.close()
    capped = len(got) < 2
    if capped and history:  # max_steps ended it first: the budget not reached reads the last step
        last = measure(history[-1])
        for key in ("time", "tokens"):
            got.setdefault(key, (last, history[-1]["step"] - s0))
    sft.model.eval()
    return ControlResult(accuracy_time=got["time"][0], accuracy_tokens=got["tokens"][0],
                         steps_time=got["time"][1], steps_tokens=got["tokens"][1],
                         seconds=sft.train_seconds - t0, tokens=sft.tokens - k0, curve=curve, history=history,
                         capped=capped, annealed=anneal)


def anneal_steps(budget: Budget, tokens: int, steps: int) -> int:
    """SFT steps that spend the token budget at the run's mean tokens per step so far."""
    if steps < 1 or tokens < 1:
        raise ValueError(f"anneal_steps: the run needs trained steps to estimate from, got {steps} steps, {tokens} tokens")
    return max(1, math.ceil(budget.tokens * steps / tokens))


def control_arm(sft: SFTRun, budget: Budget, evaluate: Callable[[], float], *, points: int,
                log_dir: Path, anneal: bool = False) -> ControlResult:
    """A demo's control stage: says what it is about to spend, runs `run_control`, and
    writes its SFT rows to log_dir/metrics.jsonl."""
    from grpokit.logging import RunLogger

    print(f"control: more SFT from the cold start for GRPO's budget ({budget.seconds:.0f} s of training, "
          f"{budget.tokens} completion tokens{'; rate decayed to 0 over the tokens' if anneal else ''})", flush=True)
    control = run_control(sft, budget, evaluate, points=points, anneal=anneal)
    with RunLogger(log_dir, console=False) as lg:
        for row in control.history:
            lg.log_step(row["step"], row)
    return control


def plot_demo(out: Path, sft_history: list[dict], grpo_rows: list[dict], start: float, control: ControlResult | None,
              *, metric: str = "held-out accuracy", grpo_extra: dict[str, str] | None = None) -> Path:
    """A demo's picture. Left: both stages on one step axis (the cold-start panel shows the
    stop rule's probe as `metric`). Right, with a control: `metric` against training
    minutes after the cold start, GRPO beside the control. `start` is the cold-start
    model's value on the reported set; grpo_extra: more GRPO panels, label -> metrics key."""
    from grpokit.plotting import plot_stages, plot_stages_and_arms

    extra = grpo_extra or {}
    sft_rows = [{"step": r["step"], "SFT loss": r["loss"], **({metric: r["accuracy"]} if "accuracy" in r else {})}
                for r in sft_history]
    # GRPO's panel starts from the cold-start model's value on the reported set (step 0),
    # so its gain reads off the plot.
    rl_rows = [{"step": 0, metric: start}] + [
        {"step": r["step"], "GRPO reward": r["reward"], **{label: r[key] for label, key in extra.items() if key in r},
         **({metric: r["eval/accuracy"]} if "eval/accuracy" in r else {})} for r in grpo_rows]
    stages = [("cold start (SFT)", sft_rows), ("GRPO", rl_rows)]
    keys = (metric, "SFT loss", "GRPO reward", *extra)
    if control is None:
        return plot_stages(stages, out, keys=keys)
    grpo_points, spent = [(0.0, start)], 0.0
    for r in grpo_rows:
        spent += float(r["step_time"])
        if "eval/accuracy" in r:
            grpo_points.append((spent / 60, r["eval/accuracy"]))
    control_points = [(0.0, start)] + [(c["seconds"] / 60, c["accuracy"]) for c in control.curve]
    return plot_stages_and_arms(stages, [("GRPO", grpo_points), ("control: more SFT", control_points)], out,
                                keys=keys, arms_x="training minutes after the cold start (evaluations excluded)",
                                arms_y=metric, arms_title="GRPO against the control, same start",
                                first_color=1)  # GRPO keeps its stage's colour


def control_lines(s: dict, metric: str, key: str, unit: str = "problems") -> list[str]:
    """The summary lines comparing GRPO with its control; s has `{key}_cold_start`,
    `{key}_grpo`, `{key}_control_time`, `{key}_control_tokens` and the control's steps."""
    if f"{key}_control_time" not in s:
        return []
    cold = s[f"{key}_cold_start"]
    pct = lambda v: f"{100 * v:.1f}% ({100 * (v - cold):+.1f} points"  # noqa: E731
    grpo = s[f"{key}_grpo"]
    sft = "more SFT, rate decayed to 0," if s.get("control_annealed") else "more SFT"
    return [
        f"control, {sft} for the same training time: {pct(s[f'{key}_control_time'])}; "
        f"{s['control_steps_time']} steps)",
        f"control, {sft} on as many tokens: {pct(s[f'{key}_control_tokens'])}; {s['control_steps_tokens']} steps)",
        f"GRPO minus control ({metric}): {100 * (grpo - s[f'{key}_control_time']):+.1f} points (same time), "
        f"{100 * (grpo - s[f'{key}_control_tokens']):+.1f} (same tokens)",
    ] + ([verdict(grpo, s[f"{key}_control_tokens"], s["eval_size"], unit)] if "eval_size" in s else [])


def noise_margin(a: float, b: float, n: int) -> float:
    """Two standard errors of the difference between two accuracies a and b, each measured
    on n problems: 2 sqrt((a(1-a) + b(1-b)) / n). At 33% on 1,000 problems that is 4.2
    points, about the run-to-run spread of one control reading (docs/demo.md, section 4c)."""
    return 2.0 * difference_se(a, b, n)


def verdict(grpo: float, control: float, n: int, unit: str = "problems") -> str:
    """What one run shows, in one line: GRPO against the control on as many tokens (the
    budget that does not depend on the machine's load), with the noise margin. A demo's
    margin inside the noise says that RL did as well as more SFT, not better."""
    diff, margin = grpo - control, noise_margin(grpo, control, n)
    noise = f"{100 * diff:+.1f} points against a noise of +-{100 * margin:.1f} ({n} {unit}, two standard errors)"
    if diff > margin:
        return f"verdict (same tokens): GRPO beats more SFT, {noise}"
    if diff < -margin:
        return f"verdict (same tokens): more SFT beats GRPO, {noise}"
    return (f"verdict (same tokens): GRPO and more SFT are level, {noise}; this run does not show "
            "that RL adds what more SFT on the traces would not")
