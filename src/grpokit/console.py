"""What a training run says on screen, besides the per-step line of RunLogger.

    start summary   device, parameters, prompts, rewards, grouper, backend, run directory
    evaluations     "held-out accuracy 12.0% -> 19.5%" against the evaluation before step 1
    step notes      a step that trained nothing (no group with reward spread); every
                    NOTE_EVERY steps what a context-aware grouper and the tools did
    end summary     before -> after, wall time, where the model is

Everything is written through tqdm.write, so the progress bar stays on its own line.
The text is built by plain functions of numbers (tested as such); RunConsole only keeps
the held-out result before training and the start time.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm

NOTE_EVERY = 10  # steps between grouper/tool notes (and the first step, and the last)


# ----------------------------------------------------------------------------- text

def percent(x: float) -> str:
    return f"{100 * x:.1f}%"


def count(n: float) -> str:
    """1234567 -> '1.23M', 12345 -> '12.3K', 812 -> '812'."""
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:g}"


def duration(seconds: float) -> str:
    """75 -> '1m15s', 3725 -> '1h02m05s', 4.2 -> '4.2s'."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def held_out_change(before: dict, after: dict) -> str | None:
    """'held-out accuracy 12.0% -> 19.5%' from two eval dicts ({"eval/accuracy": ...});
    the mean reward of the first reward when there is no accuracy; None without data."""
    if "eval/accuracy" in after:
        key, show, what = "eval/accuracy", percent, "accuracy"
    else:
        key = next((k for k in after if k.startswith("eval/")), None)
        if key is None:
            return None
        show, what = (lambda v: f"{v:.3f}"), f"reward {key[len('eval/'):]}"
    now = show(after[key])
    return f"held-out {what} {show(before[key])} -> {now}" if key in before else f"held-out {what} {now}"


def flat_step_note(step: int, metrics: dict) -> str | None:
    """A line when no group of the step had reward spread (the policy-gradient term is 0)."""
    if metrics.get("zero_std_groups") != 1.0:
        return None
    groups = int(metrics.get("groups", 0))
    what = "no update" if metrics.get("trained_rows", 1) == 0 else "only the KL term trained"
    return f"step {step}: {what}: no reward spread in any of the {groups} groups (every advantage is 0)"


def grouper_note(metrics: dict) -> str | None:
    """'grouping: 12 groups | scale weights prompt 0.50, semantic 0.30, batch 0.20 | ...'
    from a context-aware grouper's metrics (grouping/*); None for plain prompt groups."""
    extra = {k[len("grouping/"):]: v for k, v in metrics.items() if k.startswith("grouping/")}
    if not extra:
        return None
    parts = [f"{int(metrics['groups'])} groups" if "groups" in metrics else None]
    weights = {k[len("weight_"):]: v for k, v in extra.items() if k.startswith("weight_")}
    if weights:
        parts.append("scale weights " + ", ".join(f"{k} {v:.2f}" for k, v in weights.items()))
    sizes = {k[len("groups_"):]: v for k, v in extra.items() if k.startswith("groups_")}
    if sizes:
        parts.append("groups per scale " + ", ".join(f"{k} {int(v)}" for k, v in sizes.items()))
    for k, v in extra.items():
        if not k.startswith(("weight_", "groups_")):
            parts.append(f"{k.replace('_', ' ')} {v:.3g}")
    return "grouping: " + " | ".join(p for p in parts if p)


def tools_note(metrics: dict) -> str | None:
    """'tools: 62.0% of completions called a tool, 1.3 calls each, 3.0% of calls failed, ...'"""
    if "tools/share_with_call" not in metrics:
        return None
    parts = [f"{percent(metrics['tools/share_with_call'])} of completions called a tool"]
    if "tools/calls_per_rollout" in metrics:
        parts.append(f"{metrics['tools/calls_per_rollout']:.2g} calls per completion")
    if "tools/failure_rate" in metrics:
        parts.append(f"{percent(metrics['tools/failure_rate'])} of calls failed")
    if metrics.get("tools/turn_limit"):
        parts.append(f"{percent(metrics['tools/turn_limit'])} hit the turn limit")
    if "tools/accuracy_with_call" in metrics and "tools/accuracy_without_call" in metrics:
        parts.append(f"accuracy {percent(metrics['tools/accuracy_with_call'])} with a call, "
                     f"{percent(metrics['tools/accuracy_without_call'])} without")
    return "tools: " + ", ".join(parts)


def summary_block(title: str, rows: list[tuple[str, str]]) -> str:
    width = max((len(k) for k, _ in rows), default=0)
    return "\n".join([title] + [f"  {k:<{width}}  {v}" for k, v in rows])


# ----------------------------------------------------------------------------- the run

class RunConsole:
    """The run's screen output; `write` defaults to tqdm.write (keeps the bar clean)."""

    def __init__(self, total_steps: int, *, enabled: bool = True, write: Callable[[str], None] = tqdm.write):
        self.total_steps = total_steps
        self.enabled = enabled
        self.write = write
        self.before: dict = {}
        self.last_eval: dict = {}
        self.pending: str | None = None
        self.started = time.time()

    def say(self, text: str | None) -> None:
        if self.enabled and text:
            self.write(text)

    def start(self, rows: list[tuple[str, str]], title: str) -> None:
        self.started = time.time()
        self.say(summary_block(title, rows))

    def evaluated(self, step: int, result: dict) -> None:
        """An evaluation's result; the one at step 0 is the 'before' of every later line."""
        if not result:
            return
        if step == 0:
            self.before = dict(result)
            line = held_out_change({}, result)
            self.say(f"before training: {line}" if line else None)
            return
        self.last_eval = dict(result)
        line = held_out_change(self.before, result)
        self.pending = f"step {step}: {line}" if line else None  # printed after the step's line

    def step(self, step: int, metrics: dict) -> None:
        """After the step's console line: a step that trained nothing, a pending evaluation,
        and every NOTE_EVERY steps what the grouper and the tools did."""
        self.say(flat_step_note(step, metrics))
        self.say(self.pending)
        self.pending = None
        if step == 1 or step % NOTE_EVERY == 0 or step == self.total_steps:
            self.say(grouper_note(metrics))
            self.say(tools_note(metrics))

    def end(self, rows: list[tuple[str, str]], title: str = "done") -> None:
        change = held_out_change(self.before, self.last_eval) if self.last_eval else None
        head = [("held-out", change[len("held-out "):])] if change else []
        self.say(summary_block(title, head + [("wall time", duration(time.time() - self.started))] + rows))


def start_rows(comp: Any, cfg: Any, *, lr: float, lr_note: str, run_dir: Path, device: Any,
               trackers: list[str]) -> list[tuple[str, str]]:
    """The start summary of `grpokit train` from the built components and the config."""
    model = comp.policy.model
    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    trained = "all trained" if n_train == n_params else f"{count(n_train)} trained"
    r, a = cfg.rollout, comp.algorithm
    weights = comp.rewards.weights
    rewards = ", ".join(f"{n}@{w:g}" for n, w in weights.items())
    if r.tools:
        names = [t if isinstance(t, str) else t.get("name", "?") for t in r.tools]
        sampling = f"multi-turn tool loop ({', '.join(names)}; at most {r.max_turns} calls)"
    else:
        sampling = "grpokit lean decode" if r.lean_decode else "transformers generate"
    passes = "grpokit C passes where the model fits" if cfg.optim.native_passes else "torch"
    return [
        ("device", f"{device}" + (f" ({cfg.run.threads} threads)" if cfg.run.threads else "")),
        ("model", f"{cfg.model.name_or_path} ({count(n_params)} parameters, {trained}"
                  + (f", LoRA r={cfg.model.lora.r}" if cfg.model.lora.r else "") + ")"),
        ("prompts", f"{len(comp.train_examples)} train ({cfg.data.train}), {len(comp.eval_examples)} held-out; "
                    f"{r.prompts_per_step} per step x {r.num_generations} completions"),
        ("rewards", rewards),
        ("grouper", f"{a.grouping}; advantage {a.advantage}, {a.ratio} ratio, {a.loss_agg}, "
                    f"beta {a.beta:g}"),
        ("backend", f"sampling: {sampling}; training passes: {passes}"),
        ("optimizer", f"lr {lr:g} ({lr_note}), warm-up {cfg.optim.warmup_steps}, {cfg.optim.schedule}"),
        ("run dir", f"{run_dir} (metrics.jsonl, samples.jsonl, events.jsonl"
                    + (f"; trackers: {', '.join(trackers)}" if trackers else "") + ")"),
    ]
