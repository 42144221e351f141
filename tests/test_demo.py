"""The demo: a smoke run in the default suite, the full pipeline as a slow test."""
import json

import pytest

from grpokit import cli


def test_quick_demo_runs_both_stages_and_writes_its_outputs(tmp_path, capsys):
    assert cli.main(["demo", "--quick", "--out", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "accuracy after cold start:" in out and "accuracy after GRPO:" in out
    assert "control, more SFT, rate decayed to 0, for the same training time:" in out
    assert "GRPO minus control (held-out accuracy):" in out and "verdict (same tokens): " in out
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert summary["grpo_steps"] == 3 and summary["control_annealed"] is True
    # the control continued the cold start's run until both GRPO budgets were spent
    assert summary["control_train_seconds"] >= summary["grpo_train_seconds"]
    assert summary["control_tokens"] >= summary["grpo_sampled_tokens"] > 0
    assert 1 <= summary["control_steps_tokens"] and 1 <= summary["control_steps_time"]
    assert (tmp_path / "d" / "control" / "metrics.jsonl").is_file()
    assert (tmp_path / "d" / "demo.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "d" / "cold_start" / "config.json").is_file()


@pytest.mark.slow
def test_full_demo_beats_cold_start_by_ten_points_and_control_by_five(tmp_path):
    from grpokit.demos.demo import run_demo

    s = run_demo(seed=0, out=str(tmp_path / "demo"))
    assert s["accuracy_grpo"] - s["accuracy_cold_start"] >= 0.10, s
    assert s["accuracy_grpo"] - max(s["accuracy_control_time"], s["accuracy_control_tokens"]) >= 0.05, s
    assert s["seconds_total"] < 15 * 60, s


def test_cpu_record_names_the_kernels_torch_uses():
    from grpokit.demos.demo import cpu_model, with_capability

    assert with_capability("AMD EPYC", "AVX512") == "AMD EPYC (AVX-512)"
    assert with_capability("AMD EPYC", "AVX2") == "AMD EPYC (AVX2)"
    assert with_capability("Apple M2", None) == "Apple M2"
    # the live record ends with what torch reports for this machine
    import torch

    cap = torch.backends.cpu.get_cpu_capability()
    assert cpu_model().endswith(with_capability("", cap).strip())
