"""The demo: a smoke run in the default suite, the full pipeline as a slow test."""
import json

import pytest

from grpokit import cli


def test_quick_demo_runs_both_stages_and_writes_its_outputs(tmp_path, capsys):
    assert cli.main(["demo", "--quick", "--out", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "accuracy after cold start:" in out and "accuracy after GRPO:" in out
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert summary["grpo_steps"] == 3
    assert (tmp_path / "d" / "demo.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "d" / "cold_start" / "config.json").is_file()


@pytest.mark.slow
def test_full_demo_raises_heldout_accuracy_by_ten_points(tmp_path):
    from grpokit.demos.demo import run_demo

    s = run_demo(seed=0, out=str(tmp_path / "demo"))
    assert s["accuracy_grpo"] - s["accuracy_cold_start"] >= 0.10, s
    assert s["seconds_total"] < 15 * 60, s
