"""Length penalty (DAPO). The QA rewards (exact match, F1) live in rewards/qa.py."""
from __future__ import annotations

from typing import Any

from grpokit.rewards.base import reward


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


# exact_match, f1 and normalize_answer moved to rewards/qa.py; re-exported for old imports.
from grpokit.rewards.qa import exact_match, f1, normalize_answer  # noqa: E402,F401
