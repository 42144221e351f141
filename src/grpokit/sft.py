"""Cold start (DeepSeek-R1 stage 1): supervised fine-tuning on reasoning traces.

Loss is the mean negative log-likelihood of the completion tokens (the prompt is
context only). The loop can stop early once held-out accuracy reaches a target, which
is how the demo leaves the model deliberately only partly right.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from grpokit.config.schema import SFTConfig
from grpokit.model.device import model_device
from grpokit.model.forward import sequence_logprobs
from grpokit.optim import make_optimizer, make_scheduler, set_threads
from grpokit.model.policy import encode_prompts
from grpokit.types import SFTExample


@dataclass
class EncodedTrace:
    ids: list[int]
    n_prompt: int
    mask: list[int] | None = None  # per completion token; 0 = not trained on (tool output)


# Tool output the runtime inserts into a trace; the policy never writes it, so it is
# never a training target (the same rule the RL update applies, rollout/multiturn.py).
TOOL_RESULT_SPAN = ("<result>", "</result>")


def span_mask(ids: Sequence[int], open_ids: Sequence[int], close_ids: Sequence[int]) -> list[int]:
    """1 per token, 0 from each occurrence of open_ids through the next close_ids (both
    included); an unclosed span runs to the end."""
    mask, i, inside = [1] * len(ids), 0, False
    open_ids, close_ids = list(open_ids), list(close_ids)
    while i < len(ids):
        if not inside and list(ids[i:i + len(open_ids)]) == open_ids:
            inside = True
        if inside:
            mask[i] = 0
            if i + 1 >= len(close_ids) and list(ids[i - len(close_ids) + 1:i + 1]) == close_ids:
                inside = False
        i += 1
    return mask


def encode_traces(tokenizer, traces: Sequence[SFTExample], max_len: int,
                  masked_span: tuple[str, str] | None = TOOL_RESULT_SPAN) -> list[EncodedTrace]:
    """Prompt (chat template when the tokenizer has one) + completion + EOS, truncated to
    max_len. With masked_span, completion tokens inside that open/close pair get mask 0."""
    prompts = encode_prompts(tokenizer, [t.prompt for t in traces])
    eos = tokenizer.eos_token_id
    span_ids = None
    if masked_span is not None:
        span_ids = [tokenizer(tag, add_special_tokens=False)["input_ids"] for tag in masked_span]
    out = []
    for p, t in zip(prompts, traces):
        c = tokenizer(t.completion, add_special_tokens=False)["input_ids"] + ([eos] if eos is not None else [])
        ids = (p + c)[:max_len]
        if len(ids) > len(p):
            mask = None
            if span_ids is not None and masked_span[0] in t.completion:
                mask = span_mask(c, *span_ids)[: len(ids) - len(p)]
            out.append(EncodedTrace(ids, len(p), mask))
    if not out:
        raise ValueError(f"no trace has a completion token within max_seq_len={max_len}")
    return out


def collate(batch: Sequence[EncodedTrace], pad_id: int):
    width = max(len(b.ids) for b in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)  # [B, L] right-padded
    attn = torch.zeros_like(ids)
    loss_mask = torch.zeros(ids.shape, dtype=torch.float32)
    for i, b in enumerate(batch):
        ids[i, : len(b.ids)] = torch.tensor(b.ids)
        attn[i, : len(b.ids)] = 1
        if b.mask is None:
            loss_mask[i, b.n_prompt: len(b.ids)] = 1.0
        else:
            loss_mask[i, b.n_prompt: len(b.ids)] = torch.tensor(b.mask, dtype=torch.float32)
    return ids, attn, loss_mask


class SFTRun:
    """A supervised run that can be continued: optimizer, schedule, data order and step
    count live here, so the demo's control arm trains on exactly where its cold start
    stopped (same optimizer state, same stream of traces) rather than from a fresh start.

    Each row carries `tokens` (completion tokens trained on so far, the supervised
    counterpart of GRPO's sampled tokens) and `train_seconds` (time in optimizer steps,
    evaluations excluded), the two budgets a control arm is matched on.
    """

    def __init__(self, model, tokenizer, traces: Sequence[SFTExample], *, total_steps: int, batch_size: int,
                 lr: float, warmup_steps: int = 0, schedule: str = "cosine", weight_decay: float = 0.0,
                 max_grad_norm: float = 1.0, max_seq_len: int = 512, seed: int = 0):
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.max_grad_norm = batch_size, max_grad_norm
        self.data = encode_traces(tokenizer, traces, max_seq_len)
        self.rng = random.Random(seed)
        self.order: list[int] = []
        self.opt = make_optimizer(model, lr=lr, weight_decay=weight_decay)
        self.sched = make_scheduler(self.opt, warmup=warmup_steps, total=total_steps, schedule=schedule)
        self.step_count = 0
        self.tokens = 0
        self.train_seconds = 0.0
        self.device = model_device(model)

    def step(self) -> dict:
        """One optimizer step on the next batch of traces; returns its history row."""
        t0 = time.perf_counter()
        self.model.train()
        if len(self.order) < self.batch_size:
            fresh = list(range(len(self.data)))
            self.rng.shuffle(fresh)
            self.order += fresh
        idx, self.order = self.order[: self.batch_size], self.order[self.batch_size:]
        ids, attn, mask = (t.to(self.device) for t in collate([self.data[i] for i in idx], self.tokenizer.pad_token_id))
        logp, _ = sequence_logprobs(self.model, ids, attn, mask)  # [B, L]
        n_tokens = mask.sum()
        loss = -(logp * mask).sum() / n_tokens
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.opt.step()
        self.sched.step()
        self.step_count += 1
        self.tokens += int(n_tokens.item())
        self.train_seconds += time.perf_counter() - t0
        # time: wall clock (Unix seconds); rows are often written to metrics.jsonl after
        # training, so each carries its own.
        return {"step": self.step_count, "loss": loss.detach().item(), "lr": self.sched.get_last_lr()[0],
                "time": time.time(), "tokens": self.tokens, "train_seconds": self.train_seconds}

    def anneal(self, steps: int) -> None:
        """From the next step on, decay the learning rate from its peak to 0 over `steps`
        steps (cosine), as GRPO's stage does: a control arm that ends annealed rather than
        at a constant rate, whose readings swing between nearby steps."""
        if steps < 1:
            raise ValueError(f"SFTRun.anneal: steps must be at least 1, got {steps}")
        self.sched = make_scheduler(self.opt, warmup=0, total=steps, schedule="cosine")

    def run(self, steps: int, *, eval_fn: Callable[[], float] | None = None, eval_every: int = 0,
            stop: Callable[[list[dict]], bool] | None = None, until: Callable[[dict], bool] | None = None,
            progress: bool = True, desc: str = "SFT") -> list[dict]:
        """Up to `steps` more optimizer steps. eval_fn runs every eval_every steps (and at the
        last one) and its value goes in the row as `accuracy`; `stop(history)` after an
        evaluation and `until(row)` after every step end the run early."""
        from grpokit.logging import progress as progress_bar

        history: list[dict] = []
        bar = progress_bar(steps, desc, enabled=progress)
        shown: dict[str, str] = {}
        start = time.perf_counter()
        for i in range(1, steps + 1):
            row = self.step()
            row["elapsed"] = time.perf_counter() - start
            done = until is not None and until(row)
            if eval_fn is not None and eval_every > 0 and (row["step"] % eval_every == 0 or i == steps or done):
                row["accuracy"] = eval_fn()
            history.append(row)
            if "accuracy" in row and stop is not None and stop(history):
                done = True
            shown.update({k: f"{v:.3f}" for k, v in row.items() if k in ("loss", "accuracy")})
            bar.set_postfix(shown)
            bar.update(1)
            if done:
                break
        bar.close()
        self.model.eval()
        return history


def sft_loop(model, tokenizer, traces: Sequence[SFTExample], *, steps: int, batch_size: int, lr: float,
             warmup_steps: int = 0, schedule: str = "cosine", weight_decay: float = 0.0, max_grad_norm: float = 1.0,
             max_seq_len: int = 512, seed: int = 0, progress: bool = True,
             eval_fn: Callable[[], float] | None = None, eval_every: int = 0, stop_at: float | None = None,
             desc: str = "cold start") -> list[dict]:
    """Train on traces; returns one history row per step (loss, lr, and accuracy when evaluated).

    With eval_fn and eval_every, accuracy is measured every eval_every steps; with
    stop_at, training stops at the first evaluation that reaches it.
    """
    run = SFTRun(model, tokenizer, traces, total_steps=steps, batch_size=batch_size, lr=lr,
                 warmup_steps=warmup_steps, schedule=schedule, weight_decay=weight_decay,
                 max_grad_norm=max_grad_norm, max_seq_len=max_seq_len, seed=seed)
    stop = None if stop_at is None else (lambda history: history[-1]["accuracy"] >= stop_at)
    return run.run(steps, eval_fn=eval_fn, eval_every=eval_every, stop=stop, progress=progress, desc=desc)


def sft(cfg: SFTConfig) -> Path:
    """`grpokit sft`: fine-tune cfg.model on cfg.data and write a model directory to cfg.out,
    with metrics.jsonl (loss, lr, held-out accuracy when measured), metrics.png and
    samples.jsonl (completions of the fine-tuned model)."""
    from grpokit.checkpoint import save_model
    from grpokit.config.io import to_dict
    from grpokit.config.validation import advisories
    from grpokit.tasks.data import load_prompts, load_sft
    from grpokit.logging import RunLogger
    from grpokit.model.policy import load_policy
    from grpokit.plotting import plot_run

    for warning in advisories(cfg):
        print(f"warning: {warning}")

    from grpokit.run_dir import check_model_out

    set_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    check_model_out(cfg.out)  # a file, a foreign directory or no write access: say so before training
    traces = load_sft(cfg.data, seed=cfg.seed)
    fit = [t.completion for t in traces] + [t.prompt if isinstance(t.prompt, str) else str(t.prompt) for t in traces]
    policy = load_policy(cfg.model, fit_texts=fit, seed=cfg.seed)
    eval_fn = None
    held_out = load_prompts(cfg.eval_data, split="test", n=200) if cfg.eval_data else []
    if held_out:
        eval_fn = _accuracy_probe(policy, held_out, seed=cfg.seed)
    history = sft_loop(policy.model, policy.tokenizer, traces, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                       warmup_steps=cfg.warmup_steps, schedule=cfg.schedule, weight_decay=cfg.weight_decay,
                       max_grad_norm=cfg.max_grad_norm, max_seq_len=cfg.max_seq_len, seed=cfg.seed,
                       progress=cfg.progress, eval_fn=eval_fn,
                       eval_every=(cfg.eval_every or cfg.steps) if eval_fn else 0, stop_at=cfg.stop_at)
    out = Path(cfg.out)
    save_model(out, policy.model, policy.tokenizer, to_dict(cfg))
    with RunLogger(out, console=False) as logger:  # after save_model, which replaces the directory
        for row in history:
            logger.log_step(row["step"], row)
        logger.log_samples(history[-1]["step"] if history else 0,
                           sample_completions(policy, held_out, traces, k=SAMPLES, seed=cfg.seed))
    plot_run(out, keys=("loss", "accuracy", "lr"))
    return out


SAMPLES = 4  # completions written to samples.jsonl after fine-tuning


def sample_completions(policy, held_out, traces, *, k: int, seed: int, max_new_tokens: int = 128) -> list[dict]:
    """Greedy completions of the fine-tuned model for the first k held-out prompts (scored
    by accuracy), or else the first k training prompts (shown next to their trace)."""
    from grpokit.evaluate import evaluate_examples
    from grpokit.model.policy import eos_token_ids
    from grpokit.rewards import RewardSet
    from grpokit.rollout.generate import generate

    if held_out:
        from grpokit.build import make_sampler

        res = evaluate_examples(make_sampler(policy.model, policy.tokenizer), policy.tokenizer, held_out[:k],
                                RewardSet([("accuracy", 1.0, {})]),
                                max_new_tokens=max_new_tokens, seed=seed)
        return [{key: row[key] for key in ("prompt", "completion", "reward/accuracy") if key in row}
                for row in res.samples]
    from grpokit.model.policy import encode_prompts

    tok, chosen = policy.tokenizer, list(traces[:k])
    ids = encode_prompts(tok, [t.prompt for t in chosen])
    gen = generate(policy.model, ids, max_new_tokens=max_new_tokens, eos_ids=eos_token_ids(policy.model, tok),
                   pad_id=tok.pad_token_id, temperature=0.0, generator=torch.Generator().manual_seed(seed))
    return [{"prompt": t.prompt, "completion": tok.decode(c, skip_special_tokens=True), "trace": t.completion}
            for t, c in zip(chosen, gen.completion_ids)]


def _accuracy_probe(policy, examples, *, seed: int, max_new_tokens: int = 128) -> Callable[[], float]:
    from grpokit.build import make_sampler
    from grpokit.evaluate import evaluate_examples
    from grpokit.rewards import RewardSet

    rewards = RewardSet([("accuracy", 1.0, {})])
    sampler = make_sampler(policy.model, policy.tokenizer)

    def probe() -> float:
        res = evaluate_examples(sampler, policy.tokenizer, examples, rewards, max_new_tokens=max_new_tokens,
                                seed=seed)
        return float(res.accuracy or 0.0)

    return probe
