"""The console's text (literal strings), and one short run as a user sees it: summaries,
held-out before -> after, steps that trained nothing, events.jsonl, the trackers."""
import json
import warnings

import pytest

from grpokit import cli
from grpokit.console import (RunConsole, count, duration, flat_step_note, grouper_note, held_out_change, percent,
                             tools_note)


def test_numbers_as_shown():
    assert (percent(0.12), percent(0.195), percent(1.0)) == ("12.0%", "19.5%", "100.0%")
    assert (count(812), count(12345), count(999_424), count(1_234_567)) == ("812", "12.3K", "999K", "1.23M")
    assert (duration(4.24), duration(75), duration(3725)) == ("4.2s", "1m15s", "1h02m05s")


def test_held_out_change():
    assert held_out_change({"eval/accuracy": 0.12}, {"eval/accuracy": 0.195}) == "held-out accuracy 12.0% -> 19.5%"
    assert held_out_change({}, {"eval/accuracy": 0.5}) == "held-out accuracy 50.0%"
    # no accuracy-like reward: the first reward's mean
    assert held_out_change({"eval/brevity": 0.25}, {"eval/brevity": 0.5}) == "held-out reward brevity 0.250 -> 0.500"
    assert held_out_change({}, {}) is None


def test_flat_step_note():
    assert flat_step_note(3, {"zero_std_groups": 1.0, "groups": 32.0, "trained_rows": 0.0}) == \
        "step 3: no update: no reward spread in any of the 32 groups (every advantage is 0)"
    assert flat_step_note(3, {"zero_std_groups": 1.0, "groups": 8.0, "trained_rows": 64.0}) == \
        "step 3: only the KL term trained: no reward spread in any of the 8 groups (every advantage is 0)"
    assert flat_step_note(3, {"zero_std_groups": 0.75, "groups": 8.0}) is None


def test_grouper_and_tools_notes():
    m = {"groups": 12.0, "grouping/weight_prompt": 0.5, "grouping/weight_semantic": 0.3,
         "grouping/weight_batch": 0.2, "grouping/groups_semantic": 3.0, "grouping/past_rows": 32.0}
    assert grouper_note(m) == ("grouping: 12 groups | scale weights prompt 0.50, semantic 0.30, batch 0.20 | "
                               "groups per scale semantic 3 | past rows 32")
    assert grouper_note({"groups": 4.0, "zero_std_groups": 0.5}) is None  # plain prompt groups: nothing to say
    t = {"tools/share_with_call": 0.625, "tools/calls_per_rollout": 1.25, "tools/failure_rate": 0.03,
         "tools/turn_limit": 0.0, "tools/accuracy_with_call": 0.5, "tools/accuracy_without_call": 0.25}
    assert tools_note(t) == ("tools: 62.5% of completions called a tool, 1.2 calls per completion, "
                             "3.0% of calls failed, accuracy 50.0% with a call, 25.0% without")
    assert tools_note({"reward": 1.0}) is None


def test_run_console_orders_lines():
    lines = []
    c = RunConsole(20, write=lines.append)
    c.evaluated(0, {"eval/accuracy": 0.1})
    c.evaluated(10, {"eval/accuracy": 0.25})
    assert lines == ["before training: held-out accuracy 10.0%"]  # the step's line comes first
    c.step(10, {"zero_std_groups": 1.0, "groups": 4.0, "trained_rows": 0.0, "grouping/weight_prompt": 1.0})
    assert lines[1:] == ["step 10: no update: no reward spread in any of the 4 groups (every advantage is 0)",
                         "step 10: held-out accuracy 10.0% -> 25.0%",
                         "grouping: 4 groups | scale weights prompt 1.00"]
    c.step(11, {"grouping/weight_prompt": 1.0})
    assert len(lines) == 4  # grouper notes only every NOTE_EVERY steps
    c.end([("model", "runs/x/model")])
    assert lines[-1].startswith("done\n  held-out   accuracy 10.0% -> 25.0%\n  wall time  ")
    assert lines[-1].endswith("\n  model      runs/x/model")


def test_without_an_evaluation_before_there_is_no_arrow():
    lines = []
    c = RunConsole(10, write=lines.append)  # run.eval_before=false: the first evaluation is at step 5
    c.evaluated(5, {"eval/accuracy": 0.25})
    c.step(5, {})
    c.end([])
    assert lines[0] == "step 5: held-out accuracy 25.0%"
    assert lines[1].startswith("done\n  held-out   accuracy 25.0%\n")


def test_a_short_run_as_the_user_sees_it(tmp_path, capsys):
    """tiny:xs from scratch on arithmetic: no completion is right, so no group has reward
    spread and no step trains; the run says so, evaluates before and after, and PyTorch
    warns about nothing."""
    out = tmp_path / "run"
    args = ["train", "--model", "tiny:xs", "--data", "task:arithmetic", "--out", str(out), "--steps", "3",
            "rollout.max_new_tokens=8", "rollout.prompts_per_step=2", "rollout.num_generations=2",
            "data.eval_size=4", "run.save_every=2", "run.progress=false"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cli.main(args) == 0
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]
    text = capsys.readouterr().out
    assert "GRPO: 3 steps\n  device " in text
    assert "  optimizer  lr 0.0001 (default for this model size), warm-up 0, constant" in text
    assert "before training: held-out accuracy 0.0%" in text
    assert "step 1: no update: no reward spread in any of the 2 groups (every advantage is 0)" in text
    assert "step 3: held-out accuracy 0.0% -> 0.0%" in text
    assert "done\n  held-out   accuracy 0.0% -> 0.0%\n  wall time  " in text
    assert f"  model      {out / 'model'}" in text

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert set(rows[0]) == {"step", "time", "elapsed", "eval/accuracy", "eval/format", "eval/reasoning_steps"}
    times = [r["time"] for r in rows]
    assert times == sorted(times) and all(r["elapsed"] >= 0 for r in rows)
    assert all(r["lr"] == 1e-4 for r in rows[1:])  # nothing trained: the schedule did not move, nor warn
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert [(e["event"], e.get("step")) for e in events] == [
        ("start", None), ("eval", 0), ("checkpoint", 2), ("eval", 3), ("checkpoint", 3), ("end", 3)]
    assert events[2]["path"].endswith("step-000002")

    # resuming records a resume event and keeps the "before" of the first run
    import shutil

    shutil.rmtree(out / "checkpoints" / "step-000003")
    assert cli.main(args + ["--resume"]) == 0
    text = capsys.readouterr().out
    assert "resuming after step 2" in text and "held-out   accuracy 0.0% -> 0.0%" in text
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events][6:] == ["resume", "eval", "checkpoint", "end"]
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [0, 1, 2, 3]


@pytest.mark.trackers
def test_every_metric_of_a_run_reaches_tensorboard(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard not installed (pip install 'grpokit[tensorboard]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert cli.main(["train", "--model", "tiny:xs", "--data", "task:arithmetic", "--out", str(out), "--steps", "2",
                     "rollout.max_new_tokens=8", "rollout.prompts_per_step=2", "rollout.num_generations=2",
                     "data.eval_size=2", "run.progress=false", "run.report_to=[tensorboard]"]) == 0
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    scalars = {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}
    for row in (json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()):
        for k, v in row.items():
            if k not in ("step", "time") and isinstance(v, (int, float)):
                assert scalars[k][row["step"]] == pytest.approx(v, rel=1e-6, abs=1e-6), k
    assert "samples/text_summary" in acc.Tags()["tensors"]


def test_sft_writes_its_plot_samples_and_timed_lines(tmp_path):
    traces = tmp_path / "traces.jsonl"
    traces.write_text("".join(json.dumps({"prompt": f"Say {w}.", "completion": f"<answer>{w}</answer>"}) + "\n"
                              for w in ("cat", "dog", "owl", "emu", "yak")))
    out = tmp_path / "sft"
    assert cli.main(["sft", "--data", str(traces), "--model", "tiny:xs", "--out", str(out), "--steps", "3",
                     "batch_size=2", "warmup_steps=1", "progress=false"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    # each line has its own wall-clock time and elapsed seconds, in order
    assert [r["time"] for r in rows] == sorted(r["time"] for r in rows) and rows[0]["time"] > 1.7e9
    assert 0 <= rows[0]["elapsed"] <= rows[1]["elapsed"] <= rows[2]["elapsed"]
    assert (out / "metrics.png").read_bytes()[:4] == b"\x89PNG"
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [(s["step"], s["prompt"], s["trace"]) for s in samples] == [
        (3, "Say cat.", "<answer>cat</answer>"), (3, "Say dog.", "<answer>dog</answer>"),
        (3, "Say owl.", "<answer>owl</answer>"), (3, "Say emu.", "<answer>emu</answer>")]
    assert all(isinstance(s["completion"], str) for s in samples)
