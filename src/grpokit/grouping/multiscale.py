"""Several scales at once: prompt inside cluster inside batch.

Each completion's advantage combines its group statistics at every scale,

    A_i = sum_s w_s A_i^(s) / sum_s w_s,

with the weights given in the recipe or tuned online from measured signal: the convex
mix of the scales' leave-one-out baselines that best predicts rewards
(`grpokit.algo.hierarchical.scale_weights`), smoothed across steps. With `shrink`,
each scale's baseline is also shrunk toward the next coarser scale (empirical Bayes).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from grpokit.algo.hierarchical import nest_ids, scale_weights
from grpokit.grouping.base import Groups, check_ids, observe
from grpokit.grouping.factory import make_grouper, options_for
from grpokit.types import Experience

NOT_A_SCALE = ("multiscale", "temporal")
DEFAULT_SCALES = ("prompt", "semantic", "batch")


class MultiscaleGrouper:
    """prompt in cluster in batch: advantages combine several scales with weights (fixed or self-tuned)."""

    def __init__(self, *, scales: Sequence[str] = DEFAULT_SCALES, weights: Sequence[float] = (),
                 shrink: bool = False, prior_dof: float = 2.0, decay: float = 0.9, **options: Any):
        scales = list(scales)
        if not scales:
            raise ValueError("algorithm.group.scales: multiscale grouping needs at least one scale, e.g. "
                             "[prompt, semantic, batch]")
        bad = [s for s in scales if s in NOT_A_SCALE]
        if bad:
            raise ValueError(f"algorithm.group.scales: {bad[0]!r} cannot be a scale (scales are plain groupers)")
        if weights and len(weights) != len(scales):
            raise ValueError(f"algorithm.group.weights: {len(weights)} weights for {len(scales)} scales {scales}")
        if weights and (any(w < 0 for w in weights) or not sum(weights) > 0):
            raise ValueError(f"algorithm.group.weights: must be >= 0 with a positive sum, got {list(weights)}")
        ctx = {k: options.pop(k) for k in ("seed", "num_generations") if k in options}
        sub = {k: v for k, v in options.items() if k not in ("budget",)}
        self.names = scales
        self.groupers = [make_grouper(s, **ctx, **options_for(s, sub)) for s in scales]
        self.fixed = [float(w) for w in weights] if weights else None
        self.shrink, self.prior_dof, self.decay = shrink, prior_dof, decay
        self.needs_embeddings = any(getattr(g, "needs_embeddings", True) for g in self.groupers)
        self.tuned: torch.Tensor | None = None  # running weights when self-tuned

    @staticmethod
    def parts(options: dict) -> list[str]:
        """The groupers it is made of (their options are multiscale's too)."""
        return [s for s in options.get("scales", DEFAULT_SCALES) if s not in NOT_A_SCALE]

    def state_dict(self) -> dict:
        subs = [g.state_dict() if callable(getattr(g, "state_dict", None)) else None for g in self.groupers]
        return {"tuned": self.tuned, "scales": subs}

    def load_state_dict(self, state: dict) -> None:
        self.tuned = state.get("tuned")
        for g, s in zip(self.groupers, state.get("scales", [])):
            if s is not None:
                g.load_state_dict(s)

    def observe(self, exp: Experience) -> None:
        for g in self.groupers:
            observe(g, exp)

    def __call__(self, exp: Experience) -> Groups:
        n = exp.prompt_ids.numel()
        ids = [check_ids(g(exp), n, name) for g, name in zip(self.groupers, self.names)]
        for s in range(len(ids) - 2, -1, -1):  # coarse to fine: each scale cut to nest in the next
            ids[s] = nest_ids(ids[s], ids[s + 1])
        if self.fixed is not None:
            weights = self.fixed
        else:
            w_hat = scale_weights(exp.rewards.float(), ids)  # [S]
            self.tuned = w_hat if self.tuned is None else self.decay * self.tuned + (1 - self.decay) * w_hat
            weights = self.tuned.tolist()
        groups = Groups(ids=ids, names=list(self.names), weights=list(weights), shrink=self.shrink,
                        prior_dof=self.prior_dof)
        total = sum(weights)
        for name, w in zip(self.names, weights):
            groups.metrics[f"grouping/weight_{name}"] = w / total
        for name, i in zip(self.names, ids):
            groups.metrics[f"grouping/groups_{name}"] = float(torch.unique(i).numel())
        return groups
