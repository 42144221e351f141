"""Wrappers that any grouper can wear: baseline shrinkage, and a per-step sample budget.

`Shrunk`: the grouper's groups with their baselines shrunk toward the batch
(empirical Bayes, `grpokit.algo.hierarchical.shrunk_group_stats`), so groups of 2 to 4
completions get a usable baseline.

`Budgeted`: self-tuning completions per prompt. Before each step the loop asks
`plan_generations` how many completions each prompt gets; the budget (a fraction of
prompts_per_step x num_generations) goes where rewards still disagree, fewer to
prompts that are always right or always wrong
(`grpokit.algo.hierarchical.allocate_samples`). Beliefs about each prompt come from
a `SuccessTracker` fed at grouping time: the prompt's own history, or for a new prompt
the running success rate of its complexity class.
"""
from __future__ import annotations

from typing import Any, Sequence

from grpokit.algo.hierarchical import allocate_samples
from grpokit.grouping.base import Groups, observe
from grpokit.grouping.reward import SuccessTracker, row_keys
from grpokit.types import Experience


class _Wrapper:
    def __init__(self, base: Any):
        self.base = base
        self.needs_embeddings = getattr(base, "needs_embeddings", True)

    def observe(self, exp: Experience) -> None:
        observe(self.base, exp)

    def _base_state(self) -> Any:
        return self.base.state_dict() if callable(getattr(self.base, "state_dict", None)) else None

    def _load_base(self, state: Any) -> None:
        if state is not None and callable(getattr(self.base, "load_state_dict", None)):
            self.base.load_state_dict(state)


class Shrunk(_Wrapper):
    """The base grouper's groups with empirical-Bayes baselines (parent: the batch)."""

    def __init__(self, base: Any, *, prior_dof: float = 2.0):
        super().__init__(base)
        self.prior_dof = prior_dof

    def state_dict(self) -> dict:
        return {"base": self._base_state()}

    def load_state_dict(self, state: dict) -> None:
        self._load_base(state.get("base"))

    def __call__(self, exp: Experience) -> Groups:
        out = self.base(exp)
        out.shrink, out.prior_dof = True, self.prior_dof
        return out


class Budgeted(_Wrapper):
    """Self-tuning sample counts: completions per prompt from measured disagreement, under a budget."""

    def __init__(self, base: Any, *, budget: float, num_generations: int, min_samples: int = 2,
                 max_samples: int = 0, success: float = 0.5, decay: float = 0.9, field: str = "steps"):
        super().__init__(base)
        if not budget > 0:
            raise ValueError(f"algorithm.group.budget: must be > 0, got {budget}")
        self.budget, self.num_generations = budget, num_generations
        self.min_samples = min_samples
        self.max_samples = max_samples or 2 * num_generations
        if not 1 <= self.min_samples <= self.max_samples:
            raise ValueError(f"algorithm.group.min_samples / max_samples: need 1 <= min_samples <= max_samples, "
                             f"got {min_samples} and {self.max_samples}")
        self.success, self.field = success, field
        self.tracker = SuccessTracker(decay=decay)
        self.last_counts: list[int] = []

    def state_dict(self) -> dict:
        return {"base": self._base_state(), "tracker": self.tracker.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self._load_base(state.get("base"))
        self.tracker.load_state_dict(state["tracker"])

    def plan_generations(self, prompt_ids: Sequence[int], fields: Sequence[dict], step: int) -> list[int]:
        """Completions for each of the coming step's prompts (sum <= budget)."""
        p = len(prompt_ids)
        keys = row_keys(fields, self.field, p)
        alpha, beta = self.tracker.beta_params(prompt_ids, keys, step)
        total = max(round(self.budget * p * self.num_generations), p * self.min_samples)
        counts = allocate_samples(alpha, beta, total, min_n=self.min_samples, max_n=self.max_samples)
        self.last_counts = counts.tolist()
        return self.last_counts

    def _track(self, exp: Experience) -> None:
        keys = row_keys(exp.fields, self.field, exp.prompt_ids.numel())
        ok = (exp.rewards >= self.success).float().tolist()
        self.tracker.update(exp.prompt_ids.tolist(), ok, keys, exp.step)

    def observe(self, exp: Experience) -> None:
        """Rows that are not grouped still inform the beliefs the plan is made from."""
        self._track(exp)
        super().observe(exp)

    def __call__(self, exp: Experience):
        self._track(exp)
        out = self.base(exp)
        out.metrics["grouping/samples"] = float(exp.prompt_ids.numel())
        if self.last_counts:
            out.metrics["grouping/samples_min"] = float(min(self.last_counts))
            out.metrics["grouping/samples_max"] = float(max(self.last_counts))
        return out
