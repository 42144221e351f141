"""FSDP2 (grpokit.sharding, `run.parallel=fsdp`): what a sharded run decides, and that it
trains what one process trains. The multi-process tests start torchrun with 2 gloo
processes on the CPU (`dist`, `make test-dist`)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from grpokit import sharding
from grpokit.config.schema import TrainConfig
from grpokit.config.validation import fsdp_problems, validate
from test_dist import _assert_same_run, _jsonl, _run, _setup, _weights


def test_parallel_mode_follows_the_key_then_the_launcher(monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    assert sharding.resolve_mode("auto") == "ddp"
    assert sharding.resolve_mode("fsdp") == "fsdp"
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what accelerate launch sets from an FSDP config
    assert sharding.resolve_mode("auto") == "fsdp"
    assert sharding.resolve_mode("ddp") == "ddp"  # the recipe's explicit choice wins
    with pytest.raises(ValueError, match="run.parallel = 'zero3': expected one of auto, ddp, fsdp"):
        sharding.resolve_mode("zero3")


def test_fsdp_refuses_what_it_cannot_shard():
    cfg = TrainConfig()
    cfg.run.parallel = "fsdp"
    assert fsdp_problems(cfg) == []
    cfg.model.lora.r = 8  # the frozen base is sharded too
    assert fsdp_problems(cfg) == []
    cfg.rollout.backend = "vllm"
    line = ("run.parallel = 'fsdp': rollout.backend 'vllm' needs whole weights on every rank; "
            "use run.parallel=ddp or rollout.backend=transformers")
    assert fsdp_problems(cfg) == [line]
    assert line in validate(cfg)


def test_train_state_bytes_counts_parameters_gradients_and_adam_moments():
    model = torch.nn.Linear(4, 2)  # 8 + 2 float32 parameters
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 4)).sum().backward()
    opt.step()
    got = sharding.train_state_bytes(model, opt)
    mib = 2.0 ** 20
    # Adam keeps exp_avg and exp_avg_sq per parameter (its 0-d `step` is not counted)
    assert got == {"memory/params_mib": 40 / mib, "memory/grads_mib": 40 / mib, "memory/optimizer_mib": 80 / mib}


# --------------------------------------------------------------------------- processes


def _train_state(run: Path) -> float:
    rows = _jsonl(run / "metrics.jsonl")
    return sum(rows[-1][f"memory/{k}_mib"] for k in ("params", "grads", "optimizer"))


@pytest.mark.dist
def test_fsdp_in_one_process_is_the_plain_run(tmp_path):
    """A group of one: FSDP's gathered weights and unsharded gradients are the plain
    model's, so metrics and weights are bit for bit those of the plain torch path (which
    FSDP takes without the shared prompt pass)."""
    args = _setup(tmp_path) + ["--steps", "3"]
    plain = _run(args + ["--out", str(tmp_path / "plain"), "optim.share_prompt=false"], 1, GRPOKIT_NATIVE="0")
    fsdp = _run(args + ["--out", str(tmp_path / "fsdp"), "run.parallel=fsdp"], 1)
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert fsdp.returncode == 0, fsdp.stderr[-3000:]
    assert "fsdp: parameters, gradients and optimizer state sharded over 1 process(es)" in fsdp.stdout
    keys = ("reward", "loss", "kl", "grad_norm", "entropy")
    m1, m2 = _jsonl(tmp_path / "plain" / "metrics.jsonl"), _jsonl(tmp_path / "fsdp" / "metrics.jsonl")
    assert [[r[k] for k in keys] for r in m1] == [[r[k] for k in keys] for r in m2]
    w1, w2 = _weights(tmp_path / "plain"), _weights(tmp_path / "fsdp")
    assert sorted(w1) == sorted(w2) and all(torch.equal(w1[k], w2[k]) for k in w1)


@pytest.mark.slow
@pytest.mark.dist
@pytest.mark.parametrize("grouping, extra", [("prompt", []), ("multiscale", []), ("prompt", ["model.lora.r=8"])],
                         ids=["prompt", "multiscale", "lora"])
def test_fsdp_two_processes_train_what_one_process_trains(tmp_path, grouping, extra):
    """2 ranks sharding the model vs 1 plain process, 5 steps: same completions, rewards
    and groups; loss, KL, gradient norm and weights within 1e-5 relative; each rank
    holds half of the parameters, gradients and Adam moments. Under LoRA the frozen base
    and the adapters are sharded, the reference is the base with the adapter off, and the
    final model (merged on an unsharded copy) is compared.

    micro_batch_size=10 gives the one process the row blocks each rank trains (20 rows,
    10 per rank), so both sum the same two partial gradients; with other blocks the
    matmuls round differently and Adam's first steps magnify that to ~5e-5 in the loss."""
    args = _setup(tmp_path) + ["--steps", "5", f"algorithm.grouping={grouping}", "optim.micro_batch_size=10", *extra]
    one = _run(args + ["--out", str(tmp_path / "one"), "optim.share_prompt=false"], 1, GRPOKIT_NATIVE="0")
    two = _run(args + ["--out", str(tmp_path / "two"), "run.parallel=fsdp"], 2)
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("training finished") == 1
    _assert_same_run(tmp_path / "one", tmp_path / "two")
    assert _train_state(tmp_path / "two") / _train_state(tmp_path / "one") == pytest.approx(0.5, abs=0.02)


@pytest.mark.slow
@pytest.mark.dist
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_fsdp_resume_equals_the_uninterrupted_run(tmp_path, lora):
    out = tmp_path / "run"
    args = _setup(tmp_path) + ["--steps", "4", "run.save_every=2", "--out", str(out), "algorithm.beta=0",
                               "run.parallel=fsdp"] + (["model.lora.r=8"] if lora else [])
    assert (res := _run(args, 2)).returncode == 0, res.stderr[-3000:]
    full = _jsonl(out / "metrics.jsonl")
    # the checkpoint holds whole tensors: a plain model (or adapter) directory
    if lora:
        from safetensors.torch import load_file

        adapter = load_file(str(out / "checkpoints" / "step-000004" / "adapter_model.safetensors"))
        assert adapter and all("lora_" in k for k in adapter)
    else:
        weights = json.loads((out / "checkpoints" / "step-000004" / "config.json").read_text())
        assert weights["model_type"] == "qwen2"
    saved = torch.load(out / "checkpoints" / "step-000004" / "trainer_state.pt", weights_only=False)
    assert [set(r) for r in saved["extra"]["rank_rng"]] == [{"python", "numpy", "torch"}] * 2  # each rank's own
    assert saved["extra"]["parallel"] == "fsdp"
    shutil.rmtree(out / "checkpoints" / "step-000004")
    assert (res := _run(args + ["--resume"], 2)).returncode == 0, res.stderr[-3000:]
    again = _jsonl(out / "metrics.jsonl")
    keys = ("reward", "loss", "grad_norm", "trained_rows", "kl")
    assert [[r.get(k) for k in keys] for r in again[2:]] == [[r.get(k) for k in keys] for r in full[2:]]


@pytest.mark.slow
@pytest.mark.dist
def test_fsdp_ranks_with_unequal_micro_batches_match_ddp(tmp_path):
    """15 rows over 2 ranks (8 + 7) in micro-batches of 7: rank 0 runs 2 passes, rank 1
    one, so rank 1 pads with a zero-loss pass (in the update and in the reference pass);
    rows that share a prompt and rows that do not meet in one micro-batch.
    Both layouts train the same row blocks per rank, so FSDP's reduce-scatter sums the
    same partial gradients DDP's all-reduce does. They are compared within 1e-5 relative
    (as in the FSDP-vs-one-process test), not bit for bit: the first update already leaves
    the weights apart in their last bits (step 1's KL, whose second pass (mu=2) follows it,
    differs by 4e-7 relative on AVX-512 kernels; step 2's loss by 1.2e-6), with gradient
    clipping on or off, as the sharded path's norm, reductions and optimizer step run on
    shards (DTensors) where the replicated path runs on whole tensors."""
    args = _setup(tmp_path) + ["--steps", "3", "rollout.num_generations=3", "optim.micro_batch_size=7"]
    ddp = _run(args + ["--out", str(tmp_path / "ddp"), "run.parallel=ddp", "optim.share_prompt=false"], 2,
               GRPOKIT_NATIVE="0")
    fsdp = _run(args + ["--out", str(tmp_path / "fsdp"), "run.parallel=fsdp"], 2)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert fsdp.returncode == 0, fsdp.stderr[-3000:]
    s1, s2 = _jsonl(tmp_path / "ddp" / "samples.jsonl"), _jsonl(tmp_path / "fsdp" / "samples.jsonl")
    assert [r["completion"] for r in s1] == [r["completion"] for r in s2]
    for a, b in zip(_jsonl(tmp_path / "ddp" / "metrics.jsonl"), _jsonl(tmp_path / "fsdp" / "metrics.jsonl")):
        assert a["trained_rows"] == b["trained_rows"] == 15
        for k in ("loss", "kl", "grad_norm", "entropy"):
            assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-8), k


@pytest.mark.slow
@pytest.mark.dist
def test_accelerate_launch_with_the_fsdp_config_shards(tmp_path):
    """`accelerate launch --config_file recipes/launch/accelerate_fsdp.yaml -m grpokit train`
    (here with 2 processes on the CPU): accelerate starts the processes through torchrun
    and sets ACCELERATE_USE_FSDP, and run.parallel=auto shards."""
    import os
    import socket
    import subprocess
    import sys

    from test_dist import SRC

    shipped = Path(__file__).resolve().parents[1] / "recipes" / "launch" / "accelerate_fsdp.yaml"
    config = tmp_path / "fsdp.yaml"
    config.write_text(shipped.read_text().replace("num_processes: 8", "num_processes: 2"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
           "--main_process_port", str(port), "-m", "grpokit", *_setup(tmp_path), "--steps", "2", "--out", str(out)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "fsdp: parameters, gradients and optimizer state sharded over 2 process(es)" in res.stdout
    saved = torch.load(out / "checkpoints" / "step-000002" / "trainer_state.pt", weights_only=False)
    assert (saved["extra"]["world_size"], saved["extra"]["parallel"]) == (2, "fsdp")
