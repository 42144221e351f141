"""Multi-step arithmetic reasoning, the built-in demo task.

Prompt: `Compute 37+48-12.`  Target: `<think>37+48=85 85-12=73</think><answer>73</answer>`.
Evaluated left to right; intermediate results stay within [0, max_value] so every step
is a small, checkable equation. Train and test problems never overlap.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from grpokit.tasks.base import TASKS
from grpokit.types import Example, SFTExample

_APPLY = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
TEST_SEED = 1_000_003  # a stream of its own; train problems are filtered against it
TEST_POOL = 2000


@dataclass
class Problem:
    question: str
    steps: list[str]
    answer: int

    @property
    def trace(self) -> str:
        return f"<think>{' '.join(self.steps)}</think><answer>{self.answer}</answer>"


@TASKS.register("arithmetic", doc="multi-step arithmetic with annotated steps (the demo task)")
@dataclass
class ArithmeticTask:
    name: str = "arithmetic"
    min_ops: int = 2
    max_ops: int = 4
    max_operand: int = 99
    max_value: int = 999
    ops: str = "+-"
    train_size: int = 20000

    @property
    def default_rewards(self) -> list[tuple[str, float]]:
        return [("accuracy", 1.0), ("format", 0.1), ("reasoning_steps", 0.2)]

    def problem(self, rng: random.Random) -> Problem:
        while True:
            k = rng.randint(self.min_ops, self.max_ops)
            value = rng.randint(1, self.max_operand)
            text, steps = str(value), []
            for _ in range(k):
                op = rng.choice(self.ops)
                b = rng.randint(1, 9 if op == "*" else self.max_operand)
                new = _APPLY[op](value, b)
                if not 0 <= new <= self.max_value:
                    break
                steps.append(f"{value}{op}{b}={new}")
                text += f"{op}{b}"
                value = new
            else:
                return Problem(f"Compute {text}.", steps, value)

    def distinct(self, rng: random.Random, n: int, exclude: set[str]) -> list[Problem]:
        """n problems drawn from rng with distinct questions, none in `exclude`."""
        out, seen = [], set(exclude)
        while len(out) < n:
            p = self.problem(rng)
            if p.question not in seen:
                seen.add(p.question)
                out.append(p)
        return out

    def _stream(self, seed: int, n: int, exclude: set[str]) -> list[Problem]:
        return self.distinct(random.Random(seed), n, exclude)

    def _test_questions(self) -> set[str]:
        return {p.question for p in self._stream(TEST_SEED, TEST_POOL, set())}

    def problems(self, split: str, n: int | None = None, seed: int = 0) -> list[Problem]:
        if split == "test":
            return self._stream(TEST_SEED, TEST_POOL, set())[: n or TEST_POOL]
        if split != "train":
            raise ValueError(f"arithmetic task has splits 'train' and 'test', not {split!r}")
        return self._stream(seed, n or self.train_size, self._test_questions())

    def prompts(self, split: str, n: int | None = None, seed: int = 0) -> list[Example]:
        return [Example(id=i, prompt=p.question, fields={"answer": str(p.answer), "steps": p.steps})
                for i, p in enumerate(self.problems(split, n, seed))]

    def traces(self, n: int, seed: int = 0) -> list[SFTExample]:
        # A different stream from the GRPO prompts (seed + 1), still disjoint from test.
        return [SFTExample(prompt=p.question, completion=p.trace) for p in self.problems("train", n, seed + 1)]
