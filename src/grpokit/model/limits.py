"""Prompt + completion must fit the model's positions: checked once when data and model
are loaded, because past `max_position_embeddings` a model runs on silently (rotary
positions it never saw) or fails deep inside attention."""
from __future__ import annotations

from typing import Any, Sequence

from grpokit.model.policy import encode_prompts


def max_positions(model: Any) -> int | None:
    """The model's position range (config.max_position_embeddings), None when it has none."""
    n = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return int(n) if isinstance(n, int) and n > 0 else None


def check_prompt_lengths(model: Any, tokenizer: Any, examples: Sequence[Any], *, max_prompt_tokens: int,
                         max_new_tokens: int, source: str, system_prompt: str | None = None,
                         new_tokens_key: str = "rollout.max_new_tokens") -> None:
    """ValueError naming the row when its prompt (left-truncated to max_prompt_tokens; 0 =
    not truncated) plus max_new_tokens would run past the model's positions."""
    n = max_positions(model)
    if n is None or not examples or (max_prompt_tokens and max_prompt_tokens + max_new_tokens <= n):
        return  # nothing can overflow: no need to tokenize every prompt
    ids = encode_prompts(tokenizer, [e.prompt for e in examples], max_tokens=max_prompt_tokens,
                         system_prompt=system_prompt)
    i = max(range(len(ids)), key=lambda k: len(ids[k]))
    length = len(ids[i])
    if length + max_new_tokens <= n:
        return
    cut = f" (after data.max_prompt_tokens = {max_prompt_tokens})" if max_prompt_tokens else ""
    fix = (f"lower data.max_prompt_tokens to {n - max_new_tokens} (prompts are left-truncated) or {new_tokens_key}"
           if n > max_new_tokens else f"lower {new_tokens_key} below {n}")
    raise ValueError(f"{source} row {examples[i].id + 1}: the prompt is {length} tokens{cut}; with {new_tokens_key} "
                     f"= {max_new_tokens} it needs {length + max_new_tokens} positions, but the model has {n} "
                     f"(max_position_embeddings); {fix}")
