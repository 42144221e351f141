"""A lean decode step for Llama-family decoders (Qwen2, Llama, Mistral).

Sampling spends most of its time outside the matmuls on a CPU: transformers' forward
builds masks, grows `DynamicCache` with a `torch.cat` per layer per token and calls a
dozen modules per layer. This module runs the same math with the model's own weights
in fewer ops: q/k/v and gate/up as one matmul each (weights concatenated once per
generation call, for models where that copy stays under FUSE_MAX_BYTES), a
preallocated KV cache written in place, rotary tables computed once, and grouped-query
attention without repeating the cached keys. On a CPU in float32 the one-token step
runs its norms, rotary embedding, cache write and attention in grpokit's C kernels
(`grpokit.engine.native`; the key cache is then stored transposed), and for models of at most
WHOLE_STEP_MAX_BYTES of weights the whole step, products included, is one C call
(`native.step`), as is the prefill when no embeddings are asked for. It is used only
for sampling (no autograd); training passes of the smallest models run in C too
(`grpokit.engine.native_pass`), the others keep transformers' forward.

`unsupported_reason` says why a model must take the transformers path instead (other
architectures, LoRA-wrapped layers, sliding-window attention, length-dependent RoPE).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from grpokit.engine import native
from grpokit.engine.rmsnorm import rms_normalize
from grpokit.model.forward import base_model, llama_family_reason, transforms_logits, uses_sliding_window
from grpokit.engine.native import ops as native_ops
from grpokit.engine.native import step as native_step
from grpokit.engine.packed import DecodeLinear, PackedSet
from grpokit.engine.threads import available_threads

STATIC_ROPE = {"default", "linear", "llama3", "yarn"}  # tables that do not depend on the sequence length
FUSE_MAX_BYTES = 512 * 2**20  # larger models skip the concatenated weight copies
# float32 weight bytes up to which the decode step runs as one C call: it holds a copy of
# the weights in its own layout (as FUSE_MAX_BYTES bounds the fused copies). Small models'
# threads split the rows, larger ones' split each product's columns (native.step); W2's
# 160 MiB model: 1.6-1.9 s of generation per step against 2.8-3.0 s through torch's ops;
# SmolLM2-135M (513 MiB, W3): 64 prompts x 64 tokens in 20.3 s against 28.9 s. Larger
# models are not measured, and the copy doubles the weights' memory: they keep torch's ops.
WHOLE_STEP_MAX_BYTES = 1024 * 2**20
WHOLE_STEP_MIN_ROWS = 4  # rows per thread of the whole step, at least


def _fusable(mods) -> bool:
    """Plain nn.Linear modules whose biases are all present or all absent."""
    if any(type(m) is not torch.nn.Linear for m in mods):
        return False
    return len({m.bias is None for m in mods}) == 1


def _detached(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach()


class _Proj:
    """Linear maps of one input, outputs concatenated: one matmul over concatenated
    weights (a copy made per generate call), or one matmul each when that copy would
    be too large."""

    __slots__ = ("parts",)

    def __init__(self, mods, fuse: bool):
        parts = [(m.weight.detach(), _detached(m.bias)) for m in mods]
        if fuse and len(parts) > 1:
            bias = None if parts[0][1] is None else torch.cat([b for _, b in parts])
            parts = [(torch.cat([w for w, _ in parts]), bias)]
        self.parts = [DecodeLinear(w, b) for w, b in parts]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.parts) == 1:
            return self.parts[0](x)
        return torch.cat([lin(x) for lin in self.parts], dim=-1)


def unsupported_reason(model) -> str | None:
    """None when LeanDecoder reproduces this model's forward; else the reason it does not."""
    reason = llama_family_reason(model)
    if reason:
        return reason
    base = base_model(model)
    cfg = base.config
    if uses_sliding_window(cfg):
        return "sliding-window attention"
    if transforms_logits(model):
        return "logit scaling"
    dec = getattr(base, "model", None)
    rope = getattr(dec, "rotary_emb", None)
    if dec is None or rope is None or not hasattr(dec, "layers"):
        return "unexpected module layout"
    if getattr(rope, "rope_type", "default") not in STATIC_ROPE:
        return f"RoPE type {rope.rope_type!r}"
    head = base.get_output_embeddings()
    mods = [head]
    for layer in dec.layers:
        a, m = layer.self_attn, layer.mlp
        mods += [a.q_proj, a.k_proj, a.v_proj, a.o_proj, m.gate_proj, m.up_proj, m.down_proj]
        if not _fusable([a.q_proj, a.k_proj, a.v_proj]) or not _fusable([m.gate_proj, m.up_proj]):
            return "adapter-wrapped or mixed-bias projections (e.g. LoRA)"
    if any(type(m) is not torch.nn.Linear for m in mods):
        return "adapter-wrapped projections (e.g. LoRA)"
    return None


class _Layer:
    __slots__ = ("ln1", "ln1_eps", "qkv", "o", "ln2", "ln2_eps", "gate_up", "down")

    def linears(self) -> list[DecodeLinear]:
        return [*self.qkv.parts, self.o, *self.gate_up.parts, self.down]


def _norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # transformers' RMSNorm: statistics in float32, scale applied in the input dtype
    if x.dtype == torch.float32:
        return F.rms_norm(x, weight.shape, weight, eps)
    return weight * rms_normalize(x.float(), eps)[0].to(x.dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rot = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rot * sin


class LeanDecoder:
    """KV-cached forward of one batch of left-padded prompts; rows can be dropped.

    prefill(ids, mask, pos) -> logits at each row's last position [B, V];
    step(tokens [B], pos [B]) -> logits for the next position [B, V];
    select(keep) keeps the given cache rows.
    """

    @torch.no_grad()
    def __init__(self, model, capacity: int, *, static: bool = False, pack: bool = True, use_native: bool = True,
                 whole_step: bool = True):
        """pack: on a CPU, multiply by MKL-packed weights in the one-token step
        (`engine.packed`; float32 only, a copy of the weights per generate call).
        use_native: on a CPU in float32, run the one-token step's norms, rotary embedding,
        cache write and attention in grpokit's C kernels (`grpokit.engine.native`) when they build.
        whole_step: with those kernels, run the whole one-token step of a model of at most
        WHOLE_STEP_MAX_BYTES of weights as one C call (`native.step`), its work split
        between torch's intra-op threads (`engine.threads.available_threads`)."""
        self.static = static  # the cache will be read by static_step
        base = base_model(model)
        dec = base.model
        cfg = base.config
        self.embed = dec.embed_tokens
        self.rotary = dec.rotary_emb
        self.final_w, self.final_eps = dec.norm.weight.detach(), dec.norm.variance_epsilon
        head = base.get_output_embeddings()
        self.head = DecodeLinear(head.weight.detach(), _detached(head.bias))
        first = dec.layers[0].self_attn
        self.head_dim = first.head_dim
        self.scale = first.scaling
        self.n_heads = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        fused_bytes = sum(p.numel() * p.element_size() for layer in dec.layers
                          for mod in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj,
                                      layer.mlp.gate_proj, layer.mlp.up_proj) for p in mod.parameters())
        whole = use_native and whole_step and not static and whole_step_reason(model) is None
        # The whole C step (below) has its own copies; the torch path then only prefills.
        fuse = fused_bytes <= FUSE_MAX_BYTES and not whole
        self.layers = []
        for layer in dec.layers:
            a, m = layer.self_attn, layer.mlp
            t = _Layer()
            t.ln1, t.ln1_eps = layer.input_layernorm.weight.detach(), layer.input_layernorm.variance_epsilon
            t.ln2, t.ln2_eps = (layer.post_attention_layernorm.weight.detach(),
                                layer.post_attention_layernorm.variance_epsilon)
            t.qkv = _Proj([a.q_proj, a.k_proj, a.v_proj], fuse)
            t.o = DecodeLinear(a.o_proj.weight.detach(), _detached(a.o_proj.bias))
            t.gate_up = _Proj([m.gate_proj, m.up_proj], fuse)
            t.down = DecodeLinear(m.down_proj.weight.detach(), _detached(m.down_proj.bias))
            self.layers.append(t)
        self.packs = PackedSet([lin for t in self.layers for lin in t.linears()] + [self.head], pack and not static)
        self.dtype = self.head.w.dtype
        self.native = None
        if (use_native and not static and self.dtype == torch.float32 and self.head.w.device.type == "cpu"
                and self.head_dim % native.LANES == 0 and self.n_heads % self.n_kv == 0):
            self.native = native.library()
        self.capacity = capacity
        # cache columns allocated: the C kernel reads the key cache in whole blocks of columns
        self.columns = -(-capacity // native.LANES) * native.LANES if self.native is not None else capacity
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        self.valid: torch.Tensor | None = None  # [B, columns] bool: cache columns a row may attend to
        self.length = 0
        # rotary tables for every position this call can reach, computed once
        probe = torch.zeros(1, 1, dtype=self.dtype, device=self.head.w.device)
        positions = torch.arange(capacity, device=self.head.w.device)[None]
        cos, sin = self.rotary(probe, positions)  # [1, capacity, D]
        self.cos, self.sin = cos[0].contiguous(), sin[0].contiguous()  # [capacity, D]
        self.whole = None  # the whole step in one C call (native.step), for small models
        self.rows: torch.Tensor | None = None  # whole step: the cache row of each batch row (None: the same)
        self.threads = available_threads()  # the whole step's (torch may be held to one meanwhile)
        if self.native is not None and whole:
            self.whole = whole_step_weights(self.native, base, self.n_heads, self.n_kv, self.head_dim,
                                            self.scale, self.cos, self.sin)

    def _layer(self, t: _Layer, kc: torch.Tensor, vc: torch.Tensor, x: torch.Tensor, cos, sin, mask, c0: int,
               prefill: bool, col: torch.Tensor | None = None) -> torch.Tensor:
        b, n, _ = x.shape
        d, hq, hk = self.head_dim, self.n_heads, self.n_kv
        qkv = t.qkv(_norm(x, t.ln1, t.ln1_eps))  # [B, T, (Hq + 2 Hk) D]
        qk = _rotate(qkv[..., :(hq + hk) * d].view(b, n, hq + hk, d), cos, sin)  # [B, T, Hq + Hk, D]
        v = qkv[..., (hq + hk) * d:].view(b, n, hk, d)
        k_new, v_new = qk[:, :, hq:].transpose(1, 2), v.transpose(1, 2)  # [B, Hk, T, D]
        if col is None:  # write at column c0, attend to the columns filled so far
            kc[:, :, c0:c0 + n] = k_new
            vc[:, :, c0:c0 + n] = v_new
            keys, values = kc[:, :, :c0 + n], vc[:, :, :c0 + n]
        else:
            # Fixed shapes for a CUDA graph: the column comes from the device tensor col [1],
            # and attention spans the whole capacity under the validity mask.
            kc.index_copy_(2, col, k_new)
            vc.index_copy_(2, col, v_new)
            keys, values = kc, vc
        if prefill:
            q = qk[:, :, :hq].transpose(1, 2)  # [B, Hq, T, D]
            o = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=self.scale, enable_gqa=hq != hk)
            o = o.transpose(1, 2).reshape(b, n, hq * d)
        else:
            # One new token: the q heads that share a kv head become that head's query rows,
            # so the cached keys are read once instead of repeated per q head.
            q = qk[:, 0, :hq].reshape(b, hk, hq // hk, d)  # [B, Hk, rep, D]
            o = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=self.scale)
            o = o.reshape(b, 1, hq * d)
        x = x + t.o(o)
        g, u = t.gate_up(_norm(x, t.ln2, t.ln2_eps)).chunk(2, dim=-1)
        return x + t.down(F.silu(g) * u)

    def _run(self, ids: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor, prefill: bool) -> torch.Tensor:
        x = self.embed(ids)  # [B, T, H]
        cos, sin = self.cos[pos][:, :, None], self.sin[pos][:, :, None]  # [B, T, 1, D]
        c0 = self.length
        for t, kc, vc in zip(self.layers, self.k, self.v):
            x = self._layer(t, kc, vc, x, cos, sin, mask, c0, prefill)
        self.length = c0 + ids.shape[1]
        return _norm(x, self.final_w, self.final_eps)  # [B, T, H]

    @torch.no_grad()
    def static_step(self, tokens: torch.Tensor, pos: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        """`step` with fixed shapes, for graph capture: writes cache column col[0] (the
        caller sets it and marks it valid) and returns logits [B, V]. Same values as
        `step` up to the order of additions inside attention."""
        x = self.embed(tokens[:, None])  # [B, 1, H]
        cos, sin = self.cos[pos[:, None]][:, :, None], self.sin[pos[:, None]][:, :, None]  # [B, 1, 1, D]
        mask = self.valid[:, None, None, :]  # [B, 1, 1, capacity]
        for t, kc, vc in zip(self.layers, self.k, self.v):
            x = self._layer(t, kc, vc, x, cos, sin, mask, 0, False, col)
        return self.logits(_norm(x, self.final_w, self.final_eps)[:, -1])

    @torch.no_grad()
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(hidden)

    @torch.no_grad()
    def prefill(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Hidden states after the final norm over the prompts [B, P, H] (cache filled)."""
        self._allocate(ids, mask)
        p = ids.shape[1]
        causal = torch.ones(p, p, dtype=torch.bool, device=ids.device).tril()
        # A padding position attends to itself only, so its row of the softmax is never empty.
        attn = (causal & self.valid[:, None, :p]) | torch.eye(p, dtype=torch.bool, device=ids.device)
        return self._run(ids, pos, attn[:, None], prefill=True)

    @torch.no_grad()
    def prefill_logits(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Logits at each row's last prompt position [B, V] (cache filled): those of
        `prefill`'s last hidden states, from one C call when the whole step is in use (a
        padding position there attends to nothing and is never attended to)."""
        if self.whole is None:
            return self.logits(self.prefill(ids, mask, pos)[:, -1])
        self._allocate(ids, mask)
        logits = self.whole(ids, pos, 0, self.valid, threads=self.threads)  # [B, P, V]
        self.length = ids.shape[1]
        return logits[:, -1]

    def _allocate(self, ids: torch.Tensor, mask: torch.Tensor) -> None:
        """Empty caches for the batch, the prompt's columns marked valid where mask is set."""
        b, p = ids.shape
        self.rows = None
        if p > self.capacity:
            raise ValueError(f"prompt of {p} tokens exceeds the cache capacity {self.capacity}")
        shape = (b, self.n_kv, self.columns, self.head_dim)
        # Zeros, not empty: the static step reads every column, and a masked NaN still poisons a softmax sum.
        alloc = torch.zeros if self.static else torch.empty
        if self.native is not None:
            # Keys stored [B, Hk, D, columns] (the C kernel's layout) and used through a
            # transposed view; zeros, since the kernel reads whole blocks past the last column.
            kt = (b, self.n_kv, self.head_dim, self.columns)
            self.k = [torch.zeros(kt, dtype=self.dtype, device=ids.device).transpose(2, 3) for _ in self.layers]
        else:
            self.k = [alloc(shape, dtype=self.dtype, device=ids.device) for _ in self.layers]
        self.v = [alloc(shape, dtype=self.dtype, device=ids.device) for _ in self.layers]
        self._point_whole_step()
        self.valid = torch.zeros(b, self.columns, dtype=torch.bool, device=ids.device)
        self.valid[:, :p] = mask.bool()
        self.length = 0

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        if self.length >= self.capacity:
            raise ValueError(f"the KV cache is full ({self.capacity} positions)")
        self.valid[:, self.length] = True
        if self.whole is not None:
            logits = self.whole(tokens, pos, self.length, self.valid, threads=self.threads,
                                min_rows=WHOLE_STEP_MIN_ROWS, rows=self.rows)
            self.length += 1
            return logits
        self.packs.fit(tokens.shape[0])
        if self.native is not None:
            return self._native_step(tokens, pos)
        mask = self.valid[:, None, None, :self.length + 1]  # [B, 1, 1, S]
        hidden = self._run(tokens[:, None], pos[:, None], mask, prefill=False)
        return self.logits(hidden[:, -1])

    def _native_step(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """`step` with grpokit's C kernels between the products, and residual additions
        folded into the o and down products."""
        lib, col = self.native, self.length
        pos = pos.contiguous()
        x = self.embed(tokens[:, None])  # [B, 1, H]
        for t, kc, vc in zip(self.layers, self.k, self.v):
            qkv = t.qkv(native_ops.rms_norm(lib, x, t.ln1, t.ln1_eps))
            o = native_ops.decode_attention(lib, qkv, heads=self.n_heads, kv_heads=self.n_kv, head_dim=self.head_dim,
                                            cos=self.cos, sin=self.sin, pos=pos, k_cache=kc, v_cache=vc, column=col,
                                            valid=self.valid, scale=self.scale)
            x = t.o(o, residual=x)
            g, u = t.gate_up(native_ops.rms_norm(lib, x, t.ln2, t.ln2_eps)).chunk(2, dim=-1)
            x = t.down(F.silu(g) * u, residual=x)
        self.length = col + 1
        return self.logits(native_ops.rms_norm(lib, x[:, -1], self.final_w, self.final_eps))

    def select(self, keep: torch.Tensor) -> None:
        if self.whole is not None and keep.numel() and bool((keep[1:] > keep[:-1]).all()):
            # Rows only leave: the whole step reads each remaining row's cache where it is.
            self.rows = keep if self.rows is None else self.rows[keep]
            return
        if self.rows is not None:  # copies from where the rows' caches are
            keep, self.rows = self.rows[keep], None
        if self.native is not None:  # keep the keys' [B, Hk, D, columns] storage
            self.k = [k.transpose(2, 3).index_select(0, keep).transpose(2, 3) for k in self.k]
        else:
            self.k = [k.index_select(0, keep) for k in self.k]
        self.v = [v.index_select(0, keep) for v in self.v]
        self.valid = self.valid.index_select(0, keep)
        self._point_whole_step()

    def _point_whole_step(self) -> None:
        if self.whole is not None:
            self.whole.caches([k.transpose(2, 3) for k in self.k], self.v)


def whole_step_reason(model, max_bytes: int | None = None) -> str | None:
    """None when LeanDecoder runs `model`'s one-token step as one C call (`native.step`);
    else why it does not. max_bytes: the bound on its weights (default
    WHOLE_STEP_MAX_BYTES, read at call time)."""
    reason = unsupported_reason(model)
    if reason:
        return reason
    base = base_model(model)
    head = base.get_output_embeddings()
    if head.weight.dtype != torch.float32 or head.weight.device.type != "cpu":
        return "weights not float32 on a CPU"
    if native.library() is None:
        return "no C kernels"
    cfg, dec = base.config, base.model
    heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    if not native_step.supported(hidden=cfg.hidden_size, inter=dec.layers[0].mlp.gate_proj.weight.shape[0],
                                 head_dim=dec.layers[0].self_attn.head_dim, heads=heads, kv_heads=kv_heads):
        return f"hidden size, MLP width or head dim not a multiple of {native.LANES}"
    mods = [head] + [m for layer in dec.layers for m in (layer.self_attn, layer.mlp)]
    limit = WHOLE_STEP_MAX_BYTES if max_bytes is None else max_bytes
    if sum(p.numel() * 4 for m in mods for p in m.parameters()) > limit:
        return f"more than {limit >> 20} MiB of weights"
    return None


def whole_step_weights(lib, base, heads: int, kv_heads: int, head_dim: int, scale: float, cos: torch.Tensor,
                sin: torch.Tensor, backward: bool = False) -> native_step.WholeStep:
    """`base`'s weights in the whole step's layout (whole_step_reason(base) is None);
    backward: with the panels the C training pass needs too."""
    dec = base.model
    head = base.get_output_embeddings()

    def cat_bias(*mods):
        return None if mods[0].bias is None else torch.cat([m.bias.detach() for m in mods])

    layers = []
    for layer in dec.layers:
        a, m = layer.self_attn, layer.mlp
        layers.append(native_step.LayerWeights(
            ln1=layer.input_layernorm.weight, eps1=layer.input_layernorm.variance_epsilon,
            q=a.q_proj.weight.detach(), k=a.k_proj.weight.detach(), v=a.v_proj.weight.detach(),
            qkv_bias=cat_bias(a.q_proj, a.k_proj, a.v_proj), o=a.o_proj.weight.detach(),
            o_bias=_detached(a.o_proj.bias), ln2=layer.post_attention_layernorm.weight,
            eps2=layer.post_attention_layernorm.variance_epsilon, gate=m.gate_proj.weight.detach(),
            up=m.up_proj.weight.detach(), gate_up_bias=cat_bias(m.gate_proj, m.up_proj),
            down=m.down_proj.weight.detach(), down_bias=_detached(m.down_proj.bias)))
    return native_step.WholeStep(lib, layers, embed=dec.embed_tokens, final_w=dec.norm.weight,
                                 final_eps=dec.norm.variance_epsilon, head=head.weight.detach(),
                                 head_bias=_detached(head.bias), cos=cos, sin=sin, heads=heads,
                                 kv_heads=kv_heads, head_dim=head_dim, scale=scale, backward=backward)
