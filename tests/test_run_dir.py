"""Run directories as a user meets them: resume from the saved settings, what a resume
may change, Ctrl-C / SIGTERM, --overwrite, time-based checkpoints, a run directory given
as --model."""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from grpokit import cli
from grpokit.config.schema import TrainConfig
from grpokit.rewards import RewardSet
from grpokit.run_dir import RunDirError, check_resume, complete_checkpoints, model_of_run

sys.path.insert(0, str(Path(__file__).parent))
from test_crash_resume import assert_same_run, base_args, metrics  # noqa: E402


def _signal_at_score(monkeypatch, call: int, *signums: int) -> None:
    """Send the signals to this process during the `call`-th reward scoring (mid-step)."""
    real, seen = RewardSet.score, {"n": 0}

    def score(self, *a, **k):
        seen["n"] += 1
        if seen["n"] == call:
            for s in signums:
                os.kill(os.getpid(), s)
        return real(self, *a, **k)

    monkeypatch.setattr(RewardSet, "score", score)


def test_resume_without_the_original_flags_uses_the_saved_settings(tmp_path, capsys):
    args = base_args(tmp_path, steps=2) + ["--out", str(tmp_path / "run")]
    assert cli.main(args) == 0
    capsys.readouterr()
    assert cli.main(["train", "--out", str(tmp_path / "run"), "--resume", "--steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "resume changes run.steps 2 -> 3" in out
    assert f"resuming from step 2 of {tmp_path / 'run'}" in out
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "crash_rewards.py:count_a" in saved and "prompts.jsonl" in saved and "lr: 0.003" in saved
    assert [r["step"] for r in metrics(tmp_path / "run" / "metrics.jsonl")] == [1, 2, 3]


def test_ctrl_c_finishes_the_step_checkpoints_and_resumes_identically(tmp_path, monkeypatch, capsys):
    args = base_args(tmp_path, steps=4)
    assert cli.main([*args, "--out", str(tmp_path / "ref")]) == 0
    with monkeypatch.context() as m:
        _signal_at_score(m, 2, signal.SIGINT)  # during step 2
        assert cli.main([*args, "--out", str(tmp_path / "run")]) == 130
    err = capsys.readouterr().err
    assert f"stopped by SIGINT after step 2; checkpoint saved. Resume with: grpokit train --out {tmp_path / 'run'} " \
           "--resume" in err
    assert [s for s, _ in complete_checkpoints(tmp_path / "run")] == [1, 2]
    assert cli.main(["train", "--out", str(tmp_path / "run"), "--resume"]) == 0
    assert_same_run(tmp_path / "ref", tmp_path / "run")


def test_sigterm_exits_143_after_a_checkpoint(tmp_path, monkeypatch, capsys):
    args = base_args(tmp_path, steps=4) + ["run.save_every=0", "run.save_minutes=0", "--out", str(tmp_path / "run")]
    _signal_at_score(monkeypatch, 1, signal.SIGTERM)
    assert cli.main(args) == 143
    assert "stopped by SIGTERM after step 1" in capsys.readouterr().err
    assert [s for s, _ in complete_checkpoints(tmp_path / "run")] == [1]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


def test_a_second_ctrl_c_stops_at_once(tmp_path, monkeypatch, capsys):
    args = base_args(tmp_path, steps=4) + ["run.save_every=0", "run.save_minutes=0", "--out", str(tmp_path / "run")]
    _signal_at_score(monkeypatch, 1, signal.SIGINT, signal.SIGINT)
    assert cli.main(args) == 130
    assert "grpokit: interrupted" in capsys.readouterr().err
    assert complete_checkpoints(tmp_path / "run") == []  # no checkpoint: the user asked to quit now


def test_save_minutes_checkpoints_by_time(tmp_path):
    args = base_args(tmp_path, steps=3) + ["run.save_every=0", "run.keep_checkpoints=5"]
    assert cli.main([*args, "--out", str(tmp_path / "a"), "run.save_minutes=1e-9"]) == 0  # due after every step
    assert [s for s, _ in complete_checkpoints(tmp_path / "a")] == [1, 2, 3]
    assert cli.main([*args, "--out", str(tmp_path / "b"), "run.save_minutes=0"]) == 0
    assert [s for s, _ in complete_checkpoints(tmp_path / "b")] == [3]
    assert_same_run(tmp_path / "a", tmp_path / "b")  # saving never changes the run


def test_overwrite_moves_the_old_run_aside(tmp_path, capsys):
    args = base_args(tmp_path, steps=1) + ["--out", str(tmp_path / "run")]
    assert cli.main(args) == 0
    (tmp_path / "run" / "mine.txt").write_text("keep me")
    assert cli.main(args) == 2  # refused: the directory holds a run
    assert cli.main([*args, "--overwrite"]) == 0
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]
    assert len(aside) == 1 and (aside[0] / "mine.txt").read_text() == "keep me"
    assert f"moved the old run to {aside[0]}" in capsys.readouterr().out
    assert not (tmp_path / "run" / "mine.txt").exists()
    # a run started with --overwrite resumes without it (the saved config says overwrite: true)
    assert cli.main(["train", "--out", str(tmp_path / "run"), "--resume", "--steps", "2"]) == 0


# --------------------------------------------------------------------------- unit rules


def _cfg(**run) -> TrainConfig:
    cfg = TrainConfig()
    for k, v in run.items():
        setattr(cfg.run, k, v)
    return cfg


def test_resume_allows_length_saving_and_logging_changes():
    old, new = _cfg(steps=10, save_every=0), _cfg(steps=20, save_every=5, progress=False, resume=True)
    assert check_resume(old, new, step=4) == ["run.steps 10 -> 20", "run.save_every 0 -> 5",
                                              "run.progress true -> false"]


@pytest.mark.parametrize("change, message", [
    (lambda c: setattr(c.algorithm, "beta", 0.1), "algorithm.beta = 0.1 differs from the run's 0.0"),
    (lambda c: setattr(c.optim, "lr", 1e-3), "optim.lr"),
    (lambda c: setattr(c.data, "train", "other.jsonl"), "data.train"),
    (lambda c: setattr(c.run, "steps", 3), "already at step 4"),
    (lambda c: (setattr(c.run, "steps", 20), setattr(c.optim, "schedule", "cosine")), "optim.schedule"),
])
def test_resume_refuses_changes_that_make_another_run(change, message):
    old = _cfg(steps=10)
    if "schedule" in message:
        old.optim.schedule = "cosine"
    new = _cfg(steps=10)
    if "schedule" in message:
        new.optim.schedule = "cosine"
    change(new)
    with pytest.raises(RunDirError, match=message.replace("(", r"\(").replace(".", r"\.")):
        check_resume(old, new, step=4)


def _complete(path: Path, files=("config.json",)) -> None:
    path.mkdir(parents=True)
    for f in files:
        (path / f).write_text("{}")
    (path / "COMPLETE").write_text("{}")


def test_a_run_directory_stands_for_its_final_model_else_its_newest_checkpoint(tmp_path):
    run = tmp_path / "run"
    _complete(run / "checkpoints" / "step-000002")
    _complete(run / "checkpoints" / "step-000010")
    (run / "checkpoints" / ".tmp-step-000012-1").mkdir()  # half-written: ignored
    path, note = model_of_run(run)
    assert path == run / "checkpoints" / "step-000010" and "newest checkpoint (step 10)" in note
    _complete(run / "model")
    path, note = model_of_run(run)
    assert path == run / "model" and "final model" in note


def test_a_lora_checkpoint_is_not_a_model(tmp_path):
    _complete(tmp_path / "run" / "checkpoints" / "step-000003", files=("adapter_config.json",))
    with pytest.raises(RunDirError, match="holds a LoRA adapter only"):
        model_of_run(tmp_path / "run")


def test_stop_requests_outside_the_main_thread_install_nothing():
    import threading

    from grpokit.signals import StopRequests

    before, seen = signal.getsignal(signal.SIGINT), []

    def body():
        with StopRequests() as stop:  # signal.signal would raise here: only the main thread may
            seen.append((signal.getsignal(signal.SIGINT), stop.requested))

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert seen == [(before, False)]
