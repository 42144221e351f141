"""How the policy's weights are laid out over the ranks: replicated (every rank holds
the whole model; gradients summed by grpokit.dist) or sharded with torch's FSDP2
(`fully_shard`: every rank holds 1/W of the parameters, gradients and optimizer state).

`run.parallel` chooses: `ddp` (replicated), `fsdp` (sharded), or `auto`: sharded when
the launcher asked for FSDP (accelerate launch with an FSDP config sets
ACCELERATE_USE_FSDP=true), replicated otherwise.

What sharding changes in a step, and why:
- Sampling and evaluation need whole weights, while ranks decode different numbers of
  tokens (a collective per layer per token would deadlock). `full_weights()` gathers
  every shard once before sampling and frees the gathered copies after, so decoding
  runs without any collective.
- Phase 4's forward and backward passes gather each decoder layer's weights as they
  reach it and reduce-scatter its gradients: every rank must run the same number of
  passes. update.py and the reference pass pad a rank that has fewer micro-batches
  with zero-loss passes (`Sharded.lockstep`).
- The training pass calls the decoder and the output layer directly, not the model's
  forward, so the model is wrapped in `_Root`, whose forward is the pass: FSDP's root
  hooks (gather the embeddings and head, reduce their gradients) run around it.
- Gradients are summed over ranks, not averaged (each rank's loss already carries the
  whole batch's normaliser; see dist.sum_gradients).
- Checkpoints hold full tensors gathered to rank 0, so a checkpoint loads into a plain
  model (`--model run/checkpoints/step-N`) and resumes a sharded run.
"""
from __future__ import annotations

import copy
import os
from contextlib import contextmanager
from typing import Iterator

import torch

from grpokit import dist
from grpokit.model.forward import TorchPass, batch_logprobs

PARALLEL_MODES = ("auto", "ddp", "fsdp")


def resolve_mode(mode: str) -> str:
    """`ddp` or `fsdp` for run.parallel (auto: what the launcher asked for)."""
    if mode not in PARALLEL_MODES:
        raise ValueError(f"run.parallel = {mode!r}: expected one of {', '.join(PARALLEL_MODES)}")
    if mode == "auto":
        return "fsdp" if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true") else "ddp"
    return mode


class Replicated:
    """Every rank holds the whole model (data-parallel; gradients summed in update.py)."""

    name = "ddp"
    sharded = False

    def __init__(self, world: dist.World):
        self.world = world

    def prepare(self, model: torch.nn.Module, reference: torch.nn.Module | None = None) -> None:
        dist.broadcast_parameters(self.world, model)  # every rank starts from rank 0's weights
        if reference is not None and reference is not model:
            dist.broadcast_parameters(self.world, reference)

    @contextmanager
    def full_weights(self, model) -> Iterator[None]:
        yield

    def model_state(self, model) -> dict | None:
        return None  # save_checkpoint reads the model itself

    def export_copy(self, model, state: dict | None):
        return model  # the final model is saved from the live one

    def optimizer_state(self, model, optimizer) -> dict:
        return optimizer.state_dict()

    def load_optimizer_state(self, model, optimizer, state: dict) -> None:
        optimizer.load_state_dict(state)


class _Root(torch.nn.Module):
    """The FSDP root around a causal LM: its forward is the training pass, so FSDP
    gathers the root's own parameters (embeddings, final norm, output layer) around the
    pass and reduces their gradients after backward."""

    def __init__(self, model: torch.nn.Module, inner: TorchPass):
        super().__init__()
        self.model = model
        self.inner = inner

    def forward(self, input_ids, attention_mask, loss_mask, prompt_len: int, temperature: float,
                with_entropy: bool):
        return self.inner.policy_logprobs(self.model, input_ids, attention_mask, loss_mask, prompt_len=prompt_len,
                                          temperature=temperature, with_entropy=with_entropy)


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The decoder's layer list (one FSDP unit each); [] when the model has none we know."""
    from grpokit.model.forward import base_model

    decoder = base_model(model).get_decoder()
    layers = getattr(decoder, "layers", None)
    return list(layers) if layers is not None else []


class Sharded:
    """FSDP2: each decoder layer and the root (`_Root`) are `fully_shard` units over
    all ranks. Gradients are reduced as sums; sampling runs inside full_weights()."""

    name = "fsdp"
    sharded = True

    def __init__(self, world: dist.World, inner: TorchPass):
        self.world = world
        self.inner = inner
        self.roots: dict[int, _Root] = {}  # id(model) -> its root
        self._skeletons: dict[int, torch.nn.Module] = {}  # id(model) -> weightless copy (export_copy)
        self._depth = 0

    def prepare(self, model: torch.nn.Module, reference: torch.nn.Module | None = None) -> None:
        from torch.distributed.fsdp import fully_shard

        for m in (model, reference):
            if m is None or id(m) in self.roots:
                continue
            dist.broadcast_parameters(self.world, m)  # shards are cut from rank 0's weights
            if m is model:
                self._skeletons[id(m)] = _skeleton(m)
            layers = decoder_layers(m)
            if not layers:
                raise ValueError(f"run.parallel=fsdp: {type(m).__name__} has no decoder layer list to shard "
                                 "(get_decoder().layers)")
            for layer in layers:
                fully_shard(layer)
            root = _Root(m, self.inner)
            # The root's own parameters are freed after every forward too (FSDP keeps a
            # root's gathered by default): a no-grad forward (the reference, replayed rows)
            # would otherwise leave them whole, and the optimizer must see shards.
            fully_shard(root, reshard_after_forward=True)
            for unit in root.modules():
                if hasattr(unit, "set_gradient_divide_factor"):
                    # sums, not means; gloo has no pre-multiplied sum, so ask for plain sums
                    unit.set_gradient_divide_factor(1.0)
                    unit.set_force_sum_reduction_for_comms(True)
            self.roots[id(m)] = root
            self._first_forward(root)

    @staticmethod
    @torch.no_grad()
    def _first_forward(root: _Root) -> None:
        # FSDP decides which unit is the root at its first forward: make it the root's,
        # before any sampling runs a layer on its own.
        root(*_token_pair(next(root.parameters()).device), 0, 1.0, False)

    @contextmanager
    def full_weights(self, model) -> Iterator[None]:
        """Every FSDP unit of `model` gathered (a collective: all ranks enter together)
        and kept whole across forwards, then freed. Re-entrant."""
        self._depth += 1
        if self._depth > 1:
            try:
                yield
            finally:
                self._depth -= 1
            return
        root = self.roots[id(model)]
        units = [u for u in root.modules() if hasattr(u, "unshard")]
        try:
            for u in units:
                u.unshard()
            root.set_reshard_after_forward(False)
            yield
        finally:
            self._depth -= 1
            root.set_reshard_after_forward(True)
            for u in units:
                u.reshard()

    def root(self, model) -> _Root:
        return self.roots[id(model)]

    def _options(self):
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(full_state_dict=True, cpu_offload=True)

    def model_state(self, model) -> dict:
        """The whole model's tensors on rank 0's CPU ({} elsewhere). A collective."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        state = get_model_state_dict(model, options=self._options())
        # Tied weights (embeddings and output layer) arrive as separate copies; one tensor
        # under both names lets save_pretrained write it once, as it does for the plain model.
        first: dict[int, str] = {}
        for name, param in model.named_parameters(remove_duplicate=False):
            if name in state:
                state[name] = state[first.setdefault(id(param), name)]
        return state

    def export_copy(self, model, state: dict):
        """On rank 0, an unsharded CPU copy of `model` holding `state` (model_state's
        whole tensors), to save the final model from: a LoRA model is merged on it,
        which the sharded model cannot be. None on the other ranks."""
        if not self.world.main:
            return None
        plain = self._skeletons[id(model)].to_empty(device="cpu")
        plain.load_state_dict(state)
        from grpokit.model.forward import base_model

        base_model(plain).tie_weights()  # to_empty gave tied names separate tensors again
        return plain

    def optimizer_state(self, model, optimizer) -> dict:
        """The optimizer's whole state keyed by parameter name, on rank 0 ({} elsewhere)."""
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        return get_optimizer_state_dict(model, optimizer, options=self._options())

    def load_optimizer_state(self, model, optimizer, state: dict) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(model, optimizer, optim_state_dict=state,
                                 options=StateDictOptions(full_state_dict=True))


def _token_pair(device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, loss_mask) of one two-token row whose second token is
    scored: the smallest pass through every layer, for passes that must only happen."""
    ids = torch.zeros(1, 2, dtype=torch.long, device=device)
    return ids, torch.ones_like(ids), torch.tensor([[0, 1]], device=device)


def _skeleton(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model` whose parameters are on the meta device (no memory, no data);
    buffers are copied (small, and not all of them are in a state dict)."""
    memo = {id(p): torch.nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
            for p in model.parameters()}
    return copy.deepcopy(model, memo)


class ShardedPass:
    """The TrainingPass of a sharded model: the plain torch pass run through the model's
    FSDP root, with every rank running the same number of passes (`lockstep`)."""

    sharded = True

    def __init__(self, sharding: Sharded):
        self.sharding = sharding

    def policy_logprobs(self, model, input_ids, attention_mask, loss_mask, *, prompt_len: int, temperature: float,
                        with_entropy: bool = False):
        return self.sharding.root(model)(input_ids, attention_mask, loss_mask, prompt_len, temperature,
                                         with_entropy)

    def lockstep(self, model, n_local: int, *, backward: bool) -> None:
        """Pad this rank's n_local passes to the most any rank runs, with passes that
        change nothing (a zero loss's backward adds zero gradients). Call it before the
        rank's own passes: it starts with a collective every rank must reach."""
        extra = int(dist.maximum(self.sharding.world, n_local)) - n_local
        for _ in range(extra):
            lp, _ = self.policy_logprobs(model, *_token_pair(next(model.parameters()).device), prompt_len=0,
                                         temperature=1.0)
            if backward:
                (lp.sum() * 0.0).backward()

    def reference_logprobs(self, model, batch, *, temperature: float, micro_batch_size: int = 0) -> torch.Tensor:
        # padded first, while every rank is at the same point (the count is itself a collective)
        return batch_logprobs(self.policy_logprobs, model, batch, temperature=temperature,
                              micro_batch_size=micro_batch_size,
                              before=lambda n: self.lockstep(model, n, backward=False))


def train_state_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """Bytes this rank holds for parameters, gradients and optimizer state (a sharded
    tensor counts its local shard only): the memory FSDP divides over ranks."""
    def local(t: torch.Tensor) -> torch.Tensor:
        return t.to_local() if hasattr(t, "to_local") else t

    def nbytes(t) -> int:
        t = local(t)
        return t.numel() * t.element_size()

    params = list(model.parameters())  # tied weights once
    p = sum(nbytes(q) for q in params)
    g = sum(nbytes(q.grad) for q in params if q.grad is not None)
    o = sum(nbytes(v) for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v) and v.dim() > 0)
    mib = 2.0 ** 20
    return {"memory/params_mib": p / mib, "memory/grads_mib": g / mib, "memory/optimizer_mib": o / mib}


def setup(mode: str, world: dist.World, comp) -> Replicated | Sharded:
    """The layout for build.py's Components: every rank's policy (and reference copy)
    made equal, and under FSDP sharded, with comp.passes replaced by the pass that runs
    through the FSDP root. Call before making the optimizer (it must see the shards)."""
    reference = comp.reference.model if comp.reference is not None else None
    if mode == "fsdp":
        # One decoder call per pass, whatever the rows: the shared prompt pass calls the
        # decoder twice when rows share a prompt and once otherwise, and a different number
        # of layer calls on two ranks is a different number of collectives (a deadlock).
        layout = Sharded(world, TorchPass(share_prompt=False))
        layout.prepare(comp.policy.model, reference)
        comp.passes = ShardedPass(layout)
        return layout
    layout = Replicated(world)
    layout.prepare(comp.policy.model, reference)
    return layout
