"""The lean decode step (rollout.lean) samples exactly what transformers' forward samples."""
from __future__ import annotations

import pytest
import torch

from grpokit.rollout.generate import generate
from grpokit.rollout.stepper import TransformersStepper
from grpokit.engine.lean import LeanDecoder, unsupported_reason
from grpokit.engine.stepper import _LeanStepper, make_stepper
from sampling import sample


def _model(arch: str, *, vocab: int = 53, heads: int = 4, kv: int = 2, bias_eos: bool = True, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config, \
        Qwen2ForCausalLM

    classes = {"qwen2": (Qwen2Config, Qwen2ForCausalLM), "llama": (LlamaConfig, LlamaForCausalLM),
               "mistral": (MistralConfig, MistralForCausalLM)}
    cfg_cls, model_cls = classes[arch]
    kw = {"sliding_window": None} if arch == "mistral" else {}
    cfg = cfg_cls(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=heads,
                  num_key_value_heads=kv, intermediate_size=48, max_position_embeddings=128,
                  tie_word_embeddings=False, pad_token_id=0, eos_token_id=1, bos_token_id=1, **kw)
    torch.manual_seed(seed)
    model = model_cls(cfg).eval()
    if bias_eos:  # p(EOS) about 1/6 per step, so rows finish at different steps and are dropped mid-way
        head = torch.nn.Linear(32, vocab, bias=True)
        with torch.no_grad():
            head.weight.copy_(model.lm_head.weight)
            head.bias.zero_()
            head.bias[1] = float(torch.log(torch.tensor(0.2 * vocab)))
        model.lm_head = head
    return model


def _prompts(vocab: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(2, vocab, (k,), generator=g).tolist() for k in (3, 7, 4, 5, 1, 6, 7, 2)]


def _sample(model, prompts, lean: bool, **kw):
    return sample(model, prompts, max_new_tokens=14, eos_ids={1}, pad_id=0, lean=lean,
                  generator=torch.Generator().manual_seed(3), return_embeddings=True, **kw)


@pytest.mark.parametrize("arch,heads,kv", [("qwen2", 4, 2), ("llama", 4, 4), ("mistral", 4, 1)])
@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.9), (0.0, 1.0)])
def test_lean_sampling_equals_transformers_forward(arch, heads, kv, temperature, top_p):
    model = _model(arch, heads=heads, kv=kv)
    assert unsupported_reason(model) is None
    prompts = _prompts(53)
    plain = _sample(model, prompts, lean=False, temperature=temperature, top_p=top_p)
    lean = _sample(model, prompts, lean=True, temperature=temperature, top_p=top_p)
    if temperature == 1.0:
        assert len({len(c) for c in plain.completion_ids}) > 1, "rows should finish at different steps"
    assert lean.completion_ids == plain.completion_ids
    for a, b in zip(lean.logprobs, plain.logprobs):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-5)
    assert torch.allclose(lean.embeddings, plain.embeddings, atol=1e-5)
    assert lean.forward_calls == plain.forward_calls


def test_lean_logits_equal_full_forward_at_every_step():
    """Step by step against a no-cache forward over the whole left-padded sequence."""
    model = _model("qwen2")
    prompts = [[5, 6, 7], [9], [3, 4, 10, 11]]
    width = 4
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = (torch.arange(width)[None] >= torch.tensor([width - len(p) for p in prompts])[:, None]).long()
    pos = (mask.cumsum(1) - 1).clamp_min(0)
    dec = LeanDecoder(model, capacity=width + 5)
    hidden = dec.prefill(ids, mask, pos)
    logits = dec.logits(hidden[:, -1])
    nxt = pos[:, -1] + 1
    for t in range(5):
        with torch.no_grad():
            want = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp_min(0)).logits
        assert torch.allclose(logits, want[:, -1], atol=1e-5), f"step {t}"
        tok = logits.argmax(-1)
        ids = torch.cat([ids, tok[:, None]], 1)
        mask = torch.cat([mask, torch.ones(3, 1, dtype=mask.dtype)], 1)
        logits = dec.step(tok, nxt)
        nxt = nxt + 1


def test_lean_cache_rejects_more_positions_than_its_capacity():
    model = _model("llama", kv=4)
    dec = LeanDecoder(model, capacity=3)
    dec.prefill(torch.tensor([[4, 5, 6]]), torch.ones(1, 3, dtype=torch.long), torch.arange(3)[None])
    with pytest.raises(ValueError, match="cache is full"):
        dec.step(torch.tensor([4]), torch.tensor([3]))


def test_lora_and_other_architectures_take_the_transformers_path():
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    lora = get_peft_model(_model("qwen2"), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert "LoRA" in unsupported_reason(lora)
    assert isinstance(make_stepper(lora, capacity=8), TransformersStepper)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=40, n_embd=16, n_layer=1, n_head=2))
    assert "gpt2" in unsupported_reason(gpt2)
    assert isinstance(make_stepper(_model("qwen2"), capacity=8), _LeanStepper)
    # a LoRA model still samples (through transformers)
    out = generate(lora, _prompts(53)[:2], max_new_tokens=3, eos_ids={1}, pad_id=0)
    assert all(1 <= len(c) <= 3 for c in out.completion_ids)


def test_lean_decoding_of_a_bfloat16_model_stays_close():
    model = _model("qwen2", bias_eos=False).to(torch.bfloat16)
    prompts = _prompts(53)
    plain = _sample(model, prompts, lean=False, temperature=0.0)
    lean = _sample(model, prompts, lean=True, temperature=0.0)
    # bf16 rounding differs with the op order, so compare the first greedy tokens and the prompt embeddings
    assert [c[:2] for c in lean.completion_ids] == [c[:2] for c in plain.completion_ids]
    assert torch.allclose(lean.embeddings, plain.embeddings, atol=0.05)


def test_unfused_projections_for_large_models_sample_the_same(monkeypatch):
    import grpokit.engine.lean as lean

    model = _model("qwen2")
    prompts = _prompts(53)
    fused = _sample(model, prompts, lean=True)
    assert all(len(t.qkv.parts) == 1 and len(t.gate_up.parts) == 1 for t in LeanDecoder(model, capacity=8).layers)
    monkeypatch.setattr(lean, "FUSE_MAX_BYTES", 0)  # as if the concatenated copies were too large
    dec = LeanDecoder(model, capacity=8)
    assert all(len(t.qkv.parts) == 3 and len(t.gate_up.parts) == 2 for t in dec.layers)
    unfused = _sample(model, prompts, lean=True)
    assert unfused.completion_ids == fused.completion_ids
    for a, b in zip(unfused.logprobs, fused.logprobs):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-5)


@pytest.mark.parametrize("arch,heads,kv", [("qwen2", 4, 2), ("llama", 4, 4)])
def test_static_step_samples_what_the_lean_step_samples(arch, heads, kv, monkeypatch):
    """The fixed-shape step behind CUDA graphs (whole-cache attention under a mask, rows
    kept until half have finished, then compacted), run eagerly on the CPU."""
    import grpokit.engine.stepper as stepper_mod

    model = _model(arch, heads=heads, kv=kv)
    prompts = _prompts(53)[:4] * 3  # groups: each prompt prefilled once, then copied to its rows
    lean = _sample(model, prompts, lean=True)
    created = []

    def static_stepper(model, *, capacity, cuda_graphs=True):
        created.append(stepper_mod._StaticLeanStepper(model, capacity, use_graph=False))
        return created[-1]

    monkeypatch.setattr(stepper_mod, "make_stepper", static_stepper)
    static = _sample(model, prompts, lean=True)
    assert created and created[-1].dec.static
    assert len({len(c) for c in lean.completion_ids}) > 2, "rows should finish at several different steps"
    assert static.completion_ids == lean.completion_ids
    for a, b in zip(static.logprobs, lean.logprobs):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-5)
    # the cache was compacted once fewer than half of the 12 rows were left
    assert created[-1].tok.shape[0] < len(prompts)


def test_sampling_runs_in_inference_mode_and_returns_ordinary_embeddings(monkeypatch):
    model = _model("qwen2")
    seen = []
    real_step = _LeanStepper.step

    def spy(self, tokens, pos):
        seen.append(torch.is_inference_mode_enabled())
        return real_step(self, tokens, pos)

    monkeypatch.setattr(_LeanStepper, "step", spy)
    out = _sample(model, _prompts(53), lean=True)
    assert seen and all(seen)
    assert not out.embeddings.is_inference()
    out.embeddings.add_(1.0)  # in place, outside inference mode
    assert not any(p.is_inference() for p in model.parameters())
