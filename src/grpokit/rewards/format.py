"""Format reward: does the completion follow `<think>...</think><answer>...</answer>`?"""
from __future__ import annotations

from typing import Any

from grpokit.rewards.base import reward
from grpokit.types import RewardOutput

_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


@reward("format", doc="1.0 for <think>..</think><answer>..</answer> exactly; 0.5 for a well-formed answer alone")
def format(completion: str, **_: Any) -> RewardOutput:  # noqa: A001 - the registered name
    """Score the reasoning format (DeepSeek-R1 template).

    answer_ok: `<answer>` and `</answer>` each appear exactly once, in that order, with a
               non-blank answer between them and nothing but whitespace after `</answer>`.
    think_ok:  `<think>` and `</think>` each appear exactly once, in that order, the text
               starts with `<think>` (after whitespace), the reasoning is non-blank (an
               empty think block would make the format free to satisfy without thinking),
               and only whitespace separates `</think>` from `<answer>`.
    score = 1.0 if think_ok and answer_ok, 0.5 if only answer_ok (the answer is still
    machine-readable), else 0.0. parts = {"think_ok", "answer_ok"} as 1.0/0.0.
    """
    counts = {tag: completion.count(tag) for tag in _TAGS}
    a_open, a_close = completion.find("<answer>"), completion.find("</answer>")
    answer_ok = (counts["<answer>"] == 1 and counts["</answer>"] == 1 and a_open < a_close
                 and completion[a_open + len("<answer>"):a_close].strip() != ""
                 and completion[a_close + len("</answer>"):].strip() == "")
    t_open, t_close = completion.find("<think>"), completion.find("</think>")
    think_ok = (counts["<think>"] == 1 and counts["</think>"] == 1 and t_open < t_close
                and completion[:t_open].strip() == ""
                and completion[t_open + len("<think>"):t_close].strip() != ""
                and a_open > t_close and completion[t_close + len("</think>"):a_open].strip() == "")
    score = 1.0 if (think_ok and answer_ok) else 0.5 if answer_ok else 0.0
    return RewardOutput(score, parts={"think_ok": float(think_ok), "answer_ok": float(answer_ok)})
