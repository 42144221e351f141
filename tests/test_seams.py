"""The two seams of the loop: build.py picks the Sampler and the TrainingPass, the loop
only calls them; with GRPOKIT_NATIVE=0 nothing of grpokit.engine is imported."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from grpokit import build as build_mod
from grpokit.config.io import load_config
from grpokit.config.schema import TrainConfig
from grpokit.model.forward import TorchPass
from grpokit.rollout.generate import StepSampler
from grpokit.rollout.stepper import TransformersStepper
from grpokit.types import Sampler

SRC = Path(__file__).resolve().parents[1] / "src"


def _policy(tiny_model):
    model, tok = tiny_model

    class P:
        pass

    p = P()
    p.model, p.tokenizer, p.eos_ids = model, tok, {tok.eos_token_id}
    return p


def _cfg(*overrides: str) -> TrainConfig:
    return load_config(TrainConfig, None, list(overrides))


def test_backend_picks_the_sampler(tiny_model, monkeypatch):
    monkeypatch.delenv("GRPOKIT_NATIVE", raising=False)
    p = _policy(tiny_model)
    plain = build_mod.build_sampler(_cfg("rollout.backend=transformers"), p)
    assert isinstance(plain, StepSampler) and plain.make_stepper is TransformersStepper
    for overrides in (["rollout.backend=lean"], []):  # auto is lean while the engine is on
        lean = build_mod.build_sampler(_cfg(*overrides), p)
        assert isinstance(lean, Sampler) and lean.make_stepper is not TransformersStepper
    deprecated = build_mod.build_sampler(_cfg("rollout.lean_decode=false"), p)
    assert deprecated.make_stepper is TransformersStepper
    monkeypatch.setenv("GRPOKIT_NATIVE", "0")
    assert build_mod.build_sampler(_cfg(), p).make_stepper is TransformersStepper
    assert build_mod.build_sampler(_cfg("rollout.backend=lean"), p).make_stepper is TransformersStepper


def test_gates_pick_the_training_pass(tiny_model, monkeypatch):
    monkeypatch.delenv("GRPOKIT_NATIVE", raising=False)
    model = tiny_model[0]
    from grpokit.engine.native_pass import NativePass, native_pass_reason

    chosen = build_mod.build_passes(_cfg(), model)
    if native_pass_reason(model) is None:
        assert isinstance(chosen, NativePass) and chosen.fallback.share_prompt
    off = build_mod.build_passes(_cfg("optim.native_passes=false", "optim.share_prompt=false"), model)
    assert isinstance(off, TorchPass) and not off.share_prompt
    assert build_mod.build_passes(_cfg("optim.native_passes=false"), model).share_prompt  # CPU default
    monkeypatch.setenv("GRPOKIT_NATIVE", "0")
    assert isinstance(build_mod.build_passes(_cfg(), model), TorchPass)


def test_training_syncs_the_sampler_after_every_step_and_after_resume(tmp_path, monkeypatch):
    from grpokit import cli

    synced = []
    real = build_mod.build_sampler

    def counting(cfg, policy):
        s = real(cfg, policy)
        inner_sync = s.sync_weights
        s.sync_weights = lambda model: (synced.append(model), inner_sync(model))
        return s

    monkeypatch.setattr(build_mod, "build_sampler", counting)
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Write {i}:", "answer": "a"}) + "\n" for i in range(8)))
    args = ["train", "--model", "tiny:xs", "--data", str(data), "--reward", "length", "--out", str(tmp_path / "r"),
            "rollout.max_new_tokens=4", "rollout.prompts_per_step=2", "rollout.num_generations=2",
            "run.progress=false", "run.save_every=1", "data.eval_size=0"]
    assert cli.main(args + ["--steps", "2"]) == 0
    assert len(synced) == 2
    synced.clear()
    assert cli.main(args + ["--steps", "3", "--resume"]) == 0
    assert len(synced) == 2  # once after loading the checkpoint, once after step 3


def test_without_the_engine_no_engine_module_is_imported(tmp_path):
    """GRPOKIT_NATIVE=0: a whole training run (sampling, reference and policy passes,
    evaluation) runs on the plain paths and never imports grpokit.engine."""
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Write {i}:", "answer": "a"}) + "\n" for i in range(8)))
    code = (
        "import sys\n"
        "from grpokit import cli\n"
        f"rc = cli.main(['train', '--model', 'tiny:xs', '--data', {str(data)!r}, '--reward', 'length', "
        f"'--out', {str(tmp_path / 'r')!r}, '--steps', '1', 'rollout.max_new_tokens=4', "
        "'rollout.prompts_per_step=2', 'rollout.num_generations=2', 'algorithm.beta=0.04', "
        "'run.progress=false', 'run.release_memory=true'])\n"
        "assert rc == 0, rc\n"
        "print(sorted(m for m in sys.modules if m.startswith('grpokit.engine')))\n")
    env = {"GRPOKIT_NATIVE": "0", "PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
