import json

import pytest
import torch

from grpokit.config.schema import LoraConfig, ModelConfig
from grpokit.model.policy import Reference, create_tiny, encode_prompts, load_policy, load_tokenizer, parse_tiny, render_prompt


def test_char_tokenizer_round_trips_and_keeps_spaces_and_tags():
    _, tok = create_tiny("tiny:xs", ["Compute 37+48-12."])
    text = "Compute 37+48-12.  <think>37+48=85 85-12=73</think><answer>73</answer>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert len(ids) == len("Compute 37+48-12.  ") + 1 + len("37+48=85 85-12=73") + 1 + 1 + 2 + 1


def test_saved_tiny_model_reloads_with_the_same_tokenizer(tmp_path):
    model, tok = create_tiny("tiny:xs", ["a b"])
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    policy = load_policy(ModelConfig(name_or_path=str(tmp_path)))
    probe = "Compute 1 + 2 .<think>x</think>"
    assert policy.tokenizer(probe)["input_ids"] == tok(probe)["input_ids"]
    assert type(policy.model).__name__ == "Qwen2ForCausalLM"


def test_a_swapped_tokenizer_is_refused(tmp_path):
    model, tok = create_tiny("tiny:xs", ["a b"])
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    # Name the model family's class, as transformers 5 would substitute for a qwen2
    # model: it tokenizes differently from tokenizer.json, so loading must fail loudly.
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    cfg["tokenizer_class"] = "Qwen2Tokenizer"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="does not match its tokenizer.json"):
        load_tokenizer(str(tmp_path))


def test_tiny_spec_parsing():
    assert parse_tiny("tiny") == ("s", "qwen2")
    assert parse_tiny("tiny:m:llama") == ("m", "llama")
    with pytest.raises(ValueError, match="sizes: xs, s, m, l"):
        parse_tiny("tiny:huge")


def test_missing_model_directory_is_named(tmp_path):
    with pytest.raises(ValueError, match="does-not-exist.*no such directory"):
        load_policy(ModelConfig(name_or_path=str(tmp_path / "does-not-exist")))


def test_chat_prompts_use_the_chat_template():
    _, tok = create_tiny("tiny:xs", [])
    text = render_prompt(tok, [{"role": "user", "content": "hi"}], system_prompt="be brief")
    assert text == "<|system|>be brief\n<|user|>hi\n<|assistant|>"
    assert encode_prompts(tok, ["abcdef"], max_tokens=3) == [tok("def")["input_ids"]]


def test_lora_reference_is_the_adapter_free_base():
    policy = load_policy(ModelConfig(name_or_path="tiny:xs", lora=LoraConfig(r=4, alpha=8)), fit_texts=["ab"])
    ref = Reference(policy)
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.add_(0.5)  # make the adapter change the output
        with ref.active() as m:
            base = m(input_ids=ids).logits
        adapted = policy.model(input_ids=ids).logits
    assert not torch.allclose(base, adapted)
    trainable = [n for n, p in policy.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora" in n for n in trainable)
