"""What Phase 2 did each step, for the run report: groups.jsonl.

metrics.jsonl holds one number per key and step; a grouper's groups do not fit that
(sizes and rewards of every group, at every scale). One line per step:

    {"step": 3,
     "scales": [{"name": "prompt", "size": [4, 4, ...], "mean": [0.5, ...], "std": [0.1, ...]}, ...],
     "difficulty": {"field": "steps", "value": [2, 3], "count": [8, 8], "mean": [0.6, 0.2]}}

`scales` lists the grouper's scales, finest first (one scale, named after the grouper,
for a grouper that returns plain ids); `difficulty` is the step's mean reward per value
of the recipe's complexity field (`algorithm.group.field`), present only when the
step's examples have that field.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from grpokit.grouping.base import complexity_value

GROUPS = "groups.jsonl"


def group_record(step: int, rewards: torch.Tensor, grouping: Any, fields: Sequence[dict] = (), *,
                 field: str = "steps", name: str = "group") -> dict:
    """One groups.jsonl line. rewards: [N] this step's totals; grouping: the grouper's
    output, [N] long ids or a grouping.Groups (its first N rows are this step's)."""
    n = rewards.numel()
    if isinstance(grouping, torch.Tensor):
        scales = [(name, grouping)]
    else:
        names = list(grouping.names) or [f"scale{s}" for s in range(len(grouping.ids))]
        scales = [(nm, ids[:n]) for nm, ids in zip(names, grouping.ids)]
    r = rewards.detach().double().cpu()  # [N]
    out: dict = {"step": int(step), "scales": [_scale_stats(nm, ids.cpu(), r) for nm, ids in scales]}
    diff = difficulty_stats(r, fields, field)
    if diff is not None:
        out["difficulty"] = diff
    return out


def _scale_stats(name: str, ids: torch.Tensor, r: torch.Tensor) -> dict:
    uniq, inverse = torch.unique(ids, return_inverse=True)  # groups in id order
    k = len(uniq)
    size = torch.zeros(k, dtype=torch.double).index_add_(0, inverse, torch.ones_like(r))  # [G]
    mean = torch.zeros(k, dtype=torch.double).index_add_(0, inverse, r) / size  # [G]
    sq = torch.zeros(k, dtype=torch.double).index_add_(0, inverse, (r - mean[inverse]) ** 2)  # [G]
    std = (sq / size).sqrt()  # population std: 0 exactly when every reward is equal
    return {"name": name, "size": [int(s) for s in size.tolist()], "mean": _rounded(mean), "std": _rounded(std)}


def difficulty_stats(rewards: torch.Tensor, fields: Sequence[dict], field: str) -> dict | None:
    """Mean reward per value of `field` (a list counts by its length, as the complexity
    grouper reads it); None when no row has the field."""
    if not field or not fields:
        return None
    values = [complexity_value(f.get(field)) if isinstance(f, dict) else None for f in fields]
    if all(v is None for v in values):
        return None
    sums: dict[float, list[float]] = {}
    for v, x in zip(values, rewards.tolist()):
        if v is not None:
            sums.setdefault(v, []).append(x)
    keys = sorted(sums)
    return {"field": field, "value": [int(k) if float(k).is_integer() else k for k in keys],
            "count": [len(sums[k]) for k in keys], "mean": [round(sum(sums[k]) / len(sums[k]), 6) for k in keys]}


def _rounded(x: torch.Tensor) -> list[float]:
    return [round(v, 6) for v in x.tolist()]


class GroupLog:
    """Appends group_record lines to RUN/groups.jsonl. A fresh run starts the file
    afresh; a resumed one appends (the report keeps the last line of a step)."""

    def __init__(self, run_dir: str | os.PathLike, *, field: str = "steps", name: str = "group",
                 resume: bool = False):
        self.path = Path(run_dir) / GROUPS
        self.field, self.name = field, name
        if not resume:
            self.path.write_text("", encoding="utf-8")

    def write(self, step: int, rewards: torch.Tensor, grouping: Any, fields: Sequence[dict] = ()) -> None:
        record = group_record(step, rewards, grouping, fields, field=self.field, name=self.name)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
