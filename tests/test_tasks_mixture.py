import json
from collections import Counter

import pytest

from grpokit.cli import main
from grpokit.rewards import RewardSet
from grpokit.tasks import get_task
from grpokit.tasks.formats import task_system_prompt
from grpokit.tasks.mixture import MixtureTask

# Five train rows (one also in test, one whose annotations do not end in the answer) and
# three test rows, in GSM8K's own form.
TRAIN = [
    {"question": "Ann has 3 cats and buys 4 more. How many cats?", "answer": "3+4 = <<3+4=7>>7\n#### 7"},
    {"question": "Bo reads 5 pages a day for 6 days. How many pages?", "answer": "5*6 = <<5*6=30>>30\n#### 30"},
    {"question": "Cy has 10 pens and loses 2. How many?", "answer": "He has 8 left.\n#### 8"},
    {"question": "Dee buys 2 packs of 12 eggs. How many eggs?", "answer": "2*12 = <<2*12=24>>24\n#### 24"},
    {"question": "Eve splits 1,080 dollars in 2. How much each?", "answer": "<<1080/2=540>>540\n#### 540"},
]
TEST = [
    {"question": "Dee buys 2 packs of 12 eggs. How many eggs?", "answer": "2*12 = <<2*12=24>>24\n#### 24"},
    {"question": "Fay has 9 apples and eats 3. How many?", "answer": "9-3 = <<9-3=6>>6\n#### 6"},
    {"question": "Gus earns 4 dollars an hour for 5 hours. How much?", "answer": "4*5=<<4*5=20>>20\n#### 20"},
]


@pytest.fixture
def gsm8k_dir(tmp_path):
    for name, rows in (("train", TRAIN), ("test", TEST)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def task(gsm8k_dir, **kw) -> MixtureTask:
    return MixtureTask(data_dir=str(gsm8k_dir), **kw)


def test_plan_for_a_fixed_seed():
    # None = a GSM8K row: every fifth at share 0.2; the arithmetic rows cycle through 1..6.
    assert MixtureTask().plan(10, seed=0) == [4, 6, None, 1, 2, 3, 5, None, 4, 3]
    assert Counter(MixtureTask().plan(100, seed=0)) == {None: 20, 1: 13, 2: 14, 3: 13, 4: 13, 5: 14, 6: 13}
    assert MixtureTask(gsm8k_share=0.0).plan(6, seed=0).count(None) == 0
    assert MixtureTask(gsm8k_share=1.0).plan(4, seed=0) == [None] * 4


def test_proportions_fields_and_ops_range(gsm8k_dir):
    rows = task(gsm8k_dir).prompts("train", 20, seed=0)
    assert Counter(e.fields["family"] for e in rows) == {"arithmetic": 16, "gsm8k": 4}
    assert Counter(e.fields["difficulty"] for e in rows) == {1: 3, 2: 3, 3: 3, 4: 2, 5: 3, 6: 2, 7: 4}
    for e in rows:
        assert set(e.fields) == {"answer", "steps", "family", "difficulty"}
        if e.fields["family"] == "arithmetic":
            # the number of operations is the question's and the steps' count
            assert len(e.fields["steps"]) == e.fields["difficulty"] == e.prompt.count("+") + e.prompt.count("-")
            assert e.fields["steps"][-1].endswith(f"={e.fields['answer']}")
    assert [e.id for e in rows] == list(range(20))


def test_deterministic_given_the_seed(gsm8k_dir):
    t = task(gsm8k_dir)
    a, b = t.prompts("train", 12, seed=3), t.prompts("train", 12, seed=3)
    assert [e.prompt for e in a] == [e.prompt for e in b]
    assert [e.prompt for e in a] != [e.prompt for e in t.prompts("train", 12, seed=4)]
    # the test split ignores the seed
    assert [e.prompt for e in t.prompts("test", 10, seed=0)] == [e.prompt for e in t.prompts("test", 10, seed=9)]


def test_train_and_test_are_disjoint(gsm8k_dir):
    t = task(gsm8k_dir, gsm8k_share=0.1)
    test = {e.prompt for e in t.prompts("test", 30)}
    train = {e.prompt for e in t.prompts("train", 30, seed=0)}
    traces = {x.prompt for x in t.traces(30, seed=0)}
    assert len(test) == 30 and len(train) == 30
    assert not test & train and not test & traces
    # the GSM8K question that is in both files stays in test only
    assert "Dee buys 2 packs of 12 eggs. How many eggs?" in test - train


def test_gsm8k_test_rows_in_file_order(gsm8k_dir):
    rows = task(gsm8k_dir, gsm8k_share=1.0).prompts("test", 3)
    assert [(e.fields["answer"], e.fields["steps"]) for e in rows] == [
        ("24", ["2*12=24"]), ("6", ["9-3=6"]), ("20", ["4*5=20"])]


def test_gsm8k_traces_are_its_equations(gsm8k_dir):
    traces = task(gsm8k_dir, gsm8k_share=1.0).traces(3, seed=0)
    # Cy's row has no annotation, Dee's is a test question: neither gives a trace
    assert sorted(x.completion for x in traces) == [
        "<think>1080/2=540</think><answer>540</answer>",
        "<think>3+4=7</think><answer>7</answer>",
        "<think>5*6=30</think><answer>30</answer>"]
    with pytest.raises(ValueError, match="4 GSM8K traces asked for, 3 available"):
        task(gsm8k_dir, gsm8k_share=1.0).traces(4, seed=0)


def test_gold_answers_score_with_the_accuracy_reward_in_both_families(gsm8k_dir):
    t = task(gsm8k_dir, gsm8k_share=0.5)
    rows = t.prompts("test", 6)
    assert Counter(e.fields["family"] for e in rows) == {"arithmetic": 3, "gsm8k": 3}
    rewards = RewardSet([("accuracy", 1.0, {})])
    fields = [e.fields for e in rows]
    tagged = [f"<think>x</think><answer>{f['answer']}</answer>" for f in fields]
    marked = [f"so it is {f['answer']}.\n#### {f['answer']}" for f in fields]  # the system prompt's form
    wrong = [f"<answer>{int(f['answer']) + 1}</answer>" for f in fields]
    for texts, expected in ((tagged, 1.0), (marked, 1.0), (wrong, 0.0)):
        assert rewards.score([e.prompt for e in rows], texts, fields).per_reward["accuracy"].tolist() == [expected] * 6


def test_a_trace_written_from_the_fields_earns_full_default_reward(gsm8k_dir):
    t = task(gsm8k_dir, gsm8k_share=0.5)
    rows = t.prompts("test", 6)
    # the trace format of both families: the gold equations, then the answer
    texts = [f"<think>{' '.join(e.fields['steps'])}</think><answer>{e.fields['answer']}</answer>" for e in rows]
    rewards = RewardSet([(n, w, {}) for n, w in t.default_rewards])
    scores = rewards.score([e.prompt for e in rows], texts, [e.fields for e in rows])
    assert [round(x, 6) for x in scores.total.tolist()] == [1.3] * 6  # accuracy 1 + format 0.1 + steps 0.2
    traces = t.traces(4, seed=0)
    assert [x.completion.startswith("<think>") and x.completion.endswith("</answer>") for x in traces] == [True] * 4
    assert sum(x.prompt.startswith("Compute ") for x in traces) == 2


def test_missing_gsm8k_files_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("GRPOKIT_GSM8K_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        MixtureTask().prompts("test", 10)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("task:mixture needs GSM8K for its gsm8k family: GSM8K data not found: set GRPOKIT_GSM8K_DIR")
    assert str(tmp_path) in msg
    with pytest.raises(FileNotFoundError, match=r"^task:mixture needs GSM8K for its gsm8k family: .*test.jsonl does "
                                                r"not exist \(set GRPOKIT_GSM8K_DIR to a directory"):
        MixtureTask(data_dir=str(tmp_path)).prompts("train", 10)
    # no GSM8K row asked for: no file needed
    assert len(MixtureTask(gsm8k_share=0.0).prompts("test", 4)) == 4


def test_bad_options_and_split():
    with pytest.raises(ValueError, match="gsm8k_share must be in"):
        MixtureTask(gsm8k_share=1.5)
    with pytest.raises(ValueError, match="min_ops <= max_ops"):
        MixtureTask(min_ops=3, max_ops=2)
    with pytest.raises(ValueError, match="splits 'train' and 'test', not 'dev'"):
        MixtureTask().prompts("dev", 3)


def test_registered_with_the_answer_format():
    assert get_task("mixture").name == "mixture"
    assert task_system_prompt("task:mixture:test").startswith("Solve the problem step by step")


@pytest.mark.parametrize("field", ["difficulty", "steps"])
def test_validate_accepts_mixture_with_complexity_grouping(capsys, monkeypatch, tmp_path, field):
    # the built-in recipe's `runs/sft-...` model path is a missing local directory where
    # a runs/ folder exists (after `make demo`): validate from an empty folder
    monkeypatch.chdir(tmp_path)
    code = main(["validate", "arithmetic", "data.train=task:mixture", "data.eval=task:mixture:test",
                 "algorithm.grouping=complexity", f"algorithm.group.field={field}", "algorithm.group.buckets=7"])
    out = capsys.readouterr().out
    assert code == 0
    assert "data.train                'task:mixture'" in out
    assert ("algorithm.group.field     'difficulty'" in out) == (field == "difficulty")  # steps is the default


def test_sparse_start_recipe_validates(capsys):
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "mixture_sparse_start.yaml"
    assert main(["validate", str(recipe)]) == 0
    out = capsys.readouterr().out
    assert "OK (sft config)" in out and "warning" not in out
    assert "stop_at             0.05" in out and "data                'task:mixture'" in out
