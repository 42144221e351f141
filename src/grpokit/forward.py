"""Per-token log-probs of given sequences under a model, without [N, L, V] logits.

The decoder runs once over the batch; the output layer is applied only at the
positions that predict a trained token, in chunks, so the vocabulary-wide tensor
never exists for the whole batch. The entropy (a logged metric) comes from the same
chunk of log-probs, not from a second output-layer pass. When the vocabulary is large
the chunk's logits are not kept for backward: `_HeadLogProb` recomputes them there
(one output-layer matmul more, no [rows, V] tensor held between forward and backward).
"""
from __future__ import annotations

import torch

CHUNK_ROWS = 512
CHECKPOINT_MIN_VOCAB = 4096


def base_model(model):
    """The transformers model under a peft wrapper (the model itself otherwise)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def transforms_logits(model) -> bool:
    # Models that transform logits after the output layer (soft-capping, scaling) take
    # the plain path so their forward stays the single source of truth.
    cfg = getattr(base_model(model), "config", None)
    return bool(getattr(cfg, "final_logit_softcapping", None)) or getattr(cfg, "logit_scale", None) not in (None, 1.0)


def _logits(hidden: torch.Tensor, weight: torch.Tensor, bias, temperature: float) -> torch.Tensor:
    logits = torch.nn.functional.linear(hidden, weight, bias).float()  # [c, V]
    if temperature not in (0.0, 1.0):
        logits = logits / temperature
    return logits


def _entropy(logp: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        p_logp = logp.exp().mul_(logp)  # one [c, V] temporary, not two
        return -p_logp.sum(-1)  # [c]


def _chunk_logp(hidden: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor, bias, temperature: float,
                with_entropy: bool = False):
    """(log-prob of each target [c], entropy [c] or None); autograd keeps the chunk's logits."""
    logp = torch.log_softmax(_logits(hidden, weight, bias, temperature), dim=-1)  # [c, V]
    ent = _entropy(logp.detach()) if with_entropy else None
    return logp.gather(1, targets[:, None]).squeeze(1), ent  # [c]


class _HeadLogProb(torch.autograd.Function):
    """_chunk_logp with the [c, V] tensors recomputed in backward instead of kept.

    Forward values are computed exactly as in _chunk_logp. Backward uses
    d log_softmax(z)[t] / dz = onehot(t) - softmax(z), with softmax(z) = exp(log_softmax(z))
    from recomputed logits: the formula autograd applies to log_softmax + gather.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, temperature, with_entropy):
        logp = torch.log_softmax(_logits(hidden, weight, bias, temperature), dim=-1)  # [c, V]
        token_lp = logp.gather(1, targets[:, None]).squeeze(1)  # [c]
        ent = _entropy(logp) if with_entropy else token_lp.new_empty(0)
        ctx.save_for_backward(hidden, weight, bias, targets)
        ctx.temperature = temperature
        ctx.mark_non_differentiable(ent)
        return token_lp, ent

    @staticmethod
    def backward(ctx, grad_lp, grad_ent):
        hidden, weight, bias, targets = ctx.saved_tensors
        if grad_lp is None:
            return None, None, None, None, None, None
        temperature = ctx.temperature
        logp = torch.log_softmax(_logits(hidden, weight, bias, temperature), dim=-1)  # [c, V], recomputed
        grad = logp.exp_().mul_(-grad_lp[:, None])  # -g * softmax
        grad.scatter_add_(1, targets[:, None], grad_lp[:, None].to(grad.dtype))  # + g at the target
        if temperature not in (0.0, 1.0):
            grad.div_(temperature)
        grad = grad.to(weight.dtype)
        g_hidden = grad @ weight if ctx.needs_input_grad[0] else None
        g_weight = grad.t() @ hidden if ctx.needs_input_grad[1] else None
        g_bias = grad.sum(0) if bias is not None and ctx.needs_input_grad[2] else None
        return g_hidden, g_weight, g_bias, None, None, None


def sequence_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor, *,
                      temperature: float = 1.0, with_entropy: bool = False,
                      chunk_rows: int = CHUNK_ROWS) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log p(input_ids[n, t] | input_ids[n, :t]) at every t where loss_mask > 0.

    Returns (logp [N, L], entropy [N, L] or None), zero where loss_mask == 0.
    Gradients flow when grad is enabled. temperature divides the logits, matching
    the distribution the completions were sampled from.
    """
    n, length = input_ids.shape
    pos = (attention_mask.cumsum(dim=1) - 1).clamp_min(0)  # [N, L]
    sel = loss_mask[:, 1:] > 0  # [N, L-1]: position t-1 predicts token t
    rows, cols = sel.nonzero(as_tuple=True)  # [M], [M]
    targets = input_ids[:, 1:][rows, cols]  # [M]
    logp = torch.zeros((n, length), dtype=torch.float32, device=input_ids.device)  # [N, L]
    ent = torch.zeros((n, length), dtype=torch.float32, device=input_ids.device) if with_entropy else None
    if rows.numel() == 0:
        return logp, ent

    if transforms_logits(model):
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos).logits  # [N, L, V]
        picked = logits[:, :-1][rows, cols].float()  # [M, V]
        if temperature not in (0.0, 1.0):
            picked = picked / temperature
        lp_all = torch.log_softmax(picked, dim=-1)
        token_lp = lp_all.gather(1, targets[:, None]).squeeze(1)  # [M]
        if with_entropy:
            with torch.no_grad():
                ent[rows, cols + 1] = -(lp_all.exp() * lp_all).sum(-1)
        return logp.index_put((rows, cols + 1), token_lp), ent

    base = base_model(model)
    decoder = base.get_decoder()
    head = base.get_output_embeddings()
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos).last_hidden_state  # [N, L, H]
    h_sel = hidden[:, :-1][rows, cols]  # [M, H]
    weight, bias = head.weight, getattr(head, "bias", None)
    recompute = torch.is_grad_enabled() and weight.shape[0] >= CHECKPOINT_MIN_VOCAB
    pieces = []
    for s in range(0, h_sel.shape[0], chunk_rows):
        h_c, t_c = h_sel[s:s + chunk_rows], targets[s:s + chunk_rows]
        if recompute:
            lp_c, ent_c = _HeadLogProb.apply(h_c, weight, bias, t_c, temperature, with_entropy)
        else:
            lp_c, ent_c = _chunk_logp(h_c, t_c, weight, bias, temperature, with_entropy)
        pieces.append(lp_c)
        if with_entropy:
            ent[rows[s:s + chunk_rows], cols[s:s + chunk_rows] + 1] = ent_c
    token_lp = torch.cat(pieces)  # [M]
    return logp.index_put((rows, cols + 1), token_lp), ent
