"""Config -> components. The only place where names in a recipe become objects."""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Callable

from grpokit.engine import lean_train
from grpokit.config.schema import AlgorithmConfig, TrainConfig
from grpokit.rollout.generate import generate
from grpokit.types import Example

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
    generate_fn: Callable = generate  # rollout.generate.generate, or a MultiTurnGenerator with tools


def task_name(spec: str) -> str | None:
    return spec.split(":")[1] if spec.startswith("task:") else None


def default_eval_spec(train_spec: str) -> str | None:
    name = task_name(train_spec)
    return f"task:{name}:test" if name else None


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
    if cfg.optim.lean_activations and not lean_train.install(policy.model):
        log.info("lean activations not used: %s", lean_train.unsupported_reason(policy.model))
    if cfg.optim.gradient_checkpointing:
        policy.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return Components(
        policy=policy, reference=reference, rewards=rewards,
        grouper=make_grouper(algo.grouping, seed=cfg.run.seed, num_generations=cfg.rollout.num_generations,
                             **dataclasses.asdict(algo.group)),
        advantage_fn=ADVANTAGES.get(algo.advantage), algorithm=algo,
        train_examples=train, eval_examples=evals, generate_fn=build_generate_fn(cfg, policy.tokenizer),
    )


def build_generate_fn(cfg: TrainConfig, tokenizer) -> Callable:
    """The rollout sampler: plain `generate`, or the multi-turn tool loop when
    `rollout.tools` names tools (same call signature either way)."""
    if not cfg.rollout.tools:
        r = cfg.rollout
        return generate if (r.lean_decode and r.cuda_graphs) else functools.partial(
            generate, lean=r.lean_decode, cuda_graphs=r.cuda_graphs)
    from grpokit.rollout.multiturn import MultiTurnGenerator
    from grpokit.tasks import with_task_corpora
    from grpokit.tools import build_tools

    return MultiTurnGenerator(build_tools(with_task_corpora(cfg.rollout.tools)), tokenizer, max_turns=cfg.rollout.max_turns,
                              max_tool_tokens=cfg.rollout.max_tool_tokens, lean=cfg.rollout.lean_decode,
                              cuda_graphs=cfg.rollout.cuda_graphs)
