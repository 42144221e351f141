"""Advantages: hand values, invariances, vectorised == loop."""
import math

import pytest
import torch

from grpokit.algo.advantages import ADVANTAGES, group_advantages, group_stats, rloo_advantages
from grpokit.registry import RegistryError

R = torch.tensor([1.0, 0.0, 5.0, 5.0])
G = torch.tensor([0, 0, 1, 1])
SQRT_HALF = math.sqrt(0.5)  # unbiased std of [1, 0]


def test_group_stats_two_groups_of_two():
    mean, std, count = group_stats(R, G)
    assert mean.tolist() == [0.5, 0.5, 5.0, 5.0]
    assert std.tolist() == pytest.approx([SQRT_HALF, SQRT_HALF, 0.0, 0.0])
    assert count.tolist() == [2.0, 2.0, 2.0, 2.0]


def test_group_stats_non_contiguous_ids_unequal_sizes_and_singleton():
    values = torch.tensor([1.0, 10.0, 2.0, 20.0, 3.0, 42.0])
    ids = torch.tensor([7, 3, 7, 3, 7, -5])  # group 7: [1,2,3]; group 3: [10,20]; group -5: [42]
    mean, std, count = group_stats(values, ids)
    assert mean.tolist() == [2.0, 15.0, 2.0, 15.0, 2.0, 42.0]
    assert std.tolist() == pytest.approx([1.0, math.sqrt(50), 1.0, math.sqrt(50), 1.0, 0.0])
    assert count.tolist() == [3.0, 2.0, 3.0, 2.0, 3.0, 1.0]


def test_group_stats_vectorised_matches_python_loop():
    g = torch.Generator().manual_seed(0)
    n, num_groups = 1000, 37
    values = torch.randn(n, generator=g, dtype=torch.float64) * 3 + 1
    labels = torch.randperm(10_000, generator=g)[:num_groups]  # 37 distinct, arbitrary ids
    ids = labels[torch.randint(0, num_groups, (n,), generator=g)]  # unequal group sizes
    mean, std, count = group_stats(values, ids)

    want_mean, want_std, want_count = (torch.empty(n, dtype=torch.float64) for _ in range(3))
    for gid in ids.unique().tolist():
        members = ids == gid
        v = values[members]
        want_mean[members] = v.mean()
        want_std[members] = v.std() if v.numel() > 1 else 0.0
        want_count[members] = v.numel()
    torch.testing.assert_close(mean, want_mean)
    torch.testing.assert_close(std, want_std)
    torch.testing.assert_close(count, want_count)


def test_group_stats_keeps_precision_with_large_offsets():
    values = torch.tensor([1e6 + 1.0, 1e6 + 2.0, 1e6 + 3.0], dtype=torch.float32)
    _, std, _ = group_stats(values, torch.tensor([0, 0, 0]))
    assert std.tolist() == pytest.approx([1.0] * 3, rel=1e-3)


def test_group_advantages_scale_none_literal():
    assert group_advantages(R, G, scale="none").tolist() == [0.5, -0.5, 0.0, 0.0]


def test_group_advantages_scale_group_literal():
    a = group_advantages(R, G, scale="group", eps=1e-4)
    assert a.tolist() == pytest.approx([0.5 / (SQRT_HALF + 1e-4), -0.5 / (SQRT_HALF + 1e-4), 0.0, 0.0])
    # eps = 0: exactly +-1/sqrt(2); a constant group gives 0, not NaN
    a0 = group_advantages(R, G, scale="group", eps=0.0)
    assert a0.tolist() == pytest.approx([SQRT_HALF, -SQRT_HALF, 0.0, 0.0])


def test_group_advantages_scale_batch_literal():
    # batch std of [1, 0, 5, 5]: mean 2.75, squared deviations sum 20.75, / 3
    batch_std = math.sqrt(20.75 / 3)
    a = group_advantages(R, G, scale="batch", eps=0.0)
    assert a.tolist() == pytest.approx([0.5 / batch_std, -0.5 / batch_std, 0.0, 0.0])


@pytest.mark.parametrize("fn", [group_advantages, rloo_advantages])
@pytest.mark.parametrize("scale", ["group", "none"])
def test_a_constant_group_gets_exactly_zero(fn, scale):
    # Eight rewards of 0.1 (float32): sum / 8 rounds to 0.1 - 7.5e-9, which divided by
    # std + eps once gave each member -7.5e-5, and nonzero rows are trained.
    r = torch.tensor([0.1] * 8 + [0.1] * 7 + [1.1])  # [16] float32
    g = torch.tensor([0] * 8 + [1] * 8)
    a = fn(r, g, scale=scale)
    assert a[:8].tolist() == [0.0] * 8
    assert (a[8:] != 0).all()
    mean, std, _ = group_stats(r, g)
    assert mean[0].item() == r[0].item() and std[0].item() == 0.0


def test_group_stats_mean_of_a_mixed_group_is_unchanged():
    mean, _, _ = group_stats(torch.tensor([0.1] * 7 + [1.1]), torch.zeros(8, dtype=torch.long))
    assert mean[0].item() == pytest.approx(0.225, abs=1e-7)


def test_singleton_group_gets_zero():
    a = group_advantages(torch.tensor([3.0, 1.0, 2.0]), torch.tensor([9, 4, 4]), scale="group")
    assert a[0].item() == 0.0


def test_shuffled_non_contiguous_ids_give_same_per_element_result():
    g = torch.Generator().manual_seed(2)
    rewards = torch.rand(24, generator=g, dtype=torch.float64)
    sorted_ids = torch.arange(6).repeat_interleave(torch.tensor([2, 3, 4, 5, 6, 4]))
    relabel = torch.tensor([17, 3, 99, 0, 42, 8])  # arbitrary, non-contiguous ids
    perm = torch.randperm(24, generator=g)
    for fn in (group_advantages, rloo_advantages):
        for scale in ("group", "batch", "none"):
            base = fn(rewards, sorted_ids, scale=scale, eps=1e-4)
            shuffled = fn(rewards[perm], relabel[sorted_ids][perm], scale=scale, eps=1e-4)
            torch.testing.assert_close(shuffled, base[perm])


@pytest.mark.parametrize("fn", [group_advantages, rloo_advantages])
@pytest.mark.parametrize("scale", ["group", "none"])
def test_shifting_one_group_changes_nothing(fn, scale):
    g = torch.Generator().manual_seed(3)
    rewards = torch.rand(12, generator=g, dtype=torch.float64)
    ids = torch.tensor([5, 2, 5, 2, 5, 2, 8, 8, 8, 8, 1, 1])
    shifted = rewards + 100.0 * (ids == 8)
    torch.testing.assert_close(fn(shifted, ids, scale=scale, eps=1e-4), fn(rewards, ids, scale=scale, eps=1e-4))


@pytest.mark.parametrize("fn", [group_advantages, rloo_advantages])
def test_scaling_rewards_leaves_group_scaled_advantages_unchanged(fn):
    g = torch.Generator().manual_seed(4)
    rewards = torch.rand(12, generator=g, dtype=torch.float64)
    ids = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    for scale in ("group", "batch"):
        exact = fn(rewards, ids, scale=scale, eps=0.0)
        torch.testing.assert_close(fn(7.0 * rewards, ids, scale=scale, eps=0.0), exact)
        # with eps > 0 the result moves by at most ~eps / std
        torch.testing.assert_close(fn(7.0 * rewards, ids, scale=scale, eps=1e-4), exact, rtol=1e-2, atol=1e-3)
    # unscaled advantages scale with the rewards
    torch.testing.assert_close(fn(7.0 * rewards, ids, scale="none"), 7.0 * fn(rewards, ids, scale="none"))


def test_rloo_hand_values():
    a = rloo_advantages(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0, 0, 0]))
    assert a.tolist() == [1 - 2.5, 2 - 2.0, 3 - 1.5]


def test_rloo_singleton_and_mixed_groups():
    rewards = torch.tensor([4.0, 1.0, 0.0, 10.0])
    ids = torch.tensor([2, 1, 1, 3])  # group 2 and 3 are singletons
    assert rloo_advantages(rewards, ids).tolist() == [0.0, 1.0, -1.0, 0.0]


def test_rloo_matches_explicit_leave_one_out_loop():
    g = torch.Generator().manual_seed(5)
    rewards = torch.randn(200, generator=g, dtype=torch.float64)
    ids = torch.randint(0, 23, (200,), generator=g)
    want = torch.zeros(200, dtype=torch.float64)
    for i in range(200):
        others = (ids == ids[i]) & (torch.arange(200) != i)
        if others.any():
            want[i] = rewards[i] - rewards[others].mean()
    torch.testing.assert_close(rloo_advantages(rewards, ids), want)


def test_rloo_group_scale_literal():
    # [1, 2, 3]: leave-one-out advantages [-1.5, 0, 1.5], group std 1
    a = rloo_advantages(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0, 0, 0]), scale="group", eps=0.0)
    assert a.tolist() == [-1.5, 0.0, 1.5]


def test_unknown_scale_lists_valid_ones():
    for fn in (group_advantages, rloo_advantages):
        with pytest.raises(ValueError) as e:
            fn(R, G, scale="std")
        assert "group" in str(e.value) and "batch" in str(e.value) and "none" in str(e.value)


def test_bad_shapes_and_dtypes_are_rejected():
    with pytest.raises(ValueError, match="1-D"):
        group_stats(torch.ones(2, 2), torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        group_stats(torch.ones(3), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="integers"):
        group_stats(torch.ones(2), torch.zeros(2))


def test_registry_entries_share_one_signature():
    assert ADVANTAGES.names() == ["grpo", "rloo"]
    assert ADVANTAGES.get("grpo") is group_advantages
    assert ADVANTAGES.get("rloo") is rloo_advantages
    for name in ADVANTAGES:
        out = ADVANTAGES.get(name)(R, G, scale="none", eps=1e-4)
        assert out.shape == R.shape
        assert ADVANTAGES.doc(name)
    with pytest.raises(RegistryError, match="grpo, rloo"):
        ADVANTAGES.get("ppo")
