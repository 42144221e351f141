import copy
import pytest

import torch

from grpokit.rollout.batch import build_rollout_batch
from grpokit.update import LossSettings, reference_logprobs, update_policy

SETTINGS = dict(clip_low=0.2, clip_high=0.28, ratio="token", beta=0.0, kl_estimator="k3", mu=1)


def _batch(tok):
    prompts = [tok("Compute 1+2.")["input_ids"], tok("Hi")["input_ids"]] * 2
    comps = [tok("<think>1+2=3</think>")["input_ids"], tok("<answer>3</answer>")["input_ids"],
             tok("abc")["input_ids"], tok("<answer>12</answer>")["input_ids"]]
    return build_rollout_batch(prompts, comps, [[-1.0] * len(c) for c in comps], pad_id=tok.pad_token_id,
                               example_index=[0, 1, 2, 3], finished=[True] * 4, completions=[""] * 4)


def _grads(model):
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


class _NoStep(torch.optim.SGD):
    """Records gradients without changing weights, so two runs can be compared."""

    def step(self, closure=None):
        return None


def _run(model, batch, adv, agg, micro, beta=0.0, ref=None):
    m = copy.deepcopy(model)
    opt = _NoStep(m.parameters(), lr=0.0)
    s = LossSettings(loss_agg=agg, **{**SETTINGS, "beta": beta})
    stats = update_policy(m, opt, batch, adv, s, ref_logp=ref, temperature=1.0, micro_batch_size=micro,
                          max_grad_norm=0)
    return _grads(m), stats


def test_micro_batches_give_the_full_batch_gradient(tiny_model):
    model, tok = tiny_model
    batch = _batch(tok)
    adv = torch.tensor([1.0, -0.5, 0.25, -1.0])
    for agg in ("sequence_mean", "token_mean", "constant"):
        g_full, s_full = _run(model, batch, adv, agg, micro=0)
        g_micro, s_micro = _run(model, batch, adv, agg, micro=1)
        assert torch.allclose(g_full, g_micro, atol=1e-6), agg
        assert abs(s_full["loss"] - s_micro["loss"]) < 1e-6


def test_skipping_zero_advantage_rows_changes_nothing(tiny_model):
    model, tok = tiny_model
    batch = _batch(tok)
    adv = torch.tensor([1.0, 0.0, 0.0, -1.0])
    g_skip, stats = _run(model, batch, adv, "token_mean", micro=0)
    assert stats["trained_rows"] == 2.0
    # A tiny nonzero advantage forces every row through the forward pass.
    g_all, _ = _run(model, batch, torch.tensor([1.0, 1e-30, 1e-30, -1.0]), "token_mean", micro=0)
    assert torch.allclose(g_skip, g_all, atol=1e-7)


def test_kl_term_trains_every_row_and_is_zero_at_the_reference(tiny_model):
    model, tok = tiny_model
    batch = _batch(tok)
    ref = reference_logprobs(model, batch, temperature=1.0)
    adv = torch.zeros(4)
    _, stats = _run(model, batch, adv, "sequence_mean", micro=0, beta=0.1, ref=ref)
    assert stats["trained_rows"] == 4.0
    assert abs(stats["kl"]) < 1e-6


def test_first_pass_ratio_is_one_and_later_passes_move(tiny_model):
    model, tok = tiny_model
    batch = _batch(tok)
    m = copy.deepcopy(model)
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    s = LossSettings(loss_agg="sequence_mean", **{**SETTINGS, "mu": 3})
    stats = update_policy(m, opt, batch, torch.tensor([1.0, -1.0, 1.0, -1.0]), s, ref_logp=None, temperature=1.0)
    # averaged over 3 passes: pass 1 has ratio exactly 1, later passes differ after SGD steps
    assert stats["ratio_mean"] != 1.0
    before = [p.clone() for p in model.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(before, m.parameters()))


def test_a_batch_without_signal_takes_no_step(tiny_model):
    model, tok = tiny_model
    batch = _batch(tok)
    m = copy.deepcopy(model)
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    s = LossSettings(loss_agg="token_mean", **SETTINGS)
    stats = update_policy(m, opt, batch, torch.zeros(4), s, ref_logp=None, temperature=1.0)
    assert stats["trained_rows"] == 0.0 and stats["loss"] == 0.0
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), m.parameters()))


def test_constant_normaliser_is_the_generation_budget(tiny_model):
    """Dr. GRPO / TRL: L = sum_it -A_i m_it / (N * max_new_tokens) at ratio 1, whatever the
    batch's longest completion (here 7 tokens), so short batches get no larger gradient."""
    model, tok = tiny_model
    batch = _batch(tok)
    assert batch.loss_mask.sum(1).tolist() == [7.0, 3.0, 3.0, 4.0]  # tokens scored per row
    m = copy.deepcopy(model)
    s = LossSettings(loss_agg="constant", max_new_tokens=100, **SETTINGS)
    stats = update_policy(m, _NoStep(m.parameters(), lr=0.0), batch, torch.tensor([1.0, -0.5, 0.25, -1.0]), s,
                          ref_logp=None, temperature=1.0, max_grad_norm=0)
    # -(1*7 - 0.5*3 + 0.25*3 - 1*4) / (4 * 100) = -2.25 / 400
    assert stats["loss"] == pytest.approx(-0.005625, rel=1e-6)
