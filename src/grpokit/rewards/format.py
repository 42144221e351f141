"""Format rewards: does the completion follow `<think>...</think><answer>...</answer>`
(`format`), and does it state a final answer in a form `accuracy` reads (`stated_answer`)?"""
from __future__ import annotations

from typing import Any

from grpokit.rewards.base import reward
from grpokit.rewards.parsing import extract_answer
from grpokit.types import RewardOutput

_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


@reward("format", doc="1.0 for <think>..</think><answer>..</answer> exactly; 0.5 for a well-formed answer alone "
                       "(kwargs: answer_only=0 scores it 0, as open-r1 does)")
def format(completion: str, *, answer_only: float = 0.5, **_: Any) -> RewardOutput:  # noqa: A001 - the registered name
    """Score the reasoning format (DeepSeek-R1 template).

    answer_ok: `<answer>` and `</answer>` each appear exactly once, in that order, with a
               non-blank answer between them and nothing but whitespace after `</answer>`.
    think_ok:  `<think>` and `</think>` each appear exactly once, in that order, the text
               starts with `<think>` (after whitespace), the reasoning is non-blank (an
               empty think block would make the format free to satisfy without thinking),
               and only whitespace separates `</think>` from `<answer>`.
    score = 1.0 if think_ok and answer_ok, `answer_only` if only answer_ok, else 0.0.
    parts = {"think_ok", "answer_ok"} as 1.0/0.0.

    answer_only (default 0.5): open-r1's format reward and DeepSeek-R1's give 0 here (the
    think block is required). We default to partial credit because an answer the accuracy
    reward can parse is progress for a model that has not learned the think block yet
    (the demo's small models, a base model without cold start), and the accuracy reward
    already pays nothing for a parseable wrong answer. Set it to 0 (reward kwargs
    `{answer_only: 0}`) to require the think block as open-r1 does.
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
    score = 1.0 if (think_ok and answer_ok) else float(answer_only) if answer_ok else 0.0
    return RewardOutput(score, parts={"think_ok": float(think_ok), "answer_ok": float(answer_ok)})


@reward("stated_answer", doc="1.0 when the completion states a final answer in a form `accuracy` reads "
                              "(<answer>, '#### x', \\boxed, 'the answer is x'), right or wrong; else 0.0")
def stated_answer(completion: str, **_: Any) -> float:
    """1.0 when extract_answer (the strict forms, no last-number fallback) finds a
    non-blank answer, else 0.0.

    The value is not checked: that is `accuracy`'s job. Why it exists: an instruct model
    that explains at length and rarely states its result (SmolLM2-135M on arithmetic:
    46 of 500 greedy answers) gives the strict accuracy reward almost nothing to learn
    from; a small weight on stating an answer teaches the form the accuracy reward
    reads, the same role `format` plays for the think/answer tags.
    """
    found = extract_answer(completion)
    return 1.0 if found is not None and found.strip() else 0.0
