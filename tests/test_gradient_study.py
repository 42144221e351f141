"""`grpokit study gradient`: the estimator math on hand-made vectors, on a synthetic bandit
whose policy gradient is known in closed form, and the command on a tiny model."""
import json
import math

import pytest
import torch

from grpokit.algo import estimator as est
from grpokit.algo.advantages import group_advantages
from grpokit.grouping import by_batch, by_prompt

# ----------------------------------------------------------------------------- hand-made vectors


def test_cosine_relative_mse_spread_and_size_by_hand():
    g = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    ref = torch.tensor([1.0, 0.0], dtype=torch.float64)
    assert est.cosine(g, ref).tolist() == pytest.approx([1.0, 0.0, 1 / math.sqrt(2)])
    # ||g - ref||^2: 0, |(-1, 1)|^2 = 2, |(0, 1)|^2 = 1; ||ref||^2 = 1
    assert est.relative_mse(g, ref).tolist() == pytest.approx([0.0, 2.0, 1.0])
    # unit vectors (1,0) and (0,1): mean (.5,.5), norm sqrt(.5)
    assert est.direction_spread(g[:2]) == pytest.approx(1 - math.sqrt(0.5))
    assert est.direction_spread(torch.tensor([[2.0, 0.0], [5.0, 0.0]])) == pytest.approx(0.0)
    # norms 1, 1, sqrt 2: mean 1.13807, sample sd 0.23915
    assert est.size_cv(g) == pytest.approx(0.23915 / 1.13807, abs=1e-4)
    assert est.cosine(torch.zeros(1, 2), ref).tolist() == [0.0]


def test_mean_ci_by_hand():
    m, lo, hi = est.mean_ci(torch.tensor([1.0, 2.0, 3.0]))  # sd 1
    assert (m, lo, hi) == pytest.approx((2.0, 2 - 1.96 / math.sqrt(3), 2 + 1.96 / math.sqrt(3)))


def test_half_agreement_by_hand():
    # h1.h2 = 1, ||h1 - h2||^2 = 1: rel_error 1 / 4, cos_truth 1 / sqrt(1.25)
    out = est.half_agreement(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0]))
    assert out["cos_halves"] == pytest.approx(1 / math.sqrt(2))
    assert out["rel_error"] == pytest.approx(0.25)
    assert out["cos_truth"] == pytest.approx(1 / math.sqrt(1.25))
    bad = est.half_agreement(torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 0.0]))
    assert bad["rel_error"] == math.inf and bad["cos_truth"] == 0.0


def test_loss_weights_by_hand():
    lengths = torch.tensor([2, 4, 0])
    assert est.loss_weights(lengths, "sequence_mean", max_len=8).tolist() == pytest.approx([1 / 6, 1 / 12, 0.0])
    assert est.loss_weights(lengths, "token_mean", max_len=8).tolist() == pytest.approx([1 / 6] * 3)
    assert est.loss_weights(lengths, "constant", max_len=8).tolist() == pytest.approx([1 / 24] * 3)
    with pytest.raises(ValueError, match="token_mean"):
        est.loss_weights(lengths, "mean", max_len=8)


def test_loss_weights_match_the_loss_gradient():
    """sum_i c_i A_i grad sum_t logp_it is the ascent direction of policy_loss at ratio 1."""
    from grpokit.algo.losses import policy_loss

    torch.manual_seed(0)
    logp = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 0], [1, 0, 0, 0, 0]], dtype=torch.float64)
    adv = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    for agg in ("sequence_mean", "token_mean", "constant"):
        loss, _ = policy_loss(logp, logp.detach(), adv, mask, agg=agg, max_len=5)
        (grad,) = torch.autograd.grad(loss, logp)
        c = est.loss_weights(mask.sum(1), agg, max_len=5)
        assert torch.allclose(-grad, (c * adv)[:, None] * mask)


def test_reference_advantages_leave_one_out():
    r = torch.tensor([1.0, 0.0, 1.0, 1.0])
    ids = torch.tensor([0, 0, 1, 1])
    # K = 2: 2/1 (r - mean) = [1, -1, 0, 0]
    assert est.reference_advantages(r, ids, scale="none", eps=1e-4).tolist() == [1.0, -1.0, 0.0, 0.0]


def test_draw_subsets_distinct_and_in_range():
    s = est.draw_subsets(6, 4, prompts=3, resamples=5, generator=torch.Generator().manual_seed(0))
    assert s.shape == (5, 3, 4)
    assert int(s.min()) >= 0 and int(s.max()) < 6
    assert all(len(set(row.tolist())) == 4 for row in s.reshape(-1, 4))
    with pytest.raises(ValueError, match="cannot draw 7 of 6"):
        est.draw_subsets(6, 7, prompts=1, resamples=1, generator=torch.Generator())


def test_baseline_errors_by_hand():
    # one resample, prompt 0 rows have baselines .5 and .5 (truth .25), prompt 1 rows .5 (truth .75)
    b = torch.tensor([[0.5, 0.5, 0.5, 0.5]])
    prompt = torch.tensor([[0, 0, 1, 1]])
    out = est.baseline_errors(b, torch.tensor([0.25, 0.75]), torch.tensor([0.25, 0.75]), prompt)
    assert out == pytest.approx({"rmse": 0.25, "bias": 0.25, "mean": 0.0})


# ----------------------------------------------------------------------------- the sketch


def test_count_sketch_keeps_inner_products_within_its_bound():
    gen = torch.Generator().manual_seed(0)
    d, k = 20000, 2048
    sketch = est.CountSketch(d, k, seed=3)
    x = torch.randn(20, d, generator=gen, dtype=torch.float64)
    x[10:] += x[:10]  # pairs with large inner products too
    sx = sketch(x)
    bound = sketch.error_bound(0.05)  # sqrt(2 / (k 0.05)) = 0.140
    assert bound == pytest.approx(math.sqrt(2 / (k * 0.05)))
    exact, approx = x @ x.T, sx @ sx.T  # [20, 20]
    scale = x.norm(dim=1)[:, None] * x.norm(dim=1)[None]
    err = ((approx - exact) / scale).abs()
    assert float(err.max()) < bound
    # the error's spread is sqrt(2 / k) ||x|| ||y|| at most: 0.031 here
    assert float(err.mean()) < math.sqrt(2 / k)
    assert est.CountSketch(5, 0)(torch.arange(5.0)).tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]  # k = 0: exact


# ----------------------------------------------------------------------------- a bandit with a known gradient

# Two prompts, three "completions" each, a softmax policy pi_p = softmax(theta_p). The score
# vector of completion y of prompt p is d log pi_p(y) / d theta = onehot(p, y) - pi_p in
# prompt p's block of theta (6 numbers).
THETA = torch.tensor([[0.0, 0.0, 0.0], [math.log(2.0), 0.0, 0.0]], dtype=torch.float64)
REWARD = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
PI = torch.softmax(THETA, dim=1)  # [[1/3, 1/3, 1/3], [1/2, 1/4, 1/4]]
MU = (PI * REWARD).sum(1)  # [1/3, 3/4]


def score(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    h = torch.zeros(p.numel(), 2, 3, dtype=torch.float64)
    h[torch.arange(p.numel()), p] = -PI[p]
    h[torch.arange(p.numel()), p, y] += 1.0
    return h.reshape(p.numel(), 6)  # [N, 6]


def exact_gradient() -> torch.Tensor:
    """(1/P) sum_p sum_y pi_p(y) r(p, y) grad log pi_p(y): the gradient of the mean
    expected reward, and what sequence_mean weights (1/N, length 1) estimate."""
    p = torch.tensor([0, 0, 0, 1, 1, 1])
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    return ((PI[p, y] * REWARD[p, y])[:, None] * score(p, y)).sum(0) / 2


def test_exact_gradient_by_hand():
    # prompt 0: pi (1 - pi) r = 1/3 (1 - 1/3) at y=0, -1/9 at y=1, 2: d/dtheta_0 of pi_0(0) = 1/3
    # prompt 1: d (pi(0) + pi(1)) = pi(2) * (pi(0), pi(1), -(1 - pi(2))) = 1/4 (1/2, 1/4, -3/4)
    g = exact_gradient() * 2
    assert g.tolist() == pytest.approx([2 / 9, -1 / 9, -1 / 9, 1 / 8, 1 / 16, -3 / 16])


def draw(per_prompt: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt [2 per_prompt], completion [2 per_prompt]), prompt-major."""
    y = torch.multinomial(PI, per_prompt, replacement=True, generator=gen)  # [2, per_prompt]
    return torch.arange(2).repeat_interleave(per_prompt), y.flatten()


def test_reference_converges_to_the_exact_gradient():
    gen = torch.Generator().manual_seed(0)
    k = 4096
    p, y = draw(k, gen)
    r = REWARD[p, y]
    c = est.loss_weights(torch.ones(2 * k), "sequence_mean", max_len=1)
    ref = (c * est.reference_advantages(r, p, scale="none", eps=1e-4)) @ score(p, y)
    truth = exact_gradient()
    rel = float((ref - truth).pow(2).sum() / truth.pow(2).sum())
    # the estimator's variance is about E[(r - mu)^2 ||h||^2] / (P^2 K) per prompt, ~0.0016 relative
    # to ||truth||^2 here; 0.01 is six times that
    assert rel < 0.01
    # the halves' estimate of that error is the same order
    first = (torch.arange(2)[:, None] * k + torch.arange(k // 2)[None]).flatten()
    second = first + k // 2

    def half(rows):
        cc = est.loss_weights(torch.ones(rows.numel()), "sequence_mean", max_len=1)
        return (cc * est.reference_advantages(r[rows], p[rows], scale="none", eps=1e-4)) @ score(p[rows], y[rows])

    h = est.half_agreement(half(first), half(second))
    assert 0.1 * rel < h["rel_error"] < 10 * max(rel, 1e-4)
    assert h["cos_truth"] > 0.99


def _groups_gradient(grouper, g: int, resamples: int, gen) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients [R, 6] of the GRPO surrogate (scale none) with the given grouper on G
    draws per prompt, and the baselines [R, 2G]."""
    from grpokit.types import Experience

    out, base = [], []
    for _ in range(resamples):
        p, y = draw(g, gen)
        r = REWARD[p, y]
        groups = grouper(Experience(prompt_ids=p, rewards=r, step=1))
        adv = groups.advantages(r, group_advantages, scale="none", eps=1e-4)
        c = est.loss_weights(torch.ones(p.numel()), "sequence_mean", max_len=1)
        out.append((c * adv) @ score(p, y))
        base.append(r - adv)
    return torch.stack(out), torch.stack(base)


def test_prompt_grouper_is_unbiased_up_to_its_own_reward_in_the_baseline():
    # E[(r_i - mean_G) h_i] = (1 - 1/G) E[r h]: the group mean holds r_i itself with weight
    # 1/G and E[h] = 0 makes the rest vanish. The direction is exact; the size shrinks.
    gen = torch.Generator().manual_seed(1)
    gs, base = _groups_gradient(by_prompt, 4, 4000, gen)
    truth = exact_gradient()
    mean = gs.mean(0)
    assert float(est.cosine(mean[None], truth)[0]) > 0.995
    assert float(mean.norm() / truth.norm()) == pytest.approx(3 / 4, abs=0.03)
    prompt = torch.arange(2).repeat_interleave(4).expand(gs.shape[0], -1)
    err = est.baseline_errors(base, MU, MU, prompt)
    assert err["bias"] < 0.01  # the group mean is an unbiased estimate of mu_p
    # its rmse: the group mean of 4 rewards, sd sqrt(mu (1 - mu) / 4): (.2357^2 + .2165^2) / 2 -> .226
    assert err["rmse"] == pytest.approx(math.sqrt((1 / 3 * 2 / 3 + 3 / 4 * 1 / 4) / 4 / 2), abs=0.01)


def test_batch_grouper_baseline_is_biased_by_half_the_prompts_gap():
    # One group for both prompts: every baseline tends to (mu_0 + mu_1) / 2 = 13/24, off by
    # (3/4 - 1/3) / 2 = 5/24 = 0.208 for either prompt.
    gen = torch.Generator().manual_seed(2)
    gs, base = _groups_gradient(by_batch, 4, 2000, gen)
    prompt = torch.arange(2).repeat_interleave(4).expand(gs.shape[0], -1)
    err = est.baseline_errors(base, MU, MU, prompt)
    assert err["bias"] == pytest.approx(5 / 24, abs=0.01)
    # the gradient itself stays unbiased up to the own-reward factor (1 - 1/N), N = 8: any
    # baseline that does not depend on the completion leaves E[g] alone
    mean = gs.mean(0)
    assert float(est.cosine(mean[None], exact_gradient())[0]) > 0.99
    # but it varies more than the prompt grouper's at the same budget
    prompt_gs, _ = _groups_gradient(by_prompt, 4, 2000, torch.Generator().manual_seed(2))
    truth = exact_gradient()
    assert float(est.relative_mse(gs, truth).mean()) > float(est.relative_mse(prompt_gs, truth).mean())


def test_measure_on_the_bandit():
    """The study's own pipeline (demos.gradient.measure) on bandit samples."""
    from grpokit.demos.gradient import GradientSettings, Sampled, measure

    gen = torch.Generator().manual_seed(3)

    def sampled(per):
        p, y = draw(per, gen)
        n = p.numel()
        return Sampled(rewards=REWARD[p, y], prompt_ids=p + 100, lengths=torch.ones(n, dtype=torch.long),
                       embeddings=None, prompt_lengths=torch.ones(n), fields=[{}] * n, prompts=["q"] * n,
                       per_prompt=per), score(p, y)

    (ref, h_ref), (pool, h_pool) = sampled(2048), sampled(256)
    s = GradientSettings(prompts=2, generations=4, resamples=300, strategies=("prompt", "batch"), scales=("none",))
    res = measure(s, ref, pool, h_ref, h_pool, advantage_fn=group_advantages, agg="sequence_mean", eps=1e-4,
                  max_len=1, log=lambda *a: None)
    rows = {r["strategy"]: r for r in res["rows"]}
    assert res["prompt_means"] == pytest.approx(MU.tolist(), abs=0.03)
    assert res["reference"]["none"]["cos_truth"] > 0.98
    assert rows["prompt"]["cos_of_mean"] > 0.97
    assert rows["batch"]["baseline"]["bias"] == pytest.approx(5 / 24, abs=0.04)
    assert rows["prompt"]["baseline"]["bias"] < 0.02
    assert rows["prompt"]["cos"][1] <= rows["prompt"]["cos"][0] <= rows["prompt"]["cos"][2]
    assert rows["batch"]["cos_minus_prompt"] is not None
    assert rows["prompt"]["cos_pg"] == rows["prompt"]["cos"]  # scale none: its reference is the policy gradient


# ----------------------------------------------------------------------------- the command


def test_cli_smoke_on_a_tiny_model(tmp_path, capsys):
    from grpokit.demos.study_cli import main

    out = tmp_path / "g"
    assert main(["gradient", "--model", "tiny:xs", "--prompts", "2", "--reference", "4", "--pool", "4",
                 "--generations", "2", "--resamples", "3", "--max-new-tokens", "12", "--sketch", "64",
                 "--history", "1", "--strategies", "prompt,batch,semantic,temporal", "--out", str(out)]) == 0
    res = json.loads((out / "gradient.json").read_text())
    assert [(r["strategy"], r["scale"]) for r in res["rows"]][:2] == [("prompt", "group"), ("prompt", "none")]
    assert len(res["rows"]) == 8
    assert res["settings"]["threads"] == 1 and res["machine"]["threads"] == 1
    assert "| temporal | none |" in (out / "gradient.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--reference", "5"], "--reference: got 5, expected an even number >= 4"),
    (["--pool", "4", "--generations", "8"], "--pool: got 4, expected >= --generations (8)"),
    (["--strategies", "prompt,semantik"], "--strategies: semantik"),
    (["--scales", "group,std"], "--scales: unknown scale 'std'; valid: group, batch, none"),
    (["--model", "runs/no-such-run"], "--model: runs/no-such-run does not exist (expected a model directory"),
])
def test_cli_rejects_bad_input_naming_the_flag(args, message, capsys):
    from grpokit.demos.study_cli import main

    with pytest.raises(SystemExit):
        main(["gradient", "--model", "tiny:xs", *args])  # a later --model replaces the first
    assert message in capsys.readouterr().err


def test_model_from_a_model_or_run_directory(tmp_path):
    from grpokit.demos.gradient import resolve_model

    (tmp_path / "run" / "model").mkdir(parents=True)
    (tmp_path / "run" / "model" / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path / "run")) == str(tmp_path / "run" / "model")
    assert resolve_model(str(tmp_path / "run" / "model")) == str(tmp_path / "run" / "model")
    assert resolve_model("tiny:xs") == "tiny:xs"
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="--model: .* holds no config.json"):
        resolve_model(str(tmp_path / "empty"))


def test_without_model_the_grouping_studys_cold_start_is_used(tmp_path, monkeypatch):
    import grpokit.demos.study as study
    from grpokit.demos.study_cli import main

    calls = []

    def fake_cold_start(settings, seed, out):
        calls.append((settings.task, seed, out))
        return "tiny:xs", 0.0  # a stand-in for the model directory it would build

    monkeypatch.setattr(study, "cold_start", fake_cold_start)
    out = tmp_path / "g"
    assert main(["gradient", "--prompts", "2", "--reference", "4", "--pool", "2", "--generations", "2",
                       "--resamples", "2", "--max-new-tokens", "8", "--sketch", "16", "--strategies", "prompt",
                       "--seed", "3", "--out", str(out)]) == 0
    assert calls == [("arithmetic", 3, out / "cold_start")]
    assert json.loads((out / "gradient.json").read_text())["settings"]["model"] == "tiny:xs"
