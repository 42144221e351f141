"""GSM8K grade-school math (Cobbe et al. 2021), read from local JSONL files.

Each row is {"question": ..., "answer": ...}; the answer is a rationale with calculator
annotations ("48/2 = <<48/2=24>>24 clips") ending in a final line "#### 72". We keep:
  prompt  = the question, as plain text (a format instruction, if the model needs one,
            belongs in the recipe's `data.system_prompt`; the cold-start traces teach it)
  answer  = the final answer with thousands commas removed ("1,080" -> "1080")
  solution = the rationale without the final line, annotations kept
  steps   = the annotations as equations, in order ("48/2=24", "48+24=72")

Files: $GRPOKIT_GSM8K_DIR/{train,test}.jsonl, else the first `shared/data/gsm8k` found in
the working directory or one of its parents. `gsm8k:PATH` in a data spec reads one file.
"""
from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grpokit.tasks.base import TASKS
from grpokit.tasks.jsonl import read_jsonl
from grpokit.types import Example, SFTExample

ENV_VAR = "GRPOKIT_GSM8K_DIR"
SPLITS = ("train", "test")
_ANNOTATION = re.compile(r"<<([^<>]*)>>")


def parse_gsm8k_row(row: Any, id: int = 0) -> Example:  # noqa: A002 - matches Example.id
    """One GSM8K row -> Example(prompt=question, fields={answer, solution, steps})."""
    if not isinstance(row, dict):
        raise ValueError(f"expected a GSM8K row {{'question': str, 'answer': str}}, got {type(row).__name__}")
    for key in ("question", "answer"):
        if not isinstance(row.get(key), str) or not row[key].strip():
            raise ValueError(f"GSM8K row has no {key!r} string (fields: {', '.join(row) or 'none'})")
    solution, marker, final = row["answer"].rpartition("####")
    if not marker or not final.strip():
        raise ValueError(f"GSM8K answer does not end in '#### <final answer>': {row['answer'][-80:]!r}")
    fields = {k: v for k, v in row.items() if k not in ("question", "answer")}  # keep extra columns
    fields.update(answer=final.strip().replace(",", ""), solution=solution.strip(),
                  steps=[s.replace(" ", "") for s in _ANNOTATION.findall(solution)])
    return Example(id=id, prompt=row["question"].strip(), fields=fields)


def trace(example: Example) -> SFTExample:
    """The cold-start target: `<think>{solution}</think><answer>{answer}</answer>`."""
    return SFTExample(prompt=example.prompt,
                      completion=f"<think>{example.fields['solution']}</think><answer>{example.fields['answer']}</answer>")


def load_gsm8k(path: str | Path) -> list[Example]:
    """Every row of a GSM8K JSONL file; errors name file:line."""

    out = []
    for line_no, row in read_jsonl(path):
        try:
            out.append(parse_gsm8k_row(row, id=len(out)))
        except ValueError as e:
            raise ValueError(f"{path}:{line_no}: {e}") from None
    if not out:
        raise ValueError(f"{path}: no GSM8K rows")
    return out


def find_data_dir() -> Path:
    """$GRPOKIT_GSM8K_DIR, else `shared/data/gsm8k` in the working directory or a parent."""
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"{ENV_VAR}={env!r} is not a directory (expected one holding train.jsonl "
                                    "and test.jsonl)")
        return path
    here = Path.cwd().resolve()
    for parent in (here, *here.parents):
        candidate = parent / "shared" / "data" / "gsm8k"
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"GSM8K data not found: set {ENV_VAR} to a directory holding train.jsonl and "
                            f"test.jsonl, or run from below a directory with shared/data/gsm8k (searched from {here})")


@TASKS.register("gsm8k", doc="grade-school math word problems (GSM8K, local JSONL), with annotated steps")
@dataclass
class GSM8KTask:
    name: str = "gsm8k"
    data_dir: str | None = None  # None: find_data_dir()

    @property
    def default_rewards(self) -> list[tuple[str, float]]:
        return [("accuracy", 1.0), ("format", 0.2), ("reasoning_steps", 0.2)]

    def _split(self, split: str) -> list[Example]:
        if split not in SPLITS:
            raise ValueError(f"gsm8k task has splits {', '.join(map(repr, SPLITS))}, not {split!r}")
        root = Path(self.data_dir).expanduser() if self.data_dir else find_data_dir()
        path = root / f"{split}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"GSM8K {split} split not found: {path} does not exist")
        return load_gsm8k(path)

    def prompts(self, split: str, n: int | None = None, seed: int = 0) -> list[Example]:
        """The first n rows of the split in file order (n=None or 0: all of it). The seed is
        unused: a fixed prefix keeps evaluation comparable across runs, and training
        shuffles prompts itself."""
        rows = self._split(split)
        return rows[:n] if n else rows

    def traces(self, n: int | None = None, seed: int = 0) -> list[SFTExample]:
        """n traces (None or 0: all) from the train split, a seeded random choice, so that
        different seeds see different subsets when n is small."""
        rows = self._split("train")
        random.Random(seed).shuffle(rows)
        return [trace(e) for e in (rows[:n] if n else rows)]
