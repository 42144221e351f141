"""grpokit: GRPO training for causal language models.

The public API, importable from here (loaded on first use, so `import grpokit` stays
cheap): `train`, `sft`, `evaluate` (the commands, as functions; settings are checked as
`grpokit validate` checks a recipe), `TrainConfig`, `load_config`, the registries
(`REWARDS`, `GROUPERS`, `ADVANTAGES`, `LOSSES`, `TOOLS`, `TASKS`), `RewardOutput`, and the
sampler interface (`Sampler`, `SamplingParams`). Everything else is an implementation
detail.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "train": "grpokit.api",
    "sft": "grpokit.api",
    "evaluate": "grpokit.api",
    "TrainConfig": "grpokit.config.schema",
    "load_config": "grpokit.config.io",
    "REWARDS": "grpokit.rewards",
    "GROUPERS": "grpokit.grouping",
    "ADVANTAGES": "grpokit.algo.advantages",
    "LOSSES": "grpokit.algo.losses",
    "TOOLS": "grpokit.tools",
    "TASKS": "grpokit.tasks",
    "RewardOutput": "grpokit.types",
    "Sampler": "grpokit.types",
    "SamplingParams": "grpokit.types",
}

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'grpokit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__


class _Package(types.ModuleType):
    """`train`, `sft` and `evaluate` are both functions of the API and modules of the
    package (grpokit/train.py, ...). Importing such a module sets the package attribute
    of its name; here that attribute stays the function (the module is still
    `sys.modules["grpokit.train"]`, which `from grpokit.train import x` uses)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("train", "sft", "evaluate") and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
