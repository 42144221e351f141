"""Phase 3 across scales: groups nested in parent groups, baselines shared between them.

Pure tensor math (torch only). Group ids are explicit integer tensors [N], as in
`advantages.py`; "parent" ids give a coarser grouping of the same N elements (a
cluster of prompts, a difficulty bucket, the whole batch).

    nest_ids              make child groups nest inside parent groups
    shrunk_group_stats    empirical-Bayes baseline and variance of small groups
    shrunk_advantages     (r - shrunk baseline) / shrunk std
    combine_advantages    weighted sum of per-scale advantages (multiscale)
    loo_means             leave-one-out group means (what a baseline "predicts")
    simplex_lstsq         least squares with weights >= 0 summing to 1
    scale_weights         weights between scales from measured signal (self-tuning)
    allocate_samples      completions per prompt under a budget (self-tuning)
"""
from __future__ import annotations

import itertools
from typing import Sequence

import torch
from torch import Tensor

from grpokit.algo.advantages import group_moments

__all__ = [
    "allocate_samples",
    "combine_advantages",
    "loo_means",
    "nest_ids",
    "scale_weights",
    "shrunk_advantages",
    "shrunk_group_stats",
    "simplex_lstsq",
]


def _check_ids(values: Tensor, *ids: Tensor) -> None:
    if values.dim() != 1:
        raise ValueError(f"rewards must be 1-D [N], got shape {tuple(values.shape)}")
    for g in ids:
        if g.shape != values.shape:
            raise ValueError(f"group ids must have the rewards' shape {tuple(values.shape)}, got {tuple(g.shape)}")
        if g.dtype.is_floating_point or g.dtype == torch.bool:
            raise ValueError(f"group ids must be integers, got dtype {g.dtype}")


def nest_ids(child: Tensor, parent: Tensor) -> Tensor:
    """Ids of the groups (parent, child): each child group is cut along parent lines, so
    that every resulting group lies inside one parent group. Already-nested ids keep
    their partition (the labels change to 0..G-1)."""
    # child, parent: [N] long
    _, c = torch.unique(child, return_inverse=True)  # [N] in [0, C)
    _, p = torch.unique(parent, return_inverse=True)  # [N] in [0, P)
    key = p * (int(c.max()) + 1 if c.numel() else 1) + c  # [N]: one integer per (parent, child) pair
    _, inverse = torch.unique(key, return_inverse=True)  # [N] long
    return inverse


def shrunk_group_stats(rewards: Tensor, group_ids: Tensor, parent_ids: Tensor, *,
                       prior_dof: float = 2.0) -> tuple[Tensor, Tensor, Tensor]:
    """Empirical-Bayes (James-Stein style) baseline and spread for each element's group.

    Model: inside a parent P, each child group g has a true mean theta_g ~ N(mu_P, tau2_P)
    and its rewards scatter around theta_g with variance sigma2_P. With n_g rewards of
    mean ybar_g and squared deviations SS_g = sum_{j in g} (r_j - ybar_g)^2:

        mu_P     = mean of all rewards in P
        sigma2_P = sum_g SS_g / sum_g (n_g - 1)            pooled within-group variance
        tau2_P   = max(0, sum_g (ybar_g - mu_P)^2 / (G_P - 1) - sigma2_P * mean_g(1 / n_g))
                                                           between-group variance (moments)
        w_g      = n_g tau2_P / (n_g tau2_P + sigma2_P)    (1 when sigma2_P == 0)
        b_g      = w_g ybar_g + (1 - w_g) mu_P             shrunk baseline
        s2_g     = (SS_g + prior_dof * sigma2_P) / (n_g - 1 + prior_dof)
                                                           shrunk variance (a conjugate prior
                                                           worth prior_dof observations)

    A group of 2 to 4 completions thus borrows strength from its parent: its baseline
    moves toward the parent mean when groups in P differ little (tau2 small) and its
    rewards are noisy (sigma2 large); a large group keeps its own mean (w -> 1). A
    singleton gets b = w ybar + (1 - w) mu_P and s2 = sigma2_P, so it is no longer wasted.
    Terms that need a quantity that does not exist are 0: sigma2_P without any
    within-group degree of freedom, tau2_P with one group, s2_g with n_g = 1 and prior_dof = 0.
    Child groups that straddle parents are cut first (`nest_ids`).

    Returns (baseline [N], std [N] = sqrt(s2), weight w [N]), broadcast to the elements.
    """
    _check_ids(rewards, group_ids, parent_ids)
    if prior_dof < 0:
        raise ValueError(f"prior_dof must be >= 0, got {prior_dof}")
    child = nest_ids(group_ids, parent_ids)  # [N]
    inv, n_g, ybar, ss = group_moments(rewards, child)  # [N], [G], [G], [G]
    # parent of each child group (every member shares it after nesting)
    _, parent_index = torch.unique(parent_ids, return_inverse=True)  # [N] in [0, P)
    par_of_g = torch.zeros_like(n_g, dtype=torch.long).scatter_(0, inv, parent_index)  # [G]
    num_p = int(par_of_g.max()) + 1
    zp = rewards.new_zeros(num_p)  # [P]
    n_p = zp.index_add(0, par_of_g, n_g)  # [P]
    mu_p = zp.index_add(0, par_of_g, n_g * ybar) / n_p  # [P]
    dof_p = zp.index_add(0, par_of_g, n_g - 1)  # [P]
    sigma2_p = torch.where(dof_p > 0, zp.index_add(0, par_of_g, ss) / dof_p.clamp_min(1), zp)  # [P]
    groups_p = zp.index_add(0, par_of_g, torch.ones_like(n_g))  # [P]
    between = zp.index_add(0, par_of_g, (ybar - mu_p[par_of_g]).pow(2))  # [P]
    between = torch.where(groups_p > 1, between / (groups_p - 1).clamp_min(1), zp)  # [P]
    mean_inv_n = zp.index_add(0, par_of_g, 1.0 / n_g) / groups_p  # [P]
    tau2_p = (between - sigma2_p * mean_inv_n).clamp_min(0)  # [P]

    sigma2_g, tau2_g, mu_g = sigma2_p[par_of_g], tau2_p[par_of_g], mu_p[par_of_g]  # [G]
    den = n_g * tau2_g + sigma2_g  # [G]
    w = torch.where(sigma2_g > 0, n_g * tau2_g / torch.where(den > 0, den, torch.ones_like(den)),
                    torch.ones_like(den))  # [G]
    base = w * ybar + (1 - w) * mu_g  # [G]
    var_den = n_g - 1 + prior_dof  # [G]
    var = torch.where(var_den > 0, (ss + prior_dof * sigma2_g) / var_den.clamp_min(1e-12),
                      torch.zeros_like(ss)).clamp_min(0)  # [G]
    pos = var > 0
    std = torch.where(pos, torch.sqrt(torch.where(pos, var, torch.ones_like(var))), torch.zeros_like(var))  # [G]
    return base[inv], std[inv], w[inv]


def shrunk_advantages(rewards: Tensor, group_ids: Tensor, parent_ids: Tensor, *, scale: str = "group",
                      eps: float = 1e-4, prior_dof: float = 2.0) -> Tensor:
    """Group-relative advantage with the shrunk baseline and spread of `shrunk_group_stats`.

        A_i = (r_i - b_g(i)) / (s_g(i) + eps)      scale = "group"
        A_i = (r_i - b_g(i)) / (std(r) + eps)      scale = "batch"
        A_i =  r_i - b_g(i)                        scale = "none"

    Where the divisor is 0 (eps = 0 and no spread) the centred value is returned.
    """
    # rewards: [N] float, group_ids / parent_ids: [N] long
    base, std, _ = shrunk_group_stats(rewards, group_ids, parent_ids, prior_dof=prior_dof)  # [N] x3
    centred = rewards - base  # [N]
    if scale == "none":
        return centred
    if scale == "group":
        den = std + eps  # [N]
    elif scale == "batch":
        den = (rewards.std() if rewards.numel() > 1 else rewards.new_zeros(())) + eps  # []
        den = den.expand_as(rewards)
    else:
        raise ValueError(f"unknown advantage scale {scale!r}; valid scales: group, batch, none")
    return centred / torch.where(den != 0, den, torch.ones_like(den))  # [N]


def combine_advantages(per_scale: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """Multiscale advantage: A_i = sum_s w_s A_i^(s) / sum_s w_s.

    per_scale[s] is the advantage of every element at scale s (e.g. prompt, cluster,
    batch), weights are >= 0 with a positive sum; they are normalised, so A keeps the
    per-scale advantages' units.
    """
    if len(per_scale) != len(weights) or not per_scale:
        raise ValueError(f"need one weight per scale, got {len(per_scale)} scales and {len(weights)} weights")
    w = torch.as_tensor([float(x) for x in weights], dtype=per_scale[0].dtype)  # [S]
    if bool((w < 0).any()) or not float(w.sum()) > 0:
        raise ValueError(f"scale weights must be >= 0 with a positive sum, got {list(weights)}")
    stacked = torch.stack(list(per_scale), dim=0)  # [S, N]
    return (w[:, None] * stacked).sum(0) / w.sum()  # [N]


def loo_means(values: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor]:
    """Leave-one-out mean of each element's group: (sum_g - v_i) / (n_g - 1).

    Returns (loo [N], defined [N] bool); a singleton has no other member: loo 0, defined False.
    """
    _check_ids(values, group_ids)
    inv, n_g, mean_g, _ = group_moments(values, group_ids)  # [N], [G], [G], [G]
    n = n_g[inv]  # [N]
    total = (mean_g * n_g)[inv]  # [N]
    defined = n > 1  # [N]
    loo = torch.where(defined, (total - values) / (n - 1).clamp_min(1), torch.zeros_like(values))  # [N]
    return loo, defined


def simplex_lstsq(x: Tensor, y: Tensor) -> Tensor:
    """argmin_w ||y - x w||^2 subject to w >= 0 and sum(w) = 1, exactly.

    x [N, S] (S small: every support of w is tried, 2^S - 1 equality-constrained
    solves), y [N]. Ties go to the support tried first (lowest scales). Computed in
    float64.
    """
    n, s = x.shape
    if s == 0 or s > 8:
        raise ValueError(f"simplex_lstsq takes 1 to 8 columns, got {s}")
    xd, yd = x.double(), y.double()
    best, best_loss = None, float("inf")
    for k in range(1, s + 1):
        for support in itertools.combinations(range(s), k):
            cols = list(support)
            a = xd[:, cols]  # [N, k]
            # KKT of min ||y - a v||^2 s.t. 1'v = 1:  [2a'a 1; 1' 0] [v; lam] = [2a'y; 1]
            kkt = torch.zeros(k + 1, k + 1, dtype=torch.float64)
            kkt[:k, :k] = 2 * a.T @ a
            kkt[:k, k] = 1.0
            kkt[k, :k] = 1.0
            rhs = torch.cat([2 * a.T @ yd, torch.ones(1, dtype=torch.float64)])
            sol = torch.linalg.lstsq(kkt, rhs[:, None]).solution[:, 0]
            v = sol[:k]
            if bool((v < -1e-12).any()) or not torch.isfinite(v).all():
                continue
            v = v.clamp_min(0)
            v = v / v.sum()
            loss = float((yd - a @ v).pow(2).sum())
            if loss < best_loss - 1e-12:
                best_loss = loss
                best = torch.zeros(s, dtype=torch.float64)
                best[cols] = v
    assert best is not None  # a single column always gives a feasible w = e_j
    return best.to(x.dtype if x.dtype.is_floating_point else torch.float32)


def scale_weights(rewards: Tensor, scale_ids: Sequence[Tensor]) -> Tensor:
    """Weights between scales from measured signal: the convex mix of the scales'
    leave-one-out baselines that best predicts each completion's reward,

        w = argmin_{w >= 0, sum w = 1} sum_i (r_i - sum_s w_s loo_s(i))^2

    (a minimum-variance control variate: the advantage r - b has the least variance
    with this mix of baselines). Leave-one-out keeps a completion from predicting
    itself; elements that are alone in their group at some scale are left out. If no
    element qualifies, all the weight goes to the finest scale.
    """
    cols, ok = [], torch.ones_like(rewards, dtype=torch.bool)
    for ids in scale_ids:
        loo, defined = loo_means(rewards, ids)  # [N], [N]
        cols.append(loo)
        ok &= defined
    x = torch.stack(cols, dim=1)[ok]  # [N_ok, S]
    if x.shape[0] == 0:
        w = torch.zeros(len(scale_ids))
        w[0] = 1.0
        return w
    return simplex_lstsq(x, rewards[ok]).float()


def allocate_samples(alpha: Tensor, beta: Tensor, budget: int, *, min_n: int = 2, max_n: int = 16) -> Tensor:
    """Completions per prompt under a budget: more where rewards still disagree, fewer
    where they are always right or always wrong (Neyman allocation).

    Prompt i's success probability p_i has a Beta(alpha_i, beta_i) belief. Its
    policy-gradient estimate from n_i completions has variance about v_i / n_i, where
    v_i is the variance of its 0/1 reward,

        v_i = E[p_i (1 - p_i)] = alpha_i beta_i / ((alpha_i + beta_i)(alpha_i + beta_i + 1)).

    We minimise the total variance sum_i v_i / n_i subject to sum_i n_i <= budget and
    min_n <= n_i <= max_n (stratified sampling's optimal allocation, Neyman 1934: about
    n_i ~ sqrt(v_i)). One more completion for prompt i removes v_i / (n (n + 1)), which
    falls with n, so the greedy rule "give the next completion to the largest
    reduction" is optimal; here all reductions are ranked at once (ties: lower prompt
    index, then smaller n). A prompt that is surely solved or surely failed (v_i ~ 0)
    keeps min_n. This is dynamic sampling in the spirit of DAPO (Yu et al. 2025), with
    a fixed budget instead of resampling until the batch is full.

    alpha, beta: [P] float > 0. Returns counts [P] long; their sum is
    min(budget, P * max_n). min_n >= 1. Raises ValueError when budget < P * min_n.
    """
    p = alpha.numel()
    if beta.shape != alpha.shape or alpha.dim() != 1:
        raise ValueError("alpha and beta must be 1-D tensors of the same shape")
    if not (1 <= min_n <= max_n):
        raise ValueError(f"need 1 <= min_n <= max_n, got min_n={min_n}, max_n={max_n}")
    if budget < p * min_n:
        raise ValueError(f"budget {budget} is below {p} prompts x min_n {min_n}")
    counts = torch.full((p,), min_n, dtype=torch.long)
    extra = min(budget - p * min_n, p * (max_n - min_n))
    if extra <= 0:
        return counts
    a, b = alpha.double(), beta.double()
    v = a * b / ((a + b) * (a + b + 1))  # [P] expected reward variance
    ns = torch.arange(min_n, max_n, dtype=torch.float64)  # [K]: going from n to n + 1
    gain = (v[:, None] / (ns * (ns + 1))[None, :]).flatten()  # [P*K], prompt-major
    order = torch.sort(-gain, stable=True).indices[:extra]  # largest reductions first
    counts += torch.bincount(order // ns.numel(), minlength=p)
    return counts
