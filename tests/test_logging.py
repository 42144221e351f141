"""RunLogger files: round trip, NaN -> null, resume truncation, torn lines."""
import json
import math

import torch

from grpokit.logging import RunLogger, progress, read_jsonl, read_metrics


def test_metrics_round_trip_and_conversion(tmp_path, capsys):
    with RunLogger(tmp_path, console_keys=("reward", "kl"), total_steps=3) as log:
        log.log_step(1, {"reward": torch.tensor(0.30000001192092896), "kl": float("nan"),
                         "len": 12, "hist": torch.tensor([1.5, 2.0]), "inf": math.inf})
        log.log_step(2, {"reward": 0.5, "kl": 0.01})
        log.log_samples(2, [{"prompt": "1+1", "completion": "2", "reward": 1.0}])
        log.log_event("eval", accuracy=0.25)
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["reward"] == 0.3 and rows[0]["kl"] is None and rows[0]["inf"] is None
    assert rows[0]["len"] == 12 and rows[0]["hist"] == [1.5, 2.0]
    assert "NaN" not in (tmp_path / "metrics.jsonl").read_text()
    assert read_jsonl(tmp_path / "samples.jsonl") == [{"step": 2, "prompt": "1+1", "completion": "2", "reward": 1.0}]
    assert read_jsonl(tmp_path / "events.jsonl")[0]["event"] == "eval"
    out = capsys.readouterr().out
    assert "step 1/3 | reward 0.3 | kl nan" in out and "len" not in out


def test_flushed_without_close(tmp_path):
    log = RunLogger(tmp_path, console=False)
    log.log_step(1, {"reward": 1.0})
    assert read_metrics(tmp_path / "metrics.jsonl")[0]["reward"] == 1.0  # readable before close
    log.close()


def test_resume_drops_later_steps(tmp_path):
    with RunLogger(tmp_path, console=False) as log:
        for s in range(1, 6):
            log.log_step(s, {"reward": s})
            log.log_samples(s, [{"text": f"s{s}"}])
    # Crash mid-write: a torn line at the end.
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "rew')
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4, 5]

    # Checkpoint was at step 3; the resumed run logs step 4 again.
    with RunLogger(tmp_path, console=False, resume=True) as log:
        log.log_samples(4, [{"text": "again"}])
        log.log_step(4, {"reward": 40})
    assert [(r["step"], r["reward"]) for r in read_metrics(tmp_path)] == [(1, 1), (2, 2), (3, 3), (4, 40)]
    assert [r["text"] for r in read_jsonl(tmp_path / "samples.jsonl")] == ["s1", "s2", "s3", "again"]

    RunLogger(tmp_path, console=False, resume=2).close()  # explicit step truncates at once
    assert [r["step"] for r in read_metrics(tmp_path)] == [1]

    RunLogger(tmp_path, console=False).close()  # a fresh run starts empty
    assert read_metrics(tmp_path) == []


def test_torn_tail_cut_before_append(tmp_path):
    (tmp_path / "events.jsonl").write_text('{"event": "a"}\n{"ev')
    with RunLogger(tmp_path, console=False, resume=True) as log:
        log.log_event("b")
    assert [r["event"] for r in read_jsonl(tmp_path / "events.jsonl")] == ["a", "b"]
    assert all(json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines())


def test_disabled_writes_nothing(tmp_path):
    with RunLogger(tmp_path / "x", enabled=False) as log:
        log.log_step(1, {"reward": 1.0})
    assert not (tmp_path / "x").exists()


def test_progress_disabled():
    bar = progress(10, "steps", enabled=False, initial=3)
    bar.update(2)  # a disabled bar accepts calls and draws nothing
    assert bar.disable
    bar.close()
