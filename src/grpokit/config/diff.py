"""What a config changes from the defaults, as `key: value  (default: ...)` lines.

`grpokit validate` prints this instead of the whole resolved config (`--full` prints
everything), so a recipe's choices are visible at a glance.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from grpokit.config.io import show


def changed(cfg: Any, defaults: Any = None, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, value, default) for every leaf of `cfg` that differs from a fresh
    instance of its class; lists are compared whole (rewards, tools, stop strings)."""
    if defaults is None:
        defaults = type(cfg)()
    out = []
    for f in dataclasses.fields(cfg):
        value, default = getattr(cfg, f.name), getattr(defaults, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out += changed(value, default, key + ".")
        elif _plain(value) != _plain(default):
            out.append((key, value, default))
    return out


def format_changes(cfg: Any) -> str:
    """One line per changed key, aligned; a note when nothing differs."""
    rows = changed(cfg)
    if not rows:
        return "(every setting is at its default)"
    width = max(len(k) for k, _, _ in rows)
    return "\n".join(f"{k:<{width}}  {show(_plain(v))}  (default: {show(_plain(d))})" for k, v, d in rows)


def _plain(v: Any) -> Any:
    """Dataclasses inside lists (RewardSpec) become dicts so lists compare and print as YAML would."""
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return dataclasses.asdict(v)
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v
