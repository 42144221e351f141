"""The GRPO training loop: collect -> group -> advantage -> update -> log -> checkpoint.

Launch: `grpokit train --config recipe.yaml [key=value ...]`.

One step, as in DeepSeekMath (Shao et al. 2024, Alg. 1) with outcome rewards:
sample G completions for each of the step's prompts, score them with the reward
functions, form groups (by prompt unless the recipe names another grouper), turn
rewards into group-relative advantages, and take `mu` clipped-surrogate optimizer
steps on the batch, with an optional k3 KL pull toward a frozen reference.

How this differs from the paper: the variant (advantage estimator, ratio level, loss
aggregation, clip range) comes from a preset (grpo, dr_grpo, dapo, gspo, rloo)
resolved once in build.py; completions whose advantage is exactly zero are skipped in
the update when beta == 0, which changes no gradient; the reference model is not
refreshed from the policy during training. The learning-rate schedule advances with
optimizer steps: a step in which no group had reward spread (and beta == 0) makes no
optimizer step and leaves the schedule where it was. With algorithm.dynamic_sampling
(DAPO, Yu et al. 2025) Phase 1 drops prompts without reward spread and draws fresh ones
until the step is full (grpokit.rollout.dynamic); Phases 2-4 see the kept rows.

Held-out prompts are evaluated before step 1, every `run.eval_every` steps and at the
end; the console says what changed (grpokit.console).
"""
from __future__ import annotations

import signal
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from grpokit import dist, sharding
from grpokit.algo.mismatch import effective_level
from grpokit.build import Components, build
from grpokit.config.schema import TrainConfig
from grpokit.model.device import model_device, synchronize
from grpokit.evaluate import accuracy_key, evaluate_examples
from grpokit.grouping import observe, stateful
from grpokit.model.policy import encode_prompts
from grpokit.tasks.prompt_sampler import PromptSampler
from grpokit.rewards.manager import RewardScores
from grpokit.rollout.batch import build_rollout_batch
from grpokit.rollout.dynamic import refill
from grpokit.rollout.multiturn import tool_metrics
from grpokit.rollout.seeding import RowStreams, resolve as resolve_seeding
from grpokit.tasks.formats import resolve_system_prompt
from grpokit.types import Experience, GenerationOutput, RolloutBatch, SamplingParams
from grpokit.update import LossSettings, reference_logprobs, update_policy


def collect(comp: Components, cfg: TrainConfig, indices: list[int], generator: torch.Generator | None,
            step: int, world: dist.World = dist.SINGLE, full_weights=nullcontext,
            first_prompt: int = 0) -> RolloutBatch:
    """Phase 1: G completions for each prompt (or as many as a self-tuning grouper plans);
    rows are prompt-major (i*G .. i*G+G-1). generator None = keyed sampling randomness
    (rollout.seeding). Under torchrun this rank samples its share of the prompts and the
    batch of the whole step comes back (metadata["own_rows"]: the rows it sampled).
    full_weights(): the context sampling runs in (a sharded model's weights gathered).
    first_prompt: position of indices[0] among the prompts drawn this step (> 0 for a
    dynamic-sampling refill round), so every draw of a step has its own keyed streams."""
    tok = comp.policy.tokenizer
    g = cfg.rollout.num_generations
    examples = [comp.train_examples[i] for i in indices]
    prompt_ids = encode_prompts(tok, [e.prompt for e in examples], max_tokens=cfg.data.max_prompt_tokens,
                                system_prompt=resolve_system_prompt(cfg.data.system_prompt, cfg.data.train),
                                chat_template=cfg.data.chat_template)
    # A self-tuning grouper may give prompts different numbers of completions.
    plan = getattr(comp.grouper, "plan_generations", None)
    counts = plan([e.id for e in examples], [e.fields for e in examples], step) if plan else [g] * len(examples)
    rows = [p for p, k in zip(prompt_ids, counts) for _ in range(k)]
    # rollout.backend's sampler, in the multi-turn tool loop when rollout.tools is set (build.py)
    params = SamplingParams(max_new_tokens=cfg.rollout.max_new_tokens, temperature=cfg.rollout.temperature,
                            top_p=cfg.rollout.top_p, stop_strings=tuple(cfg.rollout.stop),
                            batch_size=cfg.rollout.batch_size,
                            return_embeddings=getattr(comp.grouper, "needs_embeddings", True))
    # --- dist: this rank's prompts, keyed streams, the gather (grpokit.dist) ---
    own = dist.share(len(examples), world)
    first = sum(counts[:own.start])
    own_rows = range(first, first + sum(counts[own.start:own.stop]))
    rng = generator if generator is not None else RowStreams.for_rows(
        cfg.run.seed, step, [(first_prompt + p, k) for p in own for k in range(counts[p])])
    with full_weights():  # every rank enters, also one without prompts (a collective under FSDP)
        gen = (comp.sampler.sample(rows[own_rows.start:own_rows.stop], params, generator=rng) if len(own_rows)
               else GenerationOutput([], [], [], [], None, 0))
    gen = dist.gather_generation(world, gen)
    # --- end dist ---
    texts = [tok.decode(c, skip_special_tokens=True) for c in gen.completion_ids]
    return build_rollout_batch(rows, gen.completion_ids, gen.logprobs, pad_id=tok.pad_token_id,
                               example_index=[i for i, k in enumerate(counts) for _ in range(k)],
                               finished=gen.finished, completions=texts, context_embedding=gen.embeddings,
                               completion_masks=getattr(gen, "completion_masks", None),  # 0 = tool output
                               metadata={"step": step, "forward_calls": gen.forward_calls, "own_rows": own_rows,
                                         **getattr(gen, "metadata", {})})


def train(cfg: TrainConfig, *, hooks=None) -> Path:
    """Run GRPO as configured; returns the run directory (final model in run_dir/model).

    hooks (optional, for instrumentation such as `grpokit bench`): an object with
    `on_start(components)`, called once just before the first step, and
    `on_step(step, metrics, batch)`, called at the end of every step (after logging,
    before any checkpoint is written). Either method may be missing.

    A first SIGINT/SIGTERM (in the main thread) lets the current step finish, writes a
    checkpoint and raises signals.Interrupted (exit code 130/143 at the CLI); a second
    one raises KeyboardInterrupt at once.
    """
    from grpokit.signals import StopRequests

    with StopRequests() as stop:
        return _train(cfg, hooks, stop)


def _train(cfg: TrainConfig, hooks, stop) -> Path:
    from grpokit.checkpoint import latest_checkpoint, load_trainer_state, rng_state, save_checkpoint, save_model, \
        set_rng_state
    from grpokit.config.io import dump_yaml, to_dict
    from grpokit.logging import RunLogger, progress
    from grpokit.config.validation import advisories, fsdp_problems
    from grpokit.console import RunConsole, start_rows
    from grpokit.optim import default_lr, make_optimizer, make_scheduler, set_threads
    from grpokit.plotting import plot_run
    from grpokit.report import RunReporter
    from grpokit.trackers import RunInfo, open_trackers
    from grpokit.run_dir import prepare_out
    from grpokit.signals import Interrupted

    set_threads(cfg.run.threads)
    mode = sharding.resolve_mode(cfg.run.parallel)
    if mode == "fsdp" and (problems := fsdp_problems(cfg)):  # run.parallel=auto under an FSDP launcher
        raise ValueError(problems[0])
    world = dist.init(group_of_one=mode == "fsdp")  # dist: one process unless launched by torchrun (or FSDP)
    seeding = resolve_seeding(cfg.rollout.seeding, world.size)
    torch.manual_seed(cfg.run.seed)
    run_dir = Path(cfg.run.out)
    if world.main:  # rank 0 owns the run directory; the others wait until it is ready
        note = prepare_out(run_dir, resume=cfg.run.resume, overwrite=cfg.run.overwrite)  # never mixes two runs
        if note:
            print(f"grpokit: {note}")
    dist.barrier(world)
    ckpt = latest_checkpoint(run_dir) if cfg.run.resume else None
    if cfg.run.resume:
        _announce_resume(cfg, run_dir, ckpt)
    lora = cfg.model.lora.r > 0
    comp = build(cfg, model_path=str(ckpt) if ckpt is not None and not lora else None)
    if ckpt is not None and lora:
        _load_adapter(comp.policy.model, ckpt)
    algo = comp.algorithm
    model, tok = comp.policy.model, comp.policy.tokenizer
    device = model_device(model)
    parallel = sharding.setup(mode, world, comp)  # dist: equal weights on every rank; FSDP shards them
    if world.main:
        dump_yaml(cfg, run_dir / "config.yaml")

    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lr = cfg.optim.lr if cfg.optim.lr is not None else default_lr(n_trainable)
    lr_note = "optim.lr" if cfg.optim.lr is not None else "default for this model size"
    optimizer = make_optimizer(model, lr=lr, weight_decay=cfg.optim.weight_decay, betas=cfg.optim.betas,
                               fused=cfg.optim.fused)
    scheduler = make_scheduler(optimizer, warmup=cfg.optim.warmup_steps, total=cfg.run.steps,
                               schedule=cfg.optim.schedule)
    sampler = PromptSampler(len(comp.train_examples), seed=cfg.run.seed, shuffle=cfg.data.shuffle)
    generator = torch.Generator().manual_seed(cfg.run.seed) if seeding == "global" else None  # None: keyed
    start_step = 0
    completions_total = 0  # completions sampled so far, kept or dropped (dynamic sampling's budget)
    if ckpt is not None:
        state = load_trainer_state(ckpt, optimizer=optimizer, scheduler=scheduler,
                                   load_optimizer=lambda st: parallel.load_optimizer_state(model, optimizer, st))
        start_step = int(state["step"])
        saved_world = int(state["extra"].get("world_size", 1))
        if saved_world != world.size:  # dist: the step's split and the row streams depend on it
            raise ValueError(f"--resume: {ckpt} was written by {saved_world} process(es), this run has "
                             f"{world.size}; resume with --nproc {saved_world}")
        saved_layout = state["extra"].get("parallel", "ddp")
        if saved_layout != parallel.name:  # the optimizer state is saved per layout
            raise ValueError(f"--resume: {ckpt} was written with run.parallel={saved_layout}, this run has "
                             f"{parallel.name}; resume with run.parallel={saved_layout}")
        if state["extra"].get("rank_rng"):  # dist: each rank's own random state (rank 0's was restored above)
            set_rng_state(state["extra"]["rank_rng"][world.rank])
        sampler.load_state_dict(state["extra"]["sampler"])
        # a checkpoint from before the count was saved: every step sampled its full batch
        completions_total = int(state["extra"].get("completions_total", start_step * cfg.rollout.prompts_per_step
                                                   * cfg.rollout.num_generations))
        if generator is not None and state["extra"].get("generator") is not None:
            generator.set_state(state["extra"]["generator"])
        if "grouper" in state["extra"] and stateful(comp.grouper):
            comp.grouper.load_state_dict(state["extra"]["grouper"])
        comp.sampler.sync_weights(model)  # a sampler with its own copy of the weights (vLLM) reloads them
    settings = LossSettings(clip_low=algo.clip_low, clip_high=algo.clip_high, ratio=algo.ratio,
                            loss_agg=algo.loss_agg, beta=algo.beta, kl_estimator=algo.kl_estimator, mu=algo.mu,
                            loss=algo.loss,
                            mismatch_level=effective_level(algo.mismatch.level, cfg.rollout.backend),
                            mismatch_cap=algo.mismatch.cap, mismatch_mode=algo.mismatch.mode,
                            max_new_tokens=cfg.rollout.max_new_tokens)
    acc_key = accuracy_key(comp.rewards.names)

    def score(batch: RolloutBatch, examples: list) -> RewardScores:
        """Phase 1's rewards: each rank scores the rows it sampled, every rank gets them all."""
        return dist.score_own(world, comp.rewards.score, batch.metadata["own_rows"], [e.prompt for e in examples],
                              batch.completions, [e.fields for e in examples], batch.completion_ids)

    def sample(indices: list[int], step: int, first: int = 0) -> RolloutBatch:
        """Phase 1 for `indices` (first: their position among the step's draws), the
        weights gathered when sharded; freed heap memory given back after."""
        batch = collect(comp, cfg, indices, generator, step, world,
                        full_weights=lambda: parallel.full_weights(model), first_prompt=first)
        release()
        return batch

    def sample_round(indices: list[int], step: int, first: int) -> tuple[RolloutBatch, RewardScores]:
        """A dynamic-sampling refill round: Phase 1 and its rewards for more of the step's
        prompts (every rank calls it: the keep decision is made on the gathered rewards)."""
        batch = sample(indices, step, first)
        return batch, score(batch, [comp.train_examples[indices[i]] for i in batch.example_index.tolist()])

    def run_eval() -> dict:
        if not comp.eval_examples:
            return {}
        res = evaluate_examples(comp.sampler, tok, comp.eval_examples, comp.rewards,
                                max_new_tokens=cfg.rollout.max_new_tokens, seed=cfg.run.seed,
                                max_prompt_tokens=cfg.data.max_prompt_tokens,
                                system_prompt=resolve_system_prompt(cfg.data.system_prompt,
                                                                    cfg.data.eval or cfg.data.train),
                                chat_template=cfg.data.chat_template)
        out = {f"eval/{k}": v for k, v in res.reward_means.items()}
        if res.accuracy is not None:
            out["eval/accuracy"] = res.accuracy
        return out

    def evaluate_at(step: int) -> dict:
        # rank 0 evaluates; every rank enters full_weights (gathering shards is a collective)
        with parallel.full_weights(model):
            out = run_eval() if world.main else {}
        if out:
            logger.log_event("eval", step=step, n=len(comp.eval_examples), **out)
            console.evaluated(step, out)
        return out

    def checkpoint(step: int) -> None:
        # Every rank holds the same sampler, grouper and weights (they see the same global
        # step), so rank 0's copy is every rank's state.
        extra = {"sampler": sampler.state_dict(), "world_size": world.size, "parallel": parallel.name,
                 "completions_total": completions_total,
                 "generator": generator.get_state() if generator is not None else None}
        if stateful(comp.grouper):  # running success rates, a replay window, tuned weights
            extra["grouper"] = comp.grouper.state_dict()
        if world.distributed:  # ranks draw different numbers of random numbers (dropout on their own rows)
            extra["rank_rng"] = dist.gather(world, rng_state())
        # a sharded model's whole tensors come to rank 0 (a collective; None/own state when replicated)
        weights, optim_state = parallel.model_state(model), parallel.optimizer_state(model, optimizer)
        if world.main:
            path = save_checkpoint(run_dir, step, model=model, tokenizer=tok, optimizer=optimizer,
                                   scheduler=scheduler, config=to_dict(cfg), keep=cfg.run.keep_checkpoints,
                                   extra=extra, model_state=weights, optimizer_state=optim_state)
            logger.log_event("checkpoint", step=step, path=str(path))
        dist.barrier(world)  # no rank runs ahead of a checkpoint being written

    last_save = time.monotonic()  # run.save_minutes counts from here
    if world.main:  # rank 0 logs, reports and talks; the other ranks' stand-ins do nothing
        trackers = open_trackers(cfg.run.report_to, RunInfo(run_dir=run_dir, name=run_dir.resolve().name,
                                                            config=to_dict(cfg), resume=ckpt is not None,
                                                            start_step=start_step))
        logger = RunLogger(run_dir, resume=ckpt is not None, total_steps=cfg.run.steps, trackers=trackers)
        reporter = RunReporter(run_dir, every=cfg.run.report_every, field=algo.group.field,
                               grouper=algo.grouping, resume=ckpt is not None)  # groups.jsonl, report.html
        console = RunConsole(cfg.run.steps)
        console.start(start_rows(comp, cfg, lr=lr, lr_note=lr_note, run_dir=run_dir, device=device,
                                 trackers=list(cfg.run.report_to)),
                      title=f"GRPO: {cfg.run.steps} steps" + (f", resuming after step {start_step}" if ckpt else ""))
        for warning in advisories(cfg):
            console.say(f"warning: {warning}")
        if parallel.sharded:
            console.say(f"fsdp: parameters, gradients and optimizer state sharded over {world.size} process(es); "
                        "sampling through transformers (the CPU engine, lean decode and the shared prompt pass step aside)")
    else:
        logger = reporter = console = dist.Quiet()
    if ckpt is not None:
        logger.log_event("resume", step=start_step, checkpoint=str(ckpt))
        console.evaluated(0, _first_eval(run_dir))  # the "before" of the run being resumed
    else:
        logger.log_event("start", steps=cfg.run.steps, model=cfg.model.name_or_path, lr=lr)
        before = evaluate_at(0) if cfg.run.eval_before else {}
        if before:
            logger.log_step(0, before, console=False)
    bar = progress(cfg.run.steps, "GRPO", enabled=cfg.run.progress and world.main, initial=start_step)
    on_start, on_step = getattr(hooks, "on_start", None), getattr(hooks, "on_step", None)
    if on_start is not None:
        on_start(comp)
    release = comp.release_memory
    if stop.requested:  # while loading: nothing trained, nothing to save
        logger.close()
        raise Interrupted(stop.signum, start_step, str(run_dir), saved=start_step > 0)
    budget = cfg.run.max_completions
    last_step = start_step
    for step in range(start_step + 1, cfg.run.steps + 1):
        if budget and completions_total >= budget:  # resumed from the budget's last step
            break
        t0 = time.perf_counter()
        indices = sampler.next(cfg.rollout.prompts_per_step)
        batch = sample(indices, step)  # Phase 1
        t_gen = time.perf_counter()
        examples = [comp.train_examples[indices[i]] for i in batch.example_index.tolist()]
        scores = score(batch, examples)
        dynamic, t_dyn = {}, 0.0
        if algo.dynamic_sampling:  # refill with fresh prompts until the batch holds prompts with reward spread
            t_dyn = time.perf_counter()
            kept = refill(indices, batch, scores, draw=sampler.next, target=cfg.rollout.prompts_per_step,
                          max_rounds=algo.dynamic_max_rounds, sample=lambda idx, first: sample_round(idx, step, first))
            indices, batch, scores, dynamic = kept.indices, kept.batch, kept.scores, kept.metrics
            examples = [comp.train_examples[indices[i]] for i in batch.example_index.tolist()]
            if kept.dropped_index:  # success statistics (reward, budget) count the dropped prompts too
                gone = [comp.train_examples[i] for i in kept.dropped_index]
                observe(comp.grouper, Experience(prompt_ids=torch.tensor([e.id for e in gone]), step=step,
                                                 rewards=kept.dropped_rewards, fields=[e.fields for e in gone]))
            t_dyn = time.perf_counter() - t_dyn
            dynamic["time/dynamic"] = t_dyn  # the refill rounds: sampling and scoring
        completions_total += int(dynamic.get("dynamic/sampled_completions", batch.size))
        exp = Experience(prompt_ids=torch.tensor([e.id for e in examples]), rewards=scores.total, step=step,
                         fields=[e.fields for e in examples], embeddings=batch.context_embedding,
                         lengths=batch.completion_lengths(), prompts=[e.prompt for e in examples],
                         prompt_lengths=batch.attention_mask[:, :batch.prompt_len].sum(1), rollout=batch)
        grouping = comp.grouper(exp)  # Phase 2: Groups (ids at one or more scales, weights, past rows)
        group_ids, group_info = grouping.finest(batch.size), grouping.metrics
        train_batch = grouping.training_batch(batch)  # + replayed rows, if any
        # Replayed rows (temporal) are reweighted by pi_now / pi_then: one no-grad forward over them.
        logp_now = None if grouping.replay is None else reference_logprobs(
            model, grouping.replay, temperature=cfg.rollout.temperature,
            micro_batch_size=cfg.optim.micro_batch_size, passes=comp.passes).cpu()
        advantages = grouping.advantages(scores.total, comp.advantage_fn, scale=algo.scale_rewards,  # Phase 3
                                         eps=algo.eps, logp_now=logp_now)
        t_adv = time.perf_counter()
        ref_logp = None
        if comp.reference is not None:
            with comp.reference.active() as ref_model:
                ref_logp = dist.own_rows_logprobs(world, train_batch, lambda b: reference_logprobs(  # dist
                    ref_model, b, temperature=cfg.rollout.temperature,
                    micro_batch_size=cfg.optim.micro_batch_size, passes=comp.passes), empty_too=parallel.sharded)
            release()
        synchronize(device)
        t_ref = time.perf_counter()
        stats = update_policy(model, optimizer, train_batch, advantages, settings, ref_logp=ref_logp,  # Phase 4
                              temperature=cfg.rollout.temperature, micro_batch_size=cfg.optim.micro_batch_size,
                              max_grad_norm=cfg.optim.max_grad_norm, passes=comp.passes, world=world)
        comp.sampler.sync_weights(model)  # no-op for samplers that read the live model
        if stats.get("trained_rows", 1) > 0:  # the optimizer stepped (see the module docstring)
            scheduler.step()
        release()
        synchronize(device)
        t_end = time.perf_counter()

        n_tokens = float(batch.loss_mask.sum())
        metrics = {"reward": float(scores.total.mean()), "reward_std": float(scores.total.std()) if batch.size > 1 else 0.0}
        for k, v in scores.per_reward.items():
            metrics[f"reward/{k}"] = float(v.mean())
            metrics[f"reward/{k}_std"] = float(v.std()) if v.numel() > 1 else 0.0
        if acc_key:
            metrics["accuracy"] = metrics[f"reward/{acc_key}"]
        metrics.update(stats)
        metrics.update(sharding.train_state_bytes(model, optimizer))  # this rank's share under FSDP
        metrics.update(_group_metrics(scores.total, group_ids))
        metrics.update(tool_metrics(batch.metadata, scores.per_reward[acc_key] if acc_key else None))  # {} without tools
        metrics.update(group_info)
        metrics.update(dynamic)  # {} without dynamic sampling
        metrics["completions_total"] = float(completions_total)  # every completion sampled so far (the budget)
        last = step == cfg.run.steps or bool(budget and completions_total >= budget)
        last_step = step
        metrics.update({"len": n_tokens / batch.size, "finished": float(batch.finished.float().mean()),
                        "lr": scheduler.get_last_lr()[0], "tokens_per_s": n_tokens / (t_end - t0),
                        "step_time": t_end - t0, "time/generate": t_gen - t0,
                        "time/reward_group_adv": t_adv - t_gen - t_dyn,  # the refill rounds are time/dynamic
                        "time/reference": t_ref - t_adv, "time/update": t_end - t_ref})
        if (cfg.run.eval_every and step % cfg.run.eval_every == 0) or last:
            metrics.update(evaluate_at(step))
        logger.log_step(step, metrics)
        console.step(step, metrics)
        logger.log_samples(step, _samples(batch, examples, scores, advantages, cfg.run.log_samples, group_ids))
        reporter.on_step(step, scores.total, grouping, [e.fields for e in examples])
        bar.set_postfix({k: f"{metrics[k]:.3f}" for k in ("reward", "accuracy") if k in metrics})
        bar.update(1)
        if on_step is not None:
            on_step(step, metrics, batch)
        due = bool(cfg.run.save_minutes and time.monotonic() - last_save >= 60 * cfg.run.save_minutes)
        stopping = stop.requested
        if world.distributed:  # every rank must agree, or one would wait at the checkpoint's barrier
            due, stopping = dist.total(world, float(due)) > 0, dist.total(world, float(stopping)) > 0
        if (cfg.run.save_every and step % cfg.run.save_every == 0) or last or due or stopping:
            checkpoint(step)
            last_save = time.monotonic()
        if stopping and not last:
            bar.close()
            logger.close()
            raise Interrupted(stop.signum or signal.SIGTERM, step, str(run_dir), saved=True)
        if last:
            break
    bar.close()
    final = parallel.export_copy(model, parallel.model_state(model))  # a collective under FSDP
    if world.main:
        save_model(run_dir / "model", final, tok, to_dict(cfg), merge_inplace=final is not model)
        logger.log_event("end", step=last_step, model=str(run_dir / "model"))
    logger.close()
    if world.main:
        plot = plot_run(run_dir, keys=("reward", "accuracy", "eval/accuracy", "zero_std_groups", "len"))
        reporter.write()
        console.end([("model", str(run_dir / "model")), ("plot", str(plot)), ("report", str(run_dir / "report.html"))])
    dist.barrier(world)
    return run_dir


def _first_eval(run_dir: Path) -> dict:
    """The held-out result before step 1, from events.jsonl ({} when there is none)."""
    from grpokit.logging import EVENTS, read_jsonl

    path = run_dir / EVENTS
    for e in read_jsonl(path) if path.exists() else []:
        if e.get("event") == "eval" and e.get("step") == 0:
            return {k: v for k, v in e.items() if k.startswith("eval/")}
    return {}


def _group_metrics(rewards: torch.Tensor, group_ids: torch.Tensor) -> dict[str, float]:
    """Share of groups whose rewards are all equal (they carry no learning signal)."""
    from grpokit.algo.advantages import group_stats

    _, std, _ = group_stats(rewards, group_ids)
    uniq, inverse = torch.unique(group_ids, return_inverse=True)
    # std is the same for every member of a group, so any member's value stands for it
    per_group = torch.zeros(len(uniq)).scatter_(0, inverse, (std == 0).float())
    return {"groups": float(len(uniq)), "zero_std_groups": float(per_group.mean())}


def _samples(batch: RolloutBatch, examples, scores, advantages, k: int, group_ids: torch.Tensor) -> list[dict]:
    rows = []
    for i in range(min(k, batch.size)):
        j = i * max(1, batch.size // max(1, k))
        rows.append({"prompt": examples[j].prompt, "completion": batch.completions[j],
                     "reward": float(scores.total[j]), "advantage": float(advantages[j]), "group": int(group_ids[j]),
                     **{f"reward/{n}": float(v[j]) for n, v in scores.per_reward.items()}})
    return rows


def _announce_resume(cfg: TrainConfig, run_dir: Path, ckpt: Path | None) -> None:
    """Refuse a resume that would change the run (see run_dir.RESUME_SAFE); print what it
    changes and where it starts."""
    from grpokit.config.io import from_dict, read_yaml
    from grpokit.run_dir import RunDirError, check_resume, describe, is_run, saved_config_path

    if ckpt is None:
        what = describe(run_dir) if is_run(run_dir) else "no run"
        raise RunDirError(f"--resume: {run_dir} holds {what}; nothing to resume. Start the run again "
                          + ("with --overwrite" if is_run(run_dir) else "without --resume"))
    step = int(ckpt.name.rsplit("-", 1)[-1])
    path = saved_config_path(run_dir)
    if path is not None:
        changes = check_resume(from_dict(TrainConfig, read_yaml(path), where=str(path)), cfg, step)
        if changes:
            print(f"grpokit: resume changes {'; '.join(changes)}")
    print(f"grpokit: resuming from step {step} of {run_dir}")


def _load_adapter(model, ckpt: Path) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = ckpt / "adapter_model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"LoRA checkpoint {ckpt} has no adapter_model.safetensors")
    set_peft_model_state_dict(model, load_file(str(path)))
