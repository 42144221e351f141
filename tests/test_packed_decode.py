"""MKL-packed weights in the decode step (rollout.packed) compute the plain products."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from grpokit.engine import packed
from grpokit.engine.packed import DecodeLinear, PackedSet, packing_available

needs_mkl = pytest.mark.skipif(not packing_available(torch.zeros(1)), reason="torch built without MKL")


@needs_mkl
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("rows", [16, 12, 9, 8, 5, 40])
def test_packed_linear_equals_plain_linear_for_any_row_count(bias, rows):
    """Packed for 16 rows: 16 use the pack, 9-15 are zero-padded to 16, 8 and fewer or
    more than 16 take the plain product. All equal F.linear."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(48, 40, generator=g)
    b = torch.randn(48, generator=g) if bias else None
    lin = DecodeLinear(w, b)
    lin.pack(16)
    x = torch.randn(rows, 1, 40, generator=g)
    y = lin(x)
    assert y.shape == (rows, 1, 48)
    torch.testing.assert_close(y, F.linear(x, w, b), atol=1e-5, rtol=1e-5)
    # the residual form (o and down products of the native decode step) adds it, untouched
    res = torch.randn(rows, 1, 48, generator=g)
    kept = res.clone()
    torch.testing.assert_close(lin(x, residual=res), F.linear(x, w, b) + kept, atol=1e-5, rtol=1e-5)
    assert torch.equal(res, kept)


@needs_mkl
def test_packed_set_repacks_only_when_less_than_half_is_used(monkeypatch):
    monkeypatch.setattr(packed, "PACK_MIN_NUMEL", 0)
    lins = [DecodeLinear(torch.randn(8, 4), None), DecodeLinear(torch.randn(6, 8), None)]
    ps = PackedSet(lins, enabled=True)
    ps.fit(32)
    assert ps.rows == 32 and all(lin.rows == 32 and lin.packed is not None for lin in lins)
    first = lins[0].packed
    ps.fit(17)  # more than half of 32: padded, not repacked
    assert ps.rows == 32 and lins[0].packed is first
    ps.fit(16)
    assert ps.rows == 16 and lins[0].rows == 16
    ps.fit(5)  # under PACK_MIN_ROWS: plain products
    assert ps.rows == 0 and all(lin.packed is None for lin in lins)


def test_small_weights_large_models_and_non_float32_weights_are_not_packed(monkeypatch):
    small = PackedSet([DecodeLinear(torch.randn(128, 128), None)], enabled=True)
    assert not small.enabled  # under PACK_MIN_NUMEL
    monkeypatch.setattr(packed, "PACK_MAX_BYTES", 2 * 1024 * 512 * 4 - 1)
    assert not PackedSet([DecodeLinear(torch.randn(1024, 512), None) for _ in range(2)], enabled=True).enabled
    monkeypatch.setattr(packed, "PACK_MAX_BYTES", 2 * 1024 * 512 * 4)
    assert PackedSet([DecodeLinear(torch.randn(1024, 512), None) for _ in range(2)], enabled=True).enabled == \
        packing_available(torch.zeros(1))
    half = PackedSet([DecodeLinear(torch.randn(1024, 512, dtype=torch.bfloat16), None)], enabled=True)
    assert not half.enabled
    off = PackedSet([DecodeLinear(torch.randn(1024, 512), None)], enabled=False)
    assert not off.enabled


@needs_mkl
def test_packed_decode_samples_what_the_plain_decode_samples(monkeypatch):
    """Whole sampling runs, every weight packed: rows finish at different steps, so the
    padded and the repacked products are both used."""
    from test_lean_decode import _model, _prompts, _sample

    import grpokit.engine.lean as lean

    model = _model("qwen2")
    prompts = _prompts(53) * 3  # 24 rows
    monkeypatch.setattr(packed, "PACK_MIN_NUMEL", 1 << 40)
    plain = _sample(model, prompts, lean=True)
    monkeypatch.setattr(packed, "PACK_MIN_NUMEL", 0)
    fits = []
    orig_fit = PackedSet.fit

    def spy(self, rows):
        orig_fit(self, rows)
        fits.append((rows, self.rows))

    monkeypatch.setattr(PackedSet, "fit", spy)
    with_pack = _sample(model, prompts, lean=True)
    assert fits[0][0] == fits[0][1] >= 8  # packed for the rows of the first step
    assert any(0 < packed_rows != rows for rows, packed_rows in fits), "a padded product should have run"
    assert len({packed_rows for _, packed_rows in fits if packed_rows}) >= 2, "a repack should have happened"
    assert len({len(c) for c in plain.completion_ids}) > 2
    assert with_pack.completion_ids == plain.completion_ids
    for a, b in zip(with_pack.logprobs, plain.logprobs):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-5)
    assert lean.LeanDecoder(model, capacity=8, pack=False).packs.enabled is False
