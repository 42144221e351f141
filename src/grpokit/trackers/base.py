"""The tracker interface and registry: one adapter per experiment tracker.

Every entry of TRACKERS is a `TrackerEntry` whose `open(info)` returns a Tracker; the
run logger (grpokit.logging.RunLogger) hands each tracker every metrics line and every
step's sample completions, after writing them to metrics.jsonl and samples.jsonl
(which are always written, trackers or not).
"""
from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from grpokit.registry import Registry


@dataclass
class RunInfo:
    """What a tracker needs to open its run."""

    run_dir: Path  # the grpokit run directory; local stores are written under it
    name: str  # the run's name (the run directory's name)
    config: dict = field(default_factory=dict)  # the resolved config, nested
    resume: bool = False  # continuing a run: trackers that can, append to the same run
    start_step: int = 0  # the last step already done (the checkpoint's) when resuming


class Tracker(Protocol):
    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """One step's numeric metrics (no `step` key; NaN already dropped)."""

    def log_samples(self, step: int, rows: list[dict]) -> None:
        """One step's sample completions, one dict per completion (same keys in every row)."""

    def close(self) -> None:
        """Flush and end the run."""


@dataclass
class TrackerEntry:
    open: Callable[[RunInfo], Tracker]  # the adapter; imports its package only when called
    module: str  # the import that must succeed (checked by `grpokit validate`)
    extra: str  # the grpokit extra that installs it: pip install 'grpokit[EXTRA]'


TRACKERS: Registry[TrackerEntry] = Registry("tracker")


def missing_package(name: str) -> str | None:
    """One line telling how to install tracker `name`'s package, or None when it imports."""
    entry = TRACKERS.get(name)
    if importlib.util.find_spec(entry.module) is not None:
        return None
    return f"{name} needs the {entry.module!r} package: pip install 'grpokit[{entry.extra}]'"


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """{"run": {"steps": 5}} -> {"run.steps": 5}; lists and dicts inside lists as JSON text,
    so every value is a scalar a tracker's parameter table can show."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        elif isinstance(v, (list, tuple, dict)):
            out[key] = json.dumps(v, default=str)
        else:
            out[key] = v
    return out


def sample_columns(rows: list[dict]) -> list[str]:
    """The columns of a samples table: every key of any row, first-seen order, step first."""
    cols = ["step"]
    for r in rows:
        cols += [k for k in r if k not in cols]
    return cols


class GrowingTable:
    """A samples table that keeps every step's rows: trackers whose UI shows the latest table
    logged (W&B, trackio) log the whole table each time. Its columns are those of the first
    rows (`sample_columns`); later keys outside them are dropped."""

    def __init__(self) -> None:
        self.columns: list[str] | None = None
        self.rows: list[list] = []

    def add(self, step: int, rows: list[dict]) -> None:
        if self.columns is None:
            self.columns = sample_columns(rows)
        self.rows += [[r.get(c, step) if c == "step" else r.get(c) for c in self.columns] for r in rows]
