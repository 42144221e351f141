"""RewardSet: weighted reward functions applied to a batch of completions.

total_i = sum_r weight_r * score_r(completion_i)

Two calling conventions, detected once from the function's signature:
  native  fn(completion, **keywords) -> float | bool | RewardOutput | None, per sample;
          keywords are the example's columns, `prompt`, `completion_ids` and the
          recipe kwargs, each passed only if fn declares it (all of them with **kwargs).
  TRL     fn(prompts, completions, **columns) -> list[float | None], once per batch
          (the first two parameters are named `prompts` and `completions`, as for
          TRL's GRPOTrainer); columns arrive as lists, conversational prompts get
          completions as [{"role": "assistant", "content": text}] like TRL does.
None means "does not apply": it scores 0 and is counted in `not_applicable`.
"""
from __future__ import annotations

import inspect
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from grpokit.rewards.base import REWARDS
from grpokit.types import RewardOutput


class RewardError(Exception):
    """A reward function failed or returned something unusable; the message names the
    function, the sample and what was wrong."""


@dataclass
class RewardScores:
    """Scores of one batch. Every tensor is [N] float32, in completion order."""

    total: torch.Tensor  # [N] sum of weight * score
    per_reward: dict[str, torch.Tensor]  # name -> [N] unweighted score (None -> 0)
    parts: dict[str, torch.Tensor]  # "name/part" -> [N] breakdown (missing -> 0)
    not_applicable: dict[str, int]  # name -> how many samples returned None


def not_applicable_total(parts: Sequence[RewardScores]) -> dict[str, int]:
    """The not-applicable counts of several scored batches, added up per reward."""
    keys = dict.fromkeys(k for p in parts for k in p.not_applicable)
    return {k: sum(p.not_applicable.get(k, 0) for p in parts) for k in keys}


def concat_scores(parts: Sequence[RewardScores]) -> RewardScores:
    """The scores of consecutive row chunks as one, rows in order; a breakdown key that
    only some chunks produced is 0 on the others' rows."""
    def cat(name: str) -> dict[str, torch.Tensor]:
        keys = dict.fromkeys(k for p in parts for k in getattr(p, name))
        return {k: torch.cat([getattr(p, name).get(k, torch.zeros(len(p.total))) for p in parts]) for k in keys}

    return RewardScores(total=torch.cat([p.total for p in parts]), per_reward=cat("per_reward"), parts=cat("parts"),
                        not_applicable=not_applicable_total(parts))


@dataclass
class _Entry:
    name: str
    fn: Callable
    weight: float
    kwargs: dict[str, Any]
    trl: bool
    accepts: frozenset[str] | None  # keyword names it takes; None = it has **kwargs
    first: str | None  # name of the positional parameter the completion binds to


class RewardSet:
    """Weighted reward functions, built from (spec, weight[, kwargs]) items.

    spec: a registered name ("accuracy"), "package.module:function",
    "path/to/file.py:function", or a callable. Also accepted: a bare spec (weight 1),
    (spec, weight), objects with `name`, `weight`, `kwargs` (config.RewardSpec) and dicts
    with those keys.
    """

    def __init__(self, specs: Sequence[Any]):
        entries = []
        for k, item in enumerate(specs):
            spec, weight, kwargs = _unpack(item, k)
            fn = REWARDS.resolve(spec) if isinstance(spec, str) else spec
            label = spec if isinstance(spec, str) else _callable_name(spec)
            if not callable(fn):
                raise TypeError(f"reward {label!r} is {type(fn).__name__}, not a function")
            entries.append(_entry(fn, _display_name(spec, fn), weight, kwargs))
        if not entries:
            raise ValueError("RewardSet needs at least one reward function")
        taken: set[str] = set()
        for e in entries:  # "accuracy", "accuracy_2", ...
            stem, k = e.name, 1
            while e.name in taken:
                k += 1
                e.name = f"{stem}_{k}"
            taken.add(e.name)
        self._entries = entries

    @property
    def names(self) -> list[str]:
        """Display names, in order; a repeated function gets a suffix (accuracy_2)."""
        return [e.name for e in self._entries]

    @property
    def weights(self) -> dict[str, float]:
        return {e.name: e.weight for e in self._entries}

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return "RewardSet(" + ", ".join(f"{e.name}*{e.weight:g}" for e in self._entries) + ")"

    def check_examples(self, examples: Sequence[Any], source: str) -> None:
        """Check that every example has the columns the rewards read, of a type they can
        read (rewards declare them: `reward(name, fields=...)`); ValueError names the
        first bad row of `source`. Done when data is loaded, so that a column no reward
        can read fails before training instead of scoring 0 all run."""
        for e in self._entries:
            for column, (accepts, expected) in getattr(e.fn, "reward_fields", {}).items():
                for ex in examples:
                    value = ex.fields.get(column)
                    if column not in ex.fields or value is None:
                        raise ValueError(f"{source} row {ex.id + 1}: no {column!r} field (the row has: "
                                         f"{', '.join(sorted(ex.fields)) or 'none'}); the {e.name} reward needs "
                                         f"{column!r}: {expected}")
                    if not accepts(value):
                        text = repr(value)
                        text = text if len(text) <= 60 else text[:60] + "..."
                        raise ValueError(f"{source} row {ex.id + 1}: field {column!r} is a {type(value).__name__} "
                                         f"{text}; the {e.name} reward expects {expected}")

    def score(self, prompts: Sequence[Any], completions: Sequence[str], fields: Sequence[dict],
              completion_ids: Sequence[Sequence[int]] | None = None) -> RewardScores:
        """Score N completions; prompts[i] and fields[i] belong to completions[i]."""
        n = len(completions)
        if len(prompts) != n or len(fields) != n or (completion_ids is not None and len(completion_ids) != n):
            ids = "" if completion_ids is None else f", {len(completion_ids)} completion_ids"
            raise ValueError(f"RewardSet.score: got {len(prompts)} prompts, {n} completions, "
                             f"{len(fields)} field dicts{ids}; expected one of each per completion")
        base = []
        for i in range(n):  # the keywords every native reward may draw from, built once
            kw = dict(fields[i])
            kw["prompt"] = prompts[i]
            if completion_ids is not None:
                kw["completion_ids"] = completion_ids[i]
            base.append(kw)
        per_reward, parts, not_applicable = {}, {}, {}
        total = torch.zeros(n)
        for e in self._entries:
            if e.trl:
                values = self._call_trl(e, prompts, completions, fields, completion_ids)
            else:
                values = [self._call_native(e, completions[i], base[i], i) for i in range(n)]
            scores, missing = [], 0
            for i, value in enumerate(values):
                score, sample_parts = _convert(value, e, i, completions[i])
                if score is None:
                    missing += 1
                    score = 0.0
                scores.append(score)
                for key, v in (sample_parts or {}).items():
                    parts.setdefault(f"{e.name}/{key}", [0.0] * n)[i] = v
            per_reward[e.name] = torch.tensor(scores, dtype=torch.float32)  # [N]
            not_applicable[e.name] = missing
            total += e.weight * per_reward[e.name]  # [N]
        return RewardScores(total=total, per_reward=per_reward,
                            parts={k: torch.tensor(v, dtype=torch.float32) for k, v in parts.items()},
                            not_applicable=not_applicable)

    @staticmethod
    def _call_native(e: _Entry, completion: str, base: dict, i: int) -> Any:
        if e.accepts is None:
            kw = {**base, **e.kwargs} if e.kwargs else base
        else:
            kw = {k: base[k] for k in e.accepts if k in base}
            kw.update(e.kwargs)
        if e.first in kw:  # a column named like the completion parameter must not clash
            kw = {k: v for k, v in kw.items() if k != e.first}
        try:
            return e.fn(completion, **kw)
        except Exception as exc:
            raise RewardError(f"reward {e.name!r} raised {type(exc).__name__}: {exc} "
                              f"(sample {i}, completion {_excerpt(completion)})") from exc

    @staticmethod
    def _call_trl(e: _Entry, prompts: Sequence[Any], completions: Sequence[str], fields: Sequence[dict],
                  completion_ids: Sequence[Sequence[int]] | None) -> list:
        n = len(completions)
        columns: dict[str, list] = {}
        for i, row in enumerate(fields):
            for key, value in row.items():
                columns.setdefault(key, [None] * n)[i] = value
        kw: dict[str, Any] = {k: v for k, v in columns.items() if k not in ("prompts", "completions")}
        if completion_ids is not None:
            kw["completion_ids"] = [list(c) for c in completion_ids]
        kw.update(e.kwargs)
        if e.accepts is not None:
            kw = {k: v for k, v in kw.items() if k in e.accepts}
        chat = n > 0 and isinstance(prompts[0], list)
        shown = [[{"role": "assistant", "content": c}] for c in completions] if chat else list(completions)
        try:
            values = e.fn(prompts=list(prompts), completions=shown, **kw)
        except Exception as exc:
            first = f", first completion {_excerpt(completions[0])}" if n else ""
            raise RewardError(f"reward {e.name!r} (TRL-style, called once for the batch of {n}) raised "
                              f"{type(exc).__name__}: {exc}{first}") from exc
        if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__len__"):
            raise RewardError(f"reward {e.name!r} (TRL-style) returned {type(values).__name__}; "
                              f"expected a list of {n} floats (None where it does not apply)")
        if len(values) != n:
            raise RewardError(f"reward {e.name!r} (TRL-style) returned {len(values)} values for {n} "
                              "completions; expected one per completion")
        return list(values)


def _unpack(item: Any, k: int) -> tuple[Any, float, dict]:
    if isinstance(item, dict):  # a recipe entry {"name": ..., "weight": ..., "kwargs": ...}
        unknown = sorted(set(item) - {"name", "weight", "kwargs"})
        if "name" not in item or unknown:
            raise ValueError(f"reward {k}: expected keys name, weight, kwargs; got {', '.join(map(str, item))}")
        spec, weight, kwargs = item["name"], item.get("weight", 1.0), item.get("kwargs") or {}
    elif hasattr(item, "name") and hasattr(item, "weight") and not callable(item):
        spec, weight, kwargs = item.name, item.weight, getattr(item, "kwargs", None) or {}
    elif isinstance(item, (tuple, list)) and 1 <= len(item) <= 3:
        spec, weight, kwargs = item[0], item[1] if len(item) > 1 else 1.0, item[2] if len(item) > 2 else {}
    elif isinstance(item, str) or callable(item):
        spec, weight, kwargs = item, 1.0, {}
    else:
        raise TypeError(f"reward {k}: expected (spec, weight, kwargs), a name or a callable, got {item!r}")
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not math.isfinite(weight):
        raise ValueError(f"reward {k} ({spec!r}): weight must be a finite number, got {weight!r}")
    if not isinstance(kwargs, dict):
        raise TypeError(f"reward {k} ({spec!r}): kwargs must be a dict, got {type(kwargs).__name__}")
    return spec, float(weight), dict(kwargs)


def _entry(fn: Callable, name: str, weight: float, kwargs: dict) -> _Entry:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # some builtins have no signature: pass everything
        return _Entry(name, fn, weight, kwargs, trl=False, accepts=None, first=None)
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    trl = [p.name for p in positional[:2]] == ["prompts", "completions"]
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
    first = None if trl or not positional else positional[0].name
    if not trl and not positional and not any(p.kind is p.VAR_POSITIONAL for p in params):
        raise TypeError(f"reward {name!r} takes no positional parameter for the completion text; "
                        "expected fn(completion, **fields) or fn(prompts, completions, **columns)")
    named = frozenset(p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))
    # A catch-all spelled `**_` only swallows example columns, so recipe kwargs must still
    # be named parameters: a typo ("max_len") fails here instead of being ignored.
    strict = not var_kw or any(p.kind is p.VAR_KEYWORD and p.name == "_" for p in params)
    unknown = sorted(set(kwargs) - named) if strict else []
    if unknown:
        raise TypeError(f"reward {name!r} got kwargs it does not accept: {', '.join(unknown)}; "
                        f"it accepts: {', '.join(sorted(named - {first, 'prompt', 'completion_ids'})) or 'none'}")
    accepts = None if var_kw else named
    return _Entry(name, fn, weight, kwargs, trl=trl, accepts=accepts, first=first)


def _convert(value: Any, e: _Entry, i: int, completion: str) -> tuple[float | None, dict | None]:
    """A reward's return value -> (score or None, parts or None), or RewardError."""
    parts = None
    if value is None:
        return None, None
    if isinstance(value, RewardOutput):
        parts = {}
        for key, v in value.parts.items():
            parts[key] = _number(v, e, i, completion, what=f"part {key!r}")
        value = value.score
    return _number(value, e, i, completion, what="score"), parts


def _number(value: Any, e: _Entry, i: int, completion: str, *, what: str) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if not isinstance(value, numbers.Real):
        raise RewardError(f"reward {e.name!r} returned a {type(value).__name__} ({value!r:.40}) as its {what} "
                          f"for sample {i}; expected a float, int, bool, RewardOutput or None "
                          f"(completion {_excerpt(completion)})")
    out = float(value)
    if not math.isfinite(out):
        raise RewardError(f"reward {e.name!r} returned {out} as its {what} for sample {i}; "
                          f"expected a finite number (completion {_excerpt(completion)})")
    return out


def _excerpt(text: Any, limit: int = 80) -> str:
    text = str(text)
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _callable_name(fn: Any) -> str:
    inner = getattr(fn, "func", fn)  # functools.partial
    return getattr(inner, "__name__", None) or type(inner).__name__


def _display_name(spec: Any, fn: Any) -> str:
    if isinstance(spec, str):
        return spec.rpartition(":")[2] if ":" in spec else spec
    return _callable_name(fn)
