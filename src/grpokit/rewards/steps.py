"""Reasoning-step reward: are the intermediate equations a completion writes correct,
and do they reach the gold intermediate results?"""
from __future__ import annotations

from typing import Any, Sequence

from grpokit.rewards.base import reward
from grpokit.rewards.parsing import Equation, evaluate_text, find_equations, numbers_close, think_section
from grpokit.types import RewardOutput


@reward("reasoning_steps", doc="fraction of written equations that hold (or of gold steps reached), in [0, 1]")
def reasoning_steps(completion: str, *, steps: Sequence[Any] | None = None, **_: Any) -> RewardOutput:
    """Score the arithmetic written in the reasoning, in [0, 1].

    Equations are read from the think section (the whole text when there is no think
    tag) by parsing.find_equations: prose equations like "48/2 = 24", "12 x 2 = $24",
    "3+4+5=12" and GSM8K annotations "<<48/2=24>>". An equation is *correct* when its
    two sides agree to 1e-6 relative (both evaluated by a small +-*/() parser, not eval).

    Let W be the n written equations, C the k correct ones, in order of appearance.
      no gold `steps` (None or empty):  score = k / n
      gold `steps` g_1..g_m:            score = LCS(g, results(C)) / m
    where results(C) are the right-hand values of the correct equations, g_j the gold
    intermediate results (from "37+48=85" or "48/2=24" the value after '=', or a number
    as given) and LCS the longest common subsequence under numeric equality: the number of
    gold steps reached by a correct equation, in the gold order. Skipping a gold step
    loses that step only; reaching a result through a wrong equation earns nothing.
    No equation written: 0.0. parts = {"written": n, "correct": k}.
    """
    written = checked_equations(completion)
    correct = [e for e in written if e.holds]
    parts = {"written": float(len(written)), "correct": float(len(correct))}
    if not written:
        return RewardOutput(0.0, parts)
    gold = gold_results(steps) if steps is not None else []
    if not gold:
        return RewardOutput(len(correct) / len(written), parts)
    return RewardOutput(_matched_in_order(gold, correct) / len(gold), parts)


def checked_equations(completion: str) -> list[Equation]:
    """The equations reasoning_steps checks, in order: those of the think section (the
    whole text when there is no think tag). `e.holds` says whether each one is right."""
    reasoning = think_section(completion)
    return find_equations(completion if reasoning is None else reasoning)


def gold_results(steps: Sequence[Any]) -> list[float]:
    """Gold intermediate results from a `steps` field: "37+48=85" -> 85, "48/2=24" -> 24,
    "<<48/2=24>>" -> 24, 85 or "85" -> 85. Raises ValueError naming a step that is none
    of these (a data error, better loud than a silently lower reward)."""
    if isinstance(steps, (str, bytes)):
        raise ValueError(f"reasoning_steps: 'steps' must be a list of steps, got the string {steps!r}")
    out = []
    for i, step in enumerate(steps):
        value = _step_value(step)
        if value is None:
            raise ValueError(f"reasoning_steps: gold step {i} ({step!r}) is neither a number nor "
                             "an equation 'expr=result' such as '48/2=24'")
        out.append(value)
    return out


def _step_value(step: Any) -> float | None:
    if isinstance(step, bool):
        return None
    if isinstance(step, (int, float)):
        return float(step)
    if not isinstance(step, str):
        return None
    text = step.strip().removeprefix("<<").removesuffix(">>")
    return evaluate_text(text.rpartition("=")[2])


def _matched_in_order(gold: list[float], correct: list[Equation]) -> int:
    """Longest common subsequence of gold results and correct equations' results."""
    results = [e.right for e in correct]
    prev = [0] * (len(results) + 1)
    for g in gold:
        row = [0]
        for j, r in enumerate(results):
            row.append(prev[j] + 1 if numbers_close(g, r) else max(prev[j + 1], row[j]))
        prev = row
    return prev[-1]
