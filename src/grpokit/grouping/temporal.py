"""Groups across time: a replay window of the last K steps.

Each step, this step's completions and the window's rows are grouped together by a
base grouper (`prompt`: the same prompt seen again; `semantic`: similar contexts).
Window rows that land in a group with at least one current completion are pooled:

- always, their rewards join the group statistics (a larger group, a steadier
  baseline; a prompt whose 8 fresh completions all failed still gets a baseline
  from the attempts of the last steps);
- with `replay`, they are trained on too. They were sampled by an older policy mu, so
  each gets the truncated importance weight w = min(cap, exp(mean_t log pi_now/mu))
  on its advantage, and the clipped surrogate runs with pi_now as its proximal policy
  (`grpokit.algo.offpolicy.truncated_importance_weights`). The loop computes log pi_now
  of the replayed rows with one no-grad forward and appends them to the batch.
  A row stays in the window for `window` steps and is replayed at each of them, so its
  advantage is also scaled by `replay_weight` (default 1/window). At weight 1 (and cap
  2) the replayed rows made up ~80% of every update, each completion was trained five
  times over, and in the grouping study held-out accuracy fell from 27% to under 10%.
  Scaled to 1/window it still fell, and entropy with it, which fits (our reading) pushing
  down stale completions the policy no longer samples moving their mass onto its
  favourite tokens. So by default only replayed rows that did better than their group
  are trained (`replay_negatives: false`, self-imitation learning's max(A, 0), Oh et al.
  2018); past failures still lower the baseline of the current rows. In the study this
  form was stable: over 5 seeds 28.8% +- 5.1 final accuracy against GRPO's 27.3% +- 7.0,
  and its mean accuracy curve reached GRPO's mean final accuracy with 58% of GRPO's
  completions (docs/grouping.md).

The window is part of the grouper's state, saved in checkpoints.
"""
from __future__ import annotations

from collections import deque
from typing import Any

import torch

from grpokit.grouping.base import Groups, check_ids, concat_batches, pooled, select_rows
from grpokit.grouping.factory import make_grouper, options_for
from grpokit.types import Experience

STATELESS_BASES = ("prompt", "semantic", "complexity", "batch")


class TemporalGrouper:
    """Pools completions of the same (or similar) contexts across the last `window` steps."""

    def __init__(self, *, window: int = 4, base: str = "prompt", replay: bool = False, is_cap: float = 1.0,
                 replay_weight: float | None = None, replay_negatives: bool = False, shrink: bool = False,
                 prior_dof: float = 2.0, **options: Any):
        if window < 1:
            raise ValueError(f"algorithm.group.window: must be >= 1 step, got {window}")
        if is_cap <= 0:
            raise ValueError(f"algorithm.group.is_cap: must be > 0, got {is_cap}")
        if replay_weight is not None and not 0 < replay_weight <= 1:
            raise ValueError(f"algorithm.group.replay_weight: must be in (0, 1], got {replay_weight}")
        if base not in STATELESS_BASES:
            raise ValueError(f"algorithm.group.base: {base!r} is not supported; valid: {', '.join(STATELESS_BASES)}")
        self.window, self.base_name, self.replay, self.is_cap = window, base, replay, is_cap
        self.replay_weight = 1.0 / window if replay_weight is None else replay_weight
        self.replay_negatives = replay_negatives
        self.shrink, self.prior_dof = shrink, prior_dof
        ctx = {k: options.pop(k) for k in ("seed", "num_generations") if k in options}
        sub = {k: v for k, v in options.items() if k != "budget"}
        self.base = make_grouper(base, **ctx, **options_for(base, sub))
        self.needs_embeddings = getattr(self.base, "needs_embeddings", True)
        self._steps: deque = deque(maxlen=window)  # entries: (Experience without rollout, RolloutBatch | None)

    @staticmethod
    def parts(options: dict) -> list[str]:
        """The grouper it is made of (its options are temporal's too)."""
        base = options.get("base", "prompt")
        return [base] if base in STATELESS_BASES else []

    def _light(self, exp: Experience) -> Experience:
        """What the window keeps of a step: no rollout rows (kept separately, if at all), and
        no embeddings unless the base grouper uses them."""
        return Experience(prompt_ids=exp.prompt_ids, rewards=exp.rewards, step=exp.step, fields=list(exp.fields),
                          embeddings=exp.embeddings if self.needs_embeddings else None, lengths=exp.lengths,
                          prompts=list(exp.prompts), prompt_lengths=exp.prompt_lengths)

    def state_dict(self) -> dict:
        return {"steps": list(self._steps)}

    def load_state_dict(self, state: dict) -> None:
        self._steps = deque(state["steps"], maxlen=self.window)

    def __call__(self, exp: Experience) -> Groups:
        n = exp.prompt_ids.numel()
        past = [e for e, _ in self._steps]
        if self.replay and exp.rollout is None:
            raise ValueError("temporal grouping with replay needs Experience.rollout (the rows to keep)")
        if past:
            everything = pooled([self._light(exp)] + past)
            ids = check_ids(self.base(everything), everything.prompt_ids.numel(), self.base_name)
            keep = torch.isin(ids[n:], ids[:n])  # [M0] past rows sharing a group with a current one
            idx = keep.nonzero(as_tuple=True)[0]
            ids = torch.cat([ids[:n], ids[n:][idx]])
            past_rewards = everything.rewards[n:][idx]
            replay = None
            if self.replay and idx.numel():
                rows = [b for _, b in self._steps]
                offsets = torch.tensor([0] + [e.prompt_ids.numel() for e in past]).cumsum(0)
                parts = []
                for j, b in enumerate(rows):
                    sel = idx[(idx >= offsets[j]) & (idx < offsets[j + 1])] - offsets[j]
                    if sel.numel():
                        parts.append(select_rows(b, sel))
                replay = parts[0]
                for extra in parts[1:]:
                    replay = concat_batches(replay, extra)
                replay.example_index.fill_(-1)
        else:
            ids = check_ids(self.base(exp), n, self.base_name)
            past_rewards, replay = exp.rewards.new_zeros(0), None
        self._steps.appendleft((self._light(exp), _cpu_rows(exp.rollout) if self.replay else None))
        groups = Groups(ids=[ids], names=[f"temporal({self.base_name})"], past_rewards=past_rewards,
                        replay=replay, replay_cap=self.is_cap, replay_weight=self.replay_weight,
                        replay_negatives=self.replay_negatives,
                        shrink=self.shrink, prior_dof=self.prior_dof)
        groups.metrics["grouping/past_rows"] = float(past_rewards.numel())
        return groups


def _cpu_rows(batch):
    if batch is None:
        return None
    return select_rows(batch, torch.arange(batch.size))
