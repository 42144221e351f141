"""The policy-gradient estimator, measured: what `grpokit study gradient` computes from
per-completion score vectors, with no model in sight.

Every completion i has a score vector h_i = grad_theta sum_t log pi(y_it) (summed over
its trained tokens). At ratio 1 (the first pass of an update, before the policy moves)
the gradient of the GRPO surrogate is a weighted sum of them,

    g = sum_i c_i A_i h_i            (the ascent direction: minus the loss gradient)

with c_i the loss aggregation's weight of completion i (`loss_weights`) and A_i its
advantage. The clip never binds at ratio 1 and a KL term toward a reference equal to the
policy has zero gradient there, so this is the whole first-pass gradient. Everything a
strategy does to the gradient goes through A_i, which is why the study needs the h_i
only once: a strategy's gradient on any subset of completions is a matrix product.

Vectors may be sketched (`CountSketch`) to keep thousands of them in memory: inner
products, norms and cosines are then unbiased estimates with a stated error.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from grpokit.algo.advantages import rloo_advantages

__all__ = ["CountSketch", "baseline_errors", "cosine", "direction_spread", "draw_subsets", "half_agreement",
           "loss_weights", "mean_ci", "reference_advantages", "relative_mse", "size_cv"]


def loss_weights(lengths: Tensor, agg: str, *, max_len: int) -> Tensor:
    """c_i: the weight of completion i's score vector in the gradient of the aggregated
    surrogate at ratio 1 (`grpokit.algo.masking.aggregate`), for N completions of
    lengths |y_i| (trained tokens):

        sequence_mean   c_i = 1 / (N |y_i|)        (an empty completion counts 0)
        token_mean      c_i = 1 / sum_j |y_j|
        constant        c_i = 1 / (N max_len)
    """
    n = lengths.numel()
    length = lengths.double()  # [N]
    if agg == "sequence_mean":
        return torch.where(length > 0, 1.0 / (n * length.clamp_min(1)), torch.zeros_like(length))  # [N]
    if agg == "token_mean":
        return torch.full_like(length, 1.0 / max(float(length.sum()), 1.0))  # [N]
    if agg == "constant":
        if max_len <= 0:
            raise ValueError(f"loss_agg=constant needs max_len > 0, got {max_len}")
        return torch.full_like(length, 1.0 / (n * max_len))  # [N]
    raise ValueError(f"unknown loss aggregation {agg!r}; valid: sequence_mean, token_mean, constant")


def reference_advantages(rewards: Tensor, prompt_ids: Tensor, *, scale: str, eps: float) -> Tensor:
    """The reference's advantages from K completions per prompt: a leave-one-out
    baseline (RLOO), A_i = K/(K-1) (r_i - mean_p), divided by the prompt's std (+ eps)
    when scale is "group". With scale "none" the reference is then an unbiased estimate
    of the policy gradient sum_y pi(y) r(y) grad log pi(y) (per prompt, weighted as the
    loss aggregation weights it); the plain K-sample mean baseline would shrink it by
    (K-1)/K, because each completion's own reward is in its baseline."""
    return rloo_advantages(rewards, prompt_ids, scale=scale, eps=eps)  # [N]


def cosine(g: Tensor, ref: Tensor) -> Tensor:
    """cos(g_r, ref) for each row g_r of g [R, D] (0 for a zero vector)."""
    g, ref = g.double(), ref.double()
    num = g @ ref  # [R]
    den = g.norm(dim=1) * ref.norm()  # [R]
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(num))


def relative_mse(g: Tensor, ref: Tensor) -> Tensor:
    """||g_r - ref||^2 / ||ref||^2 for each row of g [R, D]."""
    g, ref = g.double(), ref.double()
    return (g - ref).pow(2).sum(dim=1) / ref.pow(2).sum().clamp_min(1e-300)  # [R]


def direction_spread(g: Tensor) -> float:
    """1 - ||mean_r g_r / ||g_r|| ||: 0 when every row points the same way, near 1 when
    the directions are spread evenly (zero rows are left out)."""
    g = g.double()
    norms = g.norm(dim=1)  # [R]
    keep = norms > 0
    if not bool(keep.any()):
        return float("nan")
    unit = g[keep] / norms[keep, None]  # [R', D]
    return 1.0 - float(unit.mean(dim=0).norm())


def size_cv(g: Tensor) -> float:
    """Coefficient of variation of ||g_r||: sample sd / mean over the rows of g [R, D]."""
    norms = g.double().norm(dim=1)  # [R]
    if norms.numel() < 2 or float(norms.mean()) == 0:
        return float("nan")
    return float(norms.std() / norms.mean())


def mean_ci(x: Tensor, z: float = 1.96) -> tuple[float, float, float]:
    """(mean, lower, upper): a normal 95% confidence interval of the mean of x [R],
    mean +- z sd / sqrt(R)."""
    x = x.double().flatten()
    m = float(x.mean())
    if x.numel() < 2:
        return m, float("nan"), float("nan")
    half = z * float(x.std()) / math.sqrt(x.numel())
    return m, m - half, m + half


def half_agreement(h1: Tensor, h2: Tensor) -> dict[str, float]:
    """How good a reference g = (h1 + h2) / 2 is, from its two halves (independent
    estimates of the same gradient g*, each from half the samples):

        cos_halves   cos(h1, h2)
        rel_error    ||g - g*||^2 / ||g*||^2  estimated as ||h1 - h2||^2 / (4 h1.h2)
                     (E||h1 - h2||^2 = 2 s^2 with s^2 a half's error, the whole has s^2 / 2;
                     E h1.h2 = ||g*||^2); inf when h1.h2 <= 0
        cos_truth    1 / sqrt(1 + rel_error): the expected cos(g, g*), the ceiling of any
                     estimator's measured cosine to this reference
    """
    h1, h2 = h1.double(), h2.double()
    dot = float(h1 @ h2)
    diff = float((h1 - h2).pow(2).sum())
    rel = diff / (4 * dot) if dot > 0 else float("inf")
    den = float(h1.norm() * h2.norm())
    return {"cos_halves": dot / den if den > 0 else 0.0, "rel_error": rel,
            "cos_truth": 1.0 / math.sqrt(1.0 + rel) if math.isfinite(rel) else 0.0}


def draw_subsets(pool: int, take: int, prompts: int, resamples: int, generator: torch.Generator) -> Tensor:
    """[R, P, take] indices into each prompt's pool of `pool` completions: for every
    resample and prompt, `take` distinct completions drawn uniformly without replacement
    (each resample is a fresh draw; resamples overlap only by chance)."""
    if not 0 < take <= pool:
        raise ValueError(f"cannot draw {take} of {pool} pooled completions per prompt; need 0 < take <= pool")
    keys = torch.rand((resamples, prompts, pool), generator=generator)  # [R, P, pool]
    return keys.argsort(dim=-1)[..., :take]  # [R, P, take]


def baseline_errors(baselines: Tensor, truth: Tensor, centre: Tensor, prompt: Tensor) -> dict[str, float]:
    """Error of each completion's baseline b against its prompt's mean reward.

    baselines, prompt: [R, N] (resample r's N completions; prompt = the row's prompt
    index 0..P-1). truth [P]: each prompt's mean reward from independent samples (the
    reference's); centre [P]: its mean over the pool the resamples draw from.
        rmse   sqrt(mean over every r, i of (b - truth_p)^2)
        bias   sqrt(mean over prompts p of (mean over p's rows in every r of b - centre_p)^2):
               the systematic part, what averaging over resamples does not remove. It
               is taken against the pool's means because resampled baselines average to
               those (an unbiased baseline has bias ~0 whatever the pool's own error)
        mean   mean of b - truth (signed; errors of opposite prompts cancel)
    """
    b = baselines.double()  # [R, N]
    p = prompt.flatten()  # [R N]
    n_p = truth.numel()
    total = torch.zeros(n_p, dtype=torch.float64).index_add_(0, p, b.flatten())  # [P]
    count = torch.zeros(n_p, dtype=torch.float64).index_add_(0, p, torch.ones_like(b.flatten()))  # [P]
    seen = count > 0
    systematic = total[seen] / count[seen] - centre.double()[seen]  # [P']
    err = b - truth.double()[prompt]  # [R, N]
    return {"rmse": float(err.pow(2).mean().sqrt()), "bias": float(systematic.pow(2).mean().sqrt()),
            "mean": float(err.mean())}


class CountSketch:
    """A fixed random linear map R^D -> R^k (Charikar et al. 2002; feature hashing,
    Weinberger et al. 2009): coordinate j goes to bucket h(j) with sign s(j),

        (S x)_b = sum_{j: h(j) = b} s(j) x_j

    It keeps inner products in expectation, E <Sx, Sy> = <x, y>, with
    Var <Sx, Sy> = (1/k) sum_{j != l} (x_j^2 y_l^2 + x_j y_j x_l y_l)
                <= (||x||^2 ||y||^2 + <x, y>^2) / k <= 2 ||x||^2 ||y||^2 / k, so an inner
    product is off by more than t ||x|| ||y|| with probability at most 2 / (k t^2)
    (Chebyshev). It costs O(D) per vector (a dense Gaussian sketch, the textbook
    Johnson-Lindenstrauss map, costs O(D k): too slow for millions of parameters on CPUs).
    k = 0 is the identity (exact vectors).
    """

    def __init__(self, dim: int, k: int, *, seed: int = 0):
        self.dim, self.k = dim, k
        if k > 0:
            gen = torch.Generator().manual_seed(seed)
            self.bucket = torch.randint(0, k, (dim,), generator=gen)  # [D]
            self.sign = torch.randint(0, 2, (dim,), generator=gen).double().mul_(2).sub_(1)  # [D] +-1

    @property
    def out_dim(self) -> int:
        return self.k if self.k > 0 else self.dim

    def __call__(self, x: Tensor) -> Tensor:
        """x [D] or [B, D] -> [k] or [B, k] (float64)."""
        x = x.double()
        if self.k <= 0:
            return x
        flat = x.reshape(-1, self.dim) * self.sign  # [B, D]
        out = torch.zeros((flat.shape[0], self.k), dtype=torch.float64)
        out.index_add_(1, self.bucket, flat)  # [B, k]
        return out.reshape(*x.shape[:-1], self.k)

    def error_bound(self, delta: float = 0.05) -> float:
        """t such that |<Sx,Sy> - <x,y>| <= t ||x|| ||y|| with probability >= 1 - delta."""
        return math.sqrt(2.0 / (self.k * delta)) if self.k > 0 else 0.0
