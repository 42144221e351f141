"""`grpokit bench`: the workload matches the TRL baseline, and a run produces the report.
No timing is asserted."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from grpokit.bench import cli as bench_cli
from grpokit.bench import run as bench

sys.path.insert(0, str(Path(__file__).parent))
from bench_assets import write_assets  # noqa: E402


def test_reward_is_the_baseline_reward():
    r = bench.any_integer_reward
    assert r("12 then 22", answer="22") == 1.0
    assert r("-5", answer="-5") == 1.0
    assert r("222", answer="22") == 0.0
    assert r("no digits", answer="3") == 0.0


def _assets(tmp_path, name="tiny"):
    return write_assets(tmp_path, name)


@pytest.mark.parametrize("name,tokens", [("tiny", 32), ("small", 64)])
def test_workload_config_is_the_baseline_workload(tmp_path, name, tokens):
    assets = _assets(tmp_path, name)
    cfg = bench.workload_config(bench.WORKLOADS[name], assets, steps=10, seed=42, threads=2, out=str(tmp_path / "r"))
    from grpokit.config.presets import resolve_algorithm

    algo = resolve_algorithm(cfg.algorithm)
    assert cfg.model.name_or_path == str(assets / "models" / name) and cfg.model.dtype == "float32"
    assert (cfg.rollout.num_generations, cfg.rollout.prompts_per_step, cfg.rollout.max_new_tokens) == (8, 4, tokens)
    assert (cfg.rollout.temperature, cfg.rollout.top_p) == (1.0, 1.0)
    assert (algo.beta, algo.loss_agg, algo.scale_rewards, algo.mu, algo.kl_estimator) == \
        (0.04, "token_mean", "group", 1, "k3")
    assert (algo.clip_low, algo.clip_high) == (0.2, 0.2)
    assert (cfg.optim.lr, cfg.optim.schedule, cfg.optim.max_grad_norm, cfg.optim.weight_decay) == \
        (1e-5, "linear", 1.0, 0.0)
    assert cfg.run.threads == 2 and cfg.rewards[0].name == bench.REWARD_SPEC


def test_in_process_run_reports_every_figure(tmp_path):
    assets = _assets(tmp_path)
    out = tmp_path / "r.json"
    ceiling = tmp_path / "ceiling.json"
    ceiling.write_text(json.dumps({"ceiling_flops_per_s": 1e11}))
    rc = bench_cli.main(["--in-process", "--workload", "tiny", "--assets", str(assets), "--steps", "3", "--warmup", "1",
                     "--threads", "1", "--ceiling-json", str(ceiling), "--json-out", str(out),
                     "rollout.max_new_tokens=6"])
    assert rc == 0
    r = json.loads(out.read_text())
    assert [s["step"] for s in r["per_step"]] == [1, 2, 3]
    for s in r["per_step"]:
        n, p, c = 32, s["prompt_len"], s["completion_len_max"]
        assert s["gen_positions_simple"] == n * p + n * (c - 1)  # TRL's count for this batch shape
        # each of the step's 4 prompts runs once (optim.share_prompt, and the C passes of
        # optim.native_passes), then every row's completion
        assert s["ref_positions"] == s["train_positions"] == 4 * p + n * c
        assert s["gen_positions_executed"] <= s["gen_positions_simple"]
        for k in ("generate_s", "ref_fwd_s", "policy_fwd_s", "backward_s", "optimizer_s"):
            assert s[k] >= 0.0
        assert s["policy_fwd_s"] + s["backward_s"] + s["optimizer_s"] <= s["update_s"] + 1e-6
    assert r["info"]["tokenizer"]["matches_trl_baseline_tokenizer"]
    assert r["info"]["reference"] == "frozen copy"
    assert 0 < r["fraction_of_ceiling"]["simple"] and r["peak_rss_mib"] > 0
    assert set(r["machine_load"]) >= {"own_cores_avg", "foreign_cores_avg"}
    assert r["overrides"] == ["rollout.max_new_tokens=6"]


def test_comparison_ratios_and_targets():
    def run(impl, alloc, s, rss):
        return {"impl": impl, "allocator": alloc, "median_s": s, "peak_rss_mib": rss, "tok_s": 1.0,
                "frac_ceiling_simple": 0.5, "contaminated": False, "generate_s": 0, "ref_fwd_s": 0,
                "policy_fwd_s": 0, "backward_s": 0, "optimizer_s": 0}

    runs = [run("grpokit", "default", 6.0, 2000), run("trl", "default", 14.0, 4600),
            run("grpokit", "tunables", 5.0, 2000), run("trl", "tunables", 9.4, 4600)]
    c = bench_cli.compare(runs, "small")
    r = c["ratios"]
    assert r["grpokit/default / trl/default"]["step_time"] == pytest.approx(6 / 14)
    assert r["grpokit/default / trl/default"]["meets"] is True  # target 0.6
    best = r["grpokit(best: tunables) / trl/tunables"]
    assert best["step_time"] == pytest.approx(5 / 9.4) and best["target"] == 0.9 and best["meets"] is True
    assert best["peak_rss"] == pytest.approx(2000 / 4600)


def test_gpu_workload_assets_and_harness_run_on_cpu(tmp_path):
    """The GPU workload's assets at a toy shape, loaded and trained through the same
    in-process harness (on the CPU here; `benchmarks/gpu_check.sh` runs it on a GPU)."""
    from grpokit.bench import gpu as bench_gpu
    from grpokit.model.policy import load_tokenizer

    shape = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=64, vocab_size=300, tie_word_embeddings=True, max_position_embeddings=512)
    model_dir = bench_gpu.make_assets(tmp_path, shape=shape, prompts=8, device="cpu")
    tok = load_tokenizer(str(model_dir))
    assert tok("w5 w7 w299")["input_ids"] == [5, 7, 299]
    assert tok.decode([5, 7, 0, 9], skip_special_tokens=True) == "w5 w7 w9"
    rows = [json.loads(line) for line in (tmp_path / "data" / "prompts.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(len(r["prompt"].split()) == 64 for r in rows)
    out = tmp_path / "r.json"
    assert bench_cli.main(["--in-process", "--workload", "qwen2-0.5b", "--assets", str(tmp_path), "--steps", "2",
                       "--warmup", "1", "--threads", "1", "--json-out", str(out), "model.device=cpu",
                       "model.dtype=float32", "rollout.max_new_tokens=4", "rollout.prompts_per_step=2"]) == 0
    r = json.loads(out.read_text())
    assert r["info"]["tokenizer"]["prompt_tokens"] == 64 and r["params"]["tied"]
    assert r["median_components_s"]["completion_tokens"] <= 2 * 8 * 4


def test_hash_reward_is_a_fixed_function_of_the_text():
    from grpokit.bench.gpu import hash_reward

    assert hash_reward("w5 w7") == hash_reward("w5 w7")
    assert hash_reward("") == int("1271cf25", 16) / 2 ** 32  # blake2b-32 of the empty string
    assert len({hash_reward(f"w{i}") for i in range(100)}) == 100


def test_child_environments_per_allocator(monkeypatch):
    from grpokit.engine.allocator import TUNABLES as OURS
    from grpokit.bench.orchestrate import env_for

    # the bench itself may run under grpokit's setting; children start from a clean slate
    monkeypatch.setenv("GLIBC_TUNABLES", OURS)
    monkeypatch.setenv("GRPOKIT_ALLOCATOR_SET", "1")
    default = env_for("default", 2)
    assert "GLIBC_TUNABLES" not in default and "GRPOKIT_ALLOCATOR_SET" not in default
    assert default["OMP_NUM_THREADS"] == "2"
    assert env_for("tunables", 2)["GLIBC_TUNABLES"] == bench.TUNABLES
    assert env_for("grpokit", 2)["GLIBC_TUNABLES"] == OURS


def test_gpu_vllm_variant_options_and_report(monkeypatch):
    """The `vllm` variant's overrides are rollout.vllm options of the schema; without vLLM
    the variant is skipped (not failed) and the report gives the install command."""
    from grpokit.bench import gpu as bench_gpu
    from grpokit.config import TrainConfig, load_config

    label, overrides = bench_gpu.VARIANTS["vllm"]
    cfg = load_config(TrainConfig, None, overrides)
    assert cfg.rollout.backend == "vllm" and cfg.rollout.vllm.sleep_mode is True
    assert 0 < cfg.rollout.vllm.gpu_memory_utilization <= 0.3
    # the default list is unchanged and needs no vLLM
    assert bench.build_parser().parse_args([]).variants == "graphs,lean,transformers"
    assert all(bench_gpu.skip_reason(v, None) is None for v in ("graphs", "lean", "transformers"))
    assert "pip install 'grpokit[vllm]'" in bench_gpu.skip_reason("vllm", None)
    assert bench_gpu.skip_reason("vllm", "0.32.0") is None

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    assert bench_gpu.vllm_version() is None

    ceiling = {"gpu": "GPU", "torch": "2", "ceiling_flops_per_s": 1e15, "shape": "8192^3 bfloat16", "reps": 20}
    report = {"workload": "qwen2-0.5b", "steps": 8, "warmup": 2, "ceiling": ceiling, "vllm_installed": False,
              "vllm_version": None, "variants": ["vllm"],
              "runs": [{"label": label, "skipped": bench_gpu.skip_reason("vllm", None)}]}
    md = bench_gpu.render(report)
    assert f"| {label} | skipped: vLLM is not installed here (pip install 'grpokit[vllm]') |" in md
    assert "vLLM: not installed here, so no vLLM row; pip install 'grpokit[vllm]'" in md
    assert "no vLLM sampler" not in md
    report.update(vllm_installed=True, vllm_version="0.32.0", runs=[])
    assert "vLLM: 0.32.0; its row samples with rollout.backend=vllm" in bench_gpu.render(report)
    report.update(variants=["graphs"])
    assert "vLLM: 0.32.0 installed; --variants ...,vllm adds its row." in bench_gpu.render(report)
