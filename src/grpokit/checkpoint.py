"""Atomic checkpoints and exact resume.

A run directory holds its checkpoints like this:

    run_dir/checkpoints/step-000123/    one checkpoint, itself a loadable model directory
        model.safetensors, config.json   (a peft model: adapter_model.safetensors,
                                          adapter_config.json, and base_model.json)
        tokenizer files
        trainer_state.pt                 optimizer, scheduler, step, RNG states, `extra`
        config.yaml                      the run's configuration
        COMPLETE                         written last; a directory without it is ignored

Why atomic: a crash (OOM kill, pre-emption, Ctrl-C) in the middle of a save must leave the
previous checkpoint usable, and resume must never pick a half-written one. Everything is
written into a hidden temp directory next to the final one (same filesystem, so the rename
is atomic), fsynced, marked COMPLETE, and only then renamed into place.

Only the main process should call these functions in a multi-process run; the RNG states
saved are that process's.
"""
from __future__ import annotations

import copy
import dataclasses
import enum
import json
import os
import random
import re
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml

from grpokit.run_dir import CHECKPOINTS, COMPLETE, CONFIG_FILE, complete_checkpoints  # the run layout has one home: run_dir.py

STATE_FILE = "trainer_state.pt"
BASE_MODEL_FILE = "base_model.json"
STATE_FORMAT = 1

# Hidden work directories: .tmp- (being written), .old- (being replaced), .del- (being pruned).
_WORK_DIR = re.compile(r"^\.(tmp|old|del)-(.+)-(\d+)$")


# ----------------------------------------------------------------------------- public API


def save_checkpoint(run_dir: str | os.PathLike, step: int, *, model: Any, tokenizer: Any,
                    optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
                    config: dict | None = None, extra: dict | None = None, keep: int = 2,
                    model_state: dict | None = None, optimizer_state: dict | None = None) -> Path:
    """Write `run_dir/checkpoints/step-{step:06d}/` atomically, then prune old checkpoints.

    `extra` is pickled as is (e.g. a torch.Generator state, a data-sampler position).
    `keep` counts the new checkpoint; `keep <= 0` keeps all. Saving a step that already
    exists replaces it. Returns the checkpoint directory. model_state / optimizer_state:
    whole tensors gathered from a sharded model (grpokit.sharding), written instead of
    the model's and the optimizer's own state dicts.
    """
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    _clean_stale_work_dirs(root)
    final = root / f"step-{int(step):06d}"

    def write(tmp: Path) -> None:
        _save_model_files(tmp, model, tokenizer, model_state)
        optim = optimizer_state if optimizer_state is not None or optimizer is None else optimizer.state_dict()
        state = {
            "format": STATE_FORMAT,
            "step": int(step),
            "optimizer": optim,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": rng_state(),
            "extra": dict(extra or {}),
        }
        torch.save(state, tmp / STATE_FILE)
        _write_config(tmp, config)

    _atomic_dir(final, write, marker={"step": int(step)})
    _prune(root, keep, newest=final)
    return final


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The complete checkpoint with the highest step, or None. Temp and unmarked dirs are ignored."""
    ckpts = complete_checkpoints(run_dir)
    return ckpts[-1][1] if ckpts else None


def load_trainer_state(ckpt_dir: str | os.PathLike, *, optimizer: torch.optim.Optimizer | None = None,
                       scheduler: Any = None, restore_rng: bool = True,
                       load_optimizer: Callable[[dict], None] | None = None) -> dict:
    """Restore optimizer, scheduler and RNG states from a checkpoint; return the saved dict.
    load_optimizer(state): how the optimizer takes its saved state (a sharded model's
    optimizer: grpokit.sharding); optimizer.load_state_dict by default.

    Returns {"format", "step", "extra"}. Model weights are not touched: load them with
    from_pretrained(ckpt_dir).
    """
    path = Path(ckpt_dir) / STATE_FILE
    # weights_only=False: the file holds Python's `random` state, NumPy's RNG state (a tuple
    # with an ndarray) and `extra` (any picklable object); the weights-only unpickler rejects
    # those. Unpickling can run code, so load only checkpoints you wrote or trust.
    # map_location="cpu": RNG states must be CPU tensors, and optimizer.load_state_dict moves
    # each state tensor to its parameter's device itself, so no GPU memory is spent twice.
    state = torch.load(path, map_location="cpu", weights_only=False)
    if optimizer is not None:
        if state.get("optimizer") is None:
            raise ValueError(f"{path} holds no optimizer state (saved without an optimizer)")
        (load_optimizer or optimizer.load_state_dict)(state["optimizer"])
    if scheduler is not None:
        if state.get("scheduler") is None:
            raise ValueError(f"{path} holds no scheduler state (saved without a scheduler)")
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng:
        set_rng_state(state["rng"])
    return {k: state[k] for k in ("format", "step", "extra")}


def save_model(out_dir: str | os.PathLike, model: Any, tokenizer: Any, config: dict | None = None,
               *, merge_inplace: bool = False) -> Path:
    """Atomically write a final model directory that from_pretrained(out_dir) loads plainly.

    An existing `out_dir` is replaced only once the new one is complete, and only if it was
    written by save_model (or is empty): a directory holding anything else (a run's logs,
    say) is refused before any work, so nothing of the user's is deleted.

    A peft model is saved MERGED (LoRA folded into the base weights), so `--model out_dir`
    needs no peft. Merging happens on a deep copy, which costs one extra copy of the model
    weights (not of the optimizer state) on the model's device; pass merge_inplace=True when
    the model is not used afterwards (end of training) to merge in place and skip the copy —
    the passed model is then unusable.
    """
    out = Path(out_dir)
    _check_replaceable(out)  # before the merge, which may take long and need memory
    model = _unwrap(model)
    note = None
    if _is_peft(model):
        note = {**_peft_note(model), "merged": True}
        model = (model if merge_inplace else copy.deepcopy(model)).merge_and_unload()

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)  # transformers 5 always writes safetensors
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        _write_config(tmp, config)
        if note is not None:
            (tmp / BASE_MODEL_FILE).write_text(json.dumps(note, indent=2) + "\n")

    out.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale_work_dirs(out.parent, only_name=out.name)
    _atomic_dir(out, write, marker={"model": True})
    return out


# ----------------------------------------------------------------------------- atomic dirs


def _atomic_dir(final: Path, write: Callable[[Path], None], marker: dict) -> None:
    """Run write(tmp) in a hidden sibling temp dir, fsync, mark COMPLETE, rename onto `final`."""
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        write(tmp)
        # The marker goes last: whatever sees it knows every other file was written.
        (tmp / COMPLETE).write_text(json.dumps({**marker, "time": round(time.time(), 3)}) + "\n")
        _fsync_tree(tmp)
        _move_into_place(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _move_into_place(tmp: Path, final: Path) -> None:
    # A directory cannot be renamed onto a non-empty one, so an existing `final` is first
    # moved aside; a crash between the two renames leaves it as .old-*, restored at the next
    # save (see _clean_stale_work_dirs).
    old = None
    if final.exists():
        old = final.parent / f".old-{final.name}-{os.getpid()}"
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        if old is not None:
            os.replace(old, final)
        raise
    _fsync_dir(final.parent)  # make the rename itself durable
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _check_replaceable(out: Path) -> None:
    if out.is_file():
        raise FileExistsError(f"{out} is a file; save_model needs a directory path")
    if out.is_dir() and any(out.iterdir()) and not (out / COMPLETE).is_file():
        raise FileExistsError(
            f"{out} exists and was not written by save_model; refusing to replace it. "
            "Choose a new or empty directory (e.g. a `model` subdirectory of the run).")


def _prune(root: Path, keep: int, newest: Path) -> None:
    # The checkpoint just written always survives, even if a stale higher step exists.
    if keep <= 0:
        return
    others = [p for _, p in complete_checkpoints(root.parent) if p != newest]  # root: RUN/checkpoints
    for p in others[:max(0, len(others) - (keep - 1))]:
        _remove_dir(p)


def _remove_dir(path: Path) -> None:
    # Rename first: a crash during rmtree then leaves a hidden .del-* dir, never a
    # half-deleted step-* dir that still carries its COMPLETE marker.
    doomed = path.parent / f".del-{path.name}-{os.getpid()}"
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def _clean_stale_work_dirs(parent: Path, only_name: str | None = None) -> None:
    """Remove work dirs left by a crashed process; put back a replaced dir it had moved aside."""
    if not parent.is_dir():
        return
    for p in parent.iterdir():
        m = _WORK_DIR.match(p.name)
        if not m or not p.is_dir() or (only_name is not None and m.group(2) != only_name):
            continue
        kind, name, pid = m.group(1), m.group(2), int(m.group(3))
        if _pid_alive(pid):
            continue
        target = parent / name
        if kind == "old" and not target.exists() and (p / COMPLETE).is_file():
            os.replace(p, target)  # crash between the two renames of _move_into_place
        else:
            shutil.rmtree(p, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    # Our own pid counts as dead: saves are not concurrent within a process, so a work dir
    # with our pid is left from an earlier process that had the same pid (common in
    # containers, where the trainer is often pid 1 again after a restart).
    if pid == os.getpid():
        return False
    if os.name == "nt":
        return True  # os.kill(pid, 0) sends CTRL_C_EVENT on Windows; be conservative
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    if os.name == "nt":
        return  # Windows cannot open a directory for fsync
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems (network mounts) refuse fsync on directories
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- model files


def _unwrap(model: Any) -> Any:
    """Strip DistributedDataParallel / DataParallel and torch.compile wrappers."""
    while True:
        if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):
            model = model._orig_mod
        else:
            return model


def _is_peft(model: Any) -> bool:
    # No import of peft: if it was never imported, the model cannot be a PeftModel.
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def _peft_note(model: Any) -> dict:
    name = model.active_adapter
    cfg = model.peft_config[name]
    return {
        "adapter": name,
        "peft_type": str(getattr(cfg.peft_type, "value", cfg.peft_type)),
        # None for a freshly created base (e.g. `tiny`): the adapter alone cannot rebuild it.
        "base_model_name_or_path": cfg.base_model_name_or_path,
    }


def _save_model_files(directory: Path, model: Any, tokenizer: Any, state_dict: dict | None = None) -> None:
    model = _unwrap(model)
    if _is_peft(model):
        # Only the adapter is saved; base_model.json says what it sits on.
        model.save_pretrained(directory, safe_serialization=True, state_dict=state_dict)
        note = {**_peft_note(model), "merged": False}
        (directory / BASE_MODEL_FILE).write_text(json.dumps(note, indent=2) + "\n")
    else:
        model.save_pretrained(directory, state_dict=state_dict)  # transformers 5 always writes safetensors
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)


def _write_config(directory: Path, config: Any) -> None:
    if config is None:
        return
    with open(directory / CONFIG_FILE, "w", encoding="utf-8") as f:
        yaml.safe_dump(_plain(config), f, sort_keys=False, allow_unicode=True)


def _plain(x: Any) -> Any:
    """Config -> YAML-safe builtins (dataclasses, paths, tuples, enums and scalars included)."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return _plain(dataclasses.asdict(x))
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set)):
        return [_plain(v) for v in x]
    if isinstance(x, enum.Enum):
        return _plain(x.value)
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    if hasattr(x, "item") and getattr(x, "ndim", 1) == 0:
        return x.item()  # numpy / torch scalars
    return str(x)


# ----------------------------------------------------------------------------- RNG


def rng_state() -> dict:
    """This process's Python, NumPy, torch (and CUDA) random states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            warnings.warn(f"checkpoint has CUDA RNG states for {len(cuda)} devices, this process "
                          f"sees {torch.cuda.device_count()}; CUDA RNG not restored", stacklevel=3)
