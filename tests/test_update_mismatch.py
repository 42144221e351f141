"""update.py with the sampler/trainer mismatch correction: the weight scales each token's
surrogate (checked on gradients), and its metrics are reported."""
import copy
import math

import torch

from grpokit.rollout.batch import build_rollout_batch
from grpokit.update import LossSettings, reference_logprobs, update_policy

SETTINGS = dict(clip_low=0.2, clip_high=0.28, ratio="token", beta=0.0, kl_estimator="k3", mu=1,
                loss_agg="token_mean")


def _batch(tok, logprobs=None):
    prompts = [tok("Compute 1+2.")["input_ids"], tok("Hi")["input_ids"]]
    comps = [tok("<think>1+2=3</think>")["input_ids"], tok("<answer>3</answer>")["input_ids"]]
    lps = logprobs or [[-1.0] * len(c) for c in comps]
    return build_rollout_batch(prompts, comps, lps, pad_id=tok.pad_token_id, example_index=[0, 1],
                               finished=[True] * 2, completions=[""] * 2)


class _NoStep(torch.optim.SGD):
    def step(self, closure=None):
        return None


def _grads(model, batch, **mismatch):
    m = copy.deepcopy(model)
    opt = _NoStep(m.parameters(), lr=0.0)
    stats = update_policy(m, opt, batch, torch.tensor([1.0, -0.5]), LossSettings(**SETTINGS, **mismatch),
                          ref_logp=None, temperature=1.0, max_grad_norm=0)
    return torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None]), stats


def _sampler_logprobs(model, tok, shift):
    """The trainer's own log-probs of the batch's completions, each minus `shift`."""
    batch = _batch(tok)
    lp = reference_logprobs(model, batch, temperature=1.0)
    rows = []
    for i in range(batch.size):
        cols = batch.loss_mask[i].nonzero().flatten()
        rows.append((lp[i, cols] - shift).tolist())
    return rows


def test_weight_scales_the_gradient_and_mask_drops_it(tiny_model):
    model, tok = tiny_model
    plain, _ = _grads(model, _batch(tok))
    # sampler log-probs log(3) below the trainer's: every token's weight is 3, capped at 2
    far = _batch(tok, _sampler_logprobs(model, tok, math.log(3.0)))
    truncated, stats = _grads(model, far, mismatch_level="token", mismatch_cap=2.0)
    torch.testing.assert_close(truncated, 2.0 * plain, rtol=1e-4, atol=1e-7)
    assert abs(stats["mismatch/abs_diff"] - math.log(3.0)) < 1e-4
    assert abs(stats["mismatch/kl"] - (3.0 - math.log(3.0) - 1)) < 1e-3
    assert abs(stats["mismatch/weight_mean"] - 2.0) < 1e-5
    masked, _ = _grads(model, far, mismatch_level="sequence", mismatch_cap=2.0, mismatch_mode="mask")
    assert float(masked.abs().max()) == 0.0


def test_equal_log_probs_change_nothing(tiny_model):
    model, tok = tiny_model
    plain, off_stats = _grads(model, _batch(tok))
    same = _batch(tok, _sampler_logprobs(model, tok, 0.0))
    corrected, stats = _grads(model, same, mismatch_level="token")
    torch.testing.assert_close(corrected, plain, rtol=1e-4, atol=1e-7)
    assert stats["mismatch/abs_diff"] < 1e-5 and "mismatch/abs_diff" not in off_stats
