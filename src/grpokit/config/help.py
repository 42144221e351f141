"""The `--help` listing of a config class: every dotted key with its type, default,
choices and help text, from the dataclass fields' metadata."""
from __future__ import annotations

import dataclasses
import textwrap
from typing import Any

from grpokit.config.schema import RewardSpec
from grpokit.config.io import base_type, is_dataclass_type, join_key, list_item_type, show, type_hints, type_name

_MISSING = object()


def config_help(cls: type, *, width: int = 92) -> str:
    """Every dotted key of `cls` with its type, default, choices and help text."""
    lines: list[str] = []
    _help_lines(cls, "", lines, width, depth=0)
    return "\n".join(lines)


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return _MISSING


def _show_default(value: Any) -> str:
    if value is _MISSING:
        return "required"
    if isinstance(value, list) and value and all(isinstance(v, RewardSpec) for v in value):
        return "[" + ", ".join(v.name if v.weight == 1.0 and not v.kwargs else f"{v.name}@{v.weight:g}"
                               for v in value) + "]"
    if isinstance(value, str):
        return value if value else '""'
    return show(value)


def _help_lines(cls: type, prefix: str, lines: list[str], width: int, depth: int) -> None:
    hints = type_hints(cls)
    after_section = False
    for f in dataclasses.fields(cls):
        key = join_key(prefix, f.name)
        tp = hints[f.name]
        base = base_type(tp)
        help_text = f.metadata.get("help", "")
        if is_dataclass_type(base):
            if depth == 0 and lines:
                lines.append("")
            indent = "  " * depth
            lines.append(f"{indent}{key}: {help_text}" if help_text else f"{indent}{key}:")
            _help_lines(base, key, lines, width, depth + 1)
            after_section = depth == 0
            continue
        if after_section:
            lines.append("")
            after_section = False
        indent = "  " * max(depth, 1)
        lines.append(f"{indent}{key}  ({type_name(tp, f)}, default: {_show_default(_default_of(f))})")
        body_indent = indent + "    "
        texts = [help_text] if help_text else []
        choices = f.metadata.get("choices") or ()
        if choices:
            texts.append("choices: " + ", ".join(map(str, choices)))
        if base is list and list_item_type(f, tp) is RewardSpec:
            texts.append("forms: [accuracy, format@0.2] | {accuracy: 1.0, format: 0.2} | "
                         "[{name: accuracy, weight: 1.0, kwargs: {}}]")
            for sub in dataclasses.fields(RewardSpec):
                texts.append(f"{key}[].{sub.name}: {sub.metadata.get('help', '')}")
        for text in texts:
            lines.extend(textwrap.wrap(text, width=width, initial_indent=body_indent,
                                       subsequent_indent=body_indent + "  ") or [body_indent])
