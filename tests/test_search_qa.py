"""The search_qa task, the QA rewards, and GRPO with the search tool through the CLI."""
import json

import pytest

from grpokit import cli
from grpokit.rewards import REWARDS, RewardSet
from grpokit.rewards.qa import exact_match, f1, search_format, tool_calls
from grpokit.tasks import get_task
from grpokit.tasks.search_qa import SEARCH_KWARGS
from grpokit.tools import build_tool


@pytest.fixture(scope="module")
def task():
    return get_task("search_qa")


@pytest.fixture(scope="module")
def search(task):
    return build_tool({"name": "search", "kwargs": {**SEARCH_KWARGS, "corpus": task.corpus()}})


def test_held_out_entities_never_appear_in_training(task):
    train, test = task.questions("train"), task.questions("test")
    train_subjects = {e.fields["subject"] for e in train}
    test_subjects = {e.fields["subject"] for e in test}
    assert train_subjects and test_subjects and not train_subjects & test_subjects
    traces = task.traces(300)
    words = {w for t in traces for w in t.prompt.rstrip("?").split()}
    assert not any(set(s.split()) <= words and s in t.prompt for t in traces for s in test_subjects)
    # single- and two-hop questions alternate, so any prefix is balanced
    assert [e.fields["hops"] for e in test[:6]] == [1, 2, 1, 2, 1, 2]


def test_world_is_fixed_by_its_seed(task):
    again = get_task("search_qa")
    assert again.corpus() == task.corpus()
    assert [e.prompt for e in again.questions("test")[:20]] == [e.prompt for e in task.questions("test")[:20]]


def test_every_entity_is_found_by_its_name(task, search):
    for doc in task.corpus():
        assert search.search(doc["title"])[0][0]["id"] == doc["id"], doc


def test_answers_are_in_the_search_results_hop_by_hop(task, search):
    for e in task.questions("test")[:60]:
        results = [search(q) for q in e.fields["queries"]]
        assert e.fields["answer"] in results[-1]
        if e.fields["hops"] == 2:  # the second query is read from the first result
            assert e.fields["queries"][1] in results[0]


def test_traces_show_real_results_and_score_full_marks(task):
    rs = RewardSet([("exact_match", 1.0), ("search_format", 1.0)])
    examples = task.questions("train")[:40]
    traces = [task.trace(e) for e in examples]
    assert traces[1].count("<search>") == examples[1].fields["hops"]
    scores = rs.score([e.prompt for e in examples], traces, [e.fields for e in examples])
    assert scores.per_reward["exact_match"].tolist() == [1.0] * 40
    assert scores.per_reward["search_format"].tolist() == [1.0] * 40


# -- rewards -----------------------------------------------------------------------------

@pytest.mark.parametrize("completion, gold, em, f1_score", [
    ("<answer>Plonta</answer>", "Plonta", 1.0, 1.0),
    ("<search>x</search><result>Plonta</result><answer>the  plonta!</answer>", "Plonta", 1.0, 1.0),
    ("<answer>Plonta city</answer>", "Plonta", 0.0, 2 / 3),
    ("<answer>Vesk</answer>", ["Plonta", "Vesk"], 1.0, 1.0),
    ("no tags: Plonta", "Plonta", 0.0, 0.5),  # no answer tags: the whole text (3 tokens)
    ("<answer>Plonta", "Plonta", 0.0, 0.0),  # unclosed: the whole text is the prediction
])
def test_exact_match_and_f1_table(completion, gold, em, f1_score):
    assert exact_match(completion, answer=gold) == em
    assert f1(completion, answer=gold) == pytest.approx(f1_score)


R = "<result>passage</result>"


@pytest.mark.parametrize("completion, score, calls_ok, answer_ok", [
    (f"<search>a</search>{R}<answer>x</answer>", 1.0, 1, 1),
    (f"<search>a</search>{R}<search>b</search>{R}<answer>x</answer>", 1.0, 1, 1),
    (f"<search>a</search>\n{R}\n<answer>x</answer>\n", 1.0, 1, 1),
    ("<answer>x</answer>", 1.0, 1, 1),  # no search asked for by this reward
    (f"<search>a <search>b</search>{R}<answer>x</answer>", 0.5, 0, 1),  # nested
    ("<search>a</search><answer>x</answer>", 0.5, 0, 1),  # a call without its result (cut off)
    (f"{R}<answer>x</answer>", 0.5, 0, 1),  # a result the model wrote itself
    (f"<search></search>{R}<answer>x</answer>", 0.5, 0, 1),  # empty query
    (f"<search>a</search>{R}", 0.0, 1, 0),  # no answer
    (f"<answer>x</answer><search>a</search>{R}", 0.0, 1, 0),  # answer before the last result
    (f"<search>a</search>{R}<answer>x</answer> trailing", 0.0, 1, 0),
    (f"<search>a</search>{R}<answer> </answer>", 0.0, 1, 0),
    (f"<search>a</search>{R}<answer>x</answer><answer>y</answer>", 0.0, 1, 0),
    ("<search>a", 0.0, 0, 0),  # unclosed call
    ("", 0.0, 1, 0),
])
def test_search_format_table(completion, score, calls_ok, answer_ok):
    out = search_format(completion)
    assert (out.score, out.parts["calls_ok"], out.parts["answer_ok"]) == (score, calls_ok, answer_ok)


def test_search_format_with_other_tools():
    text = f"<python>print(1)</python>{R}<answer>1</answer>"
    assert search_format(text, tools=["python"]).score == 1.0
    assert search_format(text).score == 0.5  # only search is a tool: that result follows no call


def test_tool_calls_cost_and_bonus():
    text = f"<search>a</search>{R}<search>b</search>{R}<answer>x</answer>"
    assert tool_calls(text) == pytest.approx(-0.1)
    assert tool_calls(text, per_call=0.2, max_calls=1) == pytest.approx(0.2)
    assert tool_calls("<answer>x</answer>") == 0.0
    assert {"exact_match", "f1", "search_format", "tool_calls"} <= set(REWARDS.names())


def test_qa_rewards_still_importable_from_their_old_module():
    from grpokit.rewards import length

    assert length.exact_match is exact_match and length.f1 is f1


# -- GRPO with the tool, as a user runs it ------------------------------------------------

def test_train_with_search_tool_through_the_cli(tmp_path, capsys):
    out = tmp_path / "run"
    tools = json.dumps([{"name": "search", "kwargs": SEARCH_KWARGS}])
    args = ["train", "--model", "tiny:xs", "--data", "task:search_qa", "--out", str(out), "--steps", "2",
            f"rollout.tools={tools}", "rollout.max_turns=2", "rollout.max_tool_tokens=40",
            "rollout.max_new_tokens=60", "rollout.prompts_per_step=2", "rollout.num_generations=2",
            "data.eval_size=4", "run.progress=false"]
    assert cli.main(args) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]  # step 0: the held-out evaluation before training
    assert "eval/accuracy" in rows[0]
    rows = rows[1:]
    # the console says what the tools did (at the first and the last step)
    assert capsys.readouterr().out.count("tools: ") == 2
    for r in rows:  # the multi-turn engine ran: tool metrics are logged, length counts sampled tokens only
        assert {"tools/calls_per_rollout", "tools/share_with_call", "tools/failure_rate"} <= set(r)
        assert r["len"] <= 60
    assert "eval/accuracy" in rows[-1]


def test_list_tools(capsys):
    assert cli.main(["list", "tools"]) == 0
    listed = capsys.readouterr().out
    for name in ("search", "python", "calculator"):
        assert f"\n{name} " in "\n" + listed


def test_cold_start_masks_inserted_results():
    from grpokit.sft import span_mask as result_mask

    o, c = [7], [8]  # <result>, </result> as single tokens
    assert result_mask([1, 2, 7, 3, 4, 8, 5, 7, 6, 8, 9], o, c) == [1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 1]
    assert result_mask([1, 7, 3], o, c) == [1, 0, 0]  # unclosed: masked to the end
    # multi-token tags
    assert result_mask([1, 70, 71, 3, 80, 81, 5], [70, 71], [80, 81]) == [1, 0, 0, 0, 0, 0, 1]


@pytest.mark.slow
def test_demo_search_quick_runs_end_to_end(tmp_path, capsys):
    from grpokit.demos.search import run_demo

    summary = run_demo(seed=0, out=str(tmp_path / "demo"), quick=True)
    printed = capsys.readouterr().out
    assert "\nexact match after cold start: " in printed and "\nexact match after GRPO: " in printed
    assert "\nverdict (same tokens): " in printed and " questions, two standard errors)" in printed
    assert 0.0 <= summary["exact_match_grpo"] <= 1.0 and (tmp_path / "demo" / "summary.json").is_file()


def test_hotpotqa_recipe_validates_with_its_files(tmp_path, monkeypatch):
    from pathlib import Path

    from grpokit.config.schema import TrainConfig
    from grpokit.config import load_config, validate

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "hotpotqa_search.yaml"
    (tmp_path / "data").mkdir()
    row = json.dumps({"prompt": [{"role": "user", "content": "Who?"}], "answer": ["x"]}) + "\n"
    for name in ("hotpot_train.jsonl", "hotpot_dev.jsonl"):
        (tmp_path / "data" / name).write_text(row)
    (tmp_path / "data" / "corpus.jsonl").write_text(json.dumps({"id": "1", "title": "Xeno", "text": "Xeno lives in Ylap."}) + "\n")
    from grpokit.model.policy import create_tiny

    model, tok = create_tiny("tiny:xs", ["Who?"])  # validate checks the model directory's files
    model.save_pretrained(tmp_path / "runs" / "hotpot-sft")
    tok.save_pretrained(tmp_path / "runs" / "hotpot-sft")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(TrainConfig, str(recipe))
    assert validate(cfg) == []
    from grpokit.tools import build_tools

    (search,) = build_tools(cfg.rollout.tools)
    assert search("where does Xeno live") == "Xeno: Xeno lives in Ylap."


def test_sft_encoding_masks_tool_results_out_of_the_loss():
    from grpokit.model.char_tokenizer import build_char_tokenizer
    from grpokit.sft import collate, encode_traces
    from grpokit.types import SFTExample

    completion = "<search>Kalo</search><result>Kalo lives in Plonta</result><answer>Plonta</answer>"
    tok = build_char_tokenizer([completion, "Q?"])
    enc = encode_traces(tok, [SFTExample(prompt="Q?", completion=completion)], max_len=512)[0]
    ids, _, mask = collate([enc], tok.pad_token_id)
    trained = tok.decode([int(t) for t, m in zip(ids[0], mask[0]) if m > 0], skip_special_tokens=False)
    assert "Kalo lives" not in trained and "<result>" not in trained and "</result>" not in trained
    assert trained.startswith("<search>Kalo</search><answer>Plonta</answer>")
    # a trace without tool output trains on every completion token
    plain = encode_traces(tok, [SFTExample(prompt="Q?", completion="<answer>Plonta</answer>")], max_len=512)[0]
    assert plain.mask is None

