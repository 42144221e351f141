"""The public API: the README example runs as written, and settings are checked as the
CLI checks them, before any model or data loads."""
from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import grpokit
from grpokit.api import make_config
from grpokit.config.io import ConfigError, dump_yaml

ROOT = Path(__file__).resolve().parents[1]


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    example = [b for b in blocks if "grpokit.train(" in b]
    assert len(example) == 1, "README should hold one grpokit.train example"
    return example[0]


def test_the_readme_example_runs_as_written(tmp_path):
    out = subprocess.run([sys.executable, "-c", _readme_example()], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin",
                                           "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = Path(out.stdout.strip().splitlines()[-1])
    lines = (tmp_path / metrics).read_text().splitlines() if (tmp_path / metrics).is_file() else []
    assert [json.loads(line)["step"] for line in lines] == [0, 1, 2]  # step 0: the evaluation before training


def test_public_names():
    for name in ("train", "sft", "evaluate", "TrainConfig", "load_config", "REWARDS", "GROUPERS", "ADVANTAGES",
                 "LOSSES", "TOOLS", "TASKS", "RewardOutput", "Sampler", "SamplingParams"):
        assert hasattr(grpokit, name), name
    importlib.import_module("grpokit.train")  # the module of the same name leaves the function in place

    assert callable(grpokit.train) and grpokit.train.__module__ == "grpokit.api"
    assert "clip" in grpokit.LOSSES and "prompt" in grpokit.GROUPERS


def test_import_is_cheap():
    code = "import sys, grpokit; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "False", out.stderr


def _no_load(monkeypatch):
    """Any model or data load fails the test: the checks must come first."""
    import grpokit.build as build

    def boom(*a, **k):
        raise AssertionError("build() ran before the settings were checked")

    monkeypatch.setattr(build, "build", boom)
    monkeypatch.setattr(importlib.import_module("grpokit.train"), "build", boom)


def test_a_python_function_is_a_reward_and_is_written_by_name():
    def brevity(completion, **_):
        return -len(completion)

    cfg = make_config(grpokit.TrainConfig, None, {"rewards": [brevity], "model": "tiny:xs"})
    assert cfg.rewards[0].name is brevity and cfg.rewards[0].weight == 1.0
    text = dump_yaml(cfg)  # the run directory's config.yaml: the function by module:qualname
    assert "test_api:test_a_python_function_is_a_reward_and_is_written_by_name.<locals>.brevity" in text
    weighted = make_config(grpokit.TrainConfig, None,
                                       {"rewards": [{"name": brevity, "weight": 0.5}, "format@0.2"]})
    assert [(r.name, r.weight) for r in weighted.rewards] == [(brevity, 0.5), ("format", 0.2)]


def test_a_reward_given_as_a_string_works_or_gives_one_clear_line(monkeypatch):
    cfg = make_config(grpokit.TrainConfig, None, {"rewards": "accuracy"})
    assert [r.name for r in cfg.rewards] == ["accuracy"]
    _no_load(monkeypatch)
    with pytest.raises(ConfigError) as err:
        grpokit.train(rewards="acuracy")
    assert "rewards[0].name = 'acuracy': unknown reward" in str(err.value)
    assert "did you mean 'accuracy'" in str(err.value)


def test_a_learning_rate_as_text_is_converted_or_refused_with_its_key(monkeypatch):
    cfg = make_config(grpokit.TrainConfig, None, {"optim__lr": "1e-4"})
    assert cfg.optim.lr == 1e-4 and isinstance(cfg.optim.lr, float)
    # a config object built by hand is checked (and converted) the same way
    made = grpokit.TrainConfig()
    made.optim.lr = "2e-4"
    assert make_config(grpokit.TrainConfig, made).optim.lr == 2e-4
    _no_load(monkeypatch)
    with pytest.raises(ConfigError, match="'optim.lr' in grpokit.train\\(\\) arguments expects a number, got 'fast'"):
        grpokit.train(optim={"lr": "fast"})


def test_a_grouper_typo_is_caught_before_the_model_loads(monkeypatch):
    _no_load(monkeypatch)
    with pytest.raises(ConfigError) as err:
        grpokit.train(grouper="semantik")
    assert "algorithm.grouping = 'semantik': unknown" in str(err.value)
    with pytest.raises(ConfigError) as err:
        grpokit.train(algorithm={"group": {"clusters": 3}})  # an option the prompt grouper does not use
    assert "algorithm.group.clusters: not an option of grouper 'prompt'" in str(err.value)
    with pytest.raises(ConfigError, match="unknown key 'optim.lrr'"):
        grpokit.train(optim__lrr=1e-4)


def test_a_python_function_is_a_grouper(tmp_path):
    seen = []

    def halves(exp):
        seen.append(exp.prompt_ids.numel())
        return (exp.prompt_ids % 2).long()

    run = grpokit.train(model="tiny:xs", data="task:arithmetic", grouper=halves, rewards=["format"], steps=1,
                        out=str(tmp_path / "r"), rollout={"prompts_per_step": 2, "num_generations": 2,
                                                         "max_new_tokens": 4},
                        data__eval_size=0, run__progress=False)
    assert seen == [4] and (run / "model").is_dir()
    assert "halves" in (run / "config.yaml").read_text()
