"""The answer format each built-in task asks for, as a system prompt for chat models.

An instruct model answers in whatever form it likes unless told; the accuracy reward
reads several forms (rewards/parsing.extract_answer), but a stated format makes the
answer unambiguous. A task's system prompt is used when `data.system_prompt` is unset
and the prompts go through a chat template (policy.render_prompt); models without a
chat template never see it.
"""
from __future__ import annotations

from typing import Optional

# GSM8K's own final-answer marker, which the gold rationales end with. No example number:
# a small model copies "#### 42" verbatim (SmolLM2-135M did, on 6 of 32 GSM8K problems).
FINAL_ANSWER_FORMAT = ("Solve the problem step by step. At the end, write '####' followed by the final answer "
                       "as a single number.")

SYSTEM_PROMPTS = {
    "gsm8k": FINAL_ANSWER_FORMAT,
    "arithmetic": FINAL_ANSWER_FORMAT,
    "arithmetic_short": FINAL_ANSWER_FORMAT,
    "mixture": FINAL_ANSWER_FORMAT,
}


def task_system_prompt(spec: str) -> Optional[str]:
    """The system prompt of the task a data spec names (`task:NAME[:SPLIT]`, `gsm8k:PATH`),
    or None for data files and tasks without one."""
    if spec.startswith("gsm8k:"):
        return SYSTEM_PROMPTS["gsm8k"]
    if spec.startswith("task:"):
        from grpokit.tasks import split_task_spec

        return SYSTEM_PROMPTS.get(split_task_spec(spec)[0].partition("?")[0])
    return None


def resolve_system_prompt(configured: Optional[str], spec: str) -> Optional[str]:
    """`data.system_prompt` as given; unset (None) -> the task's; "" -> none at all (the
    chat template's own default system message, if it writes one, stays)."""
    if configured is None:
        return task_system_prompt(spec)
    return configured or None
