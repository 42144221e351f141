"""The policy's training pass of a small Llama-family CPU model in grpokit's C code.

`sequence_logprobs` for models the whole C decode step covers
(`engine.lean.whole_step_reason`: Qwen2/Llama/Mistral, float32 on a CPU, no adapters;
here at most NATIVE_PASS_MAX_BYTES of weights): the forward runs in `native/train.c`
keeping what its backward needs (nothing, without gradients: the reference pass), and
the backward there too, sequences split between threads. With gradients it is one
autograd node whose inputs are the input embeddings (a torch module, so hooks and its
gradient stay torch's) and every weight, and whose output is the log-probs: the loss,
clipping and optimizer around it are unchanged. Gradients equal autograd's through
transformers' forward up to float rounding (tests/test_native_pass.py).
"""
from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F

from grpokit.engine import native
from grpokit.model.forward import TorchPass, base_model
from grpokit.engine.lean import whole_step_reason, whole_step_weights
from grpokit.engine.threads import available_threads, intra_op_threads


# float32 weight bytes up to which the training passes run in C. Its products split the
# sequences between threads, each streaming every weight, and it keeps its own activations
# and a second, untransposed copy of the weights: on W1 (4 MiB) it pays; on W2 (160 MiB)
# it was no faster than torch's passes (update 4.9 against 4.8 s, measured before the
# panels were made one tile wide) and raised peak RSS by 1.2 GiB.
NATIVE_PASS_MAX_BYTES = 16 * 2**20


def native_pass_reason(model) -> str | None:
    """None when `native_logprobs` covers this model's training pass; else why not."""
    reason = whole_step_reason(model, NATIVE_PASS_MAX_BYTES)
    if reason:
        return reason
    cfg = base_model(model).config
    if getattr(cfg, "attention_dropout", 0.0) or getattr(cfg, "hidden_dropout", 0.0):
        return "dropout"
    return None


def _layer_params(layer) -> list[tuple[str, torch.Tensor | None]]:
    a, m = layer.self_attn, layer.mlp
    return [("ln1", layer.input_layernorm.weight), ("q", a.q_proj.weight), ("k", a.k_proj.weight),
            ("v", a.v_proj.weight), ("bq", a.q_proj.bias), ("bk", a.k_proj.bias), ("bv", a.v_proj.bias),
            ("o", a.o_proj.weight), ("bo", a.o_proj.bias), ("ln2", layer.post_attention_layernorm.weight),
            ("gate", m.gate_proj.weight), ("up", m.up_proj.weight), ("bgate", m.gate_proj.bias),
            ("bup", m.up_proj.bias), ("down", m.down_proj.weight), ("bdown", m.down_proj.bias)]


def _params(base) -> list[torch.Tensor]:
    """The weights in the order `_split` hands their gradients back (absent biases skipped)."""
    out = [t for layer in base.model.layers for _, t in _layer_params(layer) if t is not None]
    head = base.get_output_embeddings()
    return out + [base.model.norm.weight, head.weight] + ([head.bias] if head.bias is not None else [])


def _split(base, flat: torch.Tensor, vocab_pad: int) -> list[torch.Tensor]:
    """train.c's summed gradient buffer (its layout: see layer_grads there) cut into one
    gradient per `_params` entry."""
    at = 0

    def take(*shape):
        nonlocal at
        n = shape[0] * (shape[1] if len(shape) > 1 else 1)
        t = flat[at:at + n].view(*shape)
        at += n
        return t

    grads = []
    for layer in base.model.layers:
        p = dict(_layer_params(layer))
        h, nq, nk = p["ln1"].shape[0], p["q"].shape[0], p["k"].shape[0]
        nqkv, inter = nq + nk + p["v"].shape[0], p["gate"].shape[0]
        g = {"ln1": take(h)}
        qkv, bqkv = take(nqkv, h), take(nqkv)
        g.update(q=qkv[:nq], k=qkv[nq:nq + nk], v=qkv[nq + nk:], bq=bqkv[:nq], bk=bqkv[nq:nq + nk], bv=bqkv[nq + nk:])
        g.update(o=take(h, p["o"].shape[1]), bo=take(h), ln2=take(h))
        gu, bgu = take(2 * inter, h), take(2 * inter)
        g.update(gate=gu[:inter], up=gu[inter:], bgate=bgu[:inter], bup=bgu[inter:], down=take(h, inter), bdown=take(h))
        grads += [g[name] for name, t in _layer_params(layer) if t is not None]
    head = base.get_output_embeddings()
    h, vocab = head.weight.shape[1], head.weight.shape[0]
    grads += [take(h), take(vocab_pad, h)[:vocab]]
    head_b = take(vocab_pad)
    return grads + ([head_b[:vocab]] if head.bias is not None else [])


# Buffers of finished passes, for the next ones: a pass needs tens of MiB of activations
# and work space, and fresh memory is faulted in page by page (~17k faults per W1 pass).
_free: list[torch.Tensor] = []
_FREE_MAX = 4


def _take(floats: int) -> torch.Tensor:
    """A float32 buffer of at least `floats` elements: a free one if one is big enough."""
    for i, buf in enumerate(_free):
        if buf.numel() >= floats:
            return _free.pop(i)
    return torch.empty(floats)


def _give(buf: torch.Tensor) -> None:
    _free.append(buf)
    _free.sort(key=torch.Tensor.numel)
    del _free[:-_FREE_MAX]  # keep the largest


class _Pass:
    """One training pass: the weights in train.c's layout, its buffers, its arguments.
    Rows are reordered so that the rows sharing a prompt are contiguous (train.c's groups)."""

    def __init__(self, lib, base, input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor,
                 prompt_len: int, temperature: float, threads: int, keep: bool):
        self.saved = self.work = None  # pooled buffers, taken last (release() may run after a failed init)
        n, length = input_ids.shape
        dec = base.model
        attn = dec.layers[0].self_attn
        cfg = base.config
        heads = cfg.num_attention_heads
        kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
        cos, sin = dec.rotary_emb(torch.zeros(1, 1), torch.arange(length)[None])  # [1, L, D]
        self.step = whole_step_weights(lib, base, heads, kv_heads, attn.head_dim, attn.scaling,
                                       cos[0].contiguous(), sin[0].contiguous(), backward=keep)
        self.keep = keep  # activations kept for a backward
        self.lib, self.base, self.threads = lib, base, threads
        self.n, self.length, self.plen = n, length, prompt_len
        key = torch.cat([input_ids[:, :prompt_len], attention_mask[:, :prompt_len]], dim=1)  # [N, 2P]
        _, group = torch.unique(key, dim=0, return_inverse=True)  # [N]
        self.order = torch.sort(group, stable=True).indices  # rows of a group together
        counts = torch.bincount(group)
        self.first = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])  # [G + 1]
        self.groups = counts.numel()
        ids, mask, lmask = input_ids[self.order], attention_mask[self.order], loss_mask[self.order]
        lpad = -(-length // native.LANES) * native.LANES
        self.valid = torch.zeros(n, lpad, dtype=torch.bool)
        self.valid[:, :length] = mask > 0
        self.pos = (mask.cumsum(dim=1) - 1).clamp_min(0).contiguous()  # [N, L], as sequence_logprobs
        # column c predicts token c + 1: its target where that token is scored, else -1
        self.targets = torch.full((n, length), -1, dtype=torch.long)
        self.targets[:, :-1] = torch.where(lmask[:, 1:] > 0, ids[:, 1:], -1)
        vocab = base.get_output_embeddings().weight.shape[0]
        if int(self.targets.max()) >= vocab:  # the kernel indexes the logits with these, unchecked
            raise ValueError(f"native_logprobs: a scored token id is outside the output layer's {vocab} rows")
        # product rows, group after group: the prompt's columns of its first row, then every
        # row's completion columns (indices into the [N * L] embeddings)
        flat = torch.arange(n * length).view(n, length)
        parts = []
        for g in range(self.groups):
            b0, b1 = int(self.first[g]), int(self.first[g + 1])
            parts += [flat[b0, :prompt_len], flat[b0:b1, prompt_len:].reshape(-1)]
        self.rows = torch.cat(parts)
        self.ids = ids
        self.temperature = temperature
        m = ctypes.byref(self.step.model)
        shape = (self.groups, self.first.data_ptr(), prompt_len, length, threads)
        self.saved = _take(lib.gk_train_saved_floats(m, *shape, int(keep)))
        self.work = _take(lib.gk_train_work_floats(m, *shape))

    def release(self) -> None:
        for buf in (self.saved, self.work):
            if buf is not None:
                _give(buf)
        self.saved = self.work = None

    def __del__(self):  # a pass that is never backed through (e.g. an error in the loss)
        self.release()

    def _args(self, x: torch.Tensor):
        return (ctypes.byref(self.step.model), self.groups, self.first.data_ptr(), self.plen, self.length,
                x.data_ptr(), self.pos.data_ptr(), self.valid.data_ptr(), self.targets.data_ptr(), self.temperature)

    def forward(self, x: torch.Tensor, with_entropy: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """x [product rows, H] -> (logp, entropy) [N, L] in the reordered rows, column c
        holding token c + 1's."""
        self.x = x
        logp = torch.zeros(self.n, self.length)
        ent = torch.zeros(self.n, self.length) if with_entropy else torch.empty(0)
        with intra_op_threads(1, park=True):
            self.lib.gk_train_forward(*self._args(x), logp.data_ptr(), ent.data_ptr() if with_entropy else None,
                                      self.threads, self.saved.data_ptr(), self.work.data_ptr(), int(self.keep))
        if not self.keep:
            self.release()
        return logp, ent

    def backward(self, grad_logp: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if self.saved is None:
            raise RuntimeError("native_logprobs: a pass can be backed through once (retain_graph is not supported)")
        grad_logp = grad_logp.float().contiguous()
        grad_x = torch.empty_like(self.x)
        grads = torch.empty(self.lib.gk_train_grad_floats(ctypes.byref(self.step.model)))
        with intra_op_threads(1, park=True):
            used = self.lib.gk_train_backward(*self._args(self.x), grad_logp.data_ptr(), grad_x.data_ptr(),
                                              grads.data_ptr(), self.threads, self.saved.data_ptr(),
                                              self.work.data_ptr())
        self.release()  # a pass is backed through once
        if used < 0:
            raise MemoryError("gk_train_backward: no memory for its packed chunks")
        return grad_x, _split(self.base, grads, self.step.model.vocab_pad)


class _PassFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, run: _Pass, with_entropy: bool, x: torch.Tensor, *params: torch.Tensor):
        logp, ent = run.forward(x.detach().contiguous(), with_entropy)
        ctx.run = run
        ctx.mark_non_differentiable(ent)
        return logp, ent

    @staticmethod
    def backward(ctx, grad_logp: torch.Tensor, _grad_ent):
        grad_x, grads = ctx.run.backward(grad_logp)
        needs = ctx.needs_input_grad
        grads = [g if needs[3 + i] else None for i, g in enumerate(grads)]
        return None, None, grad_x if needs[2] else None, *grads


def native_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor, *,
                    prompt_len: int, temperature: float = 1.0, with_entropy: bool = False
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`forward.sequence_logprobs` of a rollout batch (prompts in the first prompt_len
    columns, no scored token among them) for a model `native_pass_reason` accepts:
    (logp [N, L], entropy [N, L] or None), log p(input_ids[n, t] | input_ids[n, :t]) where
    loss_mask > 0, differentiable in the model's weights. Rows that share a prompt run it
    once, as `sequence_logprobs` does with prompt_len."""
    if prompt_len < 1 or prompt_len >= input_ids.shape[1] or bool((loss_mask[:, :prompt_len] > 0).any()):
        raise ValueError("native_logprobs: needs a prompt of at least one column and no scored token in it")
    lib = native.library()
    base = base_model(model)
    grad = torch.is_grad_enabled()
    run = _Pass(lib, base, input_ids, attention_mask, loss_mask, prompt_len,
                temperature if temperature not in (0.0, 1.0) else 1.0, available_threads(), keep=grad)
    x = base.model.embed_tokens(run.ids.reshape(-1)[run.rows])  # [product rows, H]
    if grad:
        lp, ent = _PassFn.apply(run, with_entropy, x, *_params(base))
    else:  # a no-grad pass (the reference model's): nothing is kept
        lp, ent = run.forward(x.contiguous(), with_entropy)
    back = torch.empty_like(run.order)
    back[run.order] = torch.arange(run.order.numel())
    keep = (loss_mask > 0).float()
    # column c holds the log-prob of token c + 1
    logp = F.pad(lp[back, :-1], (1, 0)) * keep
    entropy = F.pad(ent[back, :-1], (1, 0)) * keep if with_entropy else None
    return logp, entropy


def native_applies(model, input_ids: torch.Tensor, loss_mask: torch.Tensor, prompt_len: int) -> bool:
    """Whether `native_logprobs` takes this pass: a model it covers, a prompt of at least
    one column and no scored token in it."""
    p = prompt_len
    return (0 < p < input_ids.shape[1] and not bool((loss_mask[:, :p] > 0).any())
            and native_pass_reason(model) is None)


class NativePass:
    """The TrainingPass of the CPU engine: `native_logprobs` where `native_applies`, the
    given torch pass (`model.forward.TorchPass`) everywhere else."""

    def __init__(self, fallback: TorchPass):
        self.fallback = fallback

    def policy_logprobs(self, model, input_ids, attention_mask, loss_mask, *, prompt_len: int, temperature: float,
                        with_entropy: bool = False):
        if native_applies(model, input_ids, loss_mask, prompt_len):
            return native_logprobs(model, input_ids, attention_mask, loss_mask, prompt_len=prompt_len,
                                   temperature=temperature, with_entropy=with_entropy)
        return self.fallback.policy_logprobs(model, input_ids, attention_mask, loss_mask, prompt_len=prompt_len,
                                             temperature=temperature, with_entropy=with_entropy)

    @torch.no_grad()
    def reference_logprobs(self, model, batch, *, temperature: float, micro_batch_size: int = 0) -> torch.Tensor:
        # the whole batch at once: the C pass splits sequences between its threads itself
        if native_applies(model, batch.input_ids, batch.loss_mask, batch.prompt_len):
            lp, _ = native_logprobs(model, batch.input_ids, batch.attention_mask, batch.loss_mask,
                                    prompt_len=batch.prompt_len, temperature=temperature)
            return lp
        return self.fallback.reference_logprobs(model, batch, temperature=temperature,
                                                micro_batch_size=micro_batch_size)
