"""Per-token log-probs of given sequences under a model, without [N, L, V] logits.

The decoder runs once over the batch (once per distinct prompt for a rollout batch
whose groups share prompts); the output layer is applied only at the positions that
predict a trained token, in chunks, so the vocabulary-wide tensor
never exists for the whole batch. The entropy (a logged metric) comes from the same
chunk of log-probs, not from a second output-layer pass. When the vocabulary is large
the chunk's logits are not kept for backward: `_HeadLogProb` recomputes them there
(one output-layer matmul more, no [rows, V] tensor held between forward and backward).
"""
from __future__ import annotations

import inspect

import torch

from grpokit.model.device import batch_to, model_device

CHUNK_BYTES = 32 * 2**20  # float32 [rows, V] logits per chunk of the output layer
CHUNK_ROWS_MIN, CHUNK_ROWS_MAX = 64, 4096
CHECKPOINT_MIN_VOCAB = 4096
# Llama-family decoders (pre-norm, RMSNorm, rotary attention, SiLU-gated MLP): the layout
# grpokit's own code paths re-implement or reshape (the lean decode step, the lean
# training MLP/norm, the shared prompt pass), each tested on all three.
LLAMA_FAMILY = {"qwen2", "llama", "mistral"}


def base_model(model):
    """The transformers model under a peft wrapper (the model itself otherwise)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def llama_family_reason(model) -> str | None:
    """None for a Llama-family decoder with SiLU MLPs; else why the model is not one."""
    cfg = getattr(base_model(model), "config", None)
    kind = getattr(cfg, "model_type", None)
    if kind not in LLAMA_FAMILY:
        return f"model type {kind!r} (covered: {', '.join(sorted(LLAMA_FAMILY))})"
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return f"activation {cfg.hidden_act!r}"
    return None


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


def _chunked_logp(hidden: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor, bias, temperature: float,
                  with_entropy: bool, rows: int):
    """_chunk_logp over [M, H] in chunks of `rows`: (log-probs [M], entropy [M] or None)."""
    lps, ents = [], []
    for s in range(0, hidden.shape[0], rows):
        lp, ent = _chunk_logp(hidden[s:s + rows], targets[s:s + rows], weight, bias, temperature, with_entropy)
        lps.append(lp)
        ents.append(ent)
    return torch.cat(lps), (torch.cat(ents) if with_entropy else None)


class _HeadLogProb(torch.autograd.Function):
    """Token log-probs (and entropy) of all selected positions through the output layer,
    chunk by chunk, with the [c, V] tensors recomputed in backward instead of kept.

    Forward values are those of _chunked_logp (autograd records nothing inside a
    Function's forward, so no chunk's [c, V] tensors outlive it). Backward uses
    d log_softmax(z)[t] / dz = onehot(t) - softmax(z), with softmax(z) =
    exp(log_softmax(z)) from recomputed logits: the formula autograd applies to
    log_softmax + gather. The weight gradient of every chunk is added in place into
    one [V, H] buffer, so a step allocates it once and not once per chunk.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, temperature, with_entropy, chunk_rows):
        token_lp, ent = _chunked_logp(hidden, targets, weight, bias, temperature, with_entropy, chunk_rows)  # [M]
        if ent is None:
            ent = token_lp.new_empty(0)
        ctx.save_for_backward(hidden, weight, bias, targets)
        ctx.temperature, ctx.chunk_rows = temperature, chunk_rows
        ctx.mark_non_differentiable(ent)
        return token_lp, ent

    @staticmethod
    def backward(ctx, grad_lp, grad_ent):
        hidden, weight, bias, targets = ctx.saved_tensors
        if grad_lp is None:
            return None, None, None, None, None, None, None
        temperature, rows = ctx.temperature, ctx.chunk_rows
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = bias is not None and ctx.needs_input_grad[2]
        g_hidden = torch.empty_like(hidden) if need_h else None
        g_weight = torch.zeros_like(weight) if need_w else None
        g_bias = torch.zeros_like(bias) if need_b else None
        for s in range(0, hidden.shape[0], rows):
            h_c, t_c, g_c = hidden[s:s + rows], targets[s:s + rows], grad_lp[s:s + rows]
            logp = torch.log_softmax(_logits(h_c, weight, bias, temperature), dim=-1)  # [c, V], recomputed
            grad = logp.exp_().mul_(-g_c[:, None])  # -g * softmax
            grad.scatter_add_(1, t_c[:, None], g_c[:, None].to(grad.dtype))  # + g at the target
            if temperature not in (0.0, 1.0):
                grad.div_(temperature)
            grad = grad.to(weight.dtype)
            if need_h:
                torch.mm(grad, weight, out=g_hidden[s:s + rows])
            if need_w:
                g_weight.addmm_(grad.t(), h_c)
            if need_b:
                g_bias.add_(grad.sum(0))
            del logp, grad
        return g_hidden, g_weight, g_bias, None, None, None, None


def uses_sliding_window(cfg) -> bool:
    """Sliding-window attention in a Qwen2 (use_sliding_window) or Mistral (sliding_window) config."""
    kind = getattr(cfg, "model_type", None)
    return bool(getattr(cfg, "use_sliding_window", False)
                or (kind == "mistral" and getattr(cfg, "sliding_window", None)))


def cache_kwarg(module) -> str:
    """The name under which `module.forward` takes a KV cache: `cache` in newer
    transformers, `past_key_values` before (peft wrappers pass it through unchanged)."""
    params = inspect.signature(base_model(module).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _can_share_prompts(base) -> bool:
    cfg = getattr(base, "config", None)
    kind = getattr(cfg, "model_type", None)
    sliding = uses_sliding_window(cfg)
    # transformers turns the cache off in a checkpointed training forward, so the
    # completions could not see the prompt: take the plain pass there.
    checkpointed = torch.is_grad_enabled() and base.training and getattr(base.get_decoder(), "gradient_checkpointing",
                                                                          False)
    return kind in LLAMA_FAMILY and not sliding and not checkpointed


def _shared_prompt_hidden(base, input_ids, attention_mask, pos, p: int) -> torch.Tensor | None:
    """Final hidden states at positions p-1 .. L-1 [N, L-p+1, H], each distinct prompt
    (columns :p) run once: the prompts' keys and values are copied to the rows that share
    them and the completions attend to them through the cache, so gradients reach the
    prompt computation from every row. The same values as one pass over [N, L] (the
    attention sums run in another order). None when no two rows share a prompt.
    """
    from transformers import DynamicCache

    key = torch.cat([input_ids[:, :p], attention_mask[:, :p]], dim=1)  # [N, 2p]
    uniq, inverse = torch.unique(key, dim=0, return_inverse=True)  # [U, 2p], [N]
    n = input_ids.shape[0]
    if uniq.shape[0] == n:
        return None
    first = torch.empty(uniq.shape[0], dtype=torch.long, device=input_ids.device)
    first.scatter_(0, inverse, torch.arange(n, device=input_ids.device))  # a row of each prompt
    decoder = base.get_decoder()
    cache_kw = cache_kwarg(decoder)
    cache = DynamicCache(config=base.config)
    h_prompt = decoder(input_ids=input_ids[first, :p], attention_mask=attention_mask[first, :p],
                       position_ids=pos[first, :p], use_cache=True, **{cache_kw: cache}).last_hidden_state  # [U, p, H]
    cache.batch_select_indices(inverse)  # [N] rows; indexing keeps the autograd graph
    h_rest = decoder(input_ids=input_ids[:, p:], attention_mask=attention_mask, position_ids=pos[:, p:],
                     use_cache=True, **{cache_kw: cache}).last_hidden_state  # [N, L-p, H]
    return torch.cat([h_prompt[inverse, -1:], h_rest], dim=1)


def sequence_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor, *,
                      temperature: float = 1.0, with_entropy: bool = False, chunk_rows: int = 0,
                      prompt_len: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log p(input_ids[n, t] | input_ids[n, :t]) at every t where loss_mask > 0.

    Returns (logp [N, L], entropy [N, L] or None), zero where loss_mask == 0.
    Gradients flow when grad is enabled. temperature divides the logits, matching
    the distribution the completions were sampled from.

    chunk_rows: positions per output-layer chunk; 0 = as many as keep a chunk's float32
    logits near CHUNK_BYTES (a chunk's two or three [rows, V] temporaries are the spikes
    of a step's resident memory on a large vocabulary), within [64, 4096].

    prompt_len > 0 says the first prompt_len columns are left-padded prompts and no
    trained token lies in them (a rollout batch): rows with the same prompt then share
    one forward pass over it (`_shared_prompt_hidden`), as a GRPO group's rows do.
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
            ent[rows, cols + 1] = _entropy(lp_all.detach())
        return logp.index_put((rows, cols + 1), token_lp), ent

    base = base_model(model)
    decoder = base.get_decoder()
    head = base.get_output_embeddings()
    tail = None
    if 0 < prompt_len < length and _can_share_prompts(base) and int(cols.min()) >= prompt_len - 1:
        tail = _shared_prompt_hidden(base, input_ids, attention_mask, pos, prompt_len)  # [N, L - P + 1, H]
    if tail is not None:
        h_sel = tail[:, :-1][rows, cols - (prompt_len - 1)]  # [M, H]
    else:
        hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos).last_hidden_state
        h_sel = hidden[:, :-1][rows, cols]  # [M, H]
    weight, bias = head.weight, getattr(head, "bias", None)
    if chunk_rows <= 0:
        chunk_rows = min(CHUNK_ROWS_MAX, max(CHUNK_ROWS_MIN, CHUNK_BYTES // (4 * weight.shape[0])))
    recompute = torch.is_grad_enabled() and weight.shape[0] >= CHECKPOINT_MIN_VOCAB
    if recompute:
        token_lp, ent_all = _HeadLogProb.apply(h_sel, weight, bias, targets, temperature, with_entropy, chunk_rows)
    else:
        token_lp, ent_all = _chunked_logp(h_sel, targets, weight, bias, temperature, with_entropy, chunk_rows)
    if with_entropy:
        ent[rows, cols + 1] = ent_all
    return logp.index_put((rows, cols + 1), token_lp), ent  # token_lp: [M]


def micro_batches(rows: torch.Tensor, size: int) -> list[torch.Tensor]:
    """rows split into micro-batches of `size` (0 = one); none when rows is empty."""
    if rows.numel() == 0:  # every advantage is 0 (and no KL term): nothing to run
        return []
    if size <= 0 or size >= rows.numel():
        return [rows]
    return list(rows.split(size))


def trim_padding(ids, attn, mask):
    """Drop trailing all-padding columns of a micro-batch (less compute, same values)."""
    used = attn.sum(0).nonzero()
    last = int(used.max()) + 1 if used.numel() else ids.shape[1]
    return ids[:, :last], attn[:, :last], mask[:, :last]


class TorchPass:
    """The TrainingPass in plain torch (`sequence_logprobs`). share_prompt: rows of a
    rollout batch that share a prompt run it once (the same log-probs and gradients;
    faster on CPUs, slower in the one GPU measurement: build.py's default follows that)."""

    def __init__(self, *, share_prompt: bool = True):
        self.share_prompt = share_prompt

    def policy_logprobs(self, model, input_ids, attention_mask, loss_mask, *, prompt_len: int, temperature: float,
                        with_entropy: bool = False):
        return sequence_logprobs(model, input_ids, attention_mask, loss_mask, temperature=temperature,
                                 with_entropy=with_entropy, prompt_len=prompt_len if self.share_prompt else 0)

    @torch.no_grad()
    def reference_logprobs(self, model, batch, *, temperature: float, micro_batch_size: int = 0) -> torch.Tensor:
        return batch_logprobs(self.policy_logprobs, model, batch, temperature=temperature,
                              micro_batch_size=micro_batch_size)


@torch.no_grad()
def batch_logprobs(policy_logprobs, model, batch, *, temperature: float, micro_batch_size: int = 0,
                   before=None) -> torch.Tensor:
    """[N, L] log-probs of every row of `batch`, micro-batch by micro-batch through
    policy_logprobs (a TrainingPass's), on the model's device. before(n): called with the
    number of micro-batches before the first runs (a sharded pass pads to the busiest rank)."""
    device = model_device(model)
    batch = batch_to(batch, device)
    out = torch.zeros_like(batch.logprobs)  # [N, L]
    chunks = micro_batches(torch.arange(batch.size, device=device), micro_batch_size)
    if before is not None:
        before(len(chunks))
    for mb in chunks:
        ids, attn, m = trim_padding(batch.input_ids[mb], batch.attention_mask[mb], batch.loss_mask[mb])
        lp, _ = policy_logprobs(model, ids, attn, m, prompt_len=batch.prompt_len, temperature=temperature)
        out[mb, : lp.shape[1]] = lp
    return out
