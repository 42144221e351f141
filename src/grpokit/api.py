"""The Python API: `train`, `sft` and `evaluate` take the same settings as the commands
and check them the same way (`config.validation.validate`), before any model or data
loads. A setting is a keyword: a section as a mapping (`optim={"lr": 1e-4}`), a dotted
key spelt with `__` (`optim__lr=1e-4`), or one of the commands' flags (`model`, `data`,
`rewards`, `out`, `steps`, `seed`; `grouper` for `algorithm.grouping`). Values are
converted as in a recipe (`"1e-4"` is a number) and refused with the key's name when
they cannot be. A reward or a grouper may be a Python function.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from grpokit.config.io import ConfigError, from_dict, load_config, set_path, to_dict
from grpokit.config.schema import EvalConfig, SFTConfig, TrainConfig
from grpokit.config.validation import validate

# keyword -> dotted key, as the commands' flags (a section keyword given a mapping is
# the section itself)
FLAGS = {
    TrainConfig: {"model": "model.name_or_path", "data": "data.train", "reward": "rewards", "out": "run.out",
                  "steps": "run.steps", "seed": "run.seed", "resume": "run.resume", "grouper": "algorithm.grouping"},
    SFTConfig: {"model": "model.name_or_path", "out": "out", "steps": "steps", "seed": "seed"},
    EvalConfig: {"model": "model.name_or_path", "reward": "rewards", "seed": "seed"},
}


def make_config(cls: type, config: Any = None, settings: dict[str, Any] | None = None, *, where: str = "") -> Any:
    """A checked config of type `cls` from `config` (a config object, a mapping, a recipe
    file or built-in recipe name, or None for the defaults) and keyword `settings`; raises
    ConfigError listing every problem, as `grpokit validate` does."""
    where = where or f"grpokit.{_verb(cls)}() arguments"
    if config is None:
        raw: dict = {}
    elif isinstance(config, cls):
        raw = _plain(config)
    elif isinstance(config, dict):
        raw = dict(config)
    elif isinstance(config, (str, Path)):
        raw = _plain(load_config(cls, config))
    else:
        raise ConfigError(f"{where}: config must be a {cls.__name__}, a mapping, or a recipe path or name; "
                          f"got {type(config).__name__}")
    flags = FLAGS.get(cls, {})
    for name, value in (settings or {}).items():
        key = name.replace("__", ".")
        if key in flags and not isinstance(value, dict):
            key = flags[key]
        set_path(raw, key, value, cls, where=where)
    cfg = from_dict(cls, raw, where=where)
    problems = validate(cfg)
    if problems:
        raise ConfigError(f"{where} have problems:\n  - " + "\n  - ".join(problems))
    return cfg


def train(config: Any = None, /, *, hooks: Any = None, **settings: Any) -> Path:
    """GRPO as `grpokit train` runs it; returns the run directory (final model in
    run_dir/model). Example: `train(model="tiny:xs", rewards=[my_fn], steps=5)`."""
    cfg = make_config(TrainConfig, config, settings)
    from grpokit.train import train as run

    return run(cfg, hooks=hooks)


def sft(config: Any = None, /, **settings: Any) -> Path:
    """Supervised fine-tuning as `grpokit sft` runs it; returns the model directory."""
    cfg = make_config(SFTConfig, config, settings)
    from grpokit.sft import sft as run

    return run(cfg)


def evaluate(config: Any = None, /, **settings: Any):
    """`grpokit eval`: accuracy and rewards of a model on held-out prompts (an EvalResult)."""
    cfg = make_config(EvalConfig, config, settings)
    from grpokit.evaluate import evaluate as run

    return run(cfg)


def _plain(cfg: Any) -> dict:
    """A config object as a mapping, Python objects (reward functions) kept as they are."""
    import dataclasses

    return dataclasses.asdict(cfg)


def _verb(cls: type) -> str:
    return {TrainConfig: "train", SFTConfig: "sft", EvalConfig: "evaluate"}.get(cls, "config")


__all__ = ["evaluate", "make_config", "sft", "train", "to_dict"]
