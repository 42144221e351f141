"""Next-token sampling: temperature, top-p, and one uniform draw per row.

torch.multinomial on CPU draws one exponential per vocabulary entry; inverse-CDF
sampling needs a single uniform per row, which matters at a 32k vocabulary.
"""
from __future__ import annotations

import torch

from grpokit.rollout.seeding import keyed


def sample_next(logits: torch.Tensor, *, temperature: float = 1.0, top_p: float = 1.0,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one token per row; return (tokens [B], log-probs [B]).

    The returned log-prob is under softmax(logits / temperature) without top-p
    truncation, which is the distribution the training forward pass recomputes.
    temperature == 0 is greedy decoding (log-prob under temperature 1).
    """
    logits = logits.float()  # [B, V]
    if temperature == 0:
        tokens = logits.argmax(dim=-1)  # [B]
        logp = torch.log_softmax(logits, dim=-1)
        return tokens, logp.gather(1, tokens[:, None]).squeeze(1)
    scaled = logits if temperature == 1.0 else logits / temperature  # [B, V]
    if top_p >= 1.0:
        return _sample_full(scaled, generator)
    logp = torch.log_softmax(scaled, dim=-1)  # [B, V]
    probs = logp.exp()
    sorted_p, order = probs.sort(dim=-1, descending=True)  # [B, V]
    # keep the smallest prefix whose mass reaches top_p (always at least one token)
    drop = (sorted_p.cumsum(dim=-1) - sorted_p) >= top_p
    sorted_p = sorted_p.masked_fill(drop, 0.0)
    u = _uniform(probs, generator)  # [B, 1]
    cdf = sorted_p.cumsum(dim=-1)
    pick = torch.searchsorted(cdf, u * cdf[:, -1:]).clamp_max(probs.shape[1] - 1)  # [B, 1]
    tokens = order.gather(1, pick).squeeze(1)
    return tokens, logp.gather(1, tokens[:, None]).squeeze(1)


def _sample_full(scaled: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse-CDF sampling from softmax(scaled) with one [B, V] buffer: the row maximum,
    x - max into the buffer, exp in place, its sum, its running sum in place.
    log_softmax followed by exp and cumsum (three new buffers) took 5-7 ms for 32 x 32k
    logits on 2 threads, this ~1.2 ms. The log-prob of the drawn token is x - max - log(sum),
    log_softmax's formula, from a pairwise sum (not the last running sum, which drifts
    by ~1e-6 over 32k terms)."""
    peak = scaled.amax(dim=-1, keepdim=True)  # [B, 1]
    weights = (scaled - peak).exp_()  # [B, V], unnormalised probabilities
    total = weights.sum(dim=-1, keepdim=True)  # [B, 1]
    cdf = weights.cumsum_(dim=-1)
    u = _uniform(cdf, generator)  # [B, 1]
    tokens = torch.searchsorted(cdf, u * cdf[:, -1:]).clamp_max(cdf.shape[1] - 1)  # [B, 1]
    logp = scaled.gather(1, tokens) - peak - total.log()
    return tokens.squeeze(1), logp.squeeze(1)


def _uniform(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One uniform per row, drawn from `generator` on its own device (the CPU generator
    of the training loop, so a run's random stream is the same on any device) and then
    moved to the logits' device. Keyed streams (rollout.seeding) draw one from each
    row's own stream."""
    if keyed(generator):
        return generator.uniform().to(probs.device)
    if generator is None:
        return torch.rand(probs.shape[0], 1, device=probs.device)
    return torch.rand(probs.shape[0], 1, generator=generator, device=generator.device).to(probs.device)
