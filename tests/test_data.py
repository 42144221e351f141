"""Data loading: JSONL / datasets files, task specs, SFT rows, and the GSM8K loader."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import grpokit.tasks as tasks
from grpokit.tasks.data import load_prompts, load_sft
from grpokit.rewards import RewardSet
from grpokit.tasks.gsm8k import GSM8KTask, find_data_dir, load_gsm8k, parse_gsm8k_row, trace
from grpokit.types import Example, SFTExample

GSM8K_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k"
ROW = {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                   "How many clips did Natalia sell altogether in April and May?",
       "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
                 "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# ----------------------------------------------------------------------------- JSONL prompts

def test_jsonl_prompts_and_fields(tmp_path):
    f = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "1+1?", "answer": "2", "steps": ["1+1=2"]}, "",
                                           {"prompt": [{"role": "user", "content": "2+2?"}], "answer": 4}])
    rows = load_prompts(str(f))
    assert rows == [Example(0, "1+1?", {"answer": "2", "steps": ["1+1=2"]}),
                    Example(1, [{"role": "user", "content": "2+2?"}], {"answer": 4})]
    assert len(load_prompts(str(f), n=1)) == 1


def test_custom_prompt_field(tmp_path):
    f = write_jsonl(tmp_path / "q.jsonl", [{"question": "why?", "answer": "because"}])
    assert load_prompts(str(f), prompt_field="question") == [Example(0, "why?", {"answer": "because"})]


@pytest.mark.parametrize("rows, match", [
    ([{"prompt": "ok"}, '{"prompt": "broken"'], r"bad\.jsonl:2: malformed JSON"),
    ([{"prompt": "ok"}, "", "[1, 2]"], r"bad\.jsonl:3: expected a JSON object .* got list"),
    ([{"question": "q"}], r"bad\.jsonl:1: missing the prompt field 'prompt'; the row has fields: question"),
    ([{"prompt": "  "}], r"bad\.jsonl:1: field 'prompt' is empty"),
    ([{"prompt": 5}], r"bad\.jsonl:1: field 'prompt' is int 5; expected a string or a list"),
    ([{"prompt": []}], r"bad\.jsonl:1: field 'prompt' is an empty message list"),
    ([{"prompt": [{"role": "user"}]}], r"bad\.jsonl:1: field 'prompt', message 0 is .*expected \{'role': str"),
    ([], r"bad\.jsonl: no rows"),
])
def test_jsonl_errors_name_file_and_line(tmp_path, rows, match):
    f = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(ValueError, match=match):
        load_prompts(str(f))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_prompts(str(tmp_path / "nope.jsonl"))
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_sft(f"gsm8k:{tmp_path / 'nope.jsonl'}")


def test_bad_n_and_unknown_suffix(tmp_path):
    f = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a"}])
    with pytest.raises(ValueError, match="non-negative"):
        load_prompts(str(f), n=-1)
    (tmp_path / "p.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"p\.txt: unsupported file type '\.txt'"):
        load_prompts(str(tmp_path / "p.txt"))


# ----------------------------------------------------------------------------- datasets formats

def test_csv_and_json_through_datasets(tmp_path):
    csv = tmp_path / "p.csv"
    csv.write_text("prompt,answer\nwhat is 1+1?,2\nwhat is 2+2?,4\n")
    rows = load_prompts(str(csv))
    assert [(r.id, r.prompt, r.fields) for r in rows] == [(0, "what is 1+1?", {"answer": 2}),
                                                          (1, "what is 2+2?", {"answer": 4})]
    js = tmp_path / "p.json"
    js.write_text(json.dumps([{"prompt": "a", "answer": "1"}, {"prompt": "", "answer": "2"}]))
    with pytest.raises(ValueError, match=r"p\.json row 1: field 'prompt' is empty"):
        load_prompts(str(js))


def test_directory_split_through_datasets(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"prompt": "a", "answer": "1"}])
    write_jsonl(tmp_path / "test.jsonl", [{"prompt": "b", "answer": "2"}, {"prompt": "c", "answer": "3"}])
    assert [e.prompt for e in load_prompts(str(tmp_path))] == ["a"]
    assert [e.prompt for e in load_prompts(str(tmp_path), split="test")] == ["b", "c"]
    with pytest.raises(ValueError, match="could not be read as a dataset directory \\(split 'dev'\\)"):
        load_prompts(str(tmp_path), split="dev")


# ----------------------------------------------------------------------------- SFT

def test_sft_prompt_completion_and_messages(tmp_path):
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "<think>greet</think><answer>hello</answer>"}]
    f = write_jsonl(tmp_path / "sft.jsonl", [{"prompt": "1+1?", "completion": "<answer>2</answer>"},
                                             {"messages": chat}])
    assert load_sft(str(f)) == [SFTExample("1+1?", "<answer>2</answer>"),
                                SFTExample(chat[:-1], "<think>greet</think><answer>hello</answer>")]
    assert len(load_sft(str(f), n=1)) == 1


@pytest.mark.parametrize("row, match", [
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "again"}]},
     r"sft\.jsonl:1: the last message must be .* role 'assistant', got role 'user'"),
    ({"messages": [{"role": "assistant", "content": "x"}]}, r"sft\.jsonl:1: 'messages' must be a list of at least two"),
    ({"messages": [{"role": "user"}, {"role": "assistant", "content": "x"}]}, r"sft\.jsonl:1: messages\[0\]"),
    ({"prompt": "p", "completion": ""}, r"sft\.jsonl:1: field 'completion' is '';"),
    ({"prompt": "p"}, r"sft\.jsonl:1: expected 'prompt' and 'completion' fields, or 'messages'.*fields: prompt"),
])
def test_sft_errors(tmp_path, row, match):
    f = write_jsonl(tmp_path / "sft.jsonl", [row])
    with pytest.raises(ValueError, match=match):
        load_sft(str(f))


# ----------------------------------------------------------------------------- task specs

class _DummyTask:
    name = "dummy"
    default_rewards = [("accuracy", 1.0)]

    def prompts(self, split, n=None, seed=0):
        return [Example(i, f"{split} {seed}", {"answer": str(i)}) for i in range(n or 3)]

    def traces(self, n, seed=0):
        return [SFTExample(f"q{i}", f"<answer>{i}</answer>") for i in range(n or 2)]


@pytest.fixture
def dummy_task(monkeypatch):
    # Registered on a copy of the registry, and without importing the other built-in tasks.
    monkeypatch.setattr(tasks.TASKS, "_items", {**tasks.TASKS._items, "dummy": _DummyTask})
    monkeypatch.setattr(tasks, "load_builtins", lambda: None)


def test_task_specs(dummy_task):
    assert [e.prompt for e in load_prompts("task:dummy", n=2, seed=7)] == ["train 7", "train 7"]
    assert [e.prompt for e in load_prompts("task:dummy:test")] == ["test 0"] * 3
    assert [e.prompt for e in load_prompts("task:dummy", split="test", n=1)] == ["test 0"]
    assert load_sft("task:dummy", n=1) == [SFTExample("q0", "<answer>0</answer>")]
    with pytest.raises(ValueError, match="train split"):
        load_sft("task:dummy:test")
    with pytest.raises(KeyError, match="unknown task 'dumy'.*did you mean 'dummy'"):
        load_prompts("task:dumy")
    with pytest.raises(ValueError, match="task:NAME"):
        load_prompts("task:")


# ----------------------------------------------------------------------------- GSM8K

def test_parse_gsm8k_row():
    ex = parse_gsm8k_row(ROW, id=3)
    assert ex.id == 3 and ex.prompt.startswith("Natalia sold clips")
    assert ex.fields == {"answer": "72", "steps": ["48/2=24", "48+24=72"],
                         "solution": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
                                     "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May."}


def test_gsm8k_answer_commas_removed_and_bad_rows():
    assert parse_gsm8k_row({"question": "q", "answer": "a = <<2*540=1080>>1,080\n#### 1,080"}).fields["answer"] == "1080"
    with pytest.raises(ValueError, match="#### <final answer>"):
        parse_gsm8k_row({"question": "q", "answer": "no final line"})
    with pytest.raises(ValueError, match="no 'question'"):
        parse_gsm8k_row({"answer": "#### 1"})


def test_gsm8k_file_spec_and_traces(tmp_path):
    f = write_jsonl(tmp_path / "g.jsonl", [ROW, ROW])
    rows = load_prompts(f"gsm8k:{f}")
    assert [r.id for r in rows] == [0, 1] and rows[0].fields["answer"] == "72"
    (trace,) = load_sft(f"gsm8k:{f}", n=1)
    assert trace.completion == f"<think>{rows[0].fields['solution']}</think><answer>72</answer>"
    bad = write_jsonl(tmp_path / "bad.jsonl", [ROW, {"question": "q", "answer": "oops"}])
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: GSM8K answer does not end in '####"):
        load_gsm8k(bad)


def test_gsm8k_traces_score_full_marks():
    # The cold-start targets must be what the rewards call perfect.
    ex = parse_gsm8k_row(ROW)
    rs = RewardSet([("accuracy", 1.0), ("format", 1.0), ("reasoning_steps", 1.0)])
    s = rs.score([ex.prompt], [trace(ex).completion], [ex.fields])
    assert s.total.tolist() == [3.0]


def test_gsm8k_task_data_dir_from_env(tmp_path, monkeypatch):
    write_jsonl(tmp_path / "test.jsonl", [ROW] * 3)
    write_jsonl(tmp_path / "train.jsonl", [ROW] * 5)
    monkeypatch.setenv("GRPOKIT_GSM8K_DIR", str(tmp_path))
    task = GSM8KTask()
    assert find_data_dir() == tmp_path
    assert len(task.prompts("test")) == 3 and len(task.prompts("train", n=2)) == 2
    assert len(task.traces(4, seed=1)) == 4
    assert task.default_rewards == [("accuracy", 1.0), ("format", 0.2), ("reasoning_steps", 0.2)]
    with pytest.raises(ValueError, match="splits 'train', 'test', not 'dev'"):
        task.prompts("dev")
    monkeypatch.setenv("GRPOKIT_GSM8K_DIR", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="GRPOKIT_GSM8K_DIR"):
        task.prompts("test")


@pytest.mark.skipif(not (GSM8K_DIR / "test.jsonl").is_file(), reason="GSM8K data not present")
def test_real_gsm8k_file_first_lines(tmp_path):
    head = (GSM8K_DIR / "test.jsonl").read_text().splitlines()[:20]
    f = tmp_path / "head.jsonl"
    f.write_text("\n".join(head) + "\n")
    rows = load_gsm8k(f)
    assert len(rows) == 20
    assert rows[0].fields["answer"] == "18" and rows[0].fields["steps"] == ["16-3-4=9", "9*2=18"]
    for r in rows:
        assert "####" not in r.fields["solution"] and "," not in r.fields["answer"]
        assert float(r.fields["answer"]) == float(r.fields["answer"])  # every final answer is a number


@pytest.mark.skipif(not (GSM8K_DIR / "test.jsonl").is_file(), reason="GSM8K data not present")
def test_real_gsm8k_task(monkeypatch):
    monkeypatch.setenv("GRPOKIT_GSM8K_DIR", str(GSM8K_DIR))
    rows = GSM8KTask().prompts("test", n=5)
    assert [r.id for r in rows] == list(range(5)) and rows[0].prompt.startswith("Janet")


# --------------------------------------------------------------------------- hf: (datasets cache, offline)

def _cache_dataset(cache, tmp_path, repo_id: str, config: str, splits: dict) -> None:
    """Put a dataset into a `datasets` cache as `load_dataset(repo_id, config)` leaves it
    (CACHE/owner___name/CONFIG/VERSION/HASH/{name}-{split}.arrow + dataset_info.json),
    built from local JSONL files by datasets' own json builder: no hub involved."""
    import shutil

    from datasets.packaged_modules.json.json import Json

    files = {}
    for split, rows in splits.items():
        files[split] = str(tmp_path / f"{split}.jsonl")
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    builder = Json(config_name=config, data_files=files, cache_dir=str(tmp_path / "build"))
    builder.download_and_prepare()
    owner, name = repo_id.split("/")
    target = cache / f"{owner}___{name}" / config / "0.0.0" / "0123456789abcdef"
    target.parent.mkdir(parents=True)
    shutil.move(builder.cache_dir, target)
    for f in target.glob("json-*.arrow"):
        f.rename(target / f.name.replace("json-", f"{name}-", 1))


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    import datasets

    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    gsm = [{"question": "Ann has 2 apples and buys 3. How many?", "answer": "2+3=<<2+3=5>>5\n#### 5"},
           {"question": "A box holds 1,000 pens. How many in 2 boxes?", "answer": "<<2*1000=2000>>\n#### 2,000"}]
    _cache_dataset(cache, tmp_path, "openai/gsm8k", "main", {"train": gsm, "test": gsm[:1]})
    return cache


def test_hub_dataset_from_the_local_cache(hub_cache):
    rows = load_prompts("hf:openai/gsm8k:main:train", prompt_field="question")
    assert [(e.id, e.prompt, e.fields["answer"]) for e in rows] == [
        (0, "Ann has 2 apples and buys 3. How many?", "2+3=<<2+3=5>>5\n#### 5"),
        (1, "A box holds 1,000 pens. How many in 2 boxes?", "<<2*1000=2000>>\n#### 2,000")]
    # the split defaults to the caller's: test for held-out prompts
    assert len(load_prompts("hf:openai/gsm8k:main", prompt_field="question", split="test")) == 1
    # gsm8k: parses the rows as GSM8K (final answer, steps), as for a local file
    (a, b) = load_prompts("gsm8k:hf:openai/gsm8k:main:train")
    assert (a.fields["answer"], a.fields["steps"], b.fields["answer"]) == ("5", ["2+3=5"], "2000")
    (t,) = load_sft("gsm8k:hf:openai/gsm8k:main:test")
    assert t.completion == "<think>2+3=<<2+3=5>>5</think><answer>5</answer>"


def test_hub_dataset_errors_are_one_line(hub_cache):
    with pytest.raises(FileNotFoundError) as e:
        load_prompts("hf:someone/missing:main")
    msg = str(e.value)
    assert msg.startswith("data 'hf:someone/missing:main': dataset 'someone/missing' is not in the local "
                          f"datasets cache ({hub_cache}); grpokit reads hub datasets offline")
    assert "\n" not in msg
    with pytest.raises(ValueError, match=r"^data 'hf:openai/gsm8k:socratic': .*'socratic'.*main"):
        load_prompts("hf:openai/gsm8k:socratic", prompt_field="question")
    with pytest.raises(ValueError, match=r"^data 'hf:openai/gsm8k:main:validation': .*validation"):
        load_prompts("hf:openai/gsm8k:main:validation", prompt_field="question")
    for bad in ("hf:", "hf:a/b:c:d:e", "hf:./local.jsonl"):
        with pytest.raises(ValueError, match=r"expected hf:NAME\[:CONFIG\[:SPLIT\]\]"):
            load_prompts(bad)


def test_hub_dataset_never_reaches_the_network(hub_cache, monkeypatch):
    import socket

    def refuse(*a, **k):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    assert len(load_prompts("hf:openai/gsm8k:main:train", prompt_field="question")) == 2
    with pytest.raises(FileNotFoundError, match="not in the local datasets cache"):
        load_prompts("hf:someone/missing")
