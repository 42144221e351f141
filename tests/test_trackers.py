"""Experiment trackers: the registry, RunLogger's fan-out, and for each tracker whose
package is installed, what it wrote, read back with that tracker's own reader."""
import glob
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grpokit.logging import RunLogger
from grpokit.trackers import TRACKERS, RunInfo, missing_package, open_trackers
from grpokit.trackers.base import flatten, sample_columns

CONFIG = {"run": {"steps": 2, "out": "runs/x"}, "rewards": [{"name": "accuracy", "weight": 1.0}],
          "optim": {"lr": None}}
STEPS = {1: {"reward": 0.25, "reward/accuracy": 0.5, "eval/accuracy": 0.125},
         2: {"reward": 0.75, "reward/accuracy": 1.0}}
SAMPLES = {1: [{"prompt": "2+2=", "completion": "<answer>4</answer>", "reward": 1.0},
               {"prompt": "3|3", "completion": "two\nlines", "reward": 0.0}],
           2: [{"prompt": "5+5=", "completion": "<answer>10</answer>", "reward": 1.0}]}


def _log_two_steps(tmp_path, names, **info):
    run_dir = tmp_path / "myrun"
    run_dir.mkdir()
    with RunLogger(run_dir, console=False, trackers=open_trackers(names, RunInfo(run_dir, "myrun", CONFIG,
                                                                                  **info))) as log:
        for step in (1, 2):
            log.log_step(step, STEPS[step])
            log.log_samples(step, SAMPLES[step])
    return run_dir


# --------------------------------------------------------------------------- interface

def test_registry_lists_the_four_trackers_with_their_extras():
    assert TRACKERS.names() == ["mlflow", "tensorboard", "trackio", "wandb"]
    assert {n: TRACKERS.get(n).extra for n in TRACKERS.names()} == {
        "mlflow": "mlflow", "tensorboard": "tensorboard", "trackio": "trackio", "wandb": "wandb"}


def test_missing_package_names_the_install_command(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert missing_package("wandb") == "wandb needs the 'wandb' package: pip install 'grpokit[wandb]'"
    with pytest.raises(ImportError, match=r"run.report_to: mlflow needs the 'mlflow' package: "
                                          r"pip install 'grpokit\[mlflow\]'"):
        open_trackers(["mlflow"], RunInfo(Path("unused"), "x"))


def test_validate_reports_unknown_and_missing_trackers(monkeypatch):
    import importlib.util

    from grpokit.config import TrainConfig, validate

    cfg = TrainConfig()
    cfg.run.report_to = ["tensorbord"]
    assert any(p.startswith("run.report_to[0] = 'tensorbord': unknown tracker; valid: mlflow, tensorboard, "
                            "trackio, wandb (did you mean 'tensorboard'?)") for p in validate(cfg))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "trackio" else real(name))
    cfg.run.report_to = ["trackio"]
    assert "run.report_to[0] = 'trackio': trackio needs the 'trackio' package: pip install 'grpokit[trackio]'" \
        in validate(cfg)


def test_flatten_and_sample_columns():
    assert flatten(CONFIG) == {"run.steps": 2, "run.out": "runs/x", "rewards": '[{"name": "accuracy", "weight": 1.0}]',
                               "optim.lr": None}
    assert sample_columns([{"prompt": "a", "reward": 1}, {"prompt": "b", "advantage": 0.5}]) == \
        ["step", "prompt", "reward", "advantage"]


class Recorder:
    def __init__(self, fail_on=None):
        self.calls, self.fail_on = [], fail_on

    def log_metrics(self, step, metrics):
        if self.fail_on == "log_metrics":
            raise OSError("disk full")
        self.calls.append(("metrics", step, metrics))

    def log_samples(self, step, rows):
        self.calls.append(("samples", step, rows))

    def close(self):
        self.calls.append(("close",))


def test_run_logger_sends_numbers_and_samples_to_every_tracker(tmp_path):
    rec = Recorder()
    with RunLogger(tmp_path, console=False, trackers=[rec]) as log:
        log.log_step(1, {"reward": 0.5, "note": "text is not a metric", "flag": True, "bad": float("nan")})
        log.log_samples(1, [{"completion": "x", "reward": 1.0}])
    (kind, step, metrics), samples, close = rec.calls
    assert (kind, step) == ("metrics", 1)
    assert set(metrics) == {"reward", "elapsed"} and metrics["reward"] == 0.5  # no time, text, bool or NaN
    assert samples == ("samples", 1, [{"step": 1, "completion": "x", "reward": 1.0}])
    assert close == ("close",)


def test_a_failing_tracker_is_dropped_with_one_line(tmp_path, capsys):
    bad, good = Recorder(fail_on="log_metrics"), Recorder()
    with RunLogger(tmp_path, console=False, trackers=[bad, good]) as log:
        log.log_step(1, {"reward": 0.5})
        log.log_step(2, {"reward": 0.6})
    assert [c[1] for c in good.calls if c[0] == "metrics"] == [1, 2]
    assert bad.calls == []  # not even closed: it was dropped at its first failure
    out = capsys.readouterr().out
    assert out.count("tracker Recorder failed and is switched off: OSError: disk full") == 1
    # metrics.jsonl is written whatever the trackers do
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]


# --------------------------------------------------------------------------- read back

@pytest.mark.trackers
def test_tensorboard_event_files_hold_every_metric_the_config_and_samples(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard not installed (pip install 'grpokit[tensorboard]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = _log_two_steps(tmp_path, ["tensorboard"])
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    scalars = {tag: [(e.step, round(e.value, 6)) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    assert scalars["reward"] == [(1, 0.25), (2, 0.75)]
    assert scalars["reward/accuracy"] == [(1, 0.5), (2, 1.0)]
    assert scalars["eval/accuracy"] == [(1, 0.125)]
    assert [s for s, _ in scalars["elapsed"]] == [1, 2]
    texts = {tag: [(e.step, e.tensor_proto.string_val[0].decode()) for e in acc.Tensors(tag)]
             for tag in acc.Tags()["tensors"]}
    (step0, config), = texts["config/text_summary"]
    assert step0 == 0 and "| run.steps | 2 |" in config
    (s1, table1), (s2, table2) = texts["samples/text_summary"]
    assert (s1, s2) == (1, 2)
    assert table1.splitlines()[0] == "| step | prompt | completion | reward |"
    assert "| 1 | 3\\|3 | two<br>lines | 0 |" in table1  # pipes escaped, line breaks kept
    assert "<answer>10</answer>" in table2


@pytest.mark.trackers
def test_mlflow_file_store_holds_metrics_params_and_the_samples_table(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="mlflow not installed (pip install 'grpokit[mlflow]')")
    from mlflow import MlflowClient

    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(var, raising=False)
    run_dir = _log_two_steps(tmp_path, ["mlflow"])
    client = MlflowClient(tracking_uri=(run_dir / "mlruns").resolve().as_uri())
    exp = client.get_experiment_by_name("grpokit")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_name == "myrun" and run.info.status == "FINISHED"
    history = {k: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, k)]
               for k in ("reward", "reward.accuracy", "eval.accuracy")}
    assert history == {"reward": [(1, 0.25), (2, 0.75)], "reward.accuracy": [(1, 0.5), (2, 1.0)],
                       "eval.accuracy": [(1, 0.125)]}
    assert run.data.params["run.steps"] == "2" and run.data.params["optim.lr"] == "None"
    table = json.loads(Path(client.download_artifacts(run.info.run_id, "samples.json", str(tmp_path))).read_text())
    rows = [dict(zip(table["columns"], r)) for r in table["data"]]
    assert [(r["step"], r["completion"]) for r in rows] == [
        (1, "<answer>4</answer>"), (1, "two\nlines"), (2, "<answer>10</answer>")]

    # A resumed run appends to the same MLflow run.
    with RunLogger(run_dir, console=False, resume=True,
                   trackers=open_trackers(["mlflow"], RunInfo(run_dir, "myrun", CONFIG, resume=True,
                                                              start_step=2))) as log:
        log.log_step(3, {"reward": 1.0})
    (again,) = client.search_runs([exp.experiment_id])  # no second run
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    assert [(m.step, m.value) for m in client.get_metric_history(again.info.run_id, "reward")][-1] == (3, 1.0)


def _wandb_records(path: str) -> list:
    """Records of a W&B offline run file: a 7-byte header, then 32 KiB blocks of chunks
    (crc32 u32, length u16, type u8: 1 full, 2 first, 3 middle, 4 last), each a piece of
    a protobuf Record."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos, buf, out = Path(path).read_bytes(), 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            break
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            out.append(rec)
    return out


@pytest.mark.trackers
def test_wandb_writes_an_offline_run_without_an_api_key(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb not installed (pip install 'grpokit[wandb]')")
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_PROJECT", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: no key
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    run_dir = _log_two_steps(tmp_path, ["wandb"])
    (run_file,) = glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb"))
    # wandb's writer process may still be flushing when finish() returns: wait for the exit record.
    deadline = time.time() + 60
    records = _wandb_records(run_file)
    while not any(r.WhichOneof("record_type") == "exit" for r in records):
        assert time.time() < deadline, "the W&B run file never got its exit record"
        time.sleep(0.2)
        records = _wandb_records(run_file)
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.display_name == "myrun" and run.project == "grpokit"
    config = {i.key: json.loads(i.value_json) for i in run.config.update}
    assert config["run"] == {"steps": 2, "out": "runs/x"}
    # history items are keyed by a path: ["reward/accuracy"], ["samples", "path"]
    history = [{"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    assert [(h["_step"], h["reward"], h["reward/accuracy"]) for h in history] == [(1, 0.25, 0.5), (2, 0.75, 1.0)]
    assert history[0]["eval/accuracy"] == 0.125
    table = json.loads((Path(run_file).parent / "files" / history[-1]["samples/path"]).read_text())
    assert table["columns"] == ["step", "prompt", "completion", "reward"]
    assert [row[2] for row in table["data"]][-1] == "<answer>10</answer>"


_TRACKIO_SCRIPT = """
import json, sys
from pathlib import Path
from grpokit.logging import RunLogger
from grpokit.trackers import RunInfo, open_trackers
run_dir = Path(sys.argv[1])
with RunLogger(run_dir, console=False, trackers=open_trackers(["trackio"], RunInfo(run_dir, "myrun", {"run": {"steps": 2}}))) as log:
    log.log_step(1, {"reward": 0.25, "reward/accuracy": 0.5})
    log.log_samples(1, [{"completion": "<answer>4</answer>", "reward": 1.0}])
    log.log_step(2, {"reward": 0.75, "reward/accuracy": 1.0})
from trackio.sqlite_storage import SQLiteStorage
logs = SQLiteStorage.get_logs("grpokit", "myrun")
print("RESULT " + json.dumps({"logs": logs, "config": SQLiteStorage.get_run_config("grpokit", "myrun")}, default=str))
"""


@pytest.mark.trackers
def test_trackio_local_store_holds_metrics_config_and_samples(tmp_path):
    pytest.importorskip("trackio", reason="trackio not installed (pip install 'grpokit[trackio]')")
    # trackio fixes its store directory when imported: a fresh process with TRACKIO_DIR set.
    env = {**os.environ, "TRACKIO_DIR": str(tmp_path / "store"), "TRACKIO_PROJECT": "grpokit",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    env.pop("TRACKIO_SPACE_ID", None)
    env.pop("TRACKIO_SERVER_URL", None)
    proc = subprocess.run([sys.executable, "-c", _TRACKIO_SCRIPT, str(tmp_path / "myrun")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    metrics = [(r["step"], r.get("reward"), r.get("reward/accuracy")) for r in result["logs"] if "reward" in r]
    assert metrics == [(1, 0.25, 0.5), (2, 0.75, 1.0)]
    (table,) = [r["samples"] for r in result["logs"] if "samples" in r]
    assert "<answer>4</answer>" in json.dumps(table)
    assert result["config"]["run"] == {"steps": 2}
