"""Final-answer accuracy for math problems (GSM8K, MATH, the arithmetic demo)."""
from __future__ import annotations

import threading
from typing import Any

from grpokit.rewards.base import is_scalar_answer, reward
from grpokit.rewards.parsing import extract_answer, numbers_close, parse_number

_MISSING = object()


@reward("accuracy", doc="1.0 when the final answer equals the gold `answer` (numeric or symbolic), else 0.0",
        fields={"answer": (is_scalar_answer, "a number or text, e.g. 42 or 3/4")})
def accuracy(completion: str, *, answer: Any = _MISSING, last_number: bool = False, **fields: Any) -> float:
    """1.0 when the completion's final answer equals the gold `answer`, else 0.0.

    predicted = extract_answer(completion): the last <answer>...</answer>, else the GSM8K
    `#### x` line, else the last \\boxed{...}, else the number after the last "answer is" /
    "answer:" phrase. With none of them the score is 0.0: by default we do not fall back
    to "the last number in the text", which would credit an intermediate result that
    happens to equal the answer and would teach the policy to skip stating one.
    last_number=True (a reward kwarg) adds that fallback, for a weak model that rarely
    states an answer in any form (recipes/gsm8k_smollm2.yaml).

    gold = `answer` (int, float or str; a raw GSM8K rationale ending in `#### x` is
    reduced to x). When both sides read as numbers (parse_number: "1,234", "$18",
    "18.00", "3/4", "\\frac{3}{4}", "50%"), they match when
    |pred - gold| <= 1e-6 * max(|pred|, |gold|). Otherwise math_verify compares them
    symbolically (LaTeX, fractions, radicals, intervals); any failure inside it scores 0.
    """
    if answer is _MISSING or answer is None:
        present = ", ".join(sorted(fields)) or "none"
        raise ValueError(f"accuracy: the example has no 'answer' field (its fields: {present}); "
                         "the gold answer must be a column named 'answer'")
    predicted = extract_answer(completion, last_number=last_number)
    if predicted is None or not predicted:
        return 0.0
    gold = answer
    if isinstance(gold, str) and "####" in gold:
        gold = extract_answer(gold) or gold
    g, p = parse_number(gold), parse_number(predicted)
    if g is not None and p is not None:
        return 1.0 if numbers_close(p, g) else 0.0
    return 1.0 if symbolic_equal(str(gold), predicted) else 0.0


def symbolic_equal(gold: str, predicted: str) -> bool:
    """math_verify's verdict on gold vs predicted; False on any error inside it.

    Each string is parsed as LaTeX math first ("$...$"), then as plain text: math_verify
    reads "x^2+1" or "\\sqrt{2}" only in math mode, but "18 dollars" only outside it.
    """
    try:
        from math_verify import parse, verify  # lazy: sympy takes ~0.3 s to import
    except ImportError as e:  # pragma: no cover - math-verify is a declared dependency
        raise ImportError("accuracy: symbolic answers need the 'math-verify' package "
                          "(pip install math-verify)") from e
    # math_verify times out with signal.alarm, which only works in the main thread.
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    try:
        gold_parsed = _parse(parse, gold, timeout)
        pred_parsed = _parse(parse, predicted, timeout)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout))
    except Exception:  # noqa: BLE001 - a malformed answer is a wrong answer, never a crash
        return False


def _parse(parse: Any, text: str, timeout: int | None) -> list:
    if "$" not in text and "\\boxed" not in text:
        parsed = parse(f"${text}$", parsing_timeout=timeout)
        if parsed:
            return parsed
    return parse(text, parsing_timeout=timeout)
