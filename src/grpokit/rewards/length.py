"""Length penalty (DAPO) and the text-answer rewards for QA tasks (exact match, F1).

The QA rewards live here for now because they are short; they share nothing with the
length penalty and can move to their own module when QA rewards grow.
"""
from __future__ import annotations

import re
import string
from collections import Counter
from typing import Any

from grpokit.rewards import reward
from grpokit.rewards.parsing import extract_answer


@reward("length", doc="DAPO soft overlong penalty in characters: 0, then linearly down to -1 at max_chars")
def length(completion: str, *, max_chars: int = 2000, buffer: int = 500, **_: Any) -> float:
    """Soft overlong punishment (DAPO, Yu et al. 2025, eq. 13), counted in characters.

    With L = len(completion), L_max = max_chars and L_cache = buffer:
      0                               if L <= L_max - L_cache
      ((L_max - L_cache) - L) / L_cache if L_max - L_cache < L <= L_max
      -1                              if L > L_max
    buffer = 0 is a hard cut at max_chars.
    """
    if max_chars <= 0 or not 0 <= buffer <= max_chars:
        raise ValueError(f"length: need max_chars > 0 and 0 <= buffer <= max_chars, "
                         f"got max_chars={max_chars}, buffer={buffer}")
    n = len(completion)
    if n <= max_chars - buffer:
        return 0.0
    if n > max_chars:
        return -1.0
    return ((max_chars - buffer) - n) / buffer


_PUNCT = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


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


@reward("exact_match", doc="1.0 when the normalised answer equals a normalised gold answer (SQuAD EM)")
def exact_match(completion: str, *, answer: Any = None, **_: Any) -> float:
    """SQuAD exact match: 1.0 when normalize_answer(prediction) equals normalize_answer of
    any gold in `answer` (a string or a list of acceptable strings), else 0.0.
    prediction = extract_answer(completion), or the whole completion without an answer."""
    pred = normalize_answer(_prediction(completion))
    return float(any(pred == normalize_answer(g) for g in _golds(answer, "exact_match")))


@reward("f1", doc="token-level F1 between the normalised answer and the best gold answer (SQuAD F1)")
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
