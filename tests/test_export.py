"""`grpokit export`: a plain Hugging Face directory with the trained policy's logits."""
import json

import pytest
import torch

from grpokit import cli
from grpokit.config import TrainConfig
from grpokit.config.io import load_config
from grpokit.export import REWRITTEN, export_model, portable_char_tokenizer

PROBE = "Compute 37+48-12. <think>37+48=85 85-12=73</think><answer>73</answer>"


class _Keep:
    """train() hook that keeps the trained model object."""

    def on_start(self, comp):
        self.policy = comp.policy


REWARD = '''
def digits(completion, **_):
    """Share of digits: random completions differ in it, so every group has a spread."""
    return sum(c.isdigit() for c in completion) / max(1, len(completion))
'''


def _train(out, *overrides):
    from grpokit.train import train

    out.parent.mkdir(parents=True, exist_ok=True)
    (out.parent / "digit_reward.py").write_text(REWARD)
    cfg = load_config(TrainConfig, None, ["model.name_or_path=tiny:xs", "data.train=task:arithmetic",
                                          f"rewards=[{out.parent / 'digit_reward.py'}:digits]",
                                          f"run.out={out}", "run.steps=2", "rollout.max_new_tokens=8",
                                          "rollout.prompts_per_step=2", "rollout.num_generations=2",
                                          "data.eval_size=2", "run.progress=false", "optim.lr=1e-2",
                                          *overrides])
    keep = _Keep()
    train(cfg, hooks=keep)
    return keep.policy


def _logits(model, tok):
    ids = torch.tensor([tok(PROBE, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        return model.eval()(ids).logits


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    return out, _train(out)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lora") / "run"
    return out, _train(out, "model.lora.r=4", "model.lora.alpha=8")


def test_full_weight_run_exports_same_logits(full_run, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run, policy = full_run
    dest = tmp_path / "hf"
    assert cli.main(["export", str(run), "--out", str(dest)]) == 0
    said = capsys.readouterr().out
    assert "exporting its final model" in said and "byte-level BPE" in said
    assert sorted(p.name for p in dest.iterdir()) == ["chat_template.jinja", "config.json", "generation_config.json",
                                                     "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    model = AutoModelForCausalLM.from_pretrained(dest)
    tok = AutoTokenizer.from_pretrained(dest)
    # the tokenizer AutoTokenizer builds encodes exactly as the trained one, spaces included
    ids = tok(PROBE, add_special_tokens=False)["input_ids"]
    assert ids == policy.tokenizer(PROBE, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == PROBE
    assert torch.equal(_logits(model, tok), _logits(policy.model, policy.tokenizer))


def test_export_refuses_a_non_empty_out_and_a_bad_source(full_run, tmp_path, capsys):
    run, _ = full_run
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    assert cli.main(["export", str(run), "--out", str(tmp_path / "busy")]) == 2
    assert "not an empty directory" in capsys.readouterr().err
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"
    assert cli.main(["export", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "neither a run directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()  # an empty --out is fine
    assert cli.main(["export", str(run / "checkpoints" / "step-000002"), "--out", str(tmp_path / "empty")]) == 0
    assert not (tmp_path / "empty" / "trainer_state.pt").exists()  # grpokit's own files stay behind


def test_run_without_final_model_exports_newest_checkpoint(full_run, tmp_path, capsys):
    import shutil

    run, _ = full_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "model")
    assert cli.main(["export", str(copy), "--out", str(tmp_path / "hf")]) == 0
    assert "newest checkpoint, step-000002" in capsys.readouterr().out


def test_lora_run_exports_merged_with_the_policys_logits(lora_run, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run, policy = lora_run
    want = _logits(policy.model, policy.tokenizer)  # the peft model as trained
    # the run's final model (saved merged) ...
    assert cli.main(["export", str(run), "--out", str(tmp_path / "final"), "--merge-lora"]) == 0
    assert "merged when the run saved" in capsys.readouterr().out
    # ... and a checkpoint, which holds the adapter only
    ckpt = run / "checkpoints" / "step-000002"
    assert (ckpt / "adapter_model.safetensors").is_file()
    assert cli.main(["export", str(ckpt), "--out", str(tmp_path / "ckpt")]) == 2
    assert "pass --merge-lora" in capsys.readouterr().err
    assert cli.main(["export", str(ckpt), "--out", str(tmp_path / "ckpt"), "--merge-lora"]) == 0
    for name in ("final", "ckpt"):
        d = tmp_path / name
        assert not (d / "adapter_config.json").exists()
        model = AutoModelForCausalLM.from_pretrained(d)  # no peft involved
        got = _logits(model, AutoTokenizer.from_pretrained(d))
        assert torch.allclose(got, want, atol=1e-5), (name, (got - want).abs().max())
    # the LoRA actually trained: the merged weights are not the base's
    base = policy.model.get_base_model() if hasattr(policy.model, "get_base_model") else None
    with policy.model.disable_adapter():
        plain = _logits(base, policy.tokenizer)
    assert not torch.allclose(plain, want, atol=1e-5)


def test_portable_char_tokenizer_keeps_ids_of_non_ascii_characters(tmp_path):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    from grpokit.model.policy import create_tiny

    text = "12 × 3 = 36 €, ½ of it\n<think>ok</think>"
    model, tok = create_tiny("tiny:xs", [text], seed=0)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    before = Tokenizer.from_file(str(tmp_path / "tokenizer.json")).encode(text, add_special_tokens=False).ids
    assert portable_char_tokenizer(tmp_path) == REWRITTEN
    auto = AutoTokenizer.from_pretrained(tmp_path)
    assert auto(text, add_special_tokens=False)["input_ids"] == before
    assert auto.decode(before) == text
    assert portable_char_tokenizer(tmp_path) is None  # now a BPE: left alone


def test_export_of_a_plain_model_directory(tmp_path, tiny_model):
    model, tok = tiny_model
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    res = export_model(tmp_path / "m", tmp_path / "out")
    assert res.notes == [REWRITTEN]
    assert json.loads((tmp_path / "out" / "config.json").read_text())["model_type"] == "qwen2"


def test_char_tokenizer_kept_when_auto_tokenizer_would_change_it(tmp_path):
    """Qwen2Tokenizer normalises to NFC: a decomposed accent would become one unknown
    character, so the trained tokenizer stays and the note says how to load it."""
    from grpokit.model.policy import create_tiny

    model, tok = create_tiny("tiny:xs", ["cafe\u0301 1+2=3"], seed=0)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    before = (tmp_path / "tokenizer.json").read_text()
    note = portable_char_tokenizer(tmp_path)
    assert note.startswith("character tokenizer kept as trained: AutoTokenizer would load it as Qwen2Tokenizer")
    assert "PreTrainedTokenizerFast.from_pretrained" in note
    assert (tmp_path / "tokenizer.json").read_text() == before
