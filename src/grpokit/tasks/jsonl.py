"""Reading JSONL files with errors that name file:line (data files, GSM8K)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator


def read_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for each non-blank line; malformed JSON raises
    ValueError naming file:line."""
    # Read bytes and decode line by line, so a bad byte is reported with its line
    # instead of as a UnicodeDecodeError at some offset of some buffer.
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{line_no}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column "
                                 f"{e.start + 1}); expected UTF-8 JSON lines (re-save the file as UTF-8)") from None
            if line_no == 1:
                line = line.removeprefix("\ufeff")  # a byte-order mark some editors write
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{line_no}: malformed JSON ({e.msg} at column {e.colno}); "
                                 "expected one JSON object per line") from None
