"""grpokit's C decode kernels (grpokit.engine.native): literal values, agreement with torch's
ops in float64, and whole sampling runs equal to transformers' forward."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from grpokit.engine import native
from grpokit.engine.native import ops
from grpokit.engine.lean import LeanDecoder, _rotate
from test_native_step import _model, assert_lean_sampling_matches  # a small Qwen2, rows finish apart

LIB = native.library()
pytestmark = pytest.mark.skipif(LIB is None, reason="no C compiler: the decode step keeps torch's ops")


def _attend(qkv, *, hq, hk, d, cos, sin, pos, kt, vc, col, valid, scale, threads=1):
    return ops.decode_attention(LIB, qkv, heads=hq, kv_heads=hk, head_dim=d, cos=cos, sin=sin, pos=pos,
                                k_cache=kt.transpose(2, 3), v_cache=vc, column=col, valid=valid, scale=scale,
                                threads=threads)


def test_rms_norm_literal_values():
    x = torch.tensor([[3.0, 4.0], [1.0, -1.0]])
    w = torch.tensor([1.0, 2.0])
    # row 0: mean square 12.5; row 1: 1.0 (eps 0)
    want = torch.tensor([[3 / math.sqrt(12.5), 8 / math.sqrt(12.5)], [1.0, -2.0]])
    assert torch.allclose(ops.rms_norm(LIB, x, w, 0.0), want, atol=1e-6)
    # eps enters under the root: sqrt(1 + 3) = 2
    assert torch.allclose(ops.rms_norm(LIB, x[1:], w, 3.0), torch.tensor([[0.5, -1.0]]), atol=1e-6)


def test_rms_norm_equals_transformers_formula():
    torch.manual_seed(0)
    x, w = torch.randn(5, 3, 96), torch.randn(96)
    want = w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))
    assert torch.allclose(ops.rms_norm(LIB, x, w, 1e-6), want, atol=1e-6)


def test_attention_literal_values():
    """One row, one head, d 16, rotary off (cos 1, sin 0): column 0 holds k = 0, v = e0;
    the new token has q = e0, k = 2 e0, v = e1. Scores (scale 0.5): 0 and 1."""
    d, cap = 16, 16
    qkv = torch.zeros(1, 1, 3 * d)
    qkv[0, 0, 0] = 1.0  # q
    qkv[0, 0, d] = 2.0  # k
    qkv[0, 0, 2 * d + 1] = 1.0  # v
    cos, sin = torch.ones(cap, d), torch.zeros(cap, d)
    kt, vc = torch.zeros(1, 1, d, cap), torch.zeros(1, 1, cap, d)
    vc[0, 0, 0, 0] = 1.0
    valid = torch.zeros(1, cap, dtype=torch.bool)
    valid[0, :2] = True
    out = _attend(qkv, hq=1, hk=1, d=d, cos=cos, sin=sin, pos=torch.tensor([1]), kt=kt, vc=vc, col=1,
                  valid=valid, scale=0.5)
    p1 = math.e / (1 + math.e)  # 0.731059
    want = torch.zeros(d)
    want[0], want[1] = 1 - p1, p1
    assert torch.allclose(out[0, 0], want, atol=1e-6)
    assert kt[0, 0, 0, 1] == 2.0 and vc[0, 0, 1, 1] == 1.0  # the token went into column 1


@pytest.mark.parametrize("batch,hq,hk,d,cap,col,threads", [(5, 4, 2, 32, 48, 40, 2), (3, 2, 2, 16, 16, 0, 1),
                                                             (64, 8, 4, 64, 96, 70, 1), (64, 8, 4, 64, 96, 70, 2)])
def test_attention_equals_float64_reference(batch, hq, hk, d, cap, col, threads):
    """Rotary, cache write and grouped-query attention against torch in float64, with
    masked columns and stale flags past the current column (which must be ignored).
    The last case is large enough for the kernel to split rows between two threads."""
    g = torch.Generator().manual_seed(batch)
    qkv = torch.randn(batch, 1, (hq + 2 * hk) * d, generator=g)
    ang = torch.randn(cap, d // 2, generator=g)
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()
    pos = torch.randint(0, cap, (batch,), generator=g)
    kt, vc = torch.randn(batch, hk, d, cap, generator=g), torch.randn(batch, hk, cap, d, generator=g)
    valid = torch.rand(batch, cap, generator=g) > 0.3
    valid[:, col] = True
    keys, values = kt.transpose(2, 3).clone(), vc.clone()
    out = _attend(qkv, hq=hq, hk=hk, d=d, cos=cos, sin=sin, pos=pos, kt=kt, vc=vc, col=col, valid=valid,
                  scale=d ** -0.5, threads=threads)

    c, s = cos[pos][:, None].double(), sin[pos][:, None].double()
    x = qkv[:, 0].double()
    q = _rotate(x[:, :hq * d].view(batch, hq, d), c, s)
    k = _rotate(x[:, hq * d:(hq + hk) * d].view(batch, hk, d), c, s)
    keys, values = keys.double(), values.double()
    keys[:, :, col], values[:, :, col] = k, x[:, (hq + hk) * d:].view(batch, hk, d)
    assert torch.allclose(kt.transpose(2, 3)[:, :, col].double(), k, atol=1e-6)
    assert torch.equal(vc[:, :, col], values[:, :, col].float())
    rep = hq // hk
    want = F.scaled_dot_product_attention(q[:, :, None], keys[:, :, :col + 1].repeat_interleave(rep, 1),
                                          values[:, :, :col + 1].repeat_interleave(rep, 1),
                                          attn_mask=valid[:, None, None, :col + 1], scale=d ** -0.5)
    assert torch.allclose(out.view(batch, hq, d).double(), want[:, :, 0], atol=2e-6)


def test_softmax_exp_is_accurate_over_the_float_range():
    """Scores from 0 down to -100 (exp underflows below ~-87): the weights equal float64's."""
    d, n = 16, 200
    scores = torch.linspace(0.0, -100.0, n)
    # one key per column: k_j = s_j e0, q = e0, scale 1 -> score s_j; v_j = e_{j mod d} weights it
    qkv = torch.zeros(1, 1, 3 * d)
    qkv[0, 0, 0] = 1.0
    qkv[0, 0, d] = scores[-1]
    cap = 208
    kt, vc = torch.zeros(1, 1, d, cap), torch.zeros(1, 1, cap, d)
    kt[0, 0, 0, :n] = scores
    vc[0, 0, torch.arange(n), 0] = 1.0
    vc[0, 0, :n, 1] = scores  # second output: the score-weighted mean
    valid = torch.zeros(1, cap, dtype=torch.bool)
    valid[0, :n] = True
    out = _attend(qkv, hq=1, hk=1, d=d, cos=torch.ones(cap, d), sin=torch.zeros(cap, d), pos=torch.tensor([0]),
                  kt=kt, vc=vc, col=n - 1, valid=valid, scale=1.0)
    p = torch.softmax(scores.double(), 0)
    assert abs(out[0, 0, 0].item() - 1.0) < 1e-6
    assert abs(out[0, 0, 1].item() - (p * scores.double()).sum().item()) < 1e-5


@pytest.mark.parametrize("hidden,heads,kv", [(64, 4, 2), (128, 4, 4)])
def test_native_sampling_equals_transformers_forward(hidden, heads, kv, monkeypatch):
    """The kernels between torch's products; small as it is, the model is kept off the
    whole step in C (tests/test_native_step.py tests that one)."""
    monkeypatch.setattr("grpokit.engine.lean.WHOLE_STEP_MAX_BYTES", 0)
    model = _model(hidden=hidden, heads=heads, kv=kv)
    dec = LeanDecoder(model, capacity=8)
    assert dec.native is not None and dec.whole is None
    assert LeanDecoder(model, capacity=8, use_native=False).native is None
    assert_lean_sampling_matches(model)


def test_native_step_logits_equal_the_torch_step():
    """Step by step, the native step's logits (kernels between torch's products; the whole
    step in C is tests/test_native_step.py's) equal the lean torch step's, before and
    after rows are dropped; capacity 20 is stored as 32 columns."""
    model = _model(hidden=64, heads=4, kv=2)
    ids = torch.tensor([[0, 5, 6], [7, 8, 9], [0, 0, 4]])
    mask = (ids != 0).long()
    pos = (mask.cumsum(1) - 1).clamp_min(0)
    decs = [LeanDecoder(model, capacity=20, use_native=n, whole_step=False) for n in (False, True)]
    assert decs[1].columns == 32 and decs[1].capacity == 20 and decs[1].whole is None
    logits = [d.logits(d.prefill(ids, mask, pos)[:, -1]) for d in decs]
    nxt = pos[:, -1] + 1
    for t in range(12):
        assert torch.allclose(logits[0], logits[1], atol=1e-5), f"step {t}"
        tok = logits[0].argmax(-1)
        if t == 5:  # drop the middle row
            keep = torch.tensor([0, 2])
            for d in decs:
                d.select(keep)
            tok, nxt = tok[keep], nxt[keep]
        logits = [d.step(tok, nxt) for d in decs]
        nxt = nxt + 1
    with pytest.raises(ValueError, match="cache is full"):
        for _ in range(20):
            decs[1].step(tok, nxt)


def test_loader_falls_back_without_a_compiler(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("GRPOKIT_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    assert native._load() is None
    assert "unavailable" in caplog.text
    monkeypatch.setenv("CC", "no-such-compiler-here")
    assert native._load() is None
    monkeypatch.setenv("GRPOKIT_NATIVE", "0")
    monkeypatch.delenv("CC")
    assert native._load() is None


def test_loader_builds_into_the_cache_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("GRPOKIT_CACHE", str(tmp_path))
    monkeypatch.delenv("GRPOKIT_NATIVE", raising=False)
    lib = native._load()
    assert lib is not None
    built = list((tmp_path / "native").glob("grpokit_decode_*.so"))
    assert len(built) == 1
    assert native._load() is not None  # loads the cached build
    assert list((tmp_path / "native").glob("*")) == built  # no temporary files left

