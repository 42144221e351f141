"""The HTML report builder, without a browser: data embedded, groups, config diff, and
that model text can never become markup."""
import json
import re

import torch

from grpokit import cli
from grpokit.report import GroupLog, build_html, config_diff, embed_json, group_record, load_run, segments
from grpokit.report.page import group_series, panels, report_data
from grpokit.rewards.steps import checked_equations, reasoning_steps
from report_runs import HOSTILE, write_run


def _embedded(html):
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S)
    return json.loads(m.group(1))


def test_report_embeds_every_metric_sample_and_config(tmp_path):
    run = load_run(write_run(tmp_path / "a"))
    data = _embedded(build_html([run]))
    (r,) = data["runs"]
    assert r["metrics"]["step"] == [1, 2, 3, 4]
    assert r["metrics"]["keys"]["reward"] == [0.1, 0.2, 0.30000000000000004, 0.4]
    assert "note" not in r["metrics"]["keys"]  # text values are not metrics
    assert len(r["samples"]) == 8
    assert r["config"]["optim"]["lr"] == 1e-4
    assert r["summary"]["reward"] == {"first": 0.1, "last": 0.4, "mean": 0.25}  # 4 steps: a tenth is one step
    # every numeric metric has a panel, except the step-time parts (drawn stacked)
    keys = {p["key"] for p in data["panels"]}
    assert {"reward", "reward/accuracy", "accuracy", "kl", "entropy", "clip_low_frac", "clip_high_frac", "len",
            "zero_std_groups", "tokens_per_s", "tools/calls", "reward/accuracy_std"} <= keys
    assert not any(k.startswith("time/") for k in keys)
    assert r["time_splits"] == [{"title": "Step time split (s)", "parts": ["time/generate", "time/reward_group_adv",
                                                                           "time/reference", "time/update"]}]
    families = {p["key"]: p["family"] for p in data["panels"]}
    assert families["reward/accuracy"] == "Reward" and families["kl"] == "KL and entropy"
    assert families["reward/accuracy_std"] == "Reward spread" and families["tools/calls"] == "Tools"


def test_completion_view_splits_tool_calls_and_checks_reasoning_steps(tmp_path):
    run = load_run(write_run(tmp_path / "a"))
    s = run["samples"][0]
    assert s["segments"] == [["text", "<think>3*4=12 2+12=15</think>"], ["call", "<search>two plus</search>"],
                             ["result", "<result>2+12 is 14</result>"], ["text", "<answer>14</answer>"]]
    # the reasoning_steps reward's own parser: 3*4=12 holds, 2+12=15 does not
    assert s["steps"] == [{"expr": "3*4", "result": "12", "holds": True}, {"expr": "2+12", "result": "15", "holds": False}]
    assert s["correct"] is True and run["samples"][1]["correct"] is False
    assert s["group"] == 0 and s["rewards"] == {"accuracy": 1.0, "reasoning_steps": 0.5}


def test_checked_equations_are_what_the_reward_scores():
    text = "<think>3*4=12 2+12=15</think><answer>14</answer>"
    eqs = checked_equations(text)
    out = reasoning_steps(text)
    assert [e.holds for e in eqs] == [True, False]
    assert out.parts == {"written": 2.0, "correct": 1.0} and out.score == 0.5


def test_segments_edge_cases():
    assert segments("plain", ["search"]) == [["text", "plain"]]
    assert segments("", ["search"]) == [["text", ""]]
    # an unclosed result runs to the end; without tools a tag is plain text
    assert segments("a<result>b", []) == [["text", "a"], ["result", "<result>b"]]
    assert segments("a<search>q</search>", []) == [["text", "a<search>q</search>"]]


def test_model_text_cannot_inject_markup(tmp_path):
    html = build_html([load_run(write_run(tmp_path / "a"))])
    assert HOSTILE not in html
    assert "<img" not in html and "window.pwned" in html  # present, but only inside escaped JSON
    body = html.split('id="report-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in body and ">" not in body and "&" not in body
    assert any(HOSTILE in seg[1] for s in _embedded(html)["runs"][0]["samples"] for seg in s["segments"])
    # the script builds every node with textContent: no HTML parsing of data anywhere
    assert not re.search(r"\.(innerHTML|outerHTML)\s*=|insertAdjacentHTML|document\.write", html)
    assert embed_json({"t": "</script>&\u2028"}) == '{"t":"\\u003c/script\\u003e\\u0026\\u2028"}'


def test_config_diff_lists_only_differing_keys():
    a = {"optim": {"lr": 1e-4, "betas": [0.9, 0.99]}, "run": {"out": "runs/a", "steps": 10}, "x": {"y": 1}}
    b = {"optim": {"lr": 3e-4, "betas": [0.9, 0.99]}, "run": {"out": "runs/b", "steps": 10}}
    assert config_diff([a, b]) == [{"key": "optim.lr", "values": [1e-4, 3e-4]},
                                   {"key": "x.y", "values": [1, "(absent)"]}]
    assert config_diff([a, a]) == []


def test_summary_means_over_first_and_last_tenth():
    from grpokit.report.page import summary

    vals = [float(i) for i in range(20)] + [None]  # 20 values: tenths of 2
    s = summary({"metrics": {"step": list(range(1, 22)), "keys": {"reward": vals}}})
    assert s == {"steps": 21, "reward": {"first": 0.5, "last": 18.5, "mean": 9.5}}


def test_two_runs_overlay_with_their_diff(tmp_path):
    runs = [load_run(write_run(tmp_path / "a", lr=1e-4)), load_run(write_run(tmp_path / "b", lr=3e-4, steps=2))]
    data = report_data(runs)
    assert [r["label"] for r in data["runs"]] == ["a", "b"]
    assert {"key": "optim.lr", "values": [1e-4, 3e-4]} in data["diff"]
    assert {"key": "run.steps", "values": [4, 2]} in data["diff"]
    assert len([p for p in panels(runs) if p["key"] == "reward"]) == 1  # one panel, both runs in it


def test_group_record_and_series():
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.5])
    ids = torch.tensor([0, 0, 1, 1, 2])
    rec = group_record(3, rewards, ids, [{"steps": [1, 2]}] * 2 + [{"steps": [1, 2, 3]}] * 2 + [{}], name="prompt")
    assert rec == {"step": 3, "scales": [{"name": "prompt", "size": [2, 2, 1], "mean": [0.5, 1.0, 0.5],
                                          "std": [0.5, 0.0, 0.0]}],
                   "difficulty": {"field": "steps", "value": [2, 3], "count": [2, 2], "mean": [0.5, 1.0]}}
    series = group_series([rec, {**rec, "step": 4}])
    (sc,) = series["scales"]
    assert sc["count"] == [3, 3] and sc["size_mean"] == [5 / 3, 5 / 3]
    assert sc["zero_spread"] == [2 / 3, 2 / 3]  # groups 1 (all 1.0) and 2 (one member)
    assert sc["size_hist"] == {"2": 4, "1": 2}
    assert series["difficulty"]["series"] == [{"value": "2", "mean": [0.5, 0.5]}, {"value": "3", "mean": [1.0, 1.0]}]


def test_group_record_of_multiscale_groups_uses_this_steps_rows():
    from grpokit.grouping import Groups

    g = Groups(ids=[torch.tensor([0, 0, 1, 1, 7]), torch.tensor([0, 0, 0, 0, 7])], names=["prompt", "batch"],
               past_rewards=torch.tensor([0.3]))
    rec = group_record(1, torch.tensor([1.0, 0.0, 0.0, 0.0]), g)
    assert [s["name"] for s in rec["scales"]] == ["prompt", "batch"]
    assert rec["scales"][1] == {"name": "batch", "size": [4], "mean": [0.25], "std": [0.433013]}
    assert "difficulty" not in rec


def test_group_log_appends_on_resume(tmp_path):
    log = GroupLog(tmp_path)
    log.write(1, torch.tensor([1.0, 0.0]), torch.tensor([0, 0]))
    GroupLog(tmp_path, resume=True).write(2, torch.tensor([1.0, 0.0]), torch.tensor([0, 0]))
    assert [json.loads(x)["step"] for x in (tmp_path / "groups.jsonl").read_text().splitlines()] == [1, 2]
    GroupLog(tmp_path)  # a fresh run starts the file afresh
    assert (tmp_path / "groups.jsonl").read_text() == ""


def test_report_cli(tmp_path, capsys):
    a, b = write_run(tmp_path / "a"), write_run(tmp_path / "x" / "a", lr=2e-4)
    assert cli.main(["report", str(a)]) == 0
    assert (a / "report.html").is_file() and "report written" in capsys.readouterr().out
    out = tmp_path / "cmp.html"
    assert cli.main(["report", str(a), str(b), "--out", str(out)]) == 0
    data = _embedded(out.read_text())
    assert [r["label"] for r in data["runs"]] == [f"{tmp_path.name}/a", "x/a"]  # same names told apart
    assert cli.main(["report", str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert cli.main(["report", str(tmp_path)]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err


def test_train_writes_report_and_groups(tmp_path):
    out = tmp_path / "run"
    assert cli.main(["train", "--model", "tiny:xs", "--data", "task:arithmetic", "--out", str(out), "--steps", "2",
                     "rollout.max_new_tokens=8", "rollout.prompts_per_step=2", "rollout.num_generations=2",
                     "data.eval_size=2", "run.progress=false", "run.report_every=1", "algorithm.grouping=multiscale",
                     "algorithm.group.clusters=1"]) == 0
    groups = [json.loads(x) for x in (out / "groups.jsonl").read_text().splitlines()]
    assert [g["step"] for g in groups] == [1, 2]
    assert [s["name"] for s in groups[0]["scales"]] == ["prompt", "semantic", "batch"]
    assert sum(groups[0]["scales"][0]["size"]) == 4 and "difficulty" in groups[0]  # arithmetic rows have `steps`
    data = _embedded((out / "report.html").read_text())
    assert data["runs"][0]["metrics"]["step"] == [0, 1, 2]  # step 0: the held-out evaluation before training (run.eval_before)
    assert all("group" in s for s in data["runs"][0]["samples"])
