"""Config -> components. The only place where names in a recipe become objects."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Callable

from grpokit.config.schema import AlgorithmConfig, TrainConfig
from grpokit.rollout.generate import StepSampler
from grpokit.types import Example, Sampler, TrainingPass

log = logging.getLogger("grpokit")


@dataclass
class Components:
    policy: object  # grpokit.model.policy.Policy
    reference: object | None  # grpokit.model.policy.Reference, only when beta > 0
    rewards: object  # grpokit.rewards.RewardSet
    grouper: Callable  # Experience -> group ids [N] or grouping.Groups; may carry state (see types.Grouper)
    advantage_fn: Callable
    algorithm: AlgorithmConfig  # preset resolved: no None fields
    train_examples: list[Example]
    eval_examples: list[Example]
    sampler: Sampler  # rollout.backend's sampler (in the multi-turn tool loop with tools)
    passes: TrainingPass  # policy / reference log-probs: plain torch or the CPU engine
    release_memory: Callable[[], bool] = field(default=lambda: False)  # run.release_memory


def task_name(spec: str) -> str | None:
    """NAME[?OPTIONS] of a `task:` data spec (what get_task takes), else None."""
    from grpokit.tasks import split_task_spec

    return split_task_spec(spec)[0] if spec.startswith("task:") else None


def default_eval_spec(train_spec: str) -> str | None:
    from grpokit.tasks import task_spec

    name = task_name(train_spec)
    return task_spec(name, "test") if name else None


def reward_specs(cfg: TrainConfig) -> list[tuple[str, float, dict]]:
    if cfg.rewards:
        return [(r.name, r.weight, dict(r.kwargs)) for r in cfg.rewards]
    name = task_name(cfg.data.train)
    if name:
        from grpokit.tasks import get_task

        return [(n, w, {}) for n, w in get_task(name).default_rewards]
    return [("accuracy", 1.0, {})]


def build(cfg: TrainConfig, *, model_path: str | None = None) -> Components:
    """Build every component the training loop needs. model_path overrides the model
    directory (used when resuming from a checkpoint)."""
    import dataclasses

    from grpokit.algo.advantages import ADVANTAGES
    from grpokit.tasks.data import load_prompts
    from grpokit.grouping import make_grouper
    from grpokit.model.limits import check_prompt_lengths
    from grpokit.model.policy import Reference, load_policy
    from grpokit.config.presets import resolve_algorithm
    from grpokit.config.validation import group_options
    from grpokit.rewards import RewardSet

    algo = resolve_algorithm(cfg.algorithm)
    train = load_prompts(cfg.data.train, prompt_field=cfg.data.prompt_field, split="train", seed=cfg.run.seed)
    eval_spec = cfg.data.eval or default_eval_spec(cfg.data.train)
    evals: list[Example] = []
    if eval_spec:
        evals = load_prompts(eval_spec, prompt_field=cfg.data.prompt_field, split="test",
                             n=cfg.data.eval_size or None, seed=cfg.run.seed)
        if cfg.data.eval_size:
            evals = evals[: cfg.data.eval_size]
    rewards = RewardSet(reward_specs(cfg))
    rewards.check_examples(train, f"data.train {cfg.data.train!r}")  # an unreadable answer fails now, not as 0s
    rewards.check_examples(evals, f"data.eval {eval_spec!r}")
    model_cfg = cfg.model if model_path is None else dataclasses.replace(cfg.model, name_or_path=model_path)
    fit = [e.prompt if isinstance(e.prompt, str) else str(e.prompt) for e in train[:5000]]
    policy = load_policy(model_cfg, fit_texts=fit, seed=cfg.run.seed)
    for examples, key in ((train, "data.train"), (evals, "data.eval")):
        check_prompt_lengths(policy.model, policy.tokenizer, examples, max_prompt_tokens=cfg.data.max_prompt_tokens,
                             max_new_tokens=cfg.rollout.max_new_tokens, system_prompt=cfg.data.system_prompt,
                             source=f"{key} {(cfg.data.train if key == 'data.train' else eval_spec)!r}")
    reference = None
    if algo.beta > 0:
        # On resume the policy comes from a checkpoint; the reference is still the run's
        # starting model (cfg.model), or the KL would pull toward the checkpoint. Under
        # LoRA the base weights are cfg.model's anyway (the adapter is loaded separately).
        start = policy if model_path is None or policy.is_lora else load_policy(cfg.model, fit_texts=fit,
                                                                                seed=cfg.run.seed)
        reference = Reference(start)
    # both after the reference copy, which never trains
    if cfg.optim.lean_activations and engine_enabled() and not sharded(cfg):
        from grpokit.engine import lean_train

        if not lean_train.install(policy.model):
            log.info("lean activations not used: %s", lean_train.unsupported_reason(policy.model))
    if cfg.optim.gradient_checkpointing:
        policy.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return Components(
        policy=policy, reference=reference, rewards=rewards,
        grouper=make_grouper(algo.grouping, seed=cfg.run.seed, num_generations=cfg.rollout.num_generations,
                             **group_options(algo.group)),
        advantage_fn=ADVANTAGES.get(algo.advantage), algorithm=algo,
        train_examples=train, eval_examples=evals, sampler=build_sampler(cfg, policy),
        passes=build_passes(cfg, policy.model), release_memory=build_release(cfg),
    )


def sharded(cfg: TrainConfig) -> bool:
    """run.parallel resolves to FSDP: the CPU engine's passes and lean decode, which read
    whole weight tensors, step aside (train.py says so once)."""
    from grpokit.sharding import resolve_mode

    return resolve_mode(cfg.run.parallel) == "fsdp"


def engine_enabled() -> bool:
    """False when GRPOKIT_NATIVE=0: every component then takes its plain path (no
    module of grpokit.engine is imported)."""
    return os.environ.get("GRPOKIT_NATIVE", "1") != "0"


def make_sampler(model, tokenizer, backend: str = "auto", *, cuda_graphs: bool = True) -> Sampler:
    """The single-turn Sampler for a model: `lean` (auto's choice while the engine is
    enabled) or `transformers` (the plain reference; also what `lean` gives with
    GRPOKIT_NATIVE=0)."""
    from grpokit.model.policy import eos_token_ids

    eos, pad = eos_token_ids(model, tokenizer), tokenizer.pad_token_id
    if backend in ("auto", "lean") and engine_enabled():
        from grpokit.engine.stepper import lean_sampler

        return lean_sampler(model, tokenizer, eos, pad, cuda_graphs=cuda_graphs)
    if backend in ("auto", "lean", "transformers"):
        return StepSampler(model, tokenizer, eos, pad)
    raise ValueError(f"rollout.backend = {backend!r}: no such sampler (auto, transformers, lean)")


def build_sampler(cfg: TrainConfig, policy) -> Sampler:
    """The rollout Sampler `rollout.backend` names, wrapped in the multi-turn tool loop
    when `rollout.tools` names tools."""
    r = cfg.rollout
    backend = "transformers" if ((r.backend == "auto" and not r.lean_decode) or sharded(cfg)) else r.backend
    if backend == "vllm":  # a colocated vLLM engine; `grpokit validate` checked that vllm is installed
        from grpokit.rollout.vllm import vllm_sampler

        sampler = vllm_sampler(cfg, policy)
    else:
        sampler = make_sampler(policy.model, policy.tokenizer, backend, cuda_graphs=r.cuda_graphs)
    tok = policy.tokenizer
    if not r.tools:
        return sampler
    from grpokit.rollout.multiturn import MultiTurnSampler
    from grpokit.tasks import with_task_corpora
    from grpokit.tools import build_tools

    return MultiTurnSampler(sampler, build_tools(with_task_corpora(r.tools)), tok, max_turns=r.max_turns,
                            max_tool_tokens=r.max_tool_tokens)


def build_passes(cfg: TrainConfig, model) -> TrainingPass:
    """The TrainingPass: the CPU engine's C passes (`optim.native_passes`, for the small
    CPU models they cover; others fall back per batch) around plain torch.
    `optim.share_prompt` unset = on for CPU models."""
    from grpokit.model.device import model_device
    from grpokit.model.forward import TorchPass

    share = cfg.optim.share_prompt if cfg.optim.share_prompt is not None else model_device(model).type == "cpu"
    plain = TorchPass(share_prompt=share)
    if sharded(cfg) or not (cfg.optim.native_passes and engine_enabled() and model_device(model).type == "cpu"):
        return plain
    from grpokit.engine.native_pass import NativePass, native_pass_reason

    if native_pass_reason(model) is not None:  # bigger than the C pass's bound, an adapter, ...
        return plain
    return NativePass(plain)


def build_release(cfg: TrainConfig) -> Callable[[], bool]:
    """What train.py calls between phases to give freed heap memory back
    (`run.release_memory`; glibc malloc_trim in the engine)."""
    if not (cfg.run.release_memory and engine_enabled()):
        return lambda: False
    from grpokit.engine.memory import release_free_memory

    return release_free_memory
