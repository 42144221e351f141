"""Groups by difficulty: prompts bucketed by running success rate, or by task complexity.

`reward`: a completion is compared with completions of prompts of like difficulty.
Difficulty is each prompt's running success rate (a completion succeeds when its total
reward >= `success`), kept across steps with decay and saved in checkpoints.
`complexity`: by a dataset field (a list's length, e.g. the number of reasoning
steps, or a number), or, for prompts without it, the prompt's length in tokens.
"""
from __future__ import annotations

from typing import Any, Hashable, Sequence

import torch
from torch import Tensor

from grpokit.grouping.base import Groups, complexity_value, equal_width_buckets, prompt_table
from grpokit.types import Experience

GLOBAL = "*"


class SuccessTracker:
    """Running success counts per prompt and per key (a class of similar prompts, e.g.
    one complexity value), with exponential decay per step.

    Belief about prompt i's success probability: Beta(alpha_i, beta_i) with

        rate_k  = (s_k + 1) / (t_k + 2)                     its key's running rate
        alpha_i = prior * rate_k       + s_i
        beta_i  = prior * (1 - rate_k) + (t_i - s_i)

    where s, t are decayed success and trial counts (a count observed d steps ago
    weighs decay^d). A prompt never seen borrows its key's rate as `prior` pseudo-
    observations, so a new prompt of a usually-solved kind starts out "probably easy".
    """

    def __init__(self, *, decay: float = 0.9, prior: float = 2.0):
        if not 0 < decay <= 1:
            raise ValueError(f"algorithm.group.decay: must be in (0, 1], got {decay}")
        self.decay, self.prior = decay, prior
        self.prompts: dict[int, tuple[float, float, int]] = {}  # id -> (successes, trials, step)
        self.keys: dict[Hashable, tuple[float, float, int]] = {}

    def _decayed(self, entry: tuple[float, float, int] | None, step: int) -> tuple[float, float]:
        if entry is None:
            return 0.0, 0.0
        s, t, last = entry
        f = self.decay ** max(0, step - last)
        return s * f, t * f

    def update(self, prompt_ids: Sequence[int], success: Sequence[float], keys: Sequence[Hashable], step: int) -> None:
        """Add one step's outcomes (one entry per completion)."""
        add_p: dict[int, list[float]] = {}
        add_k: dict[Hashable, list[float]] = {}
        for pid, ok, key in zip(prompt_ids, success, keys):
            for table, k in ((add_p, int(pid)), (add_k, key)):
                cur = table.setdefault(k, [0.0, 0.0])
                cur[0] += float(ok)
                cur[1] += 1.0
        for store, adds in ((self.prompts, add_p), (self.keys, add_k)):
            for k, (s, t) in adds.items():
                s0, t0 = self._decayed(store.get(k), step)
                store[k] = (s0 + s, t0 + t, step)

    def beta_params(self, prompt_ids: Sequence[int], keys: Sequence[Hashable], step: int) -> tuple[Tensor, Tensor]:
        """(alpha [P], beta [P]) for each listed prompt."""
        alpha, beta = [], []
        for pid, key in zip(prompt_ids, keys):
            sk, tk = self._decayed(self.keys.get(key), step)
            rate = (sk + 1.0) / (tk + 2.0)
            s, t = self._decayed(self.prompts.get(int(pid)), step)
            alpha.append(self.prior * rate + s)
            beta.append(self.prior * (1 - rate) + (t - s))
        a = torch.tensor(alpha, dtype=torch.float64).clamp_min(1e-6)
        b = torch.tensor(beta, dtype=torch.float64).clamp_min(1e-6)
        return a, b

    def rate(self, prompt_ids: Sequence[int], keys: Sequence[Hashable], step: int) -> Tensor:
        """Posterior mean success rate [P]."""
        a, b = self.beta_params(prompt_ids, keys, step)
        return a / (a + b)

    def state_dict(self) -> dict:
        return {"prompts": dict(self.prompts), "keys": dict(self.keys)}

    def load_state_dict(self, state: dict) -> None:
        self.prompts = dict(state["prompts"])
        self.keys = dict(state["keys"])


def row_keys(fields: Sequence[dict[str, Any]], field: str, n: int) -> list[Hashable]:
    """Per-row key for `SuccessTracker`: the row's complexity value, or GLOBAL."""
    if not field or not fields:
        return [GLOBAL] * n
    out: list[Hashable] = []
    for f in fields:
        v = complexity_value(f.get(field)) if isinstance(f, dict) else None
        out.append(GLOBAL if v is None else v)
    return out


class RewardGrouper:
    """Like difficulty: prompts bucketed by their running success rate (stateful).

    Each step first adds the step's outcomes to the tracker, then buckets every prompt
    by its posterior mean success rate on `buckets` equal bins over [0, 1]. A prompt's
    rate blends its own history (this step included) with its complexity class's rate
    (`field`), so repeated prompts keep their difficulty from step to step.
    """

    needs_embeddings = False

    def __init__(self, *, buckets: int = 4, success: float = 0.5, decay: float = 0.9, field: str = "steps"):
        if buckets < 1:
            raise ValueError(f"algorithm.group.buckets: must be >= 1, got {buckets}")
        self.buckets, self.success, self.field = buckets, success, field
        self.tracker = SuccessTracker(decay=decay)

    def state_dict(self) -> dict:
        return {"tracker": self.tracker.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.tracker.load_state_dict(state["tracker"])

    def observe(self, exp: Experience) -> None:
        """Add rows' outcomes to the running success rates (also rows that are not grouped)."""
        keys = row_keys(exp.fields, self.field, exp.prompt_ids.numel())
        ok = (exp.rewards >= self.success).float().tolist()
        self.tracker.update(exp.prompt_ids.tolist(), ok, keys, exp.step)

    def __call__(self, exp: Experience) -> Groups:
        keys = row_keys(exp.fields, self.field, exp.prompt_ids.numel())
        self.observe(exp)
        table = prompt_table(exp)
        first = table.first_rows().tolist()
        rate = self.tracker.rate(table.ids.tolist(), [keys[i] for i in first], exp.step)  # [P]
        bucket = equal_width_buckets(rate, self.buckets, 0.0, 1.0)  # [P]
        return Groups(ids=[bucket[table.inverse]], names=["reward"])


class ComplexityGrouper:
    """Like complexity: a dataset field (list -> length, number -> value; e.g. the number
    of reasoning steps), or the prompt's token length for prompts without the field.

    Up to `buckets` distinct values each form a group; more are binned on equal-width
    buckets over the step's range. Rows with the field and rows without it (estimated
    from length) never share a group.
    """

    needs_embeddings = False

    def __init__(self, *, field: str = "steps", buckets: int = 4):
        if buckets < 1:
            raise ValueError(f"algorithm.group.buckets: must be >= 1, got {buckets}")
        self.field, self.buckets = field, buckets

    def values(self, exp: Experience) -> tuple[Tensor, Tensor]:
        """(complexity [N] float64, from_field [N] bool)."""
        n = exp.prompt_ids.numel()
        vals, known = [], []
        for i in range(n):
            f = exp.fields[i] if i < len(exp.fields) else {}
            v = complexity_value(f.get(self.field)) if (self.field and isinstance(f, dict)) else None
            if v is None:
                if exp.prompt_lengths is None:
                    raise ValueError(f"complexity grouping: row {i} has no field {self.field!r} and the experience "
                                     "has no prompt_lengths to estimate it from")
                v = float(exp.prompt_lengths[i])
                known.append(False)
            else:
                known.append(True)
            vals.append(v)
        return torch.tensor(vals, dtype=torch.float64), torch.tensor(known, dtype=torch.bool)

    def __call__(self, exp: Experience) -> Groups:
        vals, known = self.values(exp)
        out = torch.zeros(vals.shape, dtype=torch.long)
        for part, offset in ((known, 0), (~known, self.buckets)):
            if not bool(part.any()):
                continue
            v = vals[part]
            uniq, inverse = torch.unique(v, return_inverse=True)
            ids = inverse if uniq.numel() <= self.buckets else equal_width_buckets(v, self.buckets)
            out[part] = ids + offset
        return Groups(ids=[out], names=["complexity"])
