"""benchmarks/soak.py runs end to end on a few steps and reports what it measured; the
1,000-step run itself is a benchmark (docs/runs.md), not a test."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "soak.py"


def _soak():
    spec = importlib.util.spec_from_file_location("soak_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_text_noise_is_a_fixed_function_of_the_text():
    noise = _soak().text_noise
    assert noise("abc") == noise("abc") and 0.0 <= noise("abc") < 1.0
    assert len({noise(s) for s in ("1", "2", "12", "21", "x")}) == 5  # spread between different texts


def test_soak_runs_and_samples_every_count(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc = _soak().main(["--steps", "3", "--baseline", "1", "--every", "1", "--prompts", "1", "--out", "soak",
                       "--max-growth", "10"])
    result = json.loads((tmp_path / "soak" / "soak.json").read_text())
    assert rc == (0 if not result["problems"] else 1) and result["steps"] == 3
    steps = [r["step"] for r in result["samples"]]
    assert steps == [0, 1, 2, 3, "end"]
    for r in result["samples"]:
        assert r["rss_mib"] > 0 and r["fds"] > 0 and r["threads"] >= 1 and r["children"] >= 0
    metrics = [json.loads(line) for line in (tmp_path / "soak" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(m.get("trained_rows", 0) > 0 for m in metrics)  # the noise reward: every step trains
