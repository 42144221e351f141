"""Configuration: typed dataclasses (schema.py), YAML recipes with key=value overrides
(io.py), semantic checks (validation.py), `--help` text (help.py) and algorithm presets
(presets.py). The public names are re-exported here."""
from grpokit.config.help import config_help
from grpokit.config.io import ConfigError, dump_yaml, load_config, to_dict
from grpokit.config.schema import (AlgorithmConfig, DataConfig, EvalConfig, GroupConfig, LoraConfig, ModelConfig,
                                   OptimConfig, RewardSpec, RolloutConfig, RunConfig, SFTConfig, TrainConfig)
from grpokit.config.validation import validate

__all__ = ["TrainConfig", "SFTConfig", "EvalConfig", "AlgorithmConfig", "DataConfig", "GroupConfig", "LoraConfig",
           "ModelConfig", "OptimConfig", "RewardSpec", "RolloutConfig", "RunConfig",
           "ConfigError", "load_config", "validate", "dump_yaml", "to_dict", "config_help"]
