"""One-operation arithmetic ("Compute 37+48."): a first curriculum stage for pretrained
instruct models too weak for multi-step problems (SmolLM2-135M solves almost none of
the 2-4 step `arithmetic` problems, but a fair share of single sums)."""
from __future__ import annotations

from grpokit.tasks.base import TASKS
from grpokit.tasks.arithmetic import ArithmeticTask


@TASKS.register("arithmetic_short",
                doc="one addition or subtraction of two numbers up to 99 (a curriculum's first stage)")
def short_arithmetic() -> ArithmeticTask:
    # Its own test stream (the same seed, other problems than `arithmetic`'s 2-4 step ones),
    # disjoint from its train split as in ArithmeticTask.
    # About 14,700 distinct problems exist (9,801 sums, ~4,950 differences >= 0), 2,000 of them
    # held out for test: the train split must stay well below the rest, or drawing distinct
    # problems would never finish.
    return ArithmeticTask(name="arithmetic_short", min_ops=1, max_ops=1, train_size=5000)
