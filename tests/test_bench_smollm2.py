"""Bench workload W3 (SmolLM2): its config, its chat-rendered data, the TRL wrapper's
arguments, and an in-process run on a tiny stand-in model with a chat template."""
import json
import runpy
import sys
from pathlib import Path

import pytest

from grpokit import bench
from grpokit.bench import run as bench_run
from grpokit.bench.smollm2 import DATA_FILE, MODEL_DIR, prepare_assets

CHATML = ("{% for m in messages %}{{ '<|user|>' if m['role'] == 'user' else '<|system|>' }}{{ m['content'] + '\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from bench_assets import write_assets  # noqa: E402


def _assets(tmp_path):
    return write_assets(tmp_path, MODEL_DIR, chat_template=CHATML)  # CHATML stands in for SmolLM2's template


def test_w3_config_is_the_baseline_settings_with_w3s_shape(tmp_path):
    w = bench_run.WORKLOADS["smollm2"]
    prepare_assets(_assets(tmp_path))
    cfg = bench_run.workload_config(w, tmp_path, steps=10, seed=42, threads=2, out=str(tmp_path / "r"))
    assert cfg.model.name_or_path == str(tmp_path / "models" / "smollm2-135m")
    assert (cfg.rollout.prompts_per_step, cfg.rollout.num_generations, cfg.rollout.max_new_tokens) == (8, 4, 128)
    assert (cfg.algorithm.beta, cfg.optim.lr, cfg.optim.schedule) == (0.04, 1e-5, "linear")
    assert cfg.data.chat_template == "off"  # the prompts are already rendered
    assert cfg.data.train == str(tmp_path / "data" / DATA_FILE)


def test_prepare_assets_renders_prompts_through_the_chat_template(tmp_path):
    assets = _assets(tmp_path)
    out = prepare_assets(assets)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 20 and rows[0]["answer"] == "21"
    assert rows[0]["prompt"].startswith("<|system|>Solve the problem step by step.")
    assert rows[0]["prompt"].endswith("<|user|>Compute 10+11.\n<|assistant|>")  # "Answer:" dropped
    out.write_text("kept\n")
    assert prepare_assets(assets).read_text() == "kept\n"  # written once


def test_prepare_assets_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="grpokit model get smollm2-135m --out"):
        prepare_assets(tmp_path)
    assert bench.main(["--workload", "smollm2", "--assets", str(tmp_path), "--no-wait-idle"]) == 2


def test_w3_in_process_run(tmp_path):
    assets = _assets(tmp_path)
    out = tmp_path / "r.json"
    rc = bench.main(["--in-process", "--workload", "smollm2", "--assets", str(assets), "--steps", "2", "--warmup",
                     "1", "--threads", "1", "--json-out", str(out), "rollout.max_new_tokens=4"])
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["model"] == "smollm2" and [s["step"] for s in r["per_step"]] == [1, 2]
    assert r["per_step"][0]["completion_len_max"] <= 4
    assert r["info"]["tokenizer"]["matches_trl_baseline_tokenizer"]


def test_trl_wrapper_runs_the_baseline_with_w3s_shape(tmp_path, monkeypatch):
    assets = _assets(tmp_path)
    prepare_assets(assets)
    fake = tmp_path / "trl_baseline.py"
    seen = tmp_path / "argv.json"
    fake.write_text("import json, sys, os\n"
                    "assets = sys.argv[sys.argv.index('--assets') + 1]\n"
                    "data = open(os.path.join(assets, 'data', 'arith_512.jsonl')).readline()\n"
                    f"json.dump({{'argv': sys.argv[1:], 'data': data}}, open({str(seen)!r}, 'w'))\n")
    monkeypatch.setattr(sys, "argv", ["trl_smollm2.py", "--model", "smollm2", "--assets", str(assets), "--steps", "3",
                                      "--baseline", str(fake), "--json-out", "x.json"])
    runpy.run_path(str(REPO / "benchmarks" / "trl_smollm2.py"), run_name="__main__")
    got = json.loads(seen.read_text())
    argv = got["argv"]
    assert argv[argv.index("--model") + 1] == str(assets / "models" / MODEL_DIR)
    assert argv[argv.index("--max-completion-length") + 1] == "128"
    assert argv[argv.index("--num-generations") + 1] == "4" and argv[argv.index("--prompts-per-step") + 1] == "8"
    assert argv[-4:] == ["--steps", "3", "--json-out", "x.json"]
    assert json.loads(got["data"])["prompt"].startswith("<|system|>")  # TRL reads the rendered prompts
