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


@dataclass
class GenerationOutput:
    """What a Sampler returns, one entry per prompt row, rows in order."""

    completion_ids: list[list[int]]  # per row, EOS included when sampled
    logprobs: list[list[float]]  # sampling log-prob of each completion token (after temperature/top-p)
    finished: list[bool]  # ended by EOS or a stop string (not by the token budget)
    stop_reason: list[str] = field(default_factory=list)  # "eos", "stop:<s>", "length"
    embeddings: torch.Tensor | None = None  # [N, H] mean last hidden state over the prompt, when asked
    forward_calls: int = 0


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    stop_strings: tuple[str, ...] = ()
    batch_size: int = 0  # rows at once (0 = all); a sampler may ignore it
    return_embeddings: bool = False


@runtime_checkable
class Sampler(Protocol):
    """Phase 1's engine: prompts in, completions out. Built once by build.py from the
    policy (model, tokenizer, eos ids and pad id are bound at construction), so the
    training loop and evaluation only say what to sample, never how."""

    def sample(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams, *,
               generator: torch.Generator | None = None,
               budgets: Sequence[int] | None = None) -> GenerationOutput:
        """budgets: per-row max new tokens overriding params.max_new_tokens (the
        multi-turn loop continues rows with what is left of theirs). generator: the
        trainer's torch generator; a sampler that cannot use it draws per-row integer
        seeds from it, so runs stay reproducible."""
        ...

    def sync_weights(self, model) -> None:
        """Called after every optimizer step and after resume; a no-op for samplers that
        read the live model."""
        ...


class TrainingPass(Protocol):
    """Phase 4's forward passes: per-token log-probs of the completion tokens of a
    rollout batch under a model. Built by build.py (plain torch, or the CPU engine where
    it applies), so update.py never chooses a kernel."""

    def policy_logprobs(self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        loss_mask: torch.Tensor, *, prompt_len: int, temperature: float,
                        with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """([B, L'] log-probs with grad, [B, L'] entropy or None) for one micro-batch
        ([B, L'] tensors on the model's device, prompt left-padded to prompt_len
        columns); 0 outside the loss mask. L' may be shorter than the batch width."""
        ...

    def reference_logprobs(self, model, batch: RolloutBatch, *, temperature: float,
                           micro_batch_size: int = 0) -> torch.Tensor:
        """[N, L] log-probs of every row of `batch` without grad (the reference model,
        replayed rows), on the model's device."""
        ...


@runtime_checkable
class RewardFn(Protocol):
    """Native form: fn(completion, **fields) -> float | RewardOutput | None.

    TRL form (detected by its parameter names): fn(prompts, completions, **columns)
    -> list[float | None]. None means "does not apply" and counts as 0.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...


class Grouper(Protocol):
    """Phase 2: experience -> `grpokit.grouping.Groups` (group ids of every row at one
    or several scales, weights, pooled earlier rows). `make_grouper` wraps a plain
    function that returns [N] long ids so that it returns Groups too.

    Optional attributes the loop looks for: `needs_embeddings` (bool: ask the sampler
    for context embeddings; True when absent), `state_dict()` / `load_state_dict()`
    (saved in checkpoints), `plan_generations(prompt_ids, fields, step)` (completions
    per prompt for the coming step).
    """

    def __call__(self, exp: Experience) -> Any: ...  # grpokit.grouping.Groups


class AdvantageFn(Protocol):
    """Phase 3: (rewards [N], group_ids [N]) -> advantages [N]."""

    def __call__(self, rewards: torch.Tensor, group_ids: torch.Tensor, **kwargs: Any) -> torch.Tensor: ...


class Tool(Protocol):
    name: str
    description: str

    def __call__(self, query: str) -> str: ...
