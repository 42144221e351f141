"""Config loading: YAML -> dataclasses, overrides, validation, --help text."""
from __future__ import annotations

import dataclasses

import pytest
import yaml

from grpokit.config.schema import EvalConfig, RewardSpec, SFTConfig, TrainConfig
from grpokit.config.help import config_help
from grpokit.config.io import (ConfigError, apply_overrides, builtin_recipes, dump_yaml, from_dict, load_config,
                               to_dict)
from grpokit.config.validation import validate


def write(tmp_path, text, name="recipe.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# --------------------------------------------------------------------------- from_dict


def test_empty_mapping_gives_defaults():
    assert from_dict(TrainConfig, {}) == TrainConfig()


def test_nested_sections_and_coercion():
    cfg = from_dict(TrainConfig, {
        "model": {"name_or_path": "m", "lora": {"r": 8, "target_modules": ["q_proj"]}},
        "optim": {"lr": "1e-5", "warmup_steps": 3.0},  # YAML reads 1e-5 as a string
        "run": {"steps": "20", "resume": "yes", "out": 2024},
        "algorithm": {"clip_high": 1, "scale_rewards": None},
    })
    assert cfg.model.lora.r == 8 and cfg.model.lora.target_modules == ["q_proj"]
    assert cfg.optim.lr == 1e-5 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.warmup_steps == 3 and isinstance(cfg.optim.warmup_steps, int)
    assert cfg.run.steps == 20 and cfg.run.resume is True and cfg.run.out == "2024"
    assert cfg.algorithm.clip_high == 1.0 and isinstance(cfg.algorithm.clip_high, float)
    assert cfg.rollout == TrainConfig().rollout  # untouched section keeps defaults


def test_unknown_key_names_valid_keys_and_suggests():
    with pytest.raises(ConfigError) as e:
        from_dict(TrainConfig, {"algorithm": {"betta": 0.1}}, where="recipe.yaml")
    msg = str(e.value)
    assert "unknown key 'algorithm.betta' in recipe.yaml" in msg
    assert "valid keys under 'algorithm': preset, advantage," in msg and "clip_high" in msg
    assert "(did you mean 'beta'?)" in msg


def test_unknown_top_level_key_suggests_the_section():
    with pytest.raises(ConfigError, match=r"unknown key 'steps'.*top level.*did you mean 'run.steps'"):
        from_dict(TrainConfig, {"steps": 3})
    with pytest.raises(ConfigError, match=r"did you mean 'model'"):
        from_dict(TrainConfig, {"modle": {}})


@pytest.mark.parametrize("data, key, expected", [
    ({"run": {"steps": "ten"}}, "run.steps", "an integer"),
    ({"run": {"steps": 2.5}}, "run.steps", "an integer"),
    ({"run": {"steps": True}}, "run.steps", "an integer"),
    ({"optim": {"lr": "fast"}}, "optim.lr", "a number"),
    ({"run": {"resume": "maybe"}}, "run.resume", "a boolean"),
    ({"model": {"name_or_path": ["a"]}}, "model.name_or_path", "a string"),
    ({"model": {"name_or_path": None}}, "model.name_or_path", "a string"),
    ({"rollout": {"stop": "</answer>"}}, "rollout.stop", "list"),
    ({"model": "tiny"}, "model", "a section"),
    ({"rewards": [{"name": "x", "kwargs": [1]}]}, "rewards[0].kwargs", "a mapping"),
])
def test_wrong_type_names_key_type_and_value(data, key, expected):
    with pytest.raises(ConfigError) as e:
        from_dict(TrainConfig, data, where="r.yaml")
    msg = str(e.value)
    assert f"'{key}' in r.yaml expects {expected}" in msg
    assert "got" in msg


def test_bad_choice_names_key_value_and_choices():
    with pytest.raises(ConfigError) as e:
        from_dict(TrainConfig, {"algorithm": {"kl_estimator": "k4"}})
    assert str(e.value) == "invalid value 'k4' for 'algorithm.kl_estimator'; valid choices: k1, k2, k3"
    with pytest.raises(ConfigError, match=r"'model.dtype'.*float32, bfloat16, float16.*did you mean 'bfloat16'"):
        from_dict(TrainConfig, {"model": {"dtype": "bfloat61"}})
    # Optional choice fields still take null
    assert from_dict(TrainConfig, {"algorithm": {"ratio": None}}).algorithm.ratio is None


@pytest.mark.parametrize("rewards, expected", [
    (["accuracy", "format@0.2"], [("accuracy", 1.0, {}), ("format", 0.2, {})]),
    ({"accuracy": 1.0, "format": 0.5}, [("accuracy", 1.0, {}), ("format", 0.5, {})]),
    ([{"name": "length", "weight": -0.1, "kwargs": {"target": 50}}], [("length", -0.1, {"target": 50})]),
    ({"length": {"weight": 2, "kwargs": {"target": 9}}}, [("length", 2.0, {"target": 9})]),
    ("accuracy", [("accuracy", 1.0, {})]),
    (["my_pkg.rewards:fn@0.5", "path/to/r.py:score"], [("my_pkg.rewards:fn", 0.5, {}), ("path/to/r.py:score", 1.0, {})]),
])
def test_reward_forms(rewards, expected):
    cfg = from_dict(TrainConfig, {"rewards": rewards})
    assert all(isinstance(r, RewardSpec) for r in cfg.rewards)
    assert [(r.name, r.weight, r.kwargs) for r in cfg.rewards] == expected


def test_reward_typo_in_mapping_form():
    with pytest.raises(ConfigError, match=r"unknown key 'rewards\[0\].wieght'.*did you mean 'weight'"):
        from_dict(TrainConfig, {"rewards": [{"name": "accuracy", "wieght": 1}]})


def test_to_dict_round_trip_through_yaml(tmp_path):
    cfg = from_dict(TrainConfig, {"rewards": {"accuracy": 1.0, "format": 0.1}, "optim": {"lr": 3e-6}})
    data = to_dict(cfg)
    assert data["rewards"][1] == {"name": "format", "weight": 0.1, "kwargs": {}}
    path = tmp_path / "out" / "resolved.yaml"
    dump_yaml(cfg, path)
    assert from_dict(TrainConfig, yaml.safe_load(path.read_text())) == cfg


# --------------------------------------------------------------------------- overrides


def test_overrides_parse_values_as_yaml():
    data = apply_overrides({"run": {"steps": 5}}, [
        "run.steps=50", "optim.lr=1e-5", "run.resume=true", "optim.betas=[0.9, 0.95]",
        "data.eval=null", "rewards=[accuracy, format@0.1]", "model.lora.r=8", "data.system_prompt=Be brief: think.",
        "run.out=runs/x",
    ], TrainConfig)
    cfg = from_dict(TrainConfig, data)
    assert cfg.run.steps == 50 and cfg.optim.lr == 1e-5 and cfg.run.resume is True
    assert cfg.optim.betas == [0.9, 0.95] and cfg.data.eval is None
    assert [r.name for r in cfg.rewards] == ["accuracy", "format"] and cfg.rewards[1].weight == 0.1
    assert cfg.model.lora.r == 8 and cfg.data.system_prompt == "Be brief: think." and cfg.run.out == "runs/x"


def test_override_typo_names_valid_keys():
    with pytest.raises(ConfigError) as e:
        apply_overrides({}, ["algorithm.betta=0.1"], TrainConfig)
    msg = str(e.value)
    assert "unknown key 'algorithm.betta' in override 'algorithm.betta=0.1'" in msg
    assert "valid keys under 'algorithm':" in msg and "(did you mean 'beta'?)" in msg


def test_override_in_wrong_section_suggests_right_one():
    with pytest.raises(ConfigError, match=r"'run.lr'.*did you mean 'optim.lr'"):
        apply_overrides({}, ["run.lr=1e-5"], TrainConfig)


def test_override_without_equals_explains_the_form():
    with pytest.raises(ConfigError, match=r"key=value, got 'run.steps'.*run.steps=50"):
        apply_overrides({}, ["run.steps"], TrainConfig)


def test_override_type_error_names_the_override():
    with pytest.raises(ConfigError, match=r"'run.steps' in override 'run.steps=many' expects an integer"):
        apply_overrides({}, ["run.steps=many"], TrainConfig)
    with pytest.raises(ConfigError, match=r"'run.steps'.*single value.*no sub-key 'x'"):
        apply_overrides({}, ["run.steps.x=1"], TrainConfig)
    with pytest.raises(ConfigError, match=r"'rewards'.*is a list; set it whole"):
        apply_overrides({}, ["rewards.0.weight=2"], TrainConfig)


# --------------------------------------------------------------------------- load_config


def test_load_config_file_then_overrides(tmp_path):
    path = write(tmp_path, "run:\n  steps: 10\n  seed: 3\nalgorithm:\n  beta: 0.04\n")
    cfg = load_config(TrainConfig, path, ["run.steps=20"])
    assert (cfg.run.steps, cfg.run.seed, cfg.algorithm.beta) == (20, 3, 0.04)


def test_load_config_precedence_file_flags_overrides(tmp_path):
    path = write(tmp_path, "run:\n  steps: 10\n  seed: 3\n")
    cfg = load_config(TrainConfig, path, ["run.steps=30"], data={"run.steps": 20, "run.seed": 4})
    assert (cfg.run.steps, cfg.run.seed) == (30, 4)


def test_load_config_error_names_the_file(tmp_path):
    path = write(tmp_path, "algorithm:\n  betta: 0.1\n")
    with pytest.raises(ConfigError, match=rf"unknown key 'algorithm.betta' in {path}"):
        load_config(TrainConfig, path)


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "run:\n  steps: 10\n  seed: [1, 2\nmodel: {}\n")
    with pytest.raises(ConfigError) as e:
        load_config(TrainConfig, path)
    msg = str(e.value)
    assert msg.startswith(f"{path}:") and "YAML syntax error" in msg
    line = int(msg[len(path) + 1:].split(":")[0])
    assert 3 <= line <= 4


def test_recipe_must_be_a_mapping(tmp_path):
    path = write(tmp_path, "- run\n- steps\n")
    with pytest.raises(ConfigError, match=r"must be a mapping.*got a list"):
        load_config(TrainConfig, path)


def test_empty_file_is_all_defaults(tmp_path):
    assert load_config(TrainConfig, write(tmp_path, "# nothing yet\n")) == TrainConfig()


def test_missing_file_lists_builtin_recipes():
    with pytest.raises(ConfigError, match=r"'nope.yaml' does not exist; built-in recipes: .*arithmetic"):
        load_config(TrainConfig, "nope.yaml")


def test_builtin_recipe_by_name():
    cfg = load_config(TrainConfig, "arithmetic")
    assert cfg.data.train == "task:arithmetic"


def test_kind_mismatch(tmp_path):
    path = write(tmp_path, "kind: sft\ndata: traces.jsonl\n")
    assert load_config(SFTConfig, path).data == "traces.jsonl"
    with pytest.raises(ConfigError, match=r"is a 'sft' recipe.*not a 'train' one"):
        load_config(TrainConfig, path)


# --------------------------------------------------------------------------- validate


def test_defaults_validate_clean():
    assert validate(TrainConfig()) == []


@pytest.mark.parametrize("overrides, key", [
    (["rollout.num_generations=1"], "rollout.num_generations"),
    (["run.steps=0"], "run.steps"),
    (["rollout.top_p=0"], "rollout.top_p"),
    (["rollout.top_p=1.5"], "rollout.top_p"),
    (["rollout.temperature=-1"], "rollout.temperature"),
    (["optim.lr=0"], "optim.lr"),
    (["algorithm.clip_low=-0.1"], "algorithm.clip_low"),
    (["algorithm.clip_high=-0.1"], "algorithm.clip_high"),
    (["algorithm.mu=0"], "algorithm.mu"),
    (["algorithm.dynamic_max_rounds=-1"], "algorithm.dynamic_max_rounds"),
    (["algorithm.beta=-1"], "algorithm.beta"),
    (["optim.betas=[0.9]"], "optim.betas"),
    (["data.train=missing/prompts.jsonl"], "data.train"),
    (["data.eval=./nowhere.jsonl"], "data.eval"),
    (["algorithm.grouping=by_vibes"], "algorithm.grouping"),
    (["algorithm.grouping=no_such_module_xyz:fn"], "algorithm.grouping"),
])
def test_validate_reports_the_bad_key(overrides, key):
    cfg = load_config(TrainConfig, None, overrides)
    problems = validate(cfg)
    assert len(problems) == 1, problems
    assert problems[0].startswith(key)


def test_validate_preset_name():
    pytest.importorskip("grpokit.config.presets")
    problems = validate(load_config(TrainConfig, None, ["algorithm.preset=grpoo"]))
    assert problems and problems[0].startswith("algorithm.preset = 'grpoo'") and "did you mean 'grpo'" in problems[0]


def test_validate_reward_names(tmp_path):
    rewards = pytest.importorskip("grpokit.rewards")
    if not hasattr(rewards, "REWARDS"):
        pytest.skip("grpokit.rewards has no REWARDS yet")
    (tmp_path / "my_rewards.py").write_text("def short(completion, **kw):\n    return float(len(completion) < 9)\n")
    ok = load_config(TrainConfig, None, [f"rewards=[accuracy, {tmp_path}/my_rewards.py:short@0.5]"])
    assert validate(ok) == []
    bad = load_config(TrainConfig, None, ["rewards=[accuracyy, my_missing_pkg_xyz.rewards:fn]"])
    problems = validate(bad)
    assert problems[0].startswith("rewards[0].name = 'accuracyy': unknown reward") and "did you mean 'accuracy'" in problems[0]
    assert problems[1].startswith("rewards[1].name = 'my_missing_pkg_xyz.rewards:fn': cannot load it")


def test_validate_data_forms(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "1+1", "answer": "2"}\n')
    for spec in (str(f), "task:arithmetic", "openai/gsm8k", "hf:openai/gsm8k"):
        assert validate(load_config(TrainConfig, None, [f"data.train={spec}"])) == [], spec


def test_validate_sft_and_eval(tmp_path):
    assert validate(SFTConfig(data="task:arithmetic")) == []
    assert validate(SFTConfig())[0].startswith("data: empty")
    assert validate(EvalConfig(data=str(tmp_path / "x.jsonl")))[0].startswith("data = ")
    assert validate(load_config(SFTConfig, None, ["data=task:arithmetic", "lr=0"]))[0].startswith("lr = 0.0")


@pytest.mark.parametrize("name", sorted(builtin_recipes()))
def test_builtin_recipes_load_and_validate(name, tmp_path, monkeypatch):
    # A recipe's model path (runs/sft-...) is relative to where the user runs it; a checkout
    # with a runs/ folder (after `make demo`) would make it a missing local directory.
    monkeypatch.chdir(tmp_path)
    cfg = load_config(TrainConfig, name)
    assert validate(cfg) == []


def test_arithmetic_smollm2_recipe_validates(tmp_path, monkeypatch):
    """recipes/arithmetic_smollm2.yaml (README, "Train a real model") with a stand-in for the
    model directory `grpokit model get` writes: every key, reward and option it sets is valid."""
    from pathlib import Path

    from grpokit.model.policy import create_tiny

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "arithmetic_smollm2.yaml"
    model, tok = create_tiny("tiny:xs", ["Compute 1+2."])
    model.save_pretrained(tmp_path / "models" / "smollm2-135m")
    tok.save_pretrained(tmp_path / "models" / "smollm2-135m")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(TrainConfig, str(recipe))
    assert validate(cfg) == []
    assert [r.name for r in cfg.rewards] == ["accuracy", "accuracy", "stated_answer"]
    assert cfg.rollout.temperature == 0.7 and cfg.run.steps == 90


# --------------------------------------------------------------------------- help


def test_config_help_lists_every_key_with_help_and_choices():
    text = config_help(TrainConfig)
    for section in ("model", "data", "rollout", "algorithm", "optim", "run"):
        cls = type(getattr(TrainConfig(), section))
        for f in dataclasses.fields(cls):
            if not dataclasses.is_dataclass(getattr(cls(), f.name)):
                assert f"{section}.{f.name}  (" in text, f"{section}.{f.name}"
    assert "model.lora.r  (int, default: 0)" in text
    assert "LoRA rank; 0 trains all weights" in text
    assert "algorithm.kl_estimator  (str, default: k3)" in text and "choices: k1, k2, k3" in text
    assert "algorithm.clip_low  (float | null, default: null)" in text
    assert "rewards  (list of rewards, default: [])" in text
    assert "optim.lr  (float | null, default: null)" in text
    assert "SFT" not in config_help(SFTConfig) and "max_seq_len  (int, default: 512)" in config_help(SFTConfig)


def test_validate_checks_group_options_and_tool_names():
    from grpokit.config.schema import TrainConfig
    from grpokit.config import load_config, validate

    def problems(*overrides):
        return validate(load_config(TrainConfig, None, ["data.train=task:arithmetic", *overrides]))

    assert problems() == []
    bad_k = problems("algorithm.grouping=semantic", "algorithm.group.clusters=-3")
    assert len(bad_k) == 1 and "algorithm.group.clusters" in bad_k[0]
    bad_tool = problems("rollout.tools=[serch]")
    assert len(bad_tool) == 1 and "rollout.tools[0]" in bad_tool[0] and "did you mean 'search'" in bad_tool[0]
    bad_scale = problems("algorithm.grouping=multiscale", "algorithm.group.scales=[prompt,bogus]")
    assert len(bad_scale) == 1 and "bogus" in bad_scale[0]
