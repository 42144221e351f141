"""The activation-lean MLP and RMSNorm (grpokit.engine.lean_train) compute the plain function and gradients."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from grpokit.engine import lean_train
from grpokit.engine.lean_train import _RMSNorm, _SwiGLUDown


def _model(arch: str, dtype=torch.float64):
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config, \
        Qwen2ForCausalLM

    classes = {"qwen2": (Qwen2Config, Qwen2ForCausalLM), "llama": (LlamaConfig, LlamaForCausalLM),
               "mistral": (MistralConfig, MistralForCausalLM)}
    kw = {"sliding_window": None} if arch == "mistral" else {}
    cfg = classes[arch][0](vocab_size=41, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, intermediate_size=48, max_position_embeddings=64,
                           tie_word_embeddings=False, pad_token_id=0, **kw)
    torch.manual_seed(0)
    return classes[arch][1](cfg).to(dtype)


def test_rms_norm_literal_values():
    # x = [3, 4]: mean of squares 12.5, rsqrt 1 / 3.5355...; weights [1, 2]
    x = torch.tensor([[3.0, 4.0]], dtype=torch.float64, requires_grad=True)
    w = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    y = _RMSNorm.apply(x, w, 0.0)
    r = 1 / math.sqrt(12.5)
    assert y[0].tolist() == pytest.approx([3 * r, 8 * r])
    y[0, 0].backward()
    # d(x0 r)/dx0 = r - x0^2 r^3 / 2, d(x0 r)/dx1 = -x0 x1 r^3 / 2; dy0/dw0 = x0 r
    assert x.grad[0].tolist() == pytest.approx([r - 9 * r ** 3 / 2, -12 * r ** 3 / 2])
    assert w.grad.tolist() == pytest.approx([3 * r, 0.0])


def test_swiglu_down_literal_values():
    g = torch.tensor([[0.0, 2.0]], dtype=torch.float64, requires_grad=True)
    u = torch.tensor([[5.0, 3.0]], dtype=torch.float64, requires_grad=True)
    w = torch.tensor([[1.0, -1.0]], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([0.5], dtype=torch.float64, requires_grad=True)
    y = _SwiGLUDown.apply(g, u, w, b)
    s2 = 1 / (1 + math.exp(-2.0))  # silu(0) = 0, silu(2) = 2 sigmoid(2)
    assert y.item() == pytest.approx(0.5 - 3 * 2 * s2)
    y.backward()
    assert u.grad[0].tolist() == pytest.approx([0.0, -2 * s2])
    # silu'(x) = s (1 + x (1 - s)); silu'(0) = 1/2
    assert g.grad[0].tolist() == pytest.approx([5 * 0.5, -3 * s2 * (1 + 2 * (1 - s2))])
    assert w.grad[0].tolist() == pytest.approx([0.0, 3 * 2 * s2])
    assert b.grad.tolist() == pytest.approx([1.0])


def test_functions_pass_gradcheck():
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(3, 5, 8, dtype=torch.float64, generator=gen), torch.randn(8, dtype=torch.float64, generator=gen)
    assert torch.autograd.gradcheck(lambda a, b: _RMSNorm.apply(a, b, 1e-6),
                                    (x.requires_grad_(), w.requires_grad_()))
    args = [torch.randn(*s, dtype=torch.float64, generator=gen).requires_grad_() for s in ((3, 5, 6), (3, 5, 6),
                                                                                             (4, 6), (4,))]
    assert torch.autograd.gradcheck(_SwiGLUDown.apply, tuple(args))
    assert torch.autograd.gradcheck(lambda a, b, c: _SwiGLUDown.apply(a, b, c, None), tuple(args[:3]))


def _saved_bytes(fn) -> int:
    total = [0]

    def pack(t):
        if not isinstance(t, torch.nn.Parameter):
            total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total[0]


@pytest.mark.parametrize("arch", ["qwen2", "llama", "mistral"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_installed_model_has_plain_loss_and_gradients_and_keeps_less(arch, dtype):
    # float64: the lean MLP (transformers normalises float64 in float32, so its norm stays);
    # float32: the lean MLP and norm, equal up to float32 rounding
    plain = _model(arch, dtype)
    lean = copy.deepcopy(plain)
    assert lean_train.install(lean)
    ids = torch.randint(1, 41, (3, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # left padding in one row
    losses, saved = [], []
    for m in (plain, lean):
        out = {}
        saved.append(_saved_bytes(lambda: out.setdefault("loss", m(input_ids=ids, attention_mask=mask,
                                                                   labels=ids).loss)))
        out["loss"].backward()
        losses.append(out["loss"].item())
    tol = {"rtol": 1e-9, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-6}
    assert losses[0] == pytest.approx(losses[1], rel=tol["rtol"])
    for (name, p), q in zip(plain.named_parameters(), lean.parameters()):
        assert torch.allclose(p.grad, q.grad, **tol), name
    # two [tokens, intermediate] tensors fewer per MLP; in float32 also per norm (2 per
    # layer and the final one) two [tokens, hidden] tensors and one statistic
    t, layers, size = ids.numel(), 2, dtype.itemsize
    drop = size * layers * 2 * t * 48
    if dtype == torch.float32:
        drop += size * (2 * layers + 1) * (2 * t * 32 + t)
    assert saved[0] - saved[1] >= drop
    with torch.no_grad():  # the no-grad path is the plain forward, bit for bit
        assert torch.equal(plain(input_ids=ids).logits, lean(input_ids=ids).logits)


def test_float32_norm_forward_is_bit_identical_and_other_dtypes_keep_theirs():
    m = _model("qwen2", torch.float32)
    norm = m.model.layers[0].input_layernorm
    x = torch.randn(4, 7, 32, requires_grad=True)
    plain = norm(x)
    lean_train.install(m)
    assert torch.equal(norm(x), plain)
    assert type(norm(x).grad_fn).__name__ == "_RMSNormBackward"
    m16 = _model("qwen2", torch.bfloat16)
    lean_train.install(m16)
    n16 = m16.model.layers[0].input_layernorm
    assert type(n16(x.to(torch.bfloat16)).grad_fn).__name__ != "_RMSNormBackward"


def test_lora_on_gate_up_is_covered_and_on_down_is_not():
    from peft import LoraConfig, get_peft_model

    base = _model("qwen2")
    plain = get_peft_model(copy.deepcopy(base), LoraConfig(r=2, target_modules=["gate_proj", "up_proj"]))
    for n, p in plain.named_parameters():  # non-zero B so the adapters change the function
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.1, generator=torch.Generator().manual_seed(len(n)))
    lean = copy.deepcopy(plain)
    assert lean_train.install(lean)
    ids = torch.randint(1, 41, (2, 6), generator=torch.Generator().manual_seed(2))
    for m in (plain, lean):
        m(input_ids=ids, labels=ids).loss.backward()
    grads = [[p.grad for n, p in m.named_parameters() if p.requires_grad] for m in (plain, lean)]
    assert len(grads[0]) == 8 and all(torch.allclose(a, b, rtol=1e-9, atol=1e-12) for a, b in zip(*grads))
    down = get_peft_model(copy.deepcopy(base), LoraConfig(r=2, target_modules=["down_proj"]))
    assert "down projection" in lean_train.unsupported_reason(down)
    assert not lean_train.install(down)
    assert "forward" not in vars(lean_train.base_model(down).model.layers[0].mlp)


def test_the_engine_rmsnorm_forms_equal_transformers_rmsnorm_bit_for_bit():
    """One statistics helper (engine.rmsnorm) behind the lean training norm and the lean
    decode step's non-float32 norm: both equal transformers' RMSNorm exactly."""
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm

    from grpokit.engine.lean import _norm as decode_norm  # noqa: PLC2701 - the function under test
    from grpokit.engine.lean_train import _RMSNorm

    torch.manual_seed(0)
    ref = Qwen2RMSNorm(24, eps=1e-6)
    with torch.no_grad():
        ref.weight.copy_(torch.randn(24))
    x = torch.randn(3, 5, 24) * 3
    assert torch.equal(_RMSNorm.apply(x, ref.weight, ref.variance_epsilon), ref(x))
    for dtype in (torch.bfloat16, torch.float16):
        ref_h = Qwen2RMSNorm(24, eps=1e-6).to(dtype)
        with torch.no_grad():
            ref_h.weight.copy_(ref.weight.to(dtype))
        xh = x.to(dtype)
        assert torch.equal(decode_norm(xh, ref_h.weight, ref_h.variance_epsilon), ref_h(xh))
