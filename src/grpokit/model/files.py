"""Where a model name points and whether the directory there is whole, checked before
transformers reads it (its own errors for these cases are tracebacks, a silently empty
tokenizer, or a minute of hub retries for a mistyped local path).

    path, note = locate_model("runs/rl")   # a run directory -> its final model (note says so)
    check_model_files(path)                # config.json, weights, tokenizer: one-line errors

Standard library only, so `grpokit validate` can use it without torch.
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

from grpokit.run_dir import is_model_dir, is_run, model_of_run

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt")


class ModelFileError(ValueError):
    """A model name or directory that cannot be loaded; the message names the file."""


def looks_local(name: str) -> bool:
    """Whether `name` is meant as a local path rather than a hub id (owner/name): it starts
    like a path, has more than one '/', or its first part is a local directory (runs/sftt
    when runs/ exists)."""
    if name.startswith(("/", "./", "../", "~", ".\\")) or "\\" in name or name.count("/") > 1:
        return True
    head = name.split("/", 1)[0]
    return "/" in name and Path(head).is_dir()


def locate_model(name: str, key: str = "model.name_or_path") -> tuple[str, str | None]:
    """(what to load, a line to print or None). A model directory is itself; a run
    directory stands for its final model or newest checkpoint; a hub id is returned as is.
    A local-looking name that does not exist raises at once (no hub retries)."""
    p = Path(name).expanduser()
    if p.is_dir():
        if is_model_dir(p):
            return str(p), None
        if is_run(p):
            path, note = model_of_run(p)
            return str(path), note
        raise ModelFileError(f"{key} = {name!r}: the directory has no config.json; expected a model directory "
                             "(config.json, weights, tokenizer files) or a grpokit run directory")
    if p.exists():
        raise ModelFileError(f"{key} = {name!r}: is a file; expected a model directory")
    if looks_local(name):
        parent = p.parent if str(p.parent) not in ("", ".") else Path(".")
        near = sorted(x.name for x in parent.iterdir() if x.is_dir()) if parent.is_dir() else []
        from difflib import get_close_matches

        close = get_close_matches(p.name, near, n=1, cutoff=0.6)
        hint = f" (did you mean {str(parent / close[0])!r}?)" if close else ""
        raise ModelFileError(f"{key} = {name!r}: no such directory{hint}")
    return name, None


def check_model_files(path: str | os.PathLike, tokenizer: str | os.PathLike | None = None) -> None:
    """A local model directory is complete: a readable config.json, weights that are not
    cut short, and tokenizer files (in `tokenizer` when given, else beside the model)."""
    d = Path(path)
    cfg = d / "config.json"
    if not cfg.is_file():
        raise ModelFileError(f"{d}: no config.json; expected a Hugging Face model directory")
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        where = f" (line {e.lineno}, column {e.colno}: {e.msg})" if isinstance(e, json.JSONDecodeError) else ""
        raise ModelFileError(f"{cfg}: not valid JSON{where}; expected the model's configuration") from None
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise ModelFileError(f"{cfg}: has no 'model_type'; expected the configuration transformers writes "
                             "(save_pretrained)")
    weights = [d / f for f in WEIGHT_FILES if (d / f).is_file()]
    if not weights and not any(d.glob("*.safetensors")):
        raise ModelFileError(f"{d}: no weights ({', '.join(WEIGHT_FILES[:2])}, ...); the directory holds only "
                             f"{', '.join(sorted(x.name for x in d.iterdir()))}")
    for f in sorted(d.glob("*.safetensors")):
        check_safetensors(f)
    check_tokenizer_files(tokenizer if tokenizer is not None else d)


def check_tokenizer_files(path: str | os.PathLike) -> None:
    d = Path(path)
    if not d.is_dir():
        raise ModelFileError(f"tokenizer {str(path)!r}: no such directory")
    if not any((d / f).is_file() for f in TOKENIZER_FILES):
        raise ModelFileError(f"{d}: no tokenizer files ({', '.join(TOKENIZER_FILES)}); copy them beside the "
                             "model or set model.tokenizer=DIR")


def check_safetensors(path: str | os.PathLike) -> None:
    """The file's header is readable and its tensors end within the file (a copy or save
    cut short fails here, not with a deserialising error deep in transformers)."""
    p = Path(path)
    size = p.stat().st_size
    with open(p, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ModelFileError(f"{p}: cut short ({size} bytes); expected a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise ModelFileError(f"{p}: cut short ({size} bytes, its header alone needs {n + 8}); "
                                 "save or copy the model again")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ModelFileError(f"{p}: unreadable safetensors header; the file is damaged") from None
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    need = 8 + n + max(ends, default=0)
    if need > size:
        raise ModelFileError(f"{p}: cut short ({size} bytes, its tensors need {need}); save or copy the model again")
