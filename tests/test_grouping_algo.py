"""Cross-scale advantage math (grpokit.algo.hierarchical, algo.offpolicy): values a reader
can check by hand."""
import math

import pytest
import torch

from grpokit.algo.advantages import group_advantages
from grpokit.algo.hierarchical import (allocate_samples, combine_advantages, loo_means, nest_ids,
                                       scale_weights, shrunk_advantages, shrunk_group_stats, simplex_lstsq)
from grpokit.algo.offpolicy import truncated_importance_weights
from grpokit.grouping import Groups

# Three groups of two inside one parent: A = [1, 0], B = [1, 1], C = [0, 0].
R = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])
G = torch.tensor([0, 0, 1, 1, 2, 2])
P = torch.zeros(6, dtype=torch.long)


def test_shrunk_stats_by_hand():
    # mu = 1/2; sigma2 = (0.5 + 0 + 0) / 3 = 1/6; between = (0 + 1/4 + 1/4) / 2 = 1/4;
    # tau2 = 1/4 - (1/6)(1/2) = 1/6; w = 2 tau2 / (2 tau2 + sigma2) = 2/3
    # baselines: A 1/2, B 2/3 * 1 + 1/3 * 1/2 = 5/6, C 1/6
    # variances (prior_dof 2): A (1/2 + 1/3) / 3 = 5/18, B = C = (0 + 1/3) / 3 = 1/9
    base, std, w = shrunk_group_stats(R, G, P, prior_dof=2.0)
    assert base.tolist() == pytest.approx([0.5, 0.5, 5 / 6, 5 / 6, 1 / 6, 1 / 6])
    assert w.tolist() == pytest.approx([2 / 3] * 6)
    assert std.tolist() == pytest.approx([math.sqrt(5 / 18)] * 2 + [1 / 3] * 4)


def test_shrunk_advantages_by_hand():
    a = shrunk_advantages(R, G, P, scale="none")
    assert a.tolist() == pytest.approx([0.5, -0.5, 1 / 6, 1 / 6, -1 / 6, -1 / 6])
    a = shrunk_advantages(R, G, P, scale="group", eps=0.0)
    s = 0.5 / math.sqrt(5 / 18)
    assert a.tolist() == pytest.approx([s, -s, 0.5, 0.5, -0.5, -0.5])
    # plain GRPO gives the constant groups B and C nothing to learn from
    assert group_advantages(R, G, scale="none")[2:].tolist() == [0.0] * 4


def test_shrinkage_limits():
    # all groups alike (tau2 = 0): every baseline is the parent mean
    r = torch.tensor([1.0, 0.0, 0.0, 1.0])
    g = torch.tensor([0, 0, 1, 1])
    base, _, w = shrunk_group_stats(r, g, torch.zeros(4, dtype=torch.long))
    assert base.tolist() == [0.5] * 4 and w.tolist() == [0.0] * 4
    # no noise inside groups (sigma2 = 0): every group keeps its own mean (w = 1)
    r = torch.tensor([1.0, 1.0, 0.0, 0.0])
    base, std, w = shrunk_group_stats(r, g, torch.zeros(4, dtype=torch.long))
    assert base.tolist() == [1.0, 1.0, 0.0, 0.0] and w.tolist() == [1.0] * 4 and std.tolist() == [0.0] * 4
    assert shrunk_advantages(r, g, torch.zeros(4, dtype=torch.long), eps=0.0).tolist() == [0.0] * 4


def test_singleton_gets_a_usable_baseline():
    r = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0])
    g = torch.tensor([0, 0, 1, 1, 2])  # group 2 is one completion
    a = shrunk_advantages(r, g, torch.zeros(5, dtype=torch.long), scale="none")
    assert a[4] > 0  # compared with the parent mean 0.6, not with itself
    assert group_advantages(r, g, scale="none")[4] == 0.0


def test_shrinkage_respects_parents_and_is_order_free():
    r = torch.tensor([1.0, 0.0, 1.0, 1.0, 5.0, 4.0, 5.0, 5.0])
    g = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    p = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    a = shrunk_advantages(r, g, p, scale="none")
    # the second parent is the first shifted by +4: same advantages
    assert a[:4].tolist() == pytest.approx(a[4:].tolist())
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(0))
    assert shrunk_advantages(r[perm], g[perm], p[perm], scale="none").tolist() == pytest.approx(a[perm].tolist())


def test_nest_ids_cuts_straddling_groups():
    child = torch.tensor([0, 0, 0, 1])
    parent = torch.tensor([0, 0, 1, 1])
    ids = nest_ids(child, parent)
    assert ids[0] == ids[1] and ids[2] != ids[0] and ids[3] != ids[2]


def test_multiscale_by_hand():
    # prompts 0..3 (two completions each), clusters {0, 1} and {2, 3}, then the batch
    r = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0])
    prompt = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    cluster = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    batch = torch.zeros(8, dtype=torch.long)
    # prompt:  [.5, -.5, 0, 0, 0, 0, -.5, .5]   cluster: [.25, -.75, .25, .25, -.25, -.25, -.25, .75]
    # batch:   [.5, -.5, .5, .5, -.5, -.5, -.5, .5]        A = .5 prompt + .25 cluster + .25 batch
    expected = [0.4375, -0.5625, 0.1875, 0.1875, -0.1875, -0.1875, -0.4375, 0.5625]
    groups = Groups(ids=[prompt, cluster, batch], weights=[0.5, 0.25, 0.25])
    assert groups.advantages(r, group_advantages, scale="none", eps=0.0).tolist() == expected
    per = [group_advantages(r, i, scale="none") for i in (prompt, cluster, batch)]
    assert combine_advantages(per, [2.0, 1.0, 1.0]).tolist() == expected  # weights are normalised
    with pytest.raises(ValueError):
        combine_advantages(per, [1.0, -1.0, 1.0])


def test_groups_single_scale_is_the_estimator_itself():
    r = torch.tensor([3.0, 1.0, 2.0, 2.5])
    ids = torch.tensor([1, 1, 0, 0])
    out = Groups(ids=[ids]).advantages(r, group_advantages, scale="group", eps=1e-4)
    assert torch.equal(out, group_advantages(r, ids, scale="group", eps=1e-4))


def test_loo_means_by_hand():
    loo, ok = loo_means(torch.tensor([1.0, 2.0, 6.0, 9.0]), torch.tensor([0, 0, 0, 1]))
    assert loo.tolist() == [4.0, 3.5, 1.5, 0.0] and ok.tolist() == [True, True, True, False]


def test_simplex_lstsq():
    x = torch.tensor([[1.0, 0.0, 5.0], [0.0, 1.0, -3.0], [1.0, 1.0, 0.0], [2.0, 0.0, 1.0]])
    y = 0.3 * x[:, 0] + 0.7 * x[:, 1]
    w = simplex_lstsq(x, y)
    assert w.tolist() == pytest.approx([0.3, 0.7, 0.0], abs=1e-6)
    # the unconstrained optimum (2, -1) lies outside the simplex: the best feasible is a vertex
    x2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y2 = torch.tensor([2.0, -1.0])
    assert simplex_lstsq(x2, y2).tolist() == pytest.approx([1.0, 0.0])


def test_scale_weights_pick_the_predictive_scale():
    # rewards depend only on the prompt: the prompt scale's leave-one-out mean predicts them exactly
    prompt = torch.arange(6).repeat_interleave(4)
    r = (prompt % 2).float()
    w = scale_weights(r, [prompt, torch.zeros_like(prompt)])
    assert w.tolist() == pytest.approx([1.0, 0.0])
    # rewards independent of the prompt: the batch predicts better
    noise = torch.tensor([1.0, 0.0, 0.0, 1.0] * 6)
    w = scale_weights(noise, [prompt, torch.zeros_like(prompt)])
    assert w[1] > 0.5


def test_allocate_samples_by_hand():
    # prompt 0 uncertain (Beta(1,1): reward variance E[p(1-p)] = 1/6); 1 almost surely right; 2 almost surely wrong
    alpha = torch.tensor([1.0, 1000.0, 0.001])
    beta = torch.tensor([1.0, 0.001, 1000.0])
    # prompt 0's reductions (1/6)/(n(n+1)) = 1/36, 1/72, 1/120, 1/180 dwarf the others' (~1e-6)
    assert allocate_samples(alpha, beta, 10, min_n=2, max_n=6).tolist() == [6, 2, 2]
    # two left after prompt 0 is full: one each to the (equal-variance) others, lower index first
    assert allocate_samples(alpha, beta, 12, min_n=2, max_n=6).tolist() == [6, 3, 3]
    assert allocate_samples(alpha, beta, 11, min_n=2, max_n=6).tolist() == [6, 3, 2]
    assert allocate_samples(alpha, beta, 100, min_n=2, max_n=6).tolist() == [6, 6, 6]  # capped at max_n
    with pytest.raises(ValueError, match="below"):
        allocate_samples(alpha, beta, 5, min_n=2, max_n=6)


def test_allocate_samples_is_about_proportional_to_reward_std():
    # Neyman: n_i ~ sqrt(v_i). Beta(a, b) with a + b = 100 pins p; v = p(1-p) * 100/101
    p = torch.tensor([0.5, 0.1, 0.02])
    counts = allocate_samples(100 * p, 100 * (1 - p), 300, min_n=1, max_n=300)
    std = (p * (1 - p)).sqrt()
    assert counts.sum() == 300
    assert (counts.double() / 300).tolist() == pytest.approx((std / std.sum()).tolist(), abs=0.01)


def test_truncated_importance_weights_by_hand():
    ln2 = math.log(2.0)
    now = torch.tensor([[0.0, ln2, ln2, 0.0], [0.0, 0.0, -2 * ln2, 0.0], [0.0, 9.0, 9.0, 9.0]])
    then = torch.zeros(3, 4)
    mask = torch.tensor([[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=torch.float32)
    w = truncated_importance_weights(now, then, mask, cap=1.5)
    assert w.tolist() == pytest.approx([1.5, 0.5, 0.0])  # 2 capped at 1.5; exp(-ln2); empty row


def test_replayed_rows_get_weighted_advantages():
    from grpokit.grouping.base import select_rows
    from grpokit.rollout.batch import build_rollout_batch

    past = build_rollout_batch([[5, 6], [5, 6]], [[7, 8], [9]], [[-1.0, -1.0], [-2.0]], pad_id=0,
                               example_index=[0, 0], finished=[True, True], completions=["a", "b"])
    r_now = torch.tensor([1.0, 0.0])
    groups = Groups(ids=[torch.tensor([0, 0, 0, 0])], past_rewards=torch.tensor([1.0, 1.0]),
                    replay=select_rows(past, torch.arange(2)), replay_cap=4.0)
    logp_now = past.logprobs + math.log(2.0) * past.loss_mask  # every replayed token twice as likely now
    a = groups.advantages(r_now, group_advantages, scale="none", eps=0.0, logp_now=logp_now)
    # pooled mean 0.75: [0.25, -0.75] now, [0.25, 0.25] * w = 2 for the replayed rows
    assert a.tolist() == pytest.approx([0.25, -0.75, 0.5, 0.5])
    with pytest.raises(ValueError, match="logp_now"):
        groups.advantages(r_now, group_advantages, scale="none", eps=0.0)
