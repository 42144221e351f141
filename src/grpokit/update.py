"""Phase 4: the clipped-surrogate update over one batch of experience (mu passes).

Old log-probs come from the first pass: every pass is one optimizer step with
gradient accumulation over micro-batches, so the policy does not change during the
first pass and its detached log-probs are exactly pi_old. No extra forward is needed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from grpokit import dist
from grpokit.algo.losses import policy_loss
from grpokit.algo.mismatch import mismatch_metrics, mismatch_weights
from grpokit.model.device import batch_to, model_device, synchronize
from grpokit.model.forward import TorchPass, micro_batches, trim_padding
from grpokit.types import RolloutBatch, TrainingPass


@dataclass
class LossSettings:
    """The resolved algorithm fields the loss needs (no config object in the math)."""

    clip_low: float
    clip_high: float
    ratio: str
    loss_agg: str
    beta: float
    kl_estimator: str
    mu: int
    loss: str = "clip"  # algo.losses.LOSSES
    # Sampler/trainer mismatch correction (algo/mismatch.py): "token", "sequence" or "off".
    mismatch_level: str = "off"
    mismatch_cap: float = 2.0
    mismatch_mode: str = "truncate"
    # The constant normaliser of loss_agg="constant" (Dr. GRPO, Liu et al. 2025; TRL's
    # max_completion_length): the generation budget, rollout.max_new_tokens. It must not
    # depend on the batch, or a batch of short completions would get a larger gradient.
    # 0 = the batch's padded completion length (for callers without a budget).
    max_new_tokens: int = 0


def update_policy(model, optimizer, batch: RolloutBatch, advantages: torch.Tensor, settings: LossSettings, *,
                  ref_logp: torch.Tensor | None, temperature: float, micro_batch_size: int = 0,
                  max_grad_norm: float = 1.0, passes: TrainingPass | None = None,
                  world: dist.World = dist.SINGLE) -> dict[str, float]:
    """Run settings.mu optimizer steps on the batch; return averaged metrics.

    The batch, advantages and reference log-probs may live on the CPU: they are moved
    to the model's device here, once per call. passes: the TrainingPass that computes
    the policy's log-probs (build.py's choice; plain torch when None).

    world (torchrun): every rank holds the whole batch and trains its contiguous share
    of the rows; the loss keeps the whole batch's normalisers, gradients are summed over
    ranks before clipping, and the metrics are token-weighted over all ranks."""
    passes = passes if passes is not None else TorchPass()
    device = model_device(model)
    batch, advantages = batch_to(batch, device), advantages.to(device)
    ref_logp = ref_logp.to(device) if ref_logp is not None else None
    n = batch.size
    mask = batch.loss_mask  # [N, L]
    # Global normalisers so micro-batches sum to the full-batch loss.
    max_len = settings.max_new_tokens or int(mask.shape[1] - batch.prompt_len)
    norms = dict(num_sequences=n, num_tokens=float(mask.sum()), max_len=max_len)
    # Rows with zero advantage contribute exactly zero gradient unless a KL term pulls
    # on them, so they are skipped (same loss value, less compute).
    if settings.beta == 0:
        rows = (advantages != 0).nonzero(as_tuple=True)[0]  # [n_active]
    else:
        rows = torch.arange(n, device=device)
    if world.distributed:  # dist: this rank's share of the trained rows; the normalisers above stay global
        own = dist.share(rows.numel(), world)
        rows = rows[own.start:own.stop]
    any_rows = (dist.total(world, rows.numel()) if world.distributed else rows.numel()) > 0
    temp = temperature if temperature > 0 else 1.0
    old_logp = torch.zeros_like(batch.logprobs)  # [N, L], filled in pass 1
    # batch.logprobs are the sampler's; pi_old / sampler, filled in pass 1 (ones when off)
    is_weight = torch.ones_like(batch.logprobs) if settings.mismatch_level != "off" else None  # [N, L]
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}

    # Wall time per part of the update (summed over passes and micro-batches): policy
    # forward + loss, backward + grad clipping, optimizer step, and under torchrun the
    # gradient sum over ranks (waiting for the slowest rank included). Three clock reads
    # per micro-batch; `grpokit bench` reports them.
    t_fwd = t_bwd = t_opt = t_sync = 0.0

    def add(key: str, value: float, weight: float = 1.0) -> None:
        # A micro-batch's token mean counts by its tokens, so the result is the whole
        # batch's token mean, whatever the micro-batch size or the number of ranks.
        sums[key] = sums.get(key, 0.0) + value * weight
        counts[key] = counts.get(key, 0) + weight

    # sharded model (grpokit.sharding): every rank runs as many passes as the busiest one
    lockstep = getattr(passes, "lockstep", None)
    model.train()
    for p in range(settings.mu):
        optimizer.zero_grad(set_to_none=True)
        total_loss = 0.0
        chunks = micro_batches(rows, micro_batch_size)
        if lockstep is not None and any_rows:  # sharded: as many passes as the busiest rank
            lockstep(model, len(chunks), backward=True)
        for mb in chunks:
            t0 = time.perf_counter()
            ids, attn, m = batch.input_ids[mb], batch.attention_mask[mb], mask[mb]
            ids, attn, m = trim_padding(ids, attn, m)
            logp, ent = passes.policy_logprobs(model, ids, attn, m, prompt_len=batch.prompt_len, temperature=temp,
                                               with_entropy=(p == 0))
            width = logp.shape[1]
            if p == 0:
                old_logp[mb, :width] = logp.detach()
                add("entropy", float((ent * m).sum() / m.sum().clamp_min(1)), float(m.sum()))
                if is_weight is not None:
                    sampled = batch.logprobs[mb, :width]
                    is_weight[mb, :width] = mismatch_weights(logp.detach(), sampled, m, level=settings.mismatch_level,
                                                             cap=settings.mismatch_cap, mode=settings.mismatch_mode)
                    for k, v in mismatch_metrics(logp.detach(), sampled, m).items():
                        add(f"mismatch/{k}", float(v), float(m.sum()))
                    add("mismatch/weight_mean", float((is_weight[mb, :width] * m).sum() / m.sum().clamp_min(1)),
                        float(m.sum()))
            old = old_logp[mb, :width]
            ref = ref_logp[mb, :width] if ref_logp is not None else None
            adv = advantages[mb]
            if is_weight is not None:
                # A weight w >= 0 on a token's advantage scales its clipped surrogate by w
                # (-min(r A w, clip(r) A w) = -w min(r A, clip(r) A)); the KL term is left alone.
                adv = adv.unsqueeze(1) * is_weight[mb, :width]  # [n, T]
            loss, stats = policy_loss(logp, old, adv, m, ref_logp=ref, beta=settings.beta,
                                      kl_estimator=settings.kl_estimator, clip_low=settings.clip_low,
                                      clip_high=settings.clip_high, ratio=settings.ratio, agg=settings.loss_agg,
                                      loss=settings.loss,
                                      **norms)
            synchronize(device)
            t1 = time.perf_counter()
            loss.backward()
            synchronize(device)
            t_fwd, t_bwd = t_fwd + (t1 - t0), t_bwd + (time.perf_counter() - t1)
            total_loss += float(loss.detach())
            for k, v in stats.items():
                add(k, float(v), float(m.sum()))
        add("loss", total_loss)
        if not any_rows:
            continue  # nothing to learn from this batch; keep the optimizer state untouched
        t0 = time.perf_counter()
        if lockstep is None:  # a sharded model's backward already summed its gradients over ranks
            dist.sum_gradients(world, [q for q in model.parameters() if q.requires_grad])  # one process: nothing
        synchronize(device)
        t_sync += time.perf_counter() - t0
        t0 = time.perf_counter()
        if max_grad_norm > 0:
            gn = torch.nn.utils.clip_grad_norm_([q for q in model.parameters() if q.requires_grad], max_grad_norm)
            add("grad_norm", float(gn.full_tensor() if hasattr(gn, "full_tensor") else gn))
        synchronize(device)
        t1 = time.perf_counter()
        optimizer.step()
        synchronize(device)
        t_bwd, t_opt = t_bwd + (t1 - t0), t_opt + (time.perf_counter() - t1)
    model.eval()
    if world.distributed:
        # the loss is a sum over ranks (each rank's part already has the global normaliser);
        # grad_norm is the same on every rank (clipped after the sum)
        loss_sum, loss_n = sums.pop("loss"), counts.pop("loss")
        norm = (sums.pop("grad_norm"), counts.pop("grad_norm")) if "grad_norm" in sums else None
        out = dist.reduce_metrics(world, sums, counts)
        out["loss"] = dist.total(world, loss_sum) / loss_n
        if norm is not None:
            out["grad_norm"] = norm[0] / norm[1]
        out["trained_rows"] = dist.total(world, rows.numel())
    else:
        out = {k: sums[k] / counts[k] for k in sums}
        out["trained_rows"] = float(rows.numel())
    out.update({"time/policy_forward": t_fwd, "time/backward": t_bwd, "time/optimizer": t_opt})
    if world.distributed:
        out["time/grad_sync"] = t_sync
    return out


@torch.no_grad()
def reference_logprobs(ref_model, batch: RolloutBatch, *, temperature: float, micro_batch_size: int = 0,
                       passes: TrainingPass | None = None) -> torch.Tensor:
    """Per-token log-probs of the batch under `ref_model` [N, L], on the model's device,
    from the given TrainingPass (plain torch when None)."""
    temp = temperature if temperature > 0 else 1.0
    passes = passes if passes is not None else TorchPass()
    return passes.reference_logprobs(ref_model, batch, temperature=temp, micro_batch_size=micro_batch_size)
