"""A Sampler backed by a colocated vLLM engine (`rollout.backend: vllm`).

    sampler = VLLMSampler(model, tokenizer, eos_ids=..., pad_id=..., options=cfg.rollout.vllm,
                          max_model_len=..., seed=cfg.run.seed)
    out = sampler.sample(prompt_ids, SamplingParams(max_new_tokens=64), generator=g)
    ...optimizer step...
    sampler.sync_weights(model)

The engine (`vllm.LLM`, in this process) is built once from the policy: its weights
(LoRA merged into them) and tokenizer are written to a temporary Hugging Face directory,
the only form vLLM loads. After every optimizer step `sync_weights` copies the policy's
current weights into vLLM's model (`load_weights` of the model the engine runs) and
clears the prefix cache, whose KV entries belong to the old weights.

Sampling means what it means under grpokit's own samplers: temperature 0 is greedy,
top-p, stop strings (the row ends after the token that completes one; stop_reason
"stop:<s>"), EOS ids, per-row token budgets. Prompts go in as token ids, never as text,
so a multi-turn context is sampled exactly as the loop built it. Randomness: one seed
per row, drawn from the trainer's generator, so a run reproduces.

Log-probs: vLLM is asked for `processed_logprobs`, the log-probs of the distribution it
sampled from (after temperature and top-p); the trainer recomputes log softmax(logits /
T), which is the same distribution when top_p = 1. `raw_logprobs` (vLLM's default) would
be temperature 1 and so not the sampling distribution at any other temperature. Greedy
rows get temperature-1 log-probs, as with grpokit's samplers.

On a GPU with `rollout.vllm.sleep_mode`, the engine sleeps (level 2: KV cache and weights
freed) after each sample call, so the trainer has the memory; `sync_weights` wakes the
weights and loads the new ones, and the KV cache wakes at the next sample call.

Prompt embeddings (the semantic/adaptive groupers): vLLM's generate does not return
hidden states, so they come from one batched no-grad forward of the policy over the
distinct prompts (mean last hidden state over each prompt, as grpokit's samplers do).
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Sequence

import torch

from grpokit.types import GenerationOutput, SamplingParams

log = logging.getLogger("grpokit")

__all__ = ["SamplingParams", "VLLMSampler", "load_weights", "merged_state_dict", "prompt_embeddings", "save_hf_dir", "vllm_sampler"]


SEED_LIMIT = 2**31 - 1


def merged_state_dict(model) -> dict[str, torch.Tensor]:
    """The weights vLLM should run, under the plain Hugging Face names: the model's own
    state dict, or for a PEFT LoRA model the base weights with every active adapter's
    delta (B A x scale) added in, and the PEFT prefixes removed."""
    try:
        from peft import PeftModel
        from peft.tuners.lora import LoraLayer
    except ImportError:  # peft is a dependency; without it there is no LoRA model either
        PeftModel = LoraLayer = ()  # type: ignore[assignment]
    with torch.no_grad():
        if not isinstance(model, PeftModel):
            return {k: v.detach() for k, v in model.state_dict().items()}
        base = model.get_base_model()
        out = {k.replace(".base_layer.", "."): v.detach() for k, v in base.state_dict().items() if "lora_" not in k}
        for name, mod in base.named_modules():
            if isinstance(mod, LoraLayer):
                w = mod.get_base_layer().weight.detach()
                for adapter in mod.active_adapters:
                    if adapter in mod.lora_A and not mod.merged:
                        w = w + mod.get_delta_weight(adapter).to(w.dtype)
                out[f"{name}.weight"] = w
        return out


def prompt_embeddings(model, prompt_ids: Sequence[Sequence[int]], *, pad_id: int, batch_size: int = 0) -> torch.Tensor:
    """[N, H] mean last hidden state of the model over each prompt (CPU, float32): one
    no-grad forward per `batch_size` distinct prompts (0 = all at once)."""
    index: dict[tuple, int] = {}
    rows = [index.setdefault(tuple(p), len(index)) for p in prompt_ids]
    unique = [list(p) for p in index]
    device = next(model.parameters()).device
    bs = batch_size if batch_size > 0 else len(unique)
    parts = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for s in range(0, len(unique), bs):
            chunk = unique[s:s + bs]
            width = max(len(c) for c in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)  # [b, P], left-padded
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, c in enumerate(chunk):
                if c:
                    ids[i, width - len(c):] = torch.tensor(c)
                    mask[i, width - len(c):] = 1
            pos = (mask.cumsum(1) - 1).clamp_min(0)
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device),
                        output_hidden_states=True, use_cache=False, logits_to_keep=1)
            m = mask.to(device).unsqueeze(-1).float()  # [b, P, 1]
            parts.append(((out.hidden_states[-1].float() * m).sum(1) / m.sum(1).clamp_min(1.0)).cpu())
    if was_training:
        model.train()
    return torch.cat(parts)[torch.tensor(rows)]


class VLLMSampler:
    """Colocated vLLM engine behind the Sampler contract (`sample`, `sync_weights`)."""

    def __init__(self, model, tokenizer, *, eos_ids: set[int], pad_id: int, options=None, max_model_len: int,
                 seed: int = 0):
        """options: a `config.schema.VLLMConfig` (rollout.vllm); max_model_len is used
        when options.max_model_len is 0."""
        if options is None:
            from grpokit.config.schema import VLLMConfig

            options = VLLMConfig()
        self.tokenizer = tokenizer
        self.eos_ids = set(eos_ids)
        self.pad_id = pad_id
        self.options = options
        self.model = model  # the policy, for prompt embeddings and re-sync after sleep
        self.forward_calls = 0
        self.sleeping = _on_cuda(model) and options.sleep_mode
        self.asleep: set[str] = set()  # "weights", "kv_cache" while freed
        self._dir = tempfile.TemporaryDirectory(prefix="grpokit-vllm-")
        save_hf_dir(model, tokenizer, Path(self._dir.name))
        self.llm = _build_engine(self._dir.name, model, options, max_model_len=options.max_model_len or max_model_len,
                                 seed=seed if options.seed is None else options.seed, sleep=self.sleeping)

    # -- the Sampler contract ------------------------------------------------------------

    def sample(self, prompt_ids: Sequence[Sequence[int]], params, *, generator: torch.Generator | None = None,
               budgets: Sequence[int] | None = None) -> GenerationOutput:
        n = len(prompt_ids)
        budgets = [params.max_new_tokens] * n if budgets is None else [int(b) for b in budgets]
        if len(budgets) != n:
            raise ValueError(f"budgets has {len(budgets)} entries for {n} prompts")
        # Drawn whatever the temperature, so the generator's stream does not depend on it.
        seeds = (torch.randint(0, SEED_LIMIT, (n,), generator=generator).tolist() if generator is not None
                 else [None] * n)
        tokens: list[list[int]] = [[] for _ in range(n)]
        logps: list[list[float]] = [[] for _ in range(n)]
        reasons = ["length"] * n
        live = [i for i in range(n) if budgets[i] > 0]
        if live:
            self._wake()
            outs = self.llm.generate([{"prompt_token_ids": list(prompt_ids[i])} for i in live],
                                     [self._params(params, budgets[i], seeds[i]) for i in live], use_tqdm=False)
            for i, out in zip(live, outs):
                tokens[i], logps[i], reasons[i] = _read(out.outputs[0])
            self._sleep()
        emb = None
        if params.return_embeddings and n:
            emb = prompt_embeddings(self.model, prompt_ids, pad_id=self.pad_id, batch_size=params.batch_size)
        return GenerationOutput(tokens, logps, [r != "length" for r in reasons], reasons, emb,
                                max((len(t) for t in tokens), default=0))

    def sync_weights(self, model) -> None:
        """Load `model`'s current weights (LoRA merged) into the engine and drop the
        prefix cache computed with the old ones."""
        self.model = model
        if "weights" in self.asleep:
            self.llm.wake_up(tags=["weights"])
            self.asleep.discard("weights")
        load_weights(self.llm, merged_state_dict(model))
        self.llm.reset_prefix_cache()

    # -- details -------------------------------------------------------------------------

    def _params(self, params, budget: int, seed):
        import vllm

        return vllm.SamplingParams(
            n=1, temperature=float(params.temperature), top_p=float(params.top_p), max_tokens=budget,
            stop=list(params.stop_strings) or None, include_stop_str_in_output=True,
            stop_token_ids=sorted(self.eos_ids), logprobs=0, seed=seed,
            skip_special_tokens=False, spaces_between_special_tokens=False)

    def _wake(self) -> None:
        if not self.asleep:
            return
        if "weights" in self.asleep:  # slept without a sync since: reload the policy's weights
            self.sync_weights(self.model)
        if not self.llm.wake_up(tags=["kv_cache"]):
            self.llm.wake_up()  # whatever else the sleep paused
        self.asleep.clear()

    def _sleep(self) -> None:
        if self.sleeping:
            self.llm.sleep(level=2)
            self.asleep = {"weights", "kv_cache"}


def _on_cuda(model) -> bool:
    """Whether the policy lives on a CUDA device (sleep mode is a GPU feature)."""
    return next(model.parameters()).device.type == "cuda"


def vllm_sampler(cfg, policy) -> VLLMSampler:
    """The sampler of a TrainConfig with rollout.backend vllm, for `policy`
    (a model.policy.Policy). A prompt is cut to data.max_prompt_tokens and a completion,
    tool results included, gets rollout.max_new_tokens: their sum bounds a sequence."""
    return VLLMSampler(policy.model, policy.tokenizer, eos_ids=policy.eos_ids, pad_id=policy.tokenizer.pad_token_id,
                       options=cfg.rollout.vllm, max_model_len=cfg.data.max_prompt_tokens + cfg.rollout.max_new_tokens,
                       seed=cfg.run.seed)


def _read(completion) -> tuple[list[int], list[float], str]:
    """(token ids, sampling log-probs, stop reason) of one vLLM CompletionOutput."""
    ids = list(completion.token_ids)
    lps = [float(completion.logprobs[t][tok].logprob) for t, tok in enumerate(ids)]
    if completion.finish_reason == "length":
        reason = "length"
    elif isinstance(completion.stop_reason, str):
        reason = f"stop:{completion.stop_reason}"
    else:  # None (the tokenizer's EOS) or an id from stop_token_ids: both are our EOS ids
        reason = "eos"
    return ids, lps, reason


def save_hf_dir(model, tokenizer, path: Path) -> None:
    """config.json, model.safetensors (LoRA merged) and the tokenizer files: a directory
    vLLM can load. Tied output embeddings are written once."""
    from safetensors.torch import save_file

    try:
        from peft import PeftModel
    except ImportError:
        PeftModel = ()  # type: ignore[assignment]
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    config = base.config
    config.save_pretrained(path)
    state = merged_state_dict(model)
    if getattr(config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    save_file({k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}, str(path / "model.safetensors"))
    tokenizer.save_pretrained(path)


def _build_engine(path: str, model, options, *, max_model_len: int, seed: int, sleep: bool):
    # In-process engine: the weight sync reaches the model object directly. vLLM reads
    # its environment lazily, so this holds if set before the engine is built.
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{options.cpu_kvcache_gib:g}")
    import vllm

    dtype = options.dtype if options.dtype != "auto" else str(next(model.parameters()).dtype).removeprefix("torch.")
    threads = torch.get_num_threads()
    kwargs = dict(model=path, tokenizer=path, dtype=dtype, seed=seed, max_model_len=max_model_len,
                  gpu_memory_utilization=options.gpu_memory_utilization, enforce_eager=options.enforce_eager,
                  enable_prefix_caching=options.prefix_caching, logprobs_mode="processed_logprobs",
                  # the sampling settings are ours: not the defaults in the model's generation_config.json
                  generation_config="vllm")
    if sleep:
        kwargs["enable_sleep_mode"] = True
    llm = vllm.LLM(**kwargs)
    torch.set_num_threads(threads)  # vLLM's CPU worker sets its own; the trainer keeps its setting
    return llm


def engine_model(llm):
    """The torch module vLLM runs (one worker: this process's, or the first one's); for tests."""
    return llm.apply_model(lambda m: m)[0]


def load_weights(llm, weights: dict[str, torch.Tensor]) -> None:
    """Replace the engine's weights in place with `weights` (Hugging Face names and
    layout), through the worker's `reload_weights` (vLLM >= 0.1x): the model's own
    `load_weights` maps names and fuses q/k/v and gate/up, and the layer-wise reload
    redoes what loading does after it (the CPU backend repacks linear weights for
    oneDNN, so a bare `model.load_weights` after start-up fails there). In this
    in-process engine the call is direct: the tensors are not serialised."""
    llm.collective_rpc("reload_weights", kwargs={"weights_iterator": list(weights.items()),
                                                 "is_checkpoint_format": True})
