"""Variant presets: the table of values, and how they fill an AlgorithmConfig."""
import dataclasses

import pytest

from grpokit.algo.advantages import ADVANTAGES, SCALES
from grpokit.algo.losses import RATIO_LEVELS
from grpokit.algo.masking import AGG_MODES
from grpokit.config.schema import AlgorithmConfig
from grpokit.config.presets import PRESETS, resolve_algorithm
from grpokit.registry import RegistryError

KEYS = ("advantage", "scale_rewards", "ratio", "loss_agg", "clip_low", "clip_high")
TABLE = {
    "grpo": ("grpo", "group", "token", "sequence_mean", 0.2, 0.2),
    "dr_grpo": ("grpo", "none", "token", "constant", 0.2, 0.2),
    "dapo": ("grpo", "group", "token", "token_mean", 0.2, 0.28),
    "gspo": ("grpo", "group", "sequence", "sequence_mean", 3e-4, 4e-4),
    "rloo": ("rloo", "none", "token", "constant", 0.2, 0.2),
}


@pytest.mark.parametrize("name", sorted(TABLE))
def test_preset_values(name):
    assert PRESETS.get(name) == dict(zip(KEYS, TABLE[name]))


def test_preset_names_and_docs():
    assert PRESETS.names() == sorted(TABLE)
    for name in PRESETS:
        doc = PRESETS.doc(name)
        assert doc and "dict" not in doc  # our own one-liner, not dict's docstring


def test_presets_name_valid_components():
    fields = {f.name: f for f in dataclasses.fields(AlgorithmConfig)}
    for name in PRESETS:
        preset = PRESETS.get(name)
        assert set(preset) <= set(fields)
        for key, value in preset.items():
            choices = fields[key].metadata.get("choices") or ()
            assert not choices or value in choices, (name, key, value)
        assert preset["advantage"] in ADVANTAGES
        assert preset["scale_rewards"] in SCALES
        assert preset["ratio"] in RATIO_LEVELS
        assert preset["loss_agg"] in AGG_MODES
        assert 0 <= preset["clip_low"] < 1 and preset["clip_high"] >= 0


@pytest.mark.parametrize("name", sorted(TABLE))
def test_resolve_fills_every_empty_field(name):
    out = resolve_algorithm(AlgorithmConfig(preset=name))
    assert tuple(getattr(out, k) for k in KEYS) == TABLE[name]


def test_user_fields_win_and_input_is_not_modified():
    cfg = AlgorithmConfig(preset="dapo", clip_high=0.3, loss_agg="sequence_mean", beta=0.04)
    out = resolve_algorithm(cfg)
    assert (out.clip_high, out.loss_agg, out.beta) == (0.3, "sequence_mean", 0.04)
    assert (out.clip_low, out.scale_rewards, out.ratio) == (0.2, "group", "token")
    assert out is not cfg
    assert cfg.clip_low is None and cfg.scale_rewards is None  # the input is untouched
    assert PRESETS.get("dapo")["clip_high"] == 0.28  # and so is the preset


def test_user_zero_is_not_treated_as_empty():
    out = resolve_algorithm(AlgorithmConfig(preset="grpo", clip_low=0.0))
    assert out.clip_low == 0.0


def test_default_config_resolves_to_grpo():
    out = resolve_algorithm(AlgorithmConfig())
    assert out.preset == "grpo" and out.loss_agg == "sequence_mean" and out.scale_rewards == "group"


def test_unknown_preset_lists_names():
    with pytest.raises(RegistryError) as e:
        resolve_algorithm(AlgorithmConfig(preset="dr-grpo"))
    msg = str(e.value)
    for name in TABLE:
        assert name in msg
    assert "did you mean 'dr_grpo'" in msg
