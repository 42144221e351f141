"""Losses: log-ratios picked so the ratio is e, 1/e, 1.5, ... and the expected value is
written by hand."""
import math

import pytest
import torch

from grpokit.algo.losses import (
    LOG_RATIO_CLAMP,
    clipped_surrogate,
    entropy_from_logits,
    importance_ratio,
    kl_penalty,
    policy_loss,
    token_logprobs,
)
from grpokit.algo.masking import AGG_MODES

E = math.e
LN2 = math.log(2.0)


def one(x):
    """A [1, 1] tensor."""
    return torch.tensor([[float(x)]], dtype=torch.float64)


def assert_values(t, expected, tol=1e-6):
    """t equals the hand-written nested list (within tol); NaN never passes."""
    torch.testing.assert_close(t.detach().double(), torch.tensor(expected, dtype=torch.float64), rtol=tol, atol=tol)


def surrogate_1tok(log_ratio, adv, **kw):
    loss, stats = clipped_surrogate(one(log_ratio), one(0.0), torch.tensor([float(adv)]), one(1.0), **kw)
    return loss.item(), {k: float(v) for k, v in stats.items()}


# --- token_logprobs / entropy ------------------------------------------------------------


def test_token_logprobs_literal():
    logits = torch.tensor([[[0.0, math.log(3.0)], [0.0, math.log(3.0)]]])  # p = [1/4, 3/4]
    lp = token_logprobs(logits, torch.tensor([[1, 0]]))
    assert_values(lp, [[math.log(0.75), math.log(0.25)]])


def test_token_logprobs_temperature_literal():
    logits = torch.tensor([[[0.0, 2 * math.log(3.0)]]])  # / 2 -> [0, ln 3] -> p = [1/4, 3/4]
    assert token_logprobs(logits, torch.tensor([[1]]), temperature=2.0).item() == pytest.approx(math.log(0.75))
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(logits, torch.tensor([[1]]), temperature=0.0)


def test_token_logprobs_matches_log_softmax_and_upcasts_bf16():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=g)
    tokens = torch.randint(0, 11, (3, 5), generator=g)
    want = torch.log_softmax(logits / 0.7, dim=-1).gather(-1, tokens[..., None])[..., 0]
    torch.testing.assert_close(token_logprobs(logits, tokens, temperature=0.7), want)
    assert token_logprobs(logits.bfloat16(), tokens).dtype == torch.float32


def test_entropy_literal():
    assert entropy_from_logits(torch.zeros(4)).item() == pytest.approx(math.log(4))
    banned = torch.tensor([0.0, 0.0, 0.0, -float("inf")])
    assert entropy_from_logits(banned).item() == pytest.approx(math.log(3))
    assert entropy_from_logits(torch.tensor([0.0, 1000.0])).item() == pytest.approx(0.0, abs=1e-6)


def test_entropy_matches_categorical():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 7, generator=g)
    want = torch.distributions.Categorical(logits=logits).entropy()
    torch.testing.assert_close(entropy_from_logits(logits), want)
    assert entropy_from_logits(logits).shape == (2, 3)


# --- KL estimators -----------------------------------------------------------------------


def test_kl_estimators_at_log_ratio_ln2():
    logp, ref = one(LN2), one(0.0)  # logp - ref = ln 2, so ref/pi = 1/2
    assert kl_penalty(logp, ref, "k1").item() == pytest.approx(LN2)
    assert kl_penalty(logp, ref, "k2").item() == pytest.approx(0.5 * LN2**2)
    assert kl_penalty(logp, ref, "k3").item() == pytest.approx(0.5 + LN2 - 1)  # 1/2 - ln(1/2) - 1
    # the other way round: ref/pi = 2 -> k3 = 2 - ln 2 - 1
    assert kl_penalty(ref, logp, "k3").item() == pytest.approx(1 - LN2)
    assert kl_penalty(ref, logp, "k1").item() == pytest.approx(-LN2)


def test_kl_estimators_zero_when_equal_and_k3_nonnegative():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 6, generator=g)
    for est in ("k1", "k2", "k3"):
        assert kl_penalty(x, x, est).abs().max().item() == 0.0
    assert (kl_penalty(x, torch.randn(4, 6, generator=g), "k3") >= 0).all()


def test_k1_and_k3_expectations_equal_exact_kl():
    # Over a whole discrete distribution, E_pi[k1] = E_pi[k3] = KL(pi || ref) exactly.
    pi = torch.tensor([0.5, 0.25, 0.125, 0.125], dtype=torch.float64)
    ref = torch.tensor([0.25, 0.25, 0.25, 0.25], dtype=torch.float64)
    kl = (pi * (pi / ref).log()).sum()  # = 0.5 ln2 + 0 - 0.25 ln2 = 0.25 ln 2
    assert kl.item() == pytest.approx(0.25 * LN2)
    for est in ("k1", "k3"):
        assert (pi * kl_penalty(pi.log(), ref.log(), est)).sum().item() == pytest.approx(kl.item())


def test_k3_is_clamped_not_inf():
    assert kl_penalty(one(0.0), one(1000.0), "k3").item() == pytest.approx(
        math.exp(LOG_RATIO_CLAMP) - LOG_RATIO_CLAMP - 1
    )


def test_unknown_kl_estimator():
    with pytest.raises(ValueError, match="k1, k2, k3"):
        kl_penalty(one(0), one(0), "k4")


# --- importance ratio --------------------------------------------------------------------


def test_token_ratio_literal_and_clamp():
    lr = torch.tensor([[1.0, -1.0, 0.0, 100.0]], dtype=torch.float64)
    r = importance_ratio(lr, torch.zeros_like(lr), torch.ones_like(lr))
    assert_values(r, [[E, 1 / E, 1.0, math.exp(LOG_RATIO_CLAMP)]])


def test_token_ratio_is_one_under_mask_whatever_the_values():
    logp = torch.tensor([[1.0, float("nan"), 2.0, 1e9]])
    old = torch.tensor([[0.0, 0.0, float("nan"), -float("inf")]])
    r = importance_ratio(logp, old, torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    assert_values(r, [[E, 1.0, 1.0, 1.0]])


def test_sequence_ratio_value_is_exp_of_mean_log_ratio():
    logp = torch.tensor([[0.1, 0.3, 5.0]], dtype=torch.float64)  # third token masked
    mask = torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64)
    s = importance_ratio(logp, torch.zeros_like(logp), mask, "sequence")
    assert s[0, :2].tolist() == pytest.approx([math.exp(0.2)] * 2)


def test_sequence_ratio_gradient_is_per_token_gspo_token_form():
    logp = torch.tensor([[0.1, 0.3, float("nan")]], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64)
    s = importance_ratio(logp, torch.zeros(1, 3, dtype=torch.float64), mask, "sequence")
    c = torch.tensor([[2.0, -1.0, 7.0]], dtype=torch.float64)
    ((s * c)[:, :2]).sum().backward()
    # d s_t / d logp_t = s = e^0.2 on its own token, no cross-token terms
    assert_values(logp.grad, [[2 * math.exp(0.2), -math.exp(0.2), 0.0]])


def test_gspo_token_loss_gradient_equals_sequence_objective_gradient():
    # GSPO objective (no clipping active): J = (1/N) sum_i s_i A_i, s_i = exp(mean_t log-ratio).
    g = torch.Generator().manual_seed(3)
    n, t = 3, 5
    old = torch.randn(n, t, generator=g, dtype=torch.float64)
    logp0 = old + 0.01 * torch.randn(n, t, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]], dtype=torch.float64)
    adv = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)

    logp = logp0.clone().requires_grad_(True)
    loss, _ = policy_loss(logp, old, adv, mask, ratio="sequence", agg="sequence_mean", clip_low=10.0, clip_high=10.0)
    (grad,) = torch.autograd.grad(loss, logp)

    ref = logp0.clone().requires_grad_(True)
    seq_lr = ((ref - old) * mask).sum(1) / mask.sum(1)
    objective = -(torch.exp(seq_lr) * adv).mean()
    (want,) = torch.autograd.grad(objective, ref)
    torch.testing.assert_close(loss, objective.detach())
    torch.testing.assert_close(grad, want)


def test_unknown_ratio_level():
    with pytest.raises(ValueError, match="token, sequence"):
        importance_ratio(one(0), one(0), one(1), "group")


# --- clipped surrogate -------------------------------------------------------------------


def test_ratio_e_positive_advantage_is_clipped_high():
    loss, stats = surrogate_1tok(1.0, +1)  # r = e > 1.2
    assert loss == pytest.approx(-1.2)
    assert stats["clip_high_frac"] == 1.0 and stats["clip_low_frac"] == 0.0
    assert stats["ratio_mean"] == pytest.approx(E)


def test_ratio_inv_e_negative_advantage_is_clipped_low():
    loss, stats = surrogate_1tok(-1.0, -1)  # -min(-1/e, -0.8) = 0.8
    assert loss == pytest.approx(0.8)
    assert stats["clip_low_frac"] == 1.0 and stats["clip_high_frac"] == 0.0


def test_unclipped_branches():
    assert surrogate_1tok(1.0, -1)[0] == pytest.approx(E)  # -min(-e, -1.2) = e: no clip, pessimistic
    assert surrogate_1tok(-1.0, +1)[0] == pytest.approx(-1 / E)  # -min(1/e, 0.8)
    assert surrogate_1tok(0.0, +1)[0] == -1.0
    for lr, a in ((1.0, -1), (-1.0, +1)):
        stats = surrogate_1tok(lr, a)[1]
        assert stats["clip_low_frac"] == 0.0 and stats["clip_high_frac"] == 0.0


def test_clip_higher_asymmetric():
    kw = dict(clip_low=0.2, clip_high=0.28)
    assert surrogate_1tok(math.log(1.5), +1, **kw)[0] == pytest.approx(-1.28)
    assert surrogate_1tok(math.log(1.25), +1, **kw)[0] == pytest.approx(-1.25)  # inside 1.28
    assert surrogate_1tok(math.log(1.25), +1)[0] == pytest.approx(-1.2)  # symmetric 0.2 clips it
    assert surrogate_1tok(math.log(0.5), -1, **kw)[0] == pytest.approx(0.8)  # low side still 0.2
    assert surrogate_1tok(math.log(0.75), -1, **kw)[0] == pytest.approx(0.8)
    # the clip fractions use their own bound
    assert surrogate_1tok(math.log(0.75), -1, **kw)[1]["clip_low_frac"] == 1.0  # 0.75 < 0.8
    assert surrogate_1tok(math.log(1.25), +1, **kw)[1]["clip_high_frac"] == 0.0  # 1.25 < 1.28
    assert surrogate_1tok(math.log(1.3), +1, **kw)[1]["clip_high_frac"] == 1.0


def test_clipped_tokens_have_no_gradient():
    logp = torch.tensor([[1.0, -1.0, 0.1]], dtype=torch.float64, requires_grad=True)
    adv = torch.tensor([[1.0, -1.0, 2.0]], dtype=torch.float64)  # per-token advantages
    loss, stats = clipped_surrogate(logp, torch.zeros(1, 3, dtype=torch.float64), adv, torch.ones(1, 3))
    loss.sum().backward()
    # d(-r A)/d logp = -r A on the unclipped token (r = e^0.1)
    assert_values(logp.grad, [[0.0, 0.0, -2 * math.exp(0.1)]])
    assert float(stats["clip_high_frac"]) == pytest.approx(1 / 3)
    assert float(stats["clip_low_frac"]) == pytest.approx(1 / 3)


def test_clip_fractions_ignore_masked_tokens():
    logp = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    _, stats = clipped_surrogate(logp, torch.zeros(1, 4), torch.tensor([1.0]), mask)
    assert float(stats["clip_high_frac"]) == 0.5
    assert float(stats["ratio_mean"]) == pytest.approx((E + 1) / 2)
    assert all(not v.requires_grad and v.dim() == 0 for v in stats.values())


def test_negative_clip_rejected():
    with pytest.raises(ValueError, match="clip"):
        clipped_surrogate(one(0), one(0), torch.ones(1), one(1), clip_low=-0.1)


# --- policy loss -------------------------------------------------------------------------


def test_policy_loss_with_kl_literal():
    # ratio 1, A = 1 -> surrogate -1 per token; logp - ref = ln 2 -> k3 = ln2 - 1/2
    logp = torch.full((1, 2), LN2, dtype=torch.float64)
    loss, metrics = policy_loss(
        logp, logp.clone(), torch.tensor([1.0]), torch.ones(1, 2), ref_logp=torch.zeros(1, 2), beta=0.1
    )
    assert loss.item() == pytest.approx(-1 + 0.1 * (LN2 - 0.5))
    assert metrics["kl"] == pytest.approx(LN2 - 0.5)
    assert metrics["ratio_mean"] == 1.0
    assert all(type(v) is float for v in metrics.values())


def test_policy_loss_kl_measured_but_not_added_when_beta_zero():
    logp = torch.full((1, 2), LN2, dtype=torch.float64)
    loss, metrics = policy_loss(logp, logp.clone(), torch.tensor([1.0]), torch.ones(1, 2), ref_logp=torch.zeros(1, 2))
    assert loss.item() == -1.0
    assert metrics["kl"] == pytest.approx(LN2 - 0.5)
    _, metrics = policy_loss(logp, logp.clone(), torch.tensor([1.0]), torch.ones(1, 2))
    assert set(metrics) == {"clip_low_frac", "clip_high_frac", "ratio_mean"}


def test_policy_loss_beta_without_reference_is_an_error():
    with pytest.raises(ValueError, match="ref_logp"):
        policy_loss(one(0), one(0), torch.ones(1), one(1), beta=0.04)


def test_policy_loss_aggregation_modes_literal():
    # ratio 1 everywhere: token loss = -A_i; A = [1, 3]; lengths 2 and 1; T = 3
    logp = torch.zeros(2, 3)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    adv = torch.tensor([1.0, 3.0])
    got = {m: policy_loss(logp, logp, adv, mask, agg=m)[0].item() for m in AGG_MODES}
    assert got["sequence_mean"] == pytest.approx(-(1 + 3) / 2)
    assert got["token_mean"] == pytest.approx(-(1 + 1 + 3) / 3)
    assert got["constant"] == pytest.approx(-(1 + 1 + 3) / 6)


def _random_batch(seed, n=4, t=6):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(n, t, generator=g, dtype=torch.float64) * 3
    logp = old + 0.3 * torch.randn(n, t, generator=g, dtype=torch.float64)
    ref = old + 0.3 * torch.randn(n, t, generator=g, dtype=torch.float64)
    lengths = torch.tensor([6, 2, 4, 1])[:n]
    mask = (torch.arange(t)[None, :] < lengths[:, None]).double()
    adv = torch.randn(n, generator=g, dtype=torch.float64)
    return logp, old, ref, adv, mask


FILLS = (float("nan"), float("inf"), 1e9)


@pytest.mark.parametrize("ratio", ["token", "sequence"])
@pytest.mark.parametrize("agg", AGG_MODES)
@pytest.mark.parametrize("kl_estimator", ["k1", "k2", "k3"])
@pytest.mark.parametrize("shift", [0, 1, 2])  # which garbage goes into logp / old_logp / ref_logp
def test_policy_loss_garbage_under_mask_changes_nothing(ratio, agg, kl_estimator, shift):
    logp, old, ref, adv, mask = _random_batch(4)
    kw = dict(ref_logp=None, beta=0.05, kl_estimator=kl_estimator, ratio=ratio, agg=agg, clip_low=0.1, clip_high=0.15)

    def run(lp, o, rf):
        lp = lp.clone().requires_grad_(True)
        loss, metrics = policy_loss(lp, o, adv, mask, **{**kw, "ref_logp": rf})
        (grad,) = torch.autograd.grad(loss, lp)
        return loss, metrics, grad

    clean = run(logp, old, ref)
    bad = [logp.clone(), old.clone(), ref.clone()]
    for x, fill in zip(bad, FILLS[shift:] + FILLS[:shift]):
        x[mask == 0] = fill
    bad_loss, bad_metrics, bad_grad = run(*bad)
    assert torch.isfinite(bad_grad).all()
    assert (bad_grad[mask == 0] == 0).all()
    torch.testing.assert_close(bad_loss, clean[0])
    torch.testing.assert_close(bad_grad, clean[2])
    assert bad_metrics == pytest.approx(clean[1])


@pytest.mark.parametrize("ratio", ["token", "sequence"])
@pytest.mark.parametrize("agg", AGG_MODES)
def test_policy_loss_micro_batches_sum_to_full_batch(ratio, agg):
    logp, old, ref, adv, mask = _random_batch(5)
    kw = dict(ref_logp=ref, beta=0.05, ratio=ratio, agg=agg, clip_low=0.1, clip_high=0.15)
    lp = logp.clone().requires_grad_(True)
    full, _ = policy_loss(lp, old, adv, mask, **kw)
    (grad_full,) = torch.autograd.grad(full, lp)

    glob = dict(num_sequences=4, num_tokens=mask.sum(), max_len=6)
    lp = logp.clone().requires_grad_(True)
    total = 0.0
    for rows in (slice(0, 1), slice(1, 4)):
        part, _ = policy_loss(lp[rows], old[rows], adv[rows], mask[rows], **{**kw, "ref_logp": ref[rows]}, **glob)
        total = total + part
    (grad_parts,) = torch.autograd.grad(total, lp)
    torch.testing.assert_close(total, full)
    torch.testing.assert_close(grad_parts, grad_full)


def test_policy_loss_on_policy_gradient_is_reinforce():
    # At ratio 1 (first pass), grad of token_mean loss = -A_i / num_tokens on every kept token.
    logp = torch.zeros(2, 3, requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    loss, _ = policy_loss(logp, torch.zeros(2, 3), torch.tensor([2.0, -1.0]), mask, agg="token_mean")
    loss.backward()
    assert_values(logp.grad, [[-0.4, -0.4, 0.0], [0.2, 0.2, 0.2]])


def test_loss_registry_one_signature_and_the_unclipped_loss_by_hand():
    from grpokit.algo.losses import LOSSES, unclipped_surrogate

    assert LOSSES.names() == ["clip", "unclipped"] and LOSSES.get("clip") is clipped_surrogate
    # r = exp(logp - old): row 0 tokens r = e^0.5, e^-0.5; A = [2, -1]
    logp = torch.tensor([[0.5, -0.5], [0.0, 0.0]])
    old = torch.zeros(2, 2)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    adv = torch.tensor([2.0, -1.0])
    loss, stats = unclipped_surrogate(logp, old, adv, mask, clip_low=0.2, clip_high=0.2, ratio="token")
    e = math.exp(0.5)
    want = torch.tensor([[-2 * e, -2 / e], [1.0, 0.0]])
    assert torch.allclose(loss, want, atol=1e-6)
    assert float(stats["ratio_mean"]) == pytest.approx((e + 1 / e + 1) / 3)
    # clip at the same point: the first token's ratio e^0.5 > 1.2 with A > 0 is clipped to 1.2
    clipped, _ = clipped_surrogate(logp, old, adv, mask, clip_low=0.2, clip_high=0.2, ratio="token")
    assert float(clipped[0, 0]) == pytest.approx(-2 * 1.2)
    total, _ = policy_loss(logp, old, adv, mask, loss="unclipped", agg="token_mean")
    assert float(total) == pytest.approx(float(want.sum()) / 3)
