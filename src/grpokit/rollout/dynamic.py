"""DAPO's dynamic sampling (Yu et al. 2025, "DAPO", sec. 3.2): over-sample and filter out
prompts whose completions all got the same reward, until the step holds prompts_per_step
prompts with reward spread.

A prompt whose G rewards are all equal has advantage 0 under any group-relative
estimator of its own group, so it adds rows but no gradient; DAPO keeps the batch full
of prompts that do carry signal, and every completion sampled, kept or dropped, is paid
for. One step (`refill`):

    round 0     the step's prompts, sampled and scored as usual (train.py)
    keep        the prompts whose total rewards have spread (max > min), in draw order
    round r     while fewer than `target` are kept and `max_rounds` extra rounds remain:
                draw ceil(missing / keep rate so far) fresh prompts from the prompt
                sampler (at most `target`; `target` while none was kept), sample, score
    result      the first `target` kept prompts' rows, one prompt-major batch; when
                nothing had spread, round 0's whole batch (it trains as plain GRPO would:
                every advantage 0)

Where a grouper runs after this (any `algorithm.grouping`), it and the advantages see
the kept rows only; a zero-spread prompt never reaches a shared (cluster, batch)
baseline. The loop owns sampling and scoring (the `sample` callback), so this module
holds only the bookkeeping: which prompts stay, how many to draw next, the counters.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor

from grpokit.grouping.base import concat_batches, select_rows
from grpokit.rewards.manager import RewardScores, concat_scores, not_applicable_total
from grpokit.types import RolloutBatch

# sample(prompt indices, position of the first one among the step's draws) -> rows and scores
SampleFn = Callable[[list[int], int], "tuple[RolloutBatch, RewardScores]"]


def spread_mask(rewards: Tensor, example_index: Tensor, n_prompts: int) -> Tensor:
    """[P] bool: prompt p's rewards are not all equal (max > min over its rows). A prompt
    with one completion, or none, has no spread."""
    # rewards: [N] float, example_index: [N] long in 0..P-1
    r = rewards.double()
    hi = torch.full((n_prompts,), -math.inf, dtype=torch.float64).scatter_reduce(0, example_index, r, "amax")
    lo = torch.full((n_prompts,), math.inf, dtype=torch.float64).scatter_reduce(0, example_index, r, "amin")
    return hi > lo  # [P]


def next_draw(missing: int, kept: int, drawn: int, cap: int) -> int:
    """Prompts the next round draws: the missing ones over this step's keep rate so far
    (kept / drawn), rounded up, at most cap (one step's prompts, so a round never samples
    more than a normal step); cap while nothing was kept."""
    if missing <= 0:
        return 0
    if kept == 0:
        return cap
    return min(cap, math.ceil(missing * drawn / kept))


@dataclass
class Refilled:
    """A step after dynamic sampling: the kept prompts (dataset indices, draw order),
    their rows (example_index = position in `indices`), their scores, and the counters."""

    indices: list[int]
    batch: RolloutBatch
    scores: RewardScores
    metrics: dict[str, float] = field(default_factory=dict)
    sampled: int = 0  # completions sampled this step, kept or dropped
    dropped_index: list[int] = field(default_factory=list)  # dataset index of every row not kept
    dropped_rewards: Tensor | None = None  # [D] their total rewards (for groupers' success statistics)


def refill(indices: list[int], batch: RolloutBatch, scores: RewardScores, *, draw: Callable[[int], list[int]],
           sample: SampleFn, target: int, max_rounds: int) -> Refilled:
    """Round 0 (indices, batch, scores: the step as sampled) plus up to max_rounds extra
    rounds, as in the module docstring. draw(k): the next k prompt indices of the run's
    prompt sampler; sample(indices, first): their rows and scores, `first` being the
    prompt position the round starts at among the step's draws (keyed sampling seeds)."""
    rounds: list[tuple[list[int], RolloutBatch, RewardScores, list[int]]] = []
    kept = with_spread = drawn = sampled = 0
    reward_sum = 0.0
    while True:
        spread = spread_mask(scores.total, batch.example_index, len(indices))  # [P]
        positions = spread.nonzero().flatten().tolist()
        rounds.append((indices, batch, scores, positions[:target - kept]))
        kept += len(rounds[-1][3])
        with_spread += len(positions)
        drawn += len(indices)
        sampled += batch.size
        reward_sum += float(scores.total.double().sum())
        if kept >= target or len(rounds) > max_rounds:
            break
        first = drawn
        indices = draw(next_draw(target - kept, with_spread, drawn, target))
        batch, scores = sample(indices, first)
    metrics = {"dynamic/sampled_completions": float(sampled), "dynamic/kept_prompts": float(kept),
               "dynamic/drawn_prompts": float(drawn), "dynamic/rounds": float(len(rounds)),
               "dynamic/keep_rate": with_spread / drawn, "dynamic/short": float(kept < target),
               "dynamic/reward_sampled": reward_sum / max(1, sampled)}
    if kept == 0:  # nothing had spread: round 0 as it was
        i0, b0, s0, _ = rounds[0]
        return Refilled(i0, b0, _with_not_applicable(s0, rounds), metrics, sampled,
                        *_dropped([(idx, b, s, []) for idx, b, s, _ in rounds[1:]]))  # later rounds: all dropped
    out_indices, parts = [], []
    for idx, b, s, pos in rounds:
        if not pos:
            continue
        new_pos = torch.full((len(idx),), -1, dtype=torch.long)
        new_pos[torch.tensor(pos)] = torch.arange(len(out_indices), len(out_indices) + len(pos))
        rows = torch.isin(b.example_index, torch.tensor(pos)).nonzero().flatten()  # prompt-major, draw order
        parts.append((select_rows(b, rows), new_pos[b.example_index[rows]], _select_scores(s, rows), b, rows))
        out_indices += [idx[p] for p in pos]
    merged, merged_ex = parts[0][0], parts[0][1]
    for sub, ex, *_ in parts[1:]:
        merged = concat_batches(merged, sub, b_example_index=ex)
        merged_ex = torch.cat([merged_ex, ex])
    merged.example_index = merged_ex
    merged.metadata = _merged_metadata([(b, rows) for *_, b, rows in parts], [b for _, b, _, _ in rounds])
    scores_out = _with_not_applicable(concat_scores([p[2] for p in parts]), rounds)
    return Refilled(out_indices, merged, scores_out, metrics, sampled, *_dropped(rounds))


def _dropped(rounds) -> tuple[list[int], Tensor]:
    """(dataset index, total reward) of every row whose prompt was not kept."""
    index, rewards = [], []
    for idx, b, s, pos in rounds:
        rows = (~torch.isin(b.example_index, torch.tensor(list(pos), dtype=torch.long))).nonzero().flatten()
        index += [idx[p] for p in b.example_index[rows].tolist()]
        rewards.append(s.total[rows])
    return index, torch.cat(rewards) if rewards else torch.zeros(0)


def _select_scores(s: RewardScores, rows: Tensor) -> RewardScores:
    # not_applicable counts every scored row of the step: _with_not_applicable sets it
    return RewardScores(total=s.total[rows], per_reward={k: v[rows] for k, v in s.per_reward.items()},
                        parts={k: v[rows] for k, v in s.parts.items()}, not_applicable={})


def _with_not_applicable(s: RewardScores, rounds) -> RewardScores:
    """not_applicable is a count over scored rows: that of every row sampled this step."""
    s.not_applicable = not_applicable_total([r for _, _, r, _ in rounds])
    return s


def _merged_metadata(parts: Sequence[tuple[RolloutBatch, Tensor]], every: Sequence[RolloutBatch]) -> dict:
    """The rounds' metadata as one: per-row lists (a tool loop's calls per row) keep the
    kept rows, forward_calls add up over every round (dropped ones cost compute too),
    anything else is the first kept round's."""
    out = dict(parts[0][0].metadata)
    for key, value in parts[0][0].metadata.items():
        if isinstance(value, list) and len(value) == parts[0][0].size:
            out[key] = [v for b, rows in parts for v in (b.metadata[key][i] for i in rows.tolist())]
    out["forward_calls"] = sum(b.metadata.get("forward_calls", 0) for b in every)
    out.pop("own_rows", None)  # scoring is done; Phase 4 splits the kept rows itself (dist.share)
    return out
