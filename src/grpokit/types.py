"""Data types and protocols shared by every phase. No logic lives here."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, Union, runtime_checkable

import torch

Prompt = Union[str, list]  # plain text, or chat messages [{"role": ..., "content": ...}]


@dataclass
class Example:
    """One row of prompt data. `fields` holds every other column (answer, steps, ...)."""

    id: int
    prompt: Prompt
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class SFTExample:
    """One supervised trace: a prompt and the completion to imitate."""

    prompt: Prompt
    completion: str


@dataclass
class RewardOutput:
    """A reward's total score plus an optional named breakdown (logged, not summed)."""

    score: float
    parts: dict[str, float] = field(default_factory=dict)


@dataclass
class RolloutBatch:
    """Phase 1 output: N sampled completions laid out for training.

    Layout of every [N, L] tensor: the prompt, left-padded to `prompt_len` columns,
    then the completion, right-padded. `logprobs[n, t]` is the sampling log-prob of
    token `input_ids[n, t]`; it and `loss_mask` are 0 outside generated tokens. Tool
    output inserted by the runtime is in `input_ids` with `loss_mask` 0.
    """

    input_ids: torch.Tensor  # [N, L] long
    attention_mask: torch.Tensor  # [N, L] long
    loss_mask: torch.Tensor  # [N, L] float
    logprobs: torch.Tensor  # [N, L] float
    prompt_len: int
    completion_ids: list[list[int]]
    completions: list[str]
    example_index: torch.Tensor  # [N] long: row of the step's example list
    finished: torch.Tensor  # [N] bool: ended by EOS or a stop string, not by length
    context_embedding: torch.Tensor | None = None  # [N, H] mean prompt hidden state
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])

    def completion_lengths(self) -> torch.Tensor:  # [N] long
        return self.loss_mask.sum(dim=1).long()


@dataclass
class Experience:
    """What the grouping phase sees about the step's completions (all rows at once)."""

    prompt_ids: torch.Tensor  # [N] long: dataset id of each completion's prompt
    rewards: torch.Tensor  # [N] float: weighted total reward
    step: int
    fields: Sequence[dict[str, Any]] = ()  # example fields per completion
    embeddings: torch.Tensor | None = None  # [N, H]
    lengths: torch.Tensor | None = None  # [N] completion lengths
    prompts: Sequence[Prompt] = ()  # prompt per completion (text embedders, e.g. sentence-transformers)
    prompt_lengths: torch.Tensor | None = None  # [N] prompt tokens (a complexity estimate)
    rollout: RolloutBatch | None = None  # the rows themselves (a replay window keeps them)


@runtime_checkable
class RewardFn(Protocol):
    """Native form: fn(completion, **fields) -> float | RewardOutput | None.

    TRL form (detected by its parameter names): fn(prompts, completions, **columns)
    -> list[float | None]. None means "does not apply" and counts as 0.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...


class Grouper(Protocol):
    """Phase 2: experience -> group id per completion ([N] long), or a
    `grpokit.grouping.Groups` (several scales, weights, pooled earlier rows).

    Optional attributes the loop looks for: `needs_embeddings` (bool: ask the sampler
    for context embeddings; True when absent), `state_dict()` / `load_state_dict()`
    (saved in checkpoints), `plan_generations(prompt_ids, fields, step)` (completions
    per prompt for the coming step).
    """

    def __call__(self, exp: Experience) -> torch.Tensor: ...


class AdvantageFn(Protocol):
    """Phase 3: (rewards [N], group_ids [N]) -> advantages [N]."""

    def __call__(self, rewards: torch.Tensor, group_ids: torch.Tensor, **kwargs: Any) -> torch.Tensor: ...


class Tool(Protocol):
    name: str
    description: str

    def __call__(self, query: str) -> str: ...
