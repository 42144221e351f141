"""A task mixture with a wide difficulty spread: arithmetic from one to six operations,
and GSM8K word problems as a harder family.

On one difficulty scale (the `arithmetic` task) most prompts are all right or all wrong
for a given policy, and alike. Here one batch holds short sums, long chains and word
problems, so a policy's per-prompt success rates differ widely within a batch (measured in
docs/grouping.md): the regime where grouping prompts by context or difficulty has
something to share.

Each example's fields:
  answer      the gold answer (an integer, as text)
  steps       the gold equations in order ("37+48=85"; GSM8K: its `<<48/2=24>>` annotations)
  family      "arithmetic" or "gsm8k"
  difficulty  arithmetic: its number of operations (1..6); GSM8K: max_ops + 1, one level
              above the hardest arithmetic, so `group.field: difficulty` never puts the
              two families in one class (`group.field: steps` groups by equation count
              across families instead)

Proportions: a share `gsm8k_share` of the rows is GSM8K, the rest arithmetic spread evenly
over min_ops..max_ops. Row i is GSM8K when round((i+1) * share) > round(i * share), and
the arithmetic rows cycle through the levels in a seeded order, so every prefix of a split
(what `grpokit eval --limit N` reads) holds the shares to within one row per level.

Splits: arithmetic test problems are a fixed pool of 2,000 per level (a stream of its
own per level) and train problems are drawn against it; GSM8K test rows are test.jsonl in
file order, train rows a seeded choice from train.jsonl minus any question that is also in
test.jsonl. The test split ignores the seed, so evaluations stay comparable across runs.

Traces: the arithmetic family's step-by-step traces, and GSM8K's worked solution rewritten
into the same format, its annotated equations in order:
`<think>16-3-4=9 9*2=18</think><answer>18</answer>`. GSM8K rows whose annotations do not
end in the final answer (or that have none: 472 of the 7,473 train rows) give no trace; they
stay prompts.

GSM8K files are found as for `task:gsm8k` ($GRPOKIT_GSM8K_DIR, else shared/data/gsm8k in
the working directory or a parent), or in `data_dir`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from grpokit.tasks.arithmetic import TEST_POOL, TEST_SEED, ArithmeticTask, Problem
from grpokit.tasks.base import TASKS
from grpokit.tasks.gsm8k import ENV_VAR, find_data_dir, load_gsm8k
from grpokit.types import Example, SFTExample

GSM8K = "gsm8k"
ARITHMETIC = "arithmetic"
# Distinct one-operation problems: about 14,700 (arithmetic_short), 2,000 of them held out.
# Drawing more distinct ones than exist would never finish.
MAX_ONE_OP = 10_000


@TASKS.register("mixture", doc="arithmetic with 1-6 operations (80%) mixed with GSM8K word problems (20%); "
                               "fields family and difficulty")
@dataclass
class MixtureTask:
    name: str = "mixture"
    gsm8k_share: float = 0.2  # the rest is arithmetic, spread evenly over min_ops..max_ops
    min_ops: int = 1
    max_ops: int = 6
    ops: str = "+-"
    train_size: int = 10_000
    test_size: int = 1_000
    data_dir: str | None = None  # GSM8K directory; None: as task:gsm8k finds it

    def __post_init__(self) -> None:
        if not 0.0 <= self.gsm8k_share <= 1.0:
            raise ValueError(f"mixture task: gsm8k_share must be in [0, 1], got {self.gsm8k_share!r}")
        if not 1 <= self.min_ops <= self.max_ops:
            raise ValueError(f"mixture task: expected 1 <= min_ops <= max_ops, got {self.min_ops}..{self.max_ops}")

    @property
    def default_rewards(self) -> list[tuple[str, float]]:
        return [("accuracy", 1.0), ("format", 0.1), ("reasoning_steps", 0.2)]

    @property
    def levels(self) -> list[int]:
        return list(range(self.min_ops, self.max_ops + 1))

    # ------------------------------------------------------------------ the plan

    def plan(self, n: int, seed: int) -> list[int | None]:
        """The family and level of each of n rows: None for GSM8K, else a number of operations."""
        rng, cycle, out = random.Random(seed), [], []
        for i in range(n):
            if round((i + 1) * self.gsm8k_share) > round(i * self.gsm8k_share):
                out.append(None)
                continue
            if not cycle:
                cycle = self.levels
                rng.shuffle(cycle)
            out.append(cycle.pop())
        return out

    # ------------------------------------------------------------------ splits

    def prompts(self, split: str, n: int | None = None, seed: int = 0) -> list[Example]:
        """n rows of a split (None or 0: train_size / test_size); the test split ignores the seed."""
        if split not in ("train", "test"):
            raise ValueError(f"mixture task has splits 'train' and 'test', not {split!r}")
        n = n or (self.train_size if split == "train" else self.test_size)
        plan = self.plan(n, TEST_SEED if split == "test" else seed)
        gsm8k = iter(self._gsm8k(split, plan.count(None), seed))
        arithmetic = {k: iter(self._arithmetic(k, split, plan.count(k), seed)) for k in self.levels}
        out = []
        for i, level in enumerate(plan):
            if level is None:
                ex = next(gsm8k)
                out.append(Example(id=i, prompt=ex.prompt, fields={
                    "answer": ex.fields["answer"], "steps": ex.fields["steps"], "family": GSM8K,
                    "difficulty": self.max_ops + 1}))
            else:
                p = next(arithmetic[level])
                out.append(Example(id=i, prompt=p.question, fields={
                    "answer": str(p.answer), "steps": p.steps, "family": ARITHMETIC, "difficulty": level}))
        return out

    def traces(self, n: int | None = None, seed: int = 0) -> list[SFTExample]:
        """n traces (None or 0: train_size) from the train split's sources, in the mixture's
        proportions; a different stream from the GRPO prompts of the same seed (seed + 1),
        still disjoint from test."""
        n = n or self.train_size
        plan = self.plan(n, seed + 1)
        want = plan.count(None)
        gsm8k = [(e.prompt, t) for e in self._gsm8k_train(seed + 1) if (t := _equation_trace(e)) is not None]
        if len(gsm8k) < want:
            raise ValueError(f"mixture task: {want} GSM8K traces asked for, {len(gsm8k)} available; "
                             "lower n or gsm8k_share")
        words = iter(gsm8k)
        arithmetic = {k: iter(self._arithmetic(k, "train", plan.count(k), seed + 1)) for k in self.levels}
        out = []
        for level in plan:
            if level is None:
                prompt, completion = next(words)
                out.append(SFTExample(prompt=prompt, completion=completion))
            else:
                p = next(arithmetic[level])
                out.append(SFTExample(prompt=p.question, completion=p.trace))
        return out

    # ------------------------------------------------------------------ sources

    def _arithmetic(self, k: int, split: str, n: int, seed: int) -> list[Problem]:
        if n == 0:
            return []
        if split == "test":
            if n > TEST_POOL:
                raise ValueError(f"mixture task: {n} test problems with {k} operations asked for, the test pool "
                                 f"has {TEST_POOL}; lower n")
            return self._test_pool(k)[:n]
        if k == 1 and n > MAX_ONE_OP:
            raise ValueError(f"mixture task: {n} one-operation train problems asked for, at most {MAX_ONE_OP} "
                             "exist apart from the test ones; lower n or raise min_ops")
        exclude = {p.question for p in self._test_pool(k)}
        return self._level(k).distinct(random.Random(f"mixture:{seed}:{k}"), n, exclude)

    def _test_pool(self, k: int) -> list[Problem]:
        # A stream of its own per level: with one seed for all levels, the k-operation test
        # problems would be the (k+1)-operation ones cut short.
        return self._level(k).distinct(random.Random(f"mixture:test:{k}"), TEST_POOL, set())

    def _level(self, k: int) -> ArithmeticTask:
        return ArithmeticTask(min_ops=k, max_ops=k, ops=self.ops)

    def _gsm8k(self, split: str, n: int, seed: int) -> list[Example]:
        if n == 0:
            return []
        rows = self._read("test") if split == "test" else self._gsm8k_train(seed)
        if len(rows) < n:
            raise ValueError(f"mixture task: {n} GSM8K {split} rows asked for, {len(rows)} available; "
                             "lower n or gsm8k_share")
        return rows[:n]

    def _gsm8k_train(self, seed: int) -> list[Example]:
        """train.jsonl without the questions of test.jsonl, in a seeded order."""
        test = {e.prompt for e in self._read("test")}
        rows = [e for e in self._read("train") if e.prompt not in test]
        random.Random(seed).shuffle(rows)
        return rows

    def _read(self, split: str) -> list[Example]:
        try:
            root = Path(self.data_dir).expanduser() if self.data_dir else find_data_dir()
        except FileNotFoundError as e:
            raise FileNotFoundError(f"task:mixture needs GSM8K for its gsm8k family: {e}") from None
        path = root / f"{split}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"task:mixture needs GSM8K for its gsm8k family: {path} does not exist "
                                    f"(set {ENV_VAR} to a directory holding train.jsonl and test.jsonl)")
        return load_gsm8k(path)


def _equation_trace(example: Example) -> str | None:
    """GSM8K's worked solution as the arithmetic task's trace: its annotated equations,
    then the answer. None when there are none or the last does not give the answer."""
    steps = example.fields["steps"]
    try:  # "9*2=18" -> 18; the answer is an integer ("####" line, commas removed)
        if not steps or float(steps[-1].rpartition("=")[2]) != float(example.fields["answer"]):
            return None
    except ValueError:
        return None
    return f"<think>{' '.join(steps)}</think><answer>{example.fields['answer']}</answer>"
