"""Masked reductions and loss aggregation: hand-checkable numbers."""
import math

import pytest
import torch

from grpokit.algo.masking import AGG_MODES, aggregate, masked_mean, masked_sum, masked_var

# The 2x3 example used throughout: row 0 keeps tokens 0,1; row 1 keeps token 0.
L = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
M = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def garbage_under_mask(x, mask):
    """Same tensor with inf, nan and 1e9 written where the mask is 0."""
    fill = torch.tensor([float("inf"), float("nan"), 1e9, -float("inf")])
    out = x.clone()
    idx = (mask == 0).nonzero(as_tuple=True)
    out[idx] = fill[torch.arange(idx[0].numel()) % 4].to(x.dtype)
    return out


def test_masked_sum_and_mean_literal():
    assert masked_sum(L, M).item() == 7.0  # 1 + 2 + 4
    assert masked_sum(L, M, dim=1).tolist() == [3.0, 4.0]
    assert masked_mean(L, M).item() == pytest.approx(7 / 3)
    assert masked_mean(L, M, dim=1).tolist() == [1.5, 4.0]
    assert masked_mean(L, M, dim=0).tolist() == [2.5, 2.0, 0.0]  # column 2 is empty -> 0


def test_bool_and_float_masks_agree():
    assert masked_mean(L, M.bool()).item() == masked_mean(L, M).item()
    assert masked_sum(L, M.long(), dim=1).tolist() == [3.0, 4.0]


def test_empty_mask_gives_zero_not_nan():
    z = torch.zeros_like(M)
    assert masked_mean(L, z).item() == 0.0
    assert masked_mean(L, z, dim=1).tolist() == [0.0, 0.0]
    assert masked_var(L, z).item() == 0.0


def test_masked_var_literal():
    x = torch.tensor([1.0, 2.0, 3.0, 100.0])
    m = torch.tensor([1.0, 1.0, 1.0, 0.0])
    assert masked_var(x, m).item() == pytest.approx(1.0)  # var([1, 2, 3]) = 1
    assert masked_var(x, m, unbiased=False).item() == pytest.approx(2 / 3)
    assert masked_var(x, torch.tensor([0.0, 1.0, 0.0, 0.0])).item() == 0.0  # one value


def test_masked_var_matches_torch_var_per_row():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 9, generator=g, dtype=torch.float64)
    m = (torch.rand(5, 9, generator=g) > 0.4).double()
    m[:, :2] = 1
    got = masked_var(x, m, dim=1)
    want = torch.stack([x[i][m[i] == 1].var() for i in range(5)])
    torch.testing.assert_close(got, want)


def test_garbage_under_mask_never_leaks():
    bad = garbage_under_mask(L, M)
    assert not torch.isfinite(bad).all()  # the test really plants garbage
    assert masked_sum(bad, M).item() == 7.0
    assert masked_mean(bad, M, dim=1).tolist() == [1.5, 4.0]
    assert masked_var(bad, M).item() == pytest.approx(masked_var(L, M).item())


def test_gradient_is_zero_not_nan_under_mask():
    x = garbage_under_mask(L, M).requires_grad_(True)
    masked_mean(x, M).backward()
    torch.testing.assert_close(x.grad, torch.tensor([[1 / 3, 1 / 3, 0.0], [1 / 3, 0.0, 0.0]]), rtol=0, atol=1e-7)


# --- aggregate ---------------------------------------------------------------------------


def test_aggregate_three_modes_literal():
    # sequence_mean: ((1+2)/2 + 4/1) / 2 = 2.75
    assert aggregate(L, M, "sequence_mean").item() == pytest.approx(2.75)
    # token_mean: (1+2+4) / 3 tokens
    assert aggregate(L, M, "token_mean").item() == pytest.approx(7 / 3)
    # constant: (1+2+4) / (2 sequences * 3 columns)
    assert aggregate(L, M, "constant").item() == pytest.approx(7 / 6)


def test_aggregate_explicit_normalisers():
    assert aggregate(L, M, "sequence_mean", num_sequences=4).item() == pytest.approx(5.5 / 4)
    assert aggregate(L, M, "token_mean", num_tokens=14).item() == pytest.approx(0.5)
    assert aggregate(L, M, "constant", num_sequences=1, max_len=7).item() == pytest.approx(1.0)
    assert aggregate(L, M, "token_mean", num_tokens=torch.tensor(7.0)).item() == pytest.approx(1.0)


@pytest.mark.parametrize("mode", AGG_MODES)
def test_aggregate_ignores_garbage_under_mask(mode):
    assert aggregate(garbage_under_mask(L, M), M, mode).item() == aggregate(L, M, mode).item()


@pytest.mark.parametrize("mode", AGG_MODES)
def test_aggregate_gradient_zero_under_mask(mode):
    x = garbage_under_mask(L, M).requires_grad_(True)
    aggregate(x, M, mode).backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad[M == 0] == 0).all()
    assert (x.grad[M == 1] > 0).all()


def test_sequence_with_empty_mask_counts_in_num_sequences():
    loss = torch.tensor([[2.0, 2.0], [5.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    assert aggregate(loss, mask, "sequence_mean").item() == 1.0  # (2 + 0) / 2


def test_all_masked_batch_gives_zero():
    for mode in AGG_MODES:
        assert aggregate(L, torch.zeros_like(M), mode).item() == 0.0


@pytest.mark.parametrize("mode", AGG_MODES)
def test_micro_batches_sum_to_full_batch_hand_case(mode):
    full = aggregate(L, M, mode)
    glob = dict(num_sequences=2, num_tokens=3, max_len=3)
    parts = aggregate(L[:1], M[:1], mode, **glob) + aggregate(L[1:], M[1:], mode, **glob)
    assert parts.item() == pytest.approx(full.item())
    # without the global normalisers the halves do NOT add up (the test can fail)
    local = aggregate(L[:1], M[:1], mode) + aggregate(L[1:], M[1:], mode)
    assert local.item() != pytest.approx(full.item())


@pytest.mark.parametrize("mode", AGG_MODES)
def test_micro_batches_with_trimmed_padding_match_full_loss_and_gradient(mode):
    g = torch.Generator().manual_seed(1)
    n, t = 8, 10
    w = torch.randn(n, t, generator=g, dtype=torch.float64)
    lengths = torch.tensor([10, 3, 7, 1, 5, 10, 2, 6])
    mask = (torch.arange(t)[None, :] < lengths[:, None]).double()  # [N, T]
    x = torch.randn(n, t, generator=g, dtype=torch.float64, requires_grad=True)

    full = aggregate(x * w, mask, mode)
    (grad_full,) = torch.autograd.grad(full, x)

    glob = dict(num_sequences=n, num_tokens=mask.sum(), max_len=t)
    total = 0.0
    for rows in (slice(0, 3), slice(3, 4), slice(4, 8)):
        width = int(lengths[rows].max())  # each micro-batch trims its own padding
        total = total + aggregate((x * w)[rows, :width], mask[rows, :width], mode, **glob)
    (grad_parts,) = torch.autograd.grad(total, x)
    torch.testing.assert_close(total, full)
    torch.testing.assert_close(grad_parts, grad_full)


def test_unknown_mode_lists_valid_ones():
    with pytest.raises(ValueError) as e:
        aggregate(L, M, "mean")
    for mode in ("sequence_mean", "token_mean", "constant"):
        assert mode in str(e.value)


def test_aggregate_requires_2d():
    with pytest.raises(ValueError, match=r"\[N, T\]"):
        aggregate(torch.ones(3), torch.ones(3), "token_mean")


def test_constant_mode_does_not_depend_on_lengths():
    # Dr. GRPO: each token weighs 1 / (N * max_len) whatever its sequence's length.
    x = torch.zeros(2, 4, requires_grad=True)
    mask = torch.tensor([[1.0, 0, 0, 0], [1.0, 1, 1, 1]])
    aggregate(x, mask, "constant").backward()
    assert x.grad[mask == 1].tolist() == [1 / 8] * 5
    x.grad = None
    aggregate(x, mask, "sequence_mean").backward()  # GRPO: 1 / (N * |y_i|)
    assert x.grad[0, 0].item() == 0.5 and x.grad[1, 0].item() == 0.125
    assert math.isclose(float(x.grad.sum()), 1.0)
