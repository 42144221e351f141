"""Checkpoint round trips on a tiny Qwen2 model: weights, optimizer, scheduler, RNG, atomicity."""
import random

import numpy as np
import pytest
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers

from grpokit import checkpoint as ckpt
from grpokit.checkpoint import latest_checkpoint, load_trainer_state, save_checkpoint, save_model


def tiny_model(seed=0):
    torch.manual_seed(seed)
    cfg = transformers.Qwen2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                   num_key_value_heads=1, intermediate_size=64, vocab_size=50)
    return transformers.Qwen2ForCausalLM(cfg)


def tiny_tokenizer():
    vocab = {"[PAD]": 0, "[UNK]": 1, "[EOS]": 2, **{f"w{i}": i + 3 for i in range(47)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]",
                                                pad_token="[PAD]", eos_token="[EOS]")


def train_one_step(model):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    ids = torch.tensor([[3, 4, 5, 6, 7]])
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    sched.step()
    opt.zero_grad()
    return opt, sched


def draws():
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


@pytest.fixture(scope="module")
def trained():
    model = tiny_model()
    opt, sched = train_one_step(model)
    return model, tiny_tokenizer(), opt, sched


def test_round_trip(tmp_path, trained):
    model, tok, opt, sched = trained
    gen = torch.Generator().manual_seed(7)
    path = save_checkpoint(tmp_path, 3, model=model, tokenizer=tok, optimizer=opt, scheduler=sched,
                           config={"run": {"seed": 0, "out": tmp_path}, "keys": ("a", "b")},
                           extra={"gen": gen.get_state(), "cursor": 17})
    assert path == tmp_path / "checkpoints" / "step-000003"
    assert latest_checkpoint(tmp_path) == path
    assert (path / "COMPLETE").is_file() and (path / "config.yaml").is_file()
    before = draws()

    # Weights and tokenizer load with plain from_pretrained.
    loaded = transformers.Qwen2ForCausalLM.from_pretrained(path)
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    # PreTrainedTokenizerFast, not AutoTokenizer: transformers 5 maps a generic tokenizer in a
    # qwen2 model dir to Qwen2Tokenizer (see policy.load_tokenizer).
    tok2 = transformers.PreTrainedTokenizerFast.from_pretrained(path)
    assert tok2("w1 w2 w9")["input_ids"] == tok("w1 w2 w9")["input_ids"]

    # Optimizer / scheduler into fresh objects on the loaded model.
    opt2 = torch.optim.AdamW(loaded.parameters(), lr=1e-3)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda s: 1.0 / (s + 1))
    state = load_trainer_state(path, optimizer=opt2, scheduler=sched2)
    assert state["step"] == 3 and state["extra"]["cursor"] == 17
    assert torch.equal(state["extra"]["gen"], gen.get_state())
    for s1, s2 in zip(opt.state.values(), opt2.state.values()):
        assert torch.equal(s1["exp_avg"], s2["exp_avg"]) and torch.equal(s1["exp_avg_sq"], s2["exp_avg_sq"])
    assert sched2.state_dict()["last_epoch"] == sched.state_dict()["last_epoch"] == 1
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]

    # RNG: draws after restore equal the draws right after the save.
    assert draws() == before


def test_prune_keeps_newest(tmp_path, trained):
    model, tok, _, _ = trained
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, model=model, tokenizer=tok, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-000003", "step-000004"]
    save_checkpoint(tmp_path, 4, model=model, tokenizer=tok, keep=0)  # re-save replaces in place
    save_checkpoint(tmp_path, 5, model=model, tokenizer=tok, keep=0)
    assert len(list((tmp_path / "checkpoints").iterdir())) == 3


def test_crash_mid_write_leaves_previous(tmp_path, trained, monkeypatch):
    model, tok, opt, _ = trained
    good = save_checkpoint(tmp_path, 1, model=model, tokenizer=tok, optimizer=opt)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, 2, model=model, tokenizer=tok, optimizer=opt)
    monkeypatch.undo()
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-000001"]
    assert latest_checkpoint(tmp_path) == good

    # A killed process leaves a temp dir (even with its marker) and, say, a copied dir
    # without a marker: neither is picked, and the next save clears the dead temp dir.
    root = tmp_path / "checkpoints"
    dead = root / ".tmp-step-000009-999999999"
    dead.mkdir()
    (dead / "COMPLETE").write_text("{}")
    (root / "step-000010").mkdir()
    assert latest_checkpoint(tmp_path) == good
    save_checkpoint(tmp_path, 2, model=model, tokenizer=tok, keep=0)
    assert not dead.exists()
    assert latest_checkpoint(tmp_path).name == "step-000002"


def test_save_model_replaces_only_when_complete(tmp_path, trained, monkeypatch):
    model, tok, _, _ = trained
    out = tmp_path / "final"
    save_model(out, model, tok, {"note": "first"})
    assert "first" in (out / "config.yaml").read_text()

    other = tiny_model(seed=1)
    monkeypatch.setattr(type(tok), "save_pretrained", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("x")))
    with pytest.raises(RuntimeError):
        save_model(out, other, tok, {"note": "second"})
    monkeypatch.undo()
    assert "first" in (out / "config.yaml").read_text()  # old one intact
    assert [p.name for p in tmp_path.iterdir()] == ["final"]  # no temp left behind

    save_model(out, other, tok, {"note": "second"})
    loaded = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert torch.equal(loaded.lm_head.weight, other.lm_head.weight)
    assert "second" in (out / "config.yaml").read_text()

    # A directory holding anything else is never replaced.
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("")
    with pytest.raises(FileExistsError):
        save_model(run, model, tok)


def test_peft_checkpoint_and_merged_model(tmp_path):
    peft = pytest.importorskip("peft")
    base = tiny_model()
    lora = peft.get_peft_model(base, peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # make the adapter non-zero so merging changes the weights
        for n, p in lora.named_parameters():
            if "lora_B" in n:
                p.fill_(0.1)
    ids = torch.tensor([[3, 4, 5]])
    with torch.no_grad():
        want = lora(input_ids=ids).logits
    tok = tiny_tokenizer()

    path = save_checkpoint(tmp_path, 1, model=lora, tokenizer=tok)
    assert (path / "adapter_config.json").is_file() and (path / "base_model.json").is_file()

    out = save_model(tmp_path / "model", lora, tok)
    assert not (out / "adapter_config.json").exists()
    merged = transformers.AutoModelForCausalLM.from_pretrained(out)
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, want, atol=1e-5)
        assert torch.allclose(lora(input_ids=ids).logits, want)  # the live model is untouched
