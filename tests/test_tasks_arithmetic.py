import random

from grpokit.rewards import RewardSet
from grpokit.tasks import get_task
from grpokit.tasks.arithmetic import ArithmeticTask


def test_problem_traces_are_correct_left_to_right():
    task = ArithmeticTask()
    rng = random.Random(0)
    for _ in range(200):
        p = task.problem(rng)
        assert 2 <= len(p.steps) <= 4
        value = None
        for step in p.steps:
            lhs, rhs = step.split("=")
            op = "+" if "+" in lhs else "-"
            a, b = (int(x) for x in lhs.split(op))
            assert value is None or a == value
            value = a + b if op == "+" else a - b
            assert value == int(rhs) and 0 <= value <= 999
        assert value == p.answer
        assert p.question.startswith("Compute ") and p.question.endswith(".")


def test_literal_trace():
    task = ArithmeticTask()
    p = task.problems("test", 1)[0]
    assert p.trace == f"<think>{' '.join(p.steps)}</think><answer>{p.answer}</answer>"


def test_train_and_test_never_overlap_and_are_deterministic():
    task = get_task("arithmetic")
    test = {e.prompt for e in task.prompts("test", 2000)}
    train = task.prompts("train", 5000, seed=3)
    assert not test & {e.prompt for e in train}
    assert [e.prompt for e in task.prompts("train", 50, seed=3)] == [e.prompt for e in train[:50]]
    traces = task.traces(500, seed=3)
    assert not test & {t.prompt for t in traces}


def test_gold_trace_earns_full_default_reward():
    task = get_task("arithmetic")
    ex = task.prompts("test", 20)
    rewards = RewardSet([(n, w, {}) for n, w in task.default_rewards])
    traces = [p.trace for p in task.problems("test", 20)]
    scores = rewards.score([e.prompt for e in ex], traces, [e.fields for e in ex])
    assert scores.per_reward["accuracy"].tolist() == [1.0] * 20
    assert scores.total.tolist() == [1.3] * 20 or all(abs(t - 1.3) < 1e-6 for t in scores.total.tolist())
