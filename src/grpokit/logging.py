"""Run logging: metrics.jsonl, samples.jsonl, events.jsonl, the console line, progress bars,
and the experiment trackers of `run.report_to` (grpokit.trackers), fed from the same lines.

Every file is JSON lines, one object per line, flushed after each write so that a crash
loses at most the line being written (a torn last line is cut off when the file is
reopened, and skipped by read_metrics).

This module shares its name with the standard library's `logging` and does not use it.
Other modules still get the stdlib one from `import logging` (imports are absolute); only
running a file from inside src/grpokit as a script would shadow it.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable

from tqdm import tqdm

METRICS = "metrics.jsonl"
SAMPLES = "samples.jsonl"
EVENTS = "events.jsonl"
DEFAULT_CONSOLE_KEYS = ("reward", "accuracy", "zero_std_groups", "kl", "len", "step_time")
# How a console key is shown: (label, format). Shares read better as percentages.
_CONSOLE_FORMS = {"zero_std_groups": ("flat groups", "{:.0%}")}
# Metrics are mostly float32 tensors: ~7 significant digits carry all the information,
# more is noise (0.30000001192092896).
_SIG_DIGITS = 7


class RunLogger:
    """Append-only JSONL logs of one run, plus a one-line console summary per step.

    resume=False starts the three files afresh. resume=True keeps them and, at the first
    step logged, drops metrics and samples lines of that step or later (they came from the
    crashed run after its last checkpoint), so every step appears once. resume=<int> drops
    lines with step >= that number at once. events.jsonl is never truncated on resume.
    enabled=False makes every method a no-op (non-main processes of a multi-process run).

    Every metrics line carries its wall-clock `time` (Unix seconds) and `elapsed` (seconds
    since the run started; a resumed run continues from its last line's). A caller that
    logs rows after the fact (SFT) passes its own `time` and `elapsed` in the metrics.
    trackers: objects of grpokit.trackers (log_metrics, log_samples, close) that receive
    every metrics line (numbers only) and every samples batch; one that fails is reported
    once on the console and dropped, so a tracker never stops a training run.
    """

    def __init__(self, run_dir: str | os.PathLike, *, console: bool = True, resume: bool | int = False,
                 console_keys: Iterable[str] = DEFAULT_CONSOLE_KEYS, total_steps: int | None = None,
                 enabled: bool = True, trackers: Iterable[Any] = ()):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.console = console and enabled
        self.console_keys = tuple(console_keys)
        self.total_steps = total_steps
        self.trackers = list(trackers) if enabled else []
        self._handles: dict[str, Any] = {}
        self._truncate_at_first_step = resume is True
        self._start = time.time()
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume is False:
            for name in (METRICS, SAMPLES, EVENTS):
                open(self.run_dir / name, "w", encoding="utf-8").close()
        else:
            self._start -= _last_elapsed(self.run_dir / METRICS)
            if resume is not True:
                self._truncate_from(int(resume))

    # -- writing

    def log_step(self, step: int, metrics: dict, *, console: bool | None = None) -> dict:
        """Write one metrics line {"step", "time", "elapsed", **metrics}, send it to the
        trackers, print the console line (unless console=False)."""
        if not self.enabled:
            return {}
        self._before_step(step)
        now = time.time()
        record = {"step": int(step), "time": round(float(metrics.get("time", now)), 3),
                  "elapsed": round(float(metrics.get("elapsed", now - self._start)), 3)}
        record.update({str(k): to_jsonable(v) for k, v in metrics.items() if k not in record})
        self._write(METRICS, record)
        numbers = {k: v for k, v in record.items() if k not in ("step", "time") and isinstance(v, (int, float))
                   and not isinstance(v, bool)}
        self._to_trackers("log_metrics", int(step), numbers)
        if self.console if console is None else (console and self.console):
            tqdm.write(self.format_line(record))
        return record

    def log_samples(self, step: int, rows: list[dict]) -> None:
        """Write one line per sample row, each tagged with "step"; send them to the trackers."""
        if not self.enabled:
            return
        self._before_step(step)
        lines = [{"step": int(step), **{str(k): to_jsonable(v) for k, v in row.items() if k != "step"}}
                 for row in rows]
        for line in lines:
            self._write(SAMPLES, line)
        self._to_trackers("log_samples", int(step), lines)

    def log_event(self, name: str, **data: Any) -> None:
        """Write a one-off event (start, resume, eval, checkpoint, ...) to events.jsonl."""
        if not self.enabled:
            return
        self._write(EVENTS, {"event": name, "time": round(time.time(), 3),
                             **{k: to_jsonable(v) for k, v in data.items()}})

    def format_line(self, record: dict) -> str:
        """'step 12/100 | reward 0.531 | kl 0.0012 | ...' from the console keys present."""
        shown = [k for k in self.console_keys if k in record]
        if not shown:  # none of the chosen keys is logged: show the first few instead
            shown = [k for k in record if k not in ("step", "time")][:6]
        total = f"/{self.total_steps}" if self.total_steps else ""
        parts = [f"step {record['step']}{total}"]
        for k in shown:
            label, form = _CONSOLE_FORMS.get(k, (k, None))
            v = record[k]
            text = form.format(v) if form and isinstance(v, (int, float)) else _fmt(v)
            parts.append(f"{label} {text}{'s' if k.endswith('time') else ''}")
        return " | ".join(parts)

    def close(self) -> None:
        for f in self._handles.values():
            f.close()
        self._handles.clear()
        self._to_trackers("close")
        self.trackers = []

    def __enter__(self) -> "RunLogger":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- internals

    def _to_trackers(self, method: str, *args: Any) -> None:
        for t in list(self.trackers):
            try:
                getattr(t, method)(*args)
            except Exception as e:  # noqa: BLE001 - a tracker's failure must not end the run
                self.trackers.remove(t)
                tqdm.write(f"tracker {type(t).__name__} failed and is switched off: {type(e).__name__}: {e}")

    def _before_step(self, step: int) -> None:
        if self._truncate_at_first_step:
            self._truncate_at_first_step = False
            self._truncate_from(int(step))

    def _truncate_from(self, step: int) -> None:
        """Rewrite metrics and samples keeping only lines with step < `step` (atomic replace)."""
        for name in (METRICS, SAMPLES):
            path = self.run_dir / name
            if name in self._handles:
                self._handles.pop(name).close()
            if not path.exists():
                continue
            kept = [r for r in read_jsonl(path) if not (isinstance(r.get("step"), int) and r["step"] >= step)]
            tmp = path.with_name(f".{name}.tmp-{os.getpid()}")
            with open(tmp, "w", encoding="utf-8") as f:
                for r in kept:
                    f.write(_dumps(r) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)

    def _write(self, name: str, record: dict) -> None:
        f = self._handles.get(name)
        if f is None:
            path = self.run_dir / name
            _cut_torn_tail(path)
            f = self._handles[name] = open(path, "a", encoding="utf-8")
        f.write(_dumps(record) + "\n")
        f.flush()  # survives a process crash; fsync per line would cost more than it buys


def progress(total: int | None, desc: str, enabled: bool = True, initial: int = 0, **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr with ETA that adapts to the terminal width; inert when disabled."""
    return tqdm(total=total, desc=desc, initial=initial, disable=not enabled, file=sys.stderr,
                dynamic_ncols=True, **kwargs)


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Rows of a metrics.jsonl file (or of `path/metrics.jsonl` when given a run directory)."""
    p = Path(path)
    return read_jsonl(p / METRICS if p.is_dir() else p)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Parse JSON lines; a torn last line (crash mid-write) is skipped, a bad middle line raises."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:  # no newline after it: the write never finished
                break
            raise ValueError(f"{path}:{i + 1}: not a JSON line ({e})") from None
    return rows


def to_jsonable(v: Any) -> Any:
    """Tensors/arrays -> numbers or lists, floats rounded, NaN and inf -> None."""
    if isinstance(v, bool) or v is None or isinstance(v, (int, str)):
        return v
    if isinstance(v, float):
        return _round(v)
    if hasattr(v, "numel") and callable(v.numel) and v.numel() == 1:
        return to_jsonable(v.item())  # one-element torch tensor
    if hasattr(v, "tolist"):
        return to_jsonable(v.tolist())  # numpy scalars and arrays, bigger tensors
    if isinstance(v, dict):
        return {str(k): to_jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [to_jsonable(x) for x in v]
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    return str(v)


def _round(x: float) -> float | None:
    if not math.isfinite(x):
        return None  # JSON has no NaN/Infinity; null is what readers understand
    if x.is_integer():
        return x  # counts and token totals stay exact
    return float(f"{x:.{_SIG_DIGITS}g}")


def _dumps(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, allow_nan=False, default=str)


def _fmt(v: Any) -> str:
    if v is None:
        return "nan"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _last_elapsed(path: Path) -> float:
    """`elapsed` of the last metrics line (0 when there is none): a resumed run goes on counting."""
    if not path.exists():
        return 0.0
    try:
        rows = read_jsonl(path)
    except ValueError:  # a damaged file: the resume itself reports it; the clock restarts
        return 0.0
    v = rows[-1].get("elapsed") if rows else None
    return float(v) if isinstance(v, (int, float)) else 0.0


def _cut_torn_tail(path: Path) -> None:
    """Drop a last line without newline, so the next record does not glue onto it."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return  # the usual case: no need to read the whole file
        f.seek(0)
        data = f.read()
        f.truncate(data.rfind(b"\n") + 1)  # rfind -1 -> truncate(0): the only line was torn
