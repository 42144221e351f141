"""algo/mismatch.py: the truncated importance weight pi_old / mu and the mismatch metrics,
on hand-computed values."""
import math

import pytest
import torch

from grpokit.algo.mismatch import effective_level, mismatch_metrics, mismatch_weights

# row 0: log-ratios d = log pi_old - log mu = [0.5, -1.0, (masked)]
# row 1: d = [1.0, 0.0, 0.0], all on the mask
TRAIN = torch.tensor([[-1.0, -2.0, -0.5], [-0.2, -0.3, -0.4]])
SAMPLER = torch.tensor([[-1.5, -1.0, 99.0], [-1.2, -0.3, -0.4]])
MASK = torch.tensor([[1, 1, 0], [1, 1, 1]])


def test_token_level_truncates_at_the_cap():
    w = mismatch_weights(TRAIN, SAMPLER, MASK, level="token", cap=1.5, mode="truncate")
    expected = torch.tensor([[1.5, math.exp(-1.0), 0.0], [1.5, 1.0, 1.0]])
    torch.testing.assert_close(w, expected)


def test_token_level_mask_drops_tokens_above_the_cap():
    w = mismatch_weights(TRAIN, SAMPLER, MASK, level="token", cap=1.5, mode="mask")
    expected = torch.tensor([[0.0, math.exp(-1.0), 0.0], [0.0, 1.0, 1.0]])
    torch.testing.assert_close(w, expected)


def test_token_level_below_the_cap_is_the_plain_ratio():
    w = mismatch_weights(TRAIN, SAMPLER, MASK, level="token", cap=10.0)
    expected = torch.tensor([[math.exp(0.5), math.exp(-1.0), 0.0], [math.e, 1.0, 1.0]])
    torch.testing.assert_close(w, expected)


def test_sequence_level_uses_the_summed_log_ratio():
    # row 0: exp(0.5 - 1.0) = 0.6065 (under the cap); row 1: exp(1.0) = 2.718 > cap 2
    w = mismatch_weights(TRAIN, SAMPLER, MASK, level="sequence", cap=2.0, mode="truncate")
    expected = torch.tensor([[math.exp(-0.5), math.exp(-0.5), 0.0], [2.0, 2.0, 2.0]])
    torch.testing.assert_close(w, expected)
    w = mismatch_weights(TRAIN, SAMPLER, MASK, level="sequence", cap=2.0, mode="mask")
    expected = torch.tensor([[math.exp(-0.5), math.exp(-0.5), 0.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(w, expected)


def test_off_is_one_on_the_mask_and_weights_carry_no_gradient():
    torch.testing.assert_close(mismatch_weights(TRAIN, SAMPLER, MASK, level="off"), MASK.float())
    train = TRAIN.clone().requires_grad_(True)
    assert not mismatch_weights(train, SAMPLER, MASK).requires_grad


def test_huge_log_ratio_stays_finite():
    w = mismatch_weights(torch.tensor([[0.0]]), torch.tensor([[-1e4]]), torch.tensor([[1]]), cap=3.0)
    assert w.item() == 3.0
    w = mismatch_weights(torch.tensor([[0.0, 0.0]]), torch.tensor([[-60.0, -60.0]]), torch.tensor([[1, 1]]),
                         level="sequence", cap=3.0, mode="mask")
    assert w.tolist() == [[0.0, 0.0]]


def test_metrics_abs_diff_and_k3_kl():
    got = mismatch_metrics(TRAIN[:1], SAMPLER[:1], MASK[:1])
    assert got["abs_diff"].item() == pytest.approx(0.75)
    # k3 = exp(d) - d - 1: d = 0.5 -> 0.148721, d = -1 -> 0.367879; mean 0.258300
    assert got["kl"].item() == pytest.approx((math.exp(0.5) - 1.5 + math.exp(-1.0)) / 2, rel=1e-6)
    same = mismatch_metrics(TRAIN, TRAIN, MASK)
    assert same["abs_diff"].item() == 0.0 and same["kl"].item() == 0.0


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="level"):
        mismatch_weights(TRAIN, SAMPLER, MASK, level="row")
    with pytest.raises(ValueError, match="mode"):
        mismatch_weights(TRAIN, SAMPLER, MASK, mode="clip")
    with pytest.raises(ValueError, match="cap"):
        mismatch_weights(TRAIN, SAMPLER, MASK, cap=0.0)


def test_default_level_follows_the_backend():
    assert effective_level(None, "vllm") == "token"
    assert effective_level(None, "transformers") == "off"
    assert effective_level(None, "lean") == "off"
    assert effective_level("sequence", "transformers") == "sequence"
    assert effective_level("off", "vllm") == "off"
