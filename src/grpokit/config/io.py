"""Recipes in and out: YAML -> typed config dataclasses and `key.sub=value` overrides;
semantic checks live in `validation.py`, the `--help` listing in `help.py`.

    cfg = load_config(TrainConfig, "recipe.yaml", ["algorithm.beta=0.04", "run.steps=50"])
    problems = validate(cfg)          # [] when the config makes sense

Every error names the offending key, what was expected, and the valid alternatives.
This module imports no torch; semantic checks are in validation.py.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, Iterable, TypeVar, Union

import yaml

from grpokit.config.schema import EvalConfig, RewardSpec, SFTConfig, TrainConfig

C = TypeVar("C")

# Top-level `kind:` a recipe may declare; `load_config` checks it against the class.
KINDS: dict[str, type] = {"train": TrainConfig, "sft": SFTConfig, "eval": EvalConfig}
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".txt", ".tsv", ".arrow")


class ConfigError(ValueError):
    """A recipe or override that cannot become a config; the message says which key and why."""


# --------------------------------------------------------------------------- schema


def type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """Optional[X] -> (X, True); anything else -> (tp, False)."""
    origin = typing.get_origin(tp)
    if origin is Union or (hasattr(types, "UnionType") and origin is getattr(types, "UnionType")):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def list_item_type(f: dataclasses.Field, tp: Any) -> Any:
    """Element type of a list field: from `list[X]`, from `item` in the field's metadata,
    from the default's elements (`[RewardSpec()]`), or RewardSpec for a field named
    `rewards`. None = elements unchecked."""
    args = typing.get_args(tp)
    if args:
        return args[0]
    if f.metadata.get("item") is not None:
        return f.metadata["item"]
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        default = f.default_factory()  # type: ignore[misc]
        kinds = {type(x) for x in default} if isinstance(default, list) else set()
        if len(kinds) == 1 and is_dataclass_type(next(iter(kinds))):
            return next(iter(kinds))
    if f.name == "rewards":
        return RewardSpec
    return None


def base_type(tp: Any) -> Any:
    """The runtime class for a type hint: list[int] -> list, Optional[str] -> str."""
    tp, _ = _unwrap_optional(tp)
    return typing.get_origin(tp) or tp


def type_name(tp: Any, f: dataclasses.Field | None = None) -> str:
    inner, optional = _unwrap_optional(tp)
    base = typing.get_origin(inner) or inner
    if base is list and f is not None and list_item_type(f, inner) is RewardSpec:
        name = "list of rewards"
    elif base is list:
        item = typing.get_args(inner)
        name = f"list of {type_name(item[0])}" if item else "list"
    elif is_dataclass_type(base):
        name = "section"
    else:
        name = getattr(base, "__name__", str(base))
    return f"{name} | null" if optional else name


def join_key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _in(where: str) -> str:
    return f" in {where}" if where else ""


def suggest(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown_key(key: str, prefix: str, cls: type, where: str, root: type | None = None) -> ConfigError:
    valid = list(_fields(cls))
    under = f"under {prefix!r}" if prefix else "at the top level"
    name = key.rsplit(".", 1)[-1]
    hint = suggest(name, valid)
    if not hint and root is not None:  # `steps=3` -> did you mean 'run.steps'?
        same_leaf = [k for k in dotted_keys(root) if k.rsplit(".", 1)[-1] == name.replace("-", "_")]
        hint = f" (did you mean {' or '.join(map(repr, same_leaf))}?)" if same_leaf else ""
    return ConfigError(f"unknown key {key!r}{_in(where)}; valid keys {under}: {', '.join(valid)}" + hint)


def dotted_keys(cls: type, prefix: str = "") -> list[str]:
    """Every settable dotted key of a config class (sections expanded)."""
    out = []
    hints = type_hints(cls)
    for f in dataclasses.fields(cls):
        key = join_key(prefix, f.name)
        base = base_type(hints[f.name])
        out.extend(dotted_keys(base, key) if is_dataclass_type(base) else [key])
    return out


def show(value: Any) -> str:
    """A value as the user would have typed it in YAML."""
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, float):
        return repr(value)
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


# --------------------------------------------------------------------------- from_dict


def from_dict(cls: type[C], data: dict, *, where: str = "", prefix: str = "", _root: type | None = None) -> C:
    """Build the dataclass `cls` (and its nested sections) from a plain mapping.

    Missing keys take their defaults; unknown keys, wrong types and values outside a
    field's `choices` raise ConfigError naming the dotted key and the valid options.
    `where` names the source (a file, an override) in messages.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        what = f"{prefix!r}" if prefix else "the config"
        raise ConfigError(f"{what}{_in(where)} must be a mapping of keys, got {show(data)}")
    fields = _fields(cls)
    hints = type_hints(cls)
    kwargs: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key)
        if key not in fields and key.replace("-", "_") in fields:
            key = key.replace("-", "_")
        if key not in fields:
            raise _unknown_key(join_key(prefix, key), prefix, cls, where, _root or cls)
        kwargs[key] = _convert(value, hints[key], fields[key], join_key(prefix, key), where)
    return cls(**kwargs)


def _type_error(key: str, expected: str, value: Any, where: str, hint: str = "") -> ConfigError:
    return ConfigError(
        f"{key!r}{_in(where)} expects {expected}, got {show(value)} ({type(value).__name__})" + hint
    )


def _convert(value: Any, tp: Any, f: dataclasses.Field | None, key: str, where: str) -> Any:
    inner, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise _type_error(key, _expected(inner, f), value, where, "; this key cannot be null")
    out = _convert_plain(value, inner, f, key, where)
    choices = tuple(f.metadata.get("choices") or ()) if f is not None else ()
    if choices and out not in choices:
        raise ConfigError(
            f"invalid value {show(out)} for {key!r}{_in(where)}; valid choices: "
            f"{', '.join(map(str, choices))}" + suggest(str(out), map(str, choices))
        )
    return out


def _convert_plain(value: Any, tp: Any, f: dataclasses.Field | None, key: str, where: str) -> Any:
    base = typing.get_origin(tp) or tp
    if is_dataclass_type(base):
        if isinstance(value, base):
            return value
        if not isinstance(value, dict):
            raise _type_error(key, f"a section (mapping of {', '.join(_fields(base))})", value, where)
        return from_dict(base, value, where=where, prefix=key)
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
            return _BOOL_WORDS[value.strip().lower()]
        raise _type_error(key, "a boolean (true/false)", value, where)
    if base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                try:
                    number = float(value.strip())
                except ValueError:
                    number = math.nan
                if number.is_integer():
                    return int(number)
        raise _type_error(key, "an integer", value, where)
    if base is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())  # YAML reads 1e-5 (no dot) as a string
            except ValueError:
                pass
        raise _type_error(key, "a number", value, where)
    if base is str:
        if isinstance(value, str):
            return value
        if callable(value) and f is not None and f.metadata.get("python_object"):
            return value  # the Python API's reward or grouper object
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        hint = "; quote it if you mean the text" if isinstance(value, bool) else ""
        raise _type_error(key, "a string", value, where, hint)
    if base is list:
        item = list_item_type(f, tp) if f is not None else (typing.get_args(tp) or [None])[0]
        if item is RewardSpec:
            return _reward_specs(value, key, where)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise _type_error(key, f"{type_name(tp, f)} (e.g. [a, b])", value, where)
        if item is None:
            return list(value)
        return [_convert(v, item, None, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if base is dict:
        if not isinstance(value, dict):
            raise _type_error(key, "a mapping (e.g. {name: value})", value, where)
        return dict(value)
    if base is Any or base is object:
        return value
    if isinstance(base, type) and not isinstance(value, base):
        raise _type_error(key, type_name(tp, f), value, where)
    return value


def _expected(tp: Any, f: dataclasses.Field | None) -> str:
    base = typing.get_origin(tp) or tp
    words = {bool: "a boolean (true/false)", int: "an integer", float: "a number", str: "a string",
             dict: "a mapping (e.g. {name: value})"}
    if base in words:
        return words[base]
    if is_dataclass_type(base):
        return f"a section (mapping of {', '.join(_fields(base))})"
    return type_name(tp, f)


_BOOL_WORDS = {"true": True, "yes": True, "on": True, "1": True,
               "false": False, "no": False, "off": False, "0": False}


def parse_reward(text: str) -> tuple[str, float | None]:
    """`NAME` or `NAME@WEIGHT` -> (name, weight or None). NAME may be module:function."""
    name, sep, weight = text.rpartition("@")
    if sep and name:
        try:
            return name.strip(), float(weight)
        except ValueError:
            pass
    return text.strip(), None


def _reward_specs(value: Any, key: str, where: str) -> list[RewardSpec]:
    """Rewards in any of the accepted forms:

    - a list of mappings:  [{name: accuracy, weight: 1.0, kwargs: {...}}, ...]
    - a list of names:     [accuracy, format@0.2, my_pkg.rewards:fn]
    - a mapping:           {accuracy: 1.0, format: 0.2}  (or name: {weight, kwargs})
    - a single name:       accuracy
    """
    form = ("a list of rewards: [accuracy, format@0.2], {accuracy: 1.0, format: 0.2} "
            "or [{name: accuracy, weight: 1.0, kwargs: {}}]")
    if isinstance(value, str):
        value = [value]
    if isinstance(value, dict):
        items = []
        for name, spec in value.items():
            if isinstance(spec, dict):
                items.append({"name": name, **spec})
            elif spec is None:
                items.append({"name": name})
            else:
                items.append({"name": name, "weight": spec})
        value = items
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list):
        raise _type_error(key, form, value, where)
    out = []
    for i, item in enumerate(value):
        if isinstance(item, RewardSpec):
            item = dataclasses.asdict(item)
        elif callable(item):  # the Python API: a reward function itself
            item = {"name": item}
        if isinstance(item, str):
            name, weight = parse_reward(item)
            item = {"name": name} if weight is None else {"name": name, "weight": weight}
        if not isinstance(item, dict):
            raise _type_error(f"{key}[{i}]", "a reward name or {name, weight, kwargs}", item, where)
        out.append(from_dict(RewardSpec, item, where=where, prefix=f"{key}[{i}]"))
    return out


# --------------------------------------------------------------------------- to_dict / YAML


def to_dict(cfg: Any) -> dict:
    """A plain, YAML-dumpable dict of a config (nested sections become mappings). A
    Python object given through the API (a reward or grouper function) is written as
    module:qualname, which names it (and loads it again when it is module-level)."""
    return _named(dataclasses.asdict(cfg))


def _named(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _named(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_named(v) for v in value]
    if callable(value):
        return f"{getattr(value, '__module__', '?')}:{getattr(value, '__qualname__', type(value).__name__)}"
    return value


def dump_yaml(cfg: Any, path: str | Path | None = None) -> str:
    """The config as YAML text; also written to `path` when given."""
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None, width=100)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
    return text


# --------------------------------------------------------------------------- overrides


def parse_value(text: str) -> Any:
    """An override value read as YAML (1e-5, true, [1, 2], null); plain text if it isn't."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def set_path(data: dict, key: str, value: Any, cls: type, *, where: str = "", raw: str | None = None) -> None:
    """Set dotted `key` in the raw mapping `data`, checking the key against `cls` and
    the value against the field's type (so errors name the override, not the file).
    `raw`: the override's text, kept as is for a text field (`system_prompt=Be brief: ok`)."""
    parts = [p for p in key.split(".")]
    if not key or any(not p for p in parts):
        raise ConfigError(f"bad key {key!r}{_in(where)}; keys look like run.steps or algorithm.beta")
    node: dict = data
    owner: type | None = cls
    prefix = ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if owner is None:  # inside a free-form dict field (e.g. rewards kwargs): any key
            if last:
                node[part] = value
                return
            node = _child(node, part)
            prefix = join_key(prefix, part)
            continue
        fields = _fields(owner)
        if part not in fields and part.replace("-", "_") in fields:
            part = part.replace("-", "_")
        if part not in fields:
            raise _unknown_key(join_key(prefix, part), prefix, owner, where, cls)
        f = fields[part]
        tp = type_hints(owner)[part]
        path = join_key(prefix, part)
        if last:
            if raw is not None and base_type(tp) is str and value is not None and not isinstance(value, str):
                value = raw.strip()
            _convert(value, tp, f, path, where)  # type check now; from_dict redoes it
            node[part] = value
            return
        base = base_type(tp)
        if is_dataclass_type(base):
            owner = base
        elif base is dict:
            owner = None
        elif base is list and list_item_type(f, tp) is RewardSpec:
            raise ConfigError(
                f"{path!r}{_in(where)} is a list; set it whole, e.g. {path}=[accuracy, format@0.2] "
                f"or {path}={{accuracy: 1.0, format: 0.2}}"
            )
        else:
            raise ConfigError(f"{path!r}{_in(where)} is a single value ({type_name(tp, f)}); it has no sub-key "
                              f"{'.'.join(parts[i + 1:])!r}")
        node = _child(node, part)
        prefix = path


def _child(node: dict, part: str) -> dict:
    child = node.get(part)
    if not isinstance(child, dict):
        child = {}
        node[part] = child
    return child


def apply_overrides(data: dict, overrides: Iterable[str], cls: type) -> dict:
    """Apply `a.b.c=value` overrides to the raw mapping `data` (in place; also returned).
    Values are read as YAML, so 1e-5, true, null and [1, 2] mean what they look like."""
    for token in overrides:
        if "=" not in token:
            raise ConfigError(
                f"expected an override of the form key=value, got {token!r}; "
                f"for example run.steps=50 or algorithm.beta=0.04 (keys: see --help)"
            )
        key, _, text = token.partition("=")
        key = key.strip()
        if key.startswith("--"):
            key = key[2:]
        set_path(data, key, parse_value(text), cls, where=f"override {token!r}", raw=text)
    return data


# --------------------------------------------------------------------------- loading


def builtin_recipes() -> dict[str, Path]:
    """Recipes shipped in grpokit/recipes, by name (file stem)."""
    folder = Path(__file__).parents[1] / "recipes"
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def resolve_recipe(path: str | Path) -> Path:
    """An existing file, or the name of a built-in recipe (`arithmetic`)."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    builtin = builtin_recipes()
    name = p.name[: -len(p.suffix)] if p.suffix in (".yaml", ".yml") else p.name
    if str(path) in builtin or (len(p.parts) == 1 and name in builtin):
        return builtin[name]
    if p.is_dir():
        raise ConfigError(f"config file {str(path)!r} is a directory, not a YAML recipe")
    raise ConfigError(
        f"config file {str(path)!r} does not exist; built-in recipes: {', '.join(builtin) or 'none'}"
        + suggest(name, builtin)
    )


def read_yaml(path: str | Path) -> dict:
    """A recipe file as a mapping (an empty file is {}); syntax errors name file and line."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config file {str(path)!r}: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or str(e)
        context = getattr(e, "context", None)
        detail = f"{problem} ({context})" if context else problem
        raise ConfigError(f"{where}: YAML syntax error: {detail}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: a recipe must be a mapping of keys (e.g. 'run:\\n  steps: 10'), "
            f"got a {type(data).__name__}"
        )
    return data


def recipe_kind(data: dict, default: str = "train") -> str:
    """The recipe's declared `kind:` (train, sft, eval), or `default`."""
    kind = data.get("kind", default)
    if kind not in KINDS:
        raise ConfigError(f"invalid value {show(kind)} for 'kind'; valid choices: {', '.join(KINDS)}"
                          + suggest(str(kind), KINDS))
    return kind


def load_config(cls: type[C], path: str | Path | None = None, overrides: Iterable[str] = (),
                *, data: dict | None = None) -> C:
    """Defaults <- the YAML recipe at `path` (a file or built-in name) <- `data`
    (already-parsed settings, e.g. from command-line flags) <- `overrides`."""
    raw: dict = {}
    where = ""
    if path is not None:
        resolved = resolve_recipe(path)
        where = str(path) if Path(path).expanduser().is_file() else f"{resolved.name} (built-in recipe)"
        raw = read_yaml(resolved)
        if "kind" in raw:
            kind = recipe_kind(raw)
            if KINDS[kind] is not cls:
                expected = next(k for k, c in KINDS.items() if c is cls)
                raise ConfigError(f"{where} is a {kind!r} recipe (kind: {kind}), not a {expected!r} one")
            raw = {k: v for k, v in raw.items() if k != "kind"}
        raw = from_dict_check(cls, raw, where)
    for key, value in (data or {}).items():
        set_path(raw, key, value, cls, where="command-line flags")
    apply_overrides(raw, overrides, cls)
    return from_dict(cls, raw, where=where)


def from_dict_check(cls: type, raw: dict, where: str) -> dict:
    """Check `raw` (from a file) builds, so its errors name the file; return it unchanged."""
    from_dict(cls, raw, where=where)
    return raw
