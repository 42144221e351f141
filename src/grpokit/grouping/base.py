"""What groupers share: the multi-scale result type and small per-prompt helpers.

A grouper maps the step's Experience to `Groups`: group ids of every row (one scale
for the simple ones, like `prompt`), or ids at several scales with weights, optional
empirical-Bayes shrinkage, and optionally M rows pooled from earlier steps
(temporal). `Groups.advantages` is Phase 3.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from grpokit.algo.hierarchical import combine_advantages, shrunk_advantages
from grpokit.algo.offpolicy import truncated_importance_weights
from grpokit.types import Experience, RolloutBatch


@dataclass
class Groups:
    """Phase 2's output: the group ids of every row, at one or several scales.

    ids[s] is the group id of every row at scale s, finest scale first; each has
    N + M rows: this step's N completions, then M rows pooled from earlier steps.
    Advantage = sum_s weights[s] * A^(s) / sum(weights), where A^(s) is the recipe's
    advantage estimator on scale s, or, with `shrink`, the empirical-Bayes advantage
    whose parent is scale s + 1 (the batch for the last scale); shrinkage replaces the
    estimator's own baseline (mean or leave-one-out) with the shrunk mean.
    """

    ids: list[Tensor]  # S x [N + M] long
    names: list[str] = field(default_factory=list)  # one per scale, for logs
    weights: list[float] | None = None  # None = all weight on the finest scale
    shrink: bool = False
    prior_dof: float = 2.0
    past_rewards: Tensor | None = None  # [M] rewards of pooled earlier rows
    replay: RolloutBatch | None = None  # the M earlier rows themselves, when they are trained too
    replay_cap: float = 1.0  # truncation of the replayed rows' importance weights
    replay_weight: float = 1.0  # factor on the replayed rows' advantages, on top of the importance weights
    replay_negatives: bool = True  # False: replayed rows with a negative advantage get 0 (self-imitation)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def num_past(self) -> int:
        return 0 if self.past_rewards is None else int(self.past_rewards.numel())

    def finest(self, n: int) -> Tensor:
        """Group ids of this step's n completions at the finest scale ([n] long)."""
        return self.ids[0][:n]

    def advantages(self, rewards: Tensor, advantage_fn: Callable[..., Tensor], *, scale: str, eps: float,
                   logp_now: Tensor | None = None) -> Tensor:
        """Phase 3. rewards: [N] of this step. Returns [N], or [N + M] when past rows are
        replayed for training: their advantages, floored at 0 unless replay_negatives, times
        replay_weight and the truncated importance weights computed from logp_now [M, L], the
        current policy's log-probs of them."""
        n = rewards.numel()
        r = rewards if self.past_rewards is None else torch.cat([rewards, self.past_rewards.to(rewards.dtype)])
        for ids in self.ids:
            if ids.shape != r.shape:
                raise ValueError(f"group ids have shape {tuple(ids.shape)}, expected {tuple(r.shape)} "
                                 f"({n} completions + {self.num_past} pooled rows)")
        batch_ids = torch.zeros_like(self.ids[0])
        per_scale = []
        for s, ids in enumerate(self.ids):
            if self.shrink:
                parent = self.ids[s + 1] if s + 1 < len(self.ids) else batch_ids
                per_scale.append(shrunk_advantages(r, ids, parent, scale=scale, eps=eps, prior_dof=self.prior_dof))
            else:
                per_scale.append(advantage_fn(r, ids, scale=scale, eps=eps))
        if len(per_scale) == 1:
            adv = per_scale[0]
        else:
            weights = self.weights if self.weights is not None else [1.0] + [0.0] * (len(per_scale) - 1)
            adv = combine_advantages(per_scale, weights)  # [N + M]
        if self.replay is None:
            return adv[:n]
        if logp_now is None:
            raise ValueError("replayed rows need the current policy's log-probs of them (logp_now)")
        w = truncated_importance_weights(logp_now, self.replay.logprobs, self.replay.loss_mask, cap=self.replay_cap)
        self.metrics["grouping/replay_weight"] = float(w.mean()) if w.numel() else 0.0
        past = adv[n:] if self.replay_negatives else adv[n:].clamp_min(0)
        return torch.cat([adv[:n], past * (self.replay_weight * w).to(adv.dtype)])

    def training_batch(self, batch: RolloutBatch) -> RolloutBatch:
        """The rows Phase 4 trains on: this step's batch, plus replayed rows if any."""
        return batch if self.replay is None else concat_batches(batch, self.replay)


# ----------------------------------------------------------------------------- per-prompt helpers


@dataclass
class PromptTable:
    """The step's distinct prompts, sorted by dataset id (so results do not depend on
    row order): ids [P], inverse [N] (row -> prompt), count [P], mean reward [P]."""

    ids: Tensor
    inverse: Tensor
    count: Tensor
    mean_reward: Tensor

    @property
    def size(self) -> int:
        return int(self.ids.numel())

    def first_rows(self) -> Tensor:
        """[P] index of the first row of each prompt."""
        n = self.inverse.numel()
        first = torch.full((self.size,), n, dtype=torch.long)
        return first.scatter_reduce(0, self.inverse, torch.arange(n), reduce="amin")

    def mean_of(self, x: Tensor) -> Tensor:
        """Per-prompt mean of a per-row tensor x [N, ...] -> [P, ...]."""
        out = x.new_zeros((self.size,) + tuple(x.shape[1:]))
        out.index_add_(0, self.inverse, x)
        return out / self.count.to(x.dtype).view(-1, *([1] * (x.dim() - 1)))


def prompt_table(exp: Experience) -> PromptTable:
    ids, inverse = torch.unique(exp.prompt_ids, return_inverse=True)  # sorted [P], [N]
    count = torch.zeros(ids.numel(), dtype=torch.long).index_add_(0, inverse, torch.ones_like(inverse))
    rewards = exp.rewards.float()
    mean = torch.zeros(ids.numel()).index_add_(0, inverse, rewards) / count.float()
    return PromptTable(ids, inverse, count, mean)


def canonical(labels: Tensor) -> Tensor:
    """Relabel to 0, 1, ... in order of first appearance (labels [P] long)."""
    _, inverse = torch.unique(labels, return_inverse=True)
    k = int(inverse.max()) + 1 if inverse.numel() else 0
    first = torch.full((k,), labels.numel(), dtype=torch.long).scatter_reduce(
        0, inverse, torch.arange(labels.numel()), reduce="amin")
    rank = torch.empty(k, dtype=torch.long)
    rank[torch.argsort(first)] = torch.arange(k)
    return rank[inverse]


def equal_width_buckets(values: Tensor, buckets: int, lo: float | None = None, hi: float | None = None) -> Tensor:
    """Bucket index 0..buckets-1 of each value on equal-width bins over [lo, hi]
    (default: the values' own range). Equal values always share a bucket."""
    if buckets < 1:
        raise ValueError(f"buckets must be >= 1, got {buckets}")
    v = values.double()
    lo_ = float(v.min()) if lo is None else lo
    hi_ = float(v.max()) if hi is None else hi
    if hi_ <= lo_:
        return torch.zeros(values.shape, dtype=torch.long)
    return ((v - lo_) / (hi_ - lo_) * buckets).floor().clamp(0, buckets - 1).long()


def complexity_value(x: Any) -> float | None:
    """A field's complexity: the length of a list/tuple/str, the value of a number."""
    if isinstance(x, bool):
        return float(x)
    if isinstance(x, (int, float)):
        return float(x)
    if isinstance(x, (list, tuple, str, dict)):
        return float(len(x))
    return None


# ----------------------------------------------------------------------------- rollout rows


def select_rows(batch: RolloutBatch, rows: Tensor) -> RolloutBatch:
    """The sub-batch of the given row indices (same layout, same prompt_len)."""
    idx = rows.tolist()
    emb = batch.context_embedding[rows] if batch.context_embedding is not None else None
    return RolloutBatch(
        input_ids=batch.input_ids[rows], attention_mask=batch.attention_mask[rows], loss_mask=batch.loss_mask[rows],
        logprobs=batch.logprobs[rows], prompt_len=batch.prompt_len,
        completion_ids=[batch.completion_ids[i] for i in idx], completions=[batch.completions[i] for i in idx],
        example_index=batch.example_index[rows], finished=batch.finished[rows], context_embedding=emb,
        metadata=dict(batch.metadata))


def _relayout(b: RolloutBatch, p_len: int, c_len: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """b's [N, L] tensors moved into a [N, p_len + c_len] layout (prompt right-aligned
    at p_len, completion after it); padding ids are 0 with attention 0."""
    n, width = b.input_ids.shape
    shift = p_len - b.prompt_len
    out = []
    for t in (b.input_ids, b.attention_mask, b.loss_mask, b.logprobs):
        new = t.new_zeros((n, p_len + c_len))
        new[:, shift:shift + width] = t
        out.append(new)
    return out[0], out[1], out[2], out[3]


def concat_batches(a: RolloutBatch, b: RolloutBatch, *, b_example_index: Tensor | None = None) -> RolloutBatch:
    """Rows of a, then rows of b, in one layout (prompts left-padded to the longer
    prompt_len, completions right-padded). b's example_index becomes b_example_index
    when given (b's rows belong to the same step), else -1 (b's rows belong to an
    earlier step's example list)."""
    p_len = max(a.prompt_len, b.prompt_len)
    c_len = max(a.input_ids.shape[1] - a.prompt_len, b.input_ids.shape[1] - b.prompt_len)
    ta, tb = _relayout(a, p_len, c_len), _relayout(b, p_len, c_len)
    emb = None
    if a.context_embedding is not None and b.context_embedding is not None:
        emb = torch.cat([a.context_embedding, b.context_embedding])
    return RolloutBatch(
        input_ids=torch.cat([ta[0], tb[0]]), attention_mask=torch.cat([ta[1], tb[1]]),
        loss_mask=torch.cat([ta[2], tb[2]]), logprobs=torch.cat([ta[3], tb[3]]), prompt_len=p_len,
        completion_ids=list(a.completion_ids) + list(b.completion_ids),
        completions=list(a.completions) + list(b.completions),
        example_index=torch.cat([a.example_index, torch.full_like(b.example_index, -1) if b_example_index is None
                                   else b_example_index.to(a.example_index.dtype)]),
        finished=torch.cat([a.finished, b.finished]), context_embedding=emb, metadata=dict(a.metadata))


# ----------------------------------------------------------------------------- construction


def accepted_kwargs(fn: Callable, options: dict[str, Any]) -> dict[str, Any]:
    """The subset of options that fn (a class or function) takes as keyword arguments."""
    target = fn.__init__ if inspect.isclass(fn) else fn
    params = inspect.signature(target).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(options)
    return {k: v for k, v in options.items() if k in params}


def observe(grouper: Any, exp: Experience) -> None:
    """Show a grouper rows it will not group: the prompts dynamic sampling dropped (every
    reward equal). A grouper with running success statistics (reward, budget, and the
    composites holding them) counts them through its `observe(exp)`; others ignore them.
    exp holds prompt_ids, rewards, step and fields only."""
    fn = getattr(grouper, "observe", None)
    if callable(fn):
        fn(exp)


def stateful(obj: Any) -> bool:
    return callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None))


def check_ids(ids: Any, n: int, who: str) -> Tensor:
    """[n] integer group ids from a grouper's result: a tensor, or a one-scale Groups
    without pooled rows (what the composite groupers take from their parts)."""
    if isinstance(ids, Groups) and len(ids.ids) == 1 and ids.num_past == 0:
        ids = ids.ids[0]
    if not isinstance(ids, Tensor) or ids.shape != (n,) or ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ValueError(f"grouper {who} must return [N={n}] integer group ids, got "
                         f"{type(ids).__name__}{tuple(getattr(ids, 'shape', ()))}")
    return ids


def pooled(exps: Sequence[Experience]) -> Experience:
    """One Experience holding the rows of several (in order). Embeddings are kept only
    if every part has them."""
    fields: list = []
    prompts: list = []
    for e in exps:
        fields += list(e.fields) if e.fields else [{} for _ in range(e.prompt_ids.numel())]
        prompts += list(e.prompts) if e.prompts else [None] * e.prompt_ids.numel()

    def cat(name: str):
        parts = [getattr(e, name) for e in exps]
        return torch.cat(parts) if all(p is not None for p in parts) else None

    return Experience(prompt_ids=torch.cat([e.prompt_ids for e in exps]), rewards=torch.cat([e.rewards for e in exps]),
                      step=exps[0].step, fields=fields, embeddings=cat("embeddings"), lengths=cat("lengths"),
                      prompts=prompts, prompt_lengths=cat("prompt_lengths"))
