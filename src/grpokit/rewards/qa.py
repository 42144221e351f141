"""Rewards for question answering with tools: exact match and token F1 (SQuAD), the
format of tool calls, and an optional bonus or cost per tool call.

The prediction is the content of the last `<answer>...</answer>` (see
rewards.parsing.extract_answer), or the whole completion when there is none.
"""
from __future__ import annotations

import re
import string
from collections import Counter
from typing import Any, Sequence

from grpokit.rewards.base import is_scalar_answer, reward
from grpokit.rewards.parsing import extract_answer
from grpokit.tools.parsing import RESULT_CLOSE, RESULT_OPEN, find_tool_calls
from grpokit.types import RewardOutput

_PUNCT = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def _gold_answers(value: Any) -> bool:
    return is_scalar_answer(value) or (isinstance(value, list) and all(is_scalar_answer(v) for v in value))


_ANSWER_FIELD = {"answer": (_gold_answers, "text, a number, or a list of them")}


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lowercase, drop punctuation and the articles a/an/the,
    collapse whitespace."""
    text = text.lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _prediction(completion: str) -> str:
    found = extract_answer(completion)
    return completion if found is None else found


def _golds(answer: Any, name: str) -> list[str]:
    if answer is None:
        raise ValueError(f"{name}: the example has no 'answer' field; expected a string or a list of strings")
    golds = [answer] if isinstance(answer, (str, int, float)) else list(answer)
    if not golds:
        raise ValueError(f"{name}: 'answer' is an empty list; expected at least one acceptable answer")
    return [str(g) for g in golds]


@reward("exact_match", doc="1.0 when the normalised answer equals a normalised gold answer (SQuAD EM)",
        fields=_ANSWER_FIELD)
def exact_match(completion: str, *, answer: Any = None, **_: Any) -> float:
    """SQuAD exact match: 1.0 when normalize_answer(prediction) equals normalize_answer of
    any gold in `answer` (a string or a list of acceptable strings), else 0.0.
    prediction = extract_answer(completion), or the whole completion without an answer."""
    pred = normalize_answer(_prediction(completion))
    return float(any(pred == normalize_answer(g) for g in _golds(answer, "exact_match")))


@reward("f1", doc="token-level F1 between the normalised answer and the best gold answer (SQuAD F1)",
        fields=_ANSWER_FIELD)
def f1(completion: str, *, answer: Any = None, **_: Any) -> float:
    """SQuAD token F1, the max over gold answers: with shared = the multiset overlap of
    normalised tokens, P = shared / |pred|, R = shared / |gold|, F1 = 2PR / (P + R).
    When either side has no tokens, F1 = 1.0 if both are empty else 0.0."""
    pred_tokens = normalize_answer(_prediction(completion)).split()
    best = 0.0
    for gold in _golds(answer, "f1"):
        gold_tokens = normalize_answer(gold).split()
        if not pred_tokens or not gold_tokens:
            best = max(best, float(pred_tokens == gold_tokens))
            continue
        shared = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
        if shared:
            p, r = shared / len(pred_tokens), shared / len(gold_tokens)
            best = max(best, 2 * p * r / (p + r))
    return best


def _tags(tools: Sequence[str] | str) -> list[str]:
    return [tools] if isinstance(tools, str) else list(tools)


@reward("search_format", doc="1.0 for well-formed <search>q</search><result>..</result> calls then one <answer>; "
                             "0.5 for a well-formed answer alone")
def search_format(completion: str, *, tools: Sequence[str] | str = ("search",), **_: Any) -> RewardOutput:
    """Format of a tool-using completion.

    calls_ok:  every tool call (`<T>query</T>` for T in `tools`) is closed, not nested,
               not empty, and followed (after optional whitespace) by a
               `<result>...</result>` block; every result block follows a call (the model
               did not write one itself).
    answer_ok: `<answer>` and `</answer>` each appear exactly once outside results, in that
               order, with a non-blank answer, after the last result, and only whitespace
               after `</answer>`.
    score = 1.0 if calls_ok and answer_ok, 0.5 if only answer_ok, else 0.0; a completion
    without any call can score 1.0 (this reward does not ask for a search; the answer
    reward does). parts = {"calls_ok", "answer_ok"} as 1.0/0.0.
    """
    tags = _tags(tools)
    calls = find_tool_calls(completion, tags)
    calls_ok = all(c.complete and c.error is None for c in calls)
    results = [m.start() for m in re.finditer(re.escape(RESULT_OPEN), completion)]
    after_calls = []  # where each call's result should start: right after it, whitespace allowed
    for c in calls:
        rest = completion[c.end:]
        after_calls.append(c.end + len(rest) - len(rest.lstrip()))
    calls_ok = (calls_ok and after_calls == results
                and completion.count(RESULT_OPEN) == completion.count(RESULT_CLOSE))
    outside = _strip_results(completion)
    a_open, a_close = outside.find("<answer>"), outside.find("</answer>")
    answer_ok = (outside.count("<answer>") == 1 and outside.count("</answer>") == 1 and a_open < a_close
                 and outside[a_open + len("<answer>"):a_close].strip() != ""
                 and outside[a_close + len("</answer>"):].strip() == "")
    last_result = completion.rfind(RESULT_CLOSE)
    if answer_ok and last_result >= 0:
        answer_ok = completion.rfind("<answer>") > last_result
    score = 1.0 if (calls_ok and answer_ok) else 0.5 if answer_ok else 0.0
    return RewardOutput(score, parts={"calls_ok": float(calls_ok), "answer_ok": float(answer_ok)})


def _strip_results(text: str) -> str:
    """The text with every <result>...</result> block removed (an unclosed one to the end)."""
    out, pos = [], 0
    while True:
        start = text.find(RESULT_OPEN, pos)
        if start < 0:
            out.append(text[pos:])
            return "".join(out)
        out.append(text[pos:start])
        end = text.find(RESULT_CLOSE, start)
        if end < 0:
            return "".join(out)
        pos = end + len(RESULT_CLOSE)


@reward("tool_calls", doc="per_call x the number of tool calls (a bonus if positive, a cost if negative)")
def tool_calls(completion: str, *, per_call: float = -0.05, max_calls: int | None = None,
               tools: Sequence[str] | str = ("search",), **_: Any) -> float:
    """per_call * n, where n counts the tool calls in the completion (malformed ones too),
    capped at max_calls when given. Negative per_call is a cost that nudges toward fewer
    searches; positive is a bonus for trying (use a small one, or it is gamed)."""
    n = len(find_tool_calls(completion, _tags(tools)))
    if max_calls is not None:
        n = min(n, max_calls)
    return per_call * n
