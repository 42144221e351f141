"""Rules for run directories: what a run directory holds, when `train --out DIR` may
write into one, what `--resume` may change, and which model a run directory stands for.

    run_dir/config.yaml         the run's settings
    run_dir/metrics.jsonl       one line per step (samples.jsonl: sample completions)
    run_dir/checkpoints/step-N/ resumable checkpoints (see checkpoint.py), COMPLETE last
    run_dir/model/              the final model, written when the run finishes

Runs are never lost: a directory that holds a run is written into only with `--resume`
(continue it) or `--overwrite` (move it aside to DIR.replaced-TIMESTAMP first; it is
moved, not deleted, so a mistyped --overwrite costs disk space, never a run). The rules
need no torch, so the CLI applies them before anything heavy is imported.
"""
from __future__ import annotations

import dataclasses
import os
import re
import time
from pathlib import Path
from typing import Any, Iterable

CHECKPOINTS = "checkpoints"
COMPLETE = "COMPLETE"
CONFIG_FILE = "config.yaml"
MODEL_DIR = "model"
_STEP_DIR = re.compile(r"^step-(\d+)$")

# Keys `--resume` may change: how long the run goes on and how it saves, logs and shows
# itself, and memory/placement knobs that compute the same update. Anything else would
# make the resumed steps a different run than the one checkpointed.
RESUME_SAFE = {
    "run.steps", "run.save_every", "run.save_minutes", "run.keep_checkpoints", "run.eval_every",
    "run.log_samples", "run.progress", "run.threads", "run.release_memory", "run.resume", "run.overwrite",
    "run.out", "model.device", "rollout.batch_size", "optim.micro_batch_size",
}


class RunDirError(ValueError):
    """A run directory that cannot be used as asked; the message says what to do instead."""


# --------------------------------------------------------------------------- what a directory holds


def complete_checkpoints(run: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, directory) of the run's complete checkpoints, oldest first."""
    root = Path(run) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / COMPLETE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def is_run(path: str | os.PathLike) -> bool:
    """Whether `path` is a directory holding (part of) a grpokit training run: its metrics,
    checkpoints, a final model grpokit wrote, or a train config.yaml (a run stopped before
    its first step). A user's folder that merely has a `model/` is not one."""
    p = Path(path)
    if not p.is_dir():
        return False
    if (p / "metrics.jsonl").is_file() or (p / CHECKPOINTS).is_dir() or (p / MODEL_DIR / COMPLETE).is_file():
        return True
    import yaml

    try:
        data = yaml.safe_load((p / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):  # missing or not YAML: not a run's config
        return False
    return isinstance(data, dict) and {"rollout", "run"} <= set(data)


def is_model_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / "config.json").is_file()


def describe(path: str | os.PathLike) -> str:
    """'a finished run (step 30)', 'an interrupted run (checkpoint at step 12)', ..."""
    p = Path(path)
    ckpts = complete_checkpoints(p)
    if (p / MODEL_DIR / COMPLETE).is_file() or (p / MODEL_DIR / "config.json").is_file():
        return f"a finished run{f' (step {ckpts[-1][0]})' if ckpts else ''}"
    if ckpts:
        return f"an interrupted run (newest checkpoint: step {ckpts[-1][0]})"
    return "an interrupted run with no checkpoint"


# --------------------------------------------------------------------------- train --out


def prepare_out(out: str | os.PathLike, *, resume: bool, overwrite: bool = False) -> str | None:
    """Check (and create) the run directory before any work; returns a line to print or None.

    Refuses, with the way out in the message: a path that is a file, a directory that
    cannot be created, a directory holding a run without resume/overwrite, a non-empty
    directory that is not a run. overwrite moves an existing run aside (never deletes).
    """
    p = Path(out).expanduser()
    if p.exists() and not p.is_dir():
        raise RunDirError(f"run.out = {str(out)!r}: is a file; expected a directory for the run "
                          "(a new or empty one, or a run to --resume)")
    note = None
    if resume and not p.exists():
        return None  # nothing to create: the resume check says there is no run
    if p.is_dir() and any(p.iterdir()) and not resume:
        if not is_run(p):
            raise RunDirError(f"run.out = {str(out)!r}: holds files that are not a grpokit run "
                              f"({_some(p.iterdir())}); choose a new or empty directory")
        if not overwrite:
            raise RunDirError(f"{out} already holds {describe(p)}; continue it with --resume, choose a new "
                              "--out, or replace it with --overwrite (the old run is moved aside)")
        aside = p.with_name(f"{p.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
        n = 1
        while aside.exists():
            n += 1
            aside = p.with_name(f"{p.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}-{n}")
        os.replace(p, aside)
        note = f"--overwrite: moved the old run to {aside}"
    try:
        p.mkdir(parents=True, exist_ok=True)
        _probe_write(p)
    except OSError as e:
        raise RunDirError(f"run.out = {str(out)!r}: cannot write there ({e.strerror or e}); "
                          "choose a directory you can write to") from None
    return note


def check_model_out(out: str | os.PathLike, key: str = "out") -> None:
    """An output model directory (sft --out): not a file, writable, and new, empty or a
    model written by grpokit (which is replaced)."""
    p = Path(out).expanduser()
    if p.exists() and not p.is_dir():
        raise RunDirError(f"{key} = {str(out)!r}: is a file; expected a directory for the model")
    if p.is_dir() and any(p.iterdir()) and not (p / COMPLETE).is_file():
        raise RunDirError(f"{key} = {str(out)!r}: holds files that grpokit did not write "
                          f"({_some(p.iterdir())}); choose a new or empty directory")
    parent = p if p.is_dir() else _existing_ancestor(p)
    try:
        _probe_write(parent)
    except OSError as e:
        raise RunDirError(f"{key} = {str(out)!r}: cannot write in {parent} ({e.strerror or e}); "
                          "choose a directory you can write to") from None


def _probe_write(directory: Path) -> None:
    """OSError unless a file can be created (and removed) in `directory`: permissions and
    read-only mounts show here, before a run has done any work."""
    probe = directory / f".write-test-{os.getpid()}"
    probe.write_bytes(b"")
    probe.unlink()


def _existing_ancestor(p: Path) -> Path:
    p = p.absolute()
    while not p.exists():
        p = p.parent
    return p


def _some(paths: Iterable[Path], k: int = 3) -> str:
    names = sorted(x.name for x in paths)
    return ", ".join(names[:k]) + (f", ... ({len(names)} entries)" if len(names) > k else "")


# --------------------------------------------------------------------------- resume


def saved_config_path(run: str | os.PathLike) -> Path | None:
    """The settings the run's newest checkpoint was trained with (else the run's config.yaml)."""
    ckpts = complete_checkpoints(run)
    for path in ([ckpts[-1][1] / CONFIG_FILE] if ckpts else []) + [Path(run) / CONFIG_FILE]:
        if path.is_file():
            return path
    return None


def flatten(cfg_or_dict: Any, cls: type) -> dict[str, Any]:
    """{dotted key: value} of a config (or a raw, possibly partial, nested mapping) of `cls`;
    lists and free-form mappings (reward kwargs) are single values."""
    from grpokit.config.io import dotted_keys

    data = dataclasses.asdict(cfg_or_dict) if dataclasses.is_dataclass(cfg_or_dict) else cfg_or_dict
    leaves = set(dotted_keys(cls))
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        for k, v in node.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if key in leaves or not isinstance(v, dict):
                out[key] = v
            else:
                walk(v, key)

    walk(data or {}, "")
    return out


def resume_config(cls: type, run: str | os.PathLike, given: dict[str, Any]) -> Any:
    """The run's saved config with the settings the user gave on resume ({dotted key:
    value}) applied on top; `check_resume` then decides which of those may change."""
    from grpokit.config.io import from_dict, read_yaml, set_path

    path = saved_config_path(run)
    if path is None:
        raise RunDirError(f"--resume: {run} holds no saved config ({CONFIG_FILE}); is it a grpokit run directory?")
    raw = read_yaml(path)
    for key, value in given.items():
        set_path(raw, key, value, cls, where="the command line")
    cfg = from_dict(cls, raw, where=str(path))
    cfg.run.resume = True
    cfg.run.out = str(run)
    # How the run was started (say, with --overwrite) is not a setting it continues with.
    cfg.run.overwrite = bool(given.get("run.overwrite", False))
    return cfg


def check_resume(saved: Any, cfg: Any, step: int) -> list[str]:
    """Changes from the saved config `saved` to `cfg` allowed on resume at checkpoint `step`,
    as "key: old -> new"; an unsafe change raises RunDirError naming the key."""
    from grpokit.config.io import show

    before, after = flatten(saved, type(cfg)), flatten(cfg, type(cfg))
    changed = [k for k in after if k in before and before[k] != after[k]]
    unsafe = [k for k in changed if k not in RESUME_SAFE]
    if unsafe:
        k = unsafe[0]
        more = f" (and {', '.join(unsafe[1:])})" if len(unsafe) > 1 else ""
        raise RunDirError(f"--resume: {k} = {show(after[k])} differs from the run's {show(before[k])}{more}; "
                          "it cannot change in the middle of a run. Drop it to resume as saved, or start a new "
                          "run with --out NEW_DIR")
    if "run.steps" in changed:
        if after["run.steps"] <= step:
            raise RunDirError(f"--resume: run.steps = {after['run.steps']} but the run is already at step {step}; "
                              f"give more than {step} steps")
        if after.get("optim.schedule", "constant") != "constant":
            raise RunDirError(f"--resume: run.steps cannot change with optim.schedule = "
                              f"{show(after['optim.schedule'])} (the schedule's length is run.steps); "
                              "start a new run to train longer")
    quiet = {"run.resume", "run.overwrite", "run.out"}
    return [f"{k} {show(before[k])} -> {show(after[k])}" for k in changed if k not in quiet]


# --------------------------------------------------------------------------- run dir as a model


def model_of_run(path: str | os.PathLike) -> tuple[Path, str]:
    """The model a run directory stands for: its final model, else its newest checkpoint.
    Returns (model directory, a line saying which); RunDirError when it has neither."""
    p = Path(path)
    final = p / MODEL_DIR
    if is_model_dir(final):
        return final, f"{path} is a run directory; using its final model {final}"
    ckpts = complete_checkpoints(p)
    if ckpts:
        step, ckpt = ckpts[-1]
        if not is_model_dir(ckpt):
            raise RunDirError(f"{path} is a run directory without a final model, and its newest checkpoint "
                              f"({ckpt}) holds a LoRA adapter only; finish the run (--resume) to get {final}")
        return ckpt, f"{path} is a run directory without a final model; using its newest checkpoint (step {step})"
    raise RunDirError(f"{path} is a run directory with neither a final model ({final}) nor a checkpoint; "
                      "nothing to load")
