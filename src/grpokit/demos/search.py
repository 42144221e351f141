"""`grpokit demo search`: a model learns to use a search tool from reward (ReSearch-style).

Task (tasks/search_qa.py): questions about a generated fictional world ("Where is the
company Kalo Veni works for based?"). Answers are random names and years, so they can
only be found by searching the world's corpus with the BM25 `search` tool; test
questions are about entities held out of training.

Stage 1 (cold start): a fresh tiny character-level model is fine-tuned on traces that
show the format, `<search>Kalo Veni</search><result>...</result><answer>Plonta</answer>`,
with the inserted results masked out of the loss (the model never learns to write
them), and stopped on purpose once it is partly right. Stage 2: GRPO with exact match
and format rewards through the regular `grpokit train` code path, with multi-turn
rollouts: generation pauses at `</search>`, the tool runs, its result goes in with
loss mask 0, generation resumes. A control arm (demos/control.py) continues the cold
start's SFT for GRPO's budget instead. All three are measured on the same held-out
questions, greedily, with the same tool.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from grpokit.config.schema import AlgorithmConfig, DataConfig, ModelConfig, OptimConfig, RolloutConfig, RunConfig, TrainConfig

EVAL_SIZE = 456  # every held-out question: a standard error of about 2.3 points at 40%


@dataclass
class DemoSettings:
    """The demo's recipe; sized so both stages fit in the time budget on 2 cores."""

    model: str = "tiny:xs"
    sft_traces: int = 1200
    sft_batch: int = 32
    sft_lr: float = 2e-3
    sft_max_steps: int = 800
    sft_eval_every: int = 25
    sft_probe_size: int = 200  # unseen training questions for the stop rule
    sft_stop_at: float | None = 0.25  # stop the cold start once the probe's exact match reaches this ...
    sft_stop_window: int = 2  # ... as the mean of this many consecutive evaluations
    # 300 steps ran the demo past 20 minutes (22-25), and GRPO's held-out exact match rose
    # by at most 0.6 points after step 200 on both seeds measured (docs/tool_use.md)
    grpo_steps: int = 200
    grpo_prompts: int = 16
    grpo_generations: int = 8
    # Measured (docs/tool_use.md): over 200 steps with cosine decay at T 0.7, lr 1e-4 gained
    # 13.6 / 10.5 points (seeds 0 / 1), 2e-4 15.4 / 12.7 (1 thread; the whole demo on 2: 14.7 /
    # 12.5), 3e-4 16.0 / 12.7; 2e-4, well below the 1e-3 that collapsed exact match to 0
    # (docs/demo.md says why). Earlier, at T 1.0, lr 3e-4 gained 2-4 points.
    grpo_lr: float = 2e-4
    grpo_warmup: int = 5
    grpo_schedule: str = "cosine"  # as the arithmetic demo: decaying to 0 keeps what was gained
    grpo_temperature: float = 0.7
    max_new_tokens: int = 160
    max_tool_tokens: int = 80
    max_turns: int = 3
    eval_size: int = EVAL_SIZE
    control: bool = True  # also train the cold start on with SFT for GRPO's budget (demos/control.py)
    # True: the control decays its rate to 0 over GRPO's token budget (as `grpokit demo`'s does);
    # here it goes on at the cold start's rate, and still wins by far (docs/tool_use.md)
    control_anneal: bool = False
    control_points: int = 2  # evaluations along the control's curve, besides its two budget points
    threads: int = 2

    @classmethod
    def quick(cls) -> "DemoSettings":
        """A smoke-test size: a minute, not many; the numbers mean nothing."""
        return cls(model="tiny:xs", sft_traces=200, sft_max_steps=20, sft_eval_every=10, sft_probe_size=16,
                   sft_stop_at=1.1, grpo_steps=3, grpo_prompts=4, grpo_generations=4, eval_size=32,
                   control_points=1)


def search_tool_specs() -> list[dict]:
    from grpokit.tasks.search_qa import SEARCH_KWARGS

    return [{"name": "search", "kwargs": dict(SEARCH_KWARGS)}]


def evaluate_search(tokenizer, sampler, examples, rewards, *, max_new_tokens: int, seed: int = 0) -> dict:
    """Greedy multi-turn rollouts on `examples` (sampler: a MultiTurnSampler): exact match,
    share that searched, exact match with and without a search, tool calls per question."""
    from grpokit.model.policy import encode_prompts
    from grpokit.types import SamplingParams

    ids = encode_prompts(tokenizer, [e.prompt for e in examples])
    out = sampler.sample(ids, SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, batch_size=64),
                         generator=torch.Generator().manual_seed(seed))
    texts = [tokenizer.decode(c, skip_special_tokens=True) for c in out.completion_ids]
    scores = rewards.score([e.prompt for e in examples], texts, [e.fields for e in examples])
    em = scores.per_reward["exact_match"]  # [N]
    searched = torch.tensor([len(c) > 0 for c in out.calls])  # [N] bool
    hops = torch.tensor([e.fields["hops"] for e in examples])  # [N]
    res = {"exact_match": float(em.mean()), "searched": float(searched.float().mean()),
           "calls": out.metadata["tools/calls_per_rollout"], "failures": out.metadata["tools/failures_per_rollout"],
           "samples": [{"prompt": e.prompt, "completion": t, "answer": e.fields["answer"], "em": float(s)}
                       for e, t, s in zip(examples[:20], texts, em.tolist())]}
    for h in (1, 2):
        if (hops == h).any():
            res[f"exact_match_{h}hop"] = float(em[hops == h].mean())
    res["exact_match_searched"] = float(em[searched].mean()) if searched.any() else None
    res["exact_match_not_searched"] = float(em[~searched].mean()) if (~searched).any() else None
    return res


def run_demo(seed: int = 0, out: str | None = None, quick: bool = False, settings: DemoSettings | None = None,
             *, threads: int | None = None, control: bool | None = None, control_anneal: bool | None = None) -> dict:
    """Both stages (and the control arm unless `control` is False); threads, control and
    control_anneal, when given, override the settings."""
    from grpokit.checkpoint import save_model
    from grpokit.logging import RunLogger, read_metrics
    from grpokit.model.policy import create_tiny, load_policy
    from grpokit.rewards import RewardSet
    from grpokit.build import make_sampler
    from grpokit.rollout.multiturn import MultiTurnSampler
    from grpokit.sft import SFTRun
    from grpokit.demos.demo import cpu_model, overridden, probe_stop
    from grpokit.demos.control import control_arm, grpo_budget, plot_demo
    from grpokit.tasks import get_task
    from grpokit.tasks import with_task_corpora
    from grpokit.tools import build_tools
    from grpokit.train import train

    s = settings or (DemoSettings.quick() if quick else DemoSettings())
    s = overridden(s, threads=threads, control=control, control_anneal=control_anneal)
    t_start = time.perf_counter()
    torch.set_num_threads(s.threads)
    run_dir = Path(out or f"runs/demo-search-seed{seed}")
    run_dir.mkdir(parents=True, exist_ok=True)
    print(f"grpokit demo search: tool use learned by reward, seed {seed}, run directory {run_dir}", flush=True)

    task = get_task("search_qa")
    traces = task.traces(s.sft_traces, seed=seed)
    # Reported: every held-out question. The stop rule's probe: training questions the cold
    # start never sees as traces (their entities are training entities, so the probe reads
    # a little higher than the held-out set; it only has to rise when the model does).
    heldout = task.prompts("test", s.eval_size)
    seen = {t.prompt for t in traces}
    probe = [e for e in task.prompts("train", seed=seed + 7) if e.prompt not in seen][: s.sft_probe_size]
    rewards = RewardSet([(n, w, {}) for n, w in task.default_rewards])
    tools = build_tools(with_task_corpora(search_tool_specs()))

    # Stage 1: cold start
    torch.manual_seed(seed)
    fit = [t.prompt + t.completion for t in traces] + [d["text"] for d in task.corpus()]
    model, tok = create_tiny(s.model, fit, seed=seed)
    engine = MultiTurnSampler(make_sampler(model, tok), tools, tok, max_turns=s.max_turns,
                              max_tool_tokens=s.max_tool_tokens)

    def measure(examples=heldout) -> dict:
        return evaluate_search(tok, engine, examples, rewards, max_new_tokens=s.max_new_tokens, seed=seed)

    # SFTRun masks the inserted <result>...</result> spans out of the loss by default
    sft = SFTRun(model, tok, traces, total_steps=s.sft_max_steps, batch_size=s.sft_batch, lr=s.sft_lr,
                 warmup_steps=min(20, s.sft_max_steps // 10), schedule="constant", seed=seed)
    history = sft.run(s.sft_max_steps, eval_fn=lambda: measure(probe)["exact_match"], eval_every=s.sft_eval_every,
                      stop=probe_stop(s), desc="stage 1: cold start (SFT)")
    cold_dir = run_dir / "cold_start"
    save_model(cold_dir, model, tok, {"stage": "cold_start", "seed": seed})
    with RunLogger(run_dir / "sft_log", console=False) as lg:
        for row in history:
            lg.log_step(row["step"], row)
    cold = measure()
    print(f"cold start done: held-out exact match {100 * cold['exact_match']:.1f}%, "
          f"searched {100 * cold['searched']:.0f}% of questions", flush=True)
    t_cold = time.perf_counter() - t_start

    # Stage 2: GRPO through the regular training entry point, with the search tool
    cfg = TrainConfig(
        model=ModelConfig(name_or_path=str(cold_dir)),
        data=DataConfig(train="task:search_qa", eval="task:search_qa:test", eval_size=s.eval_size),
        rollout=RolloutConfig(num_generations=s.grpo_generations, prompts_per_step=s.grpo_prompts,
                              max_new_tokens=s.max_new_tokens, temperature=s.grpo_temperature, stop=["</answer>"],
                              tools=search_tool_specs(), max_turns=s.max_turns, max_tool_tokens=s.max_tool_tokens),
        algorithm=AlgorithmConfig(preset="grpo"),
        optim=OptimConfig(lr=s.grpo_lr, warmup_steps=min(s.grpo_warmup, s.grpo_steps), schedule=s.grpo_schedule),
        run=RunConfig(out=str(run_dir / "grpo"), steps=s.grpo_steps, seed=seed, threads=s.threads,
                      eval_every=max(1, s.grpo_steps // 3), log_samples=4,
                      eval_before=False,  # measured before GRPO by the demo itself
                      overwrite=True),  # a rerun of the demo redoes both stages (old one moved aside)
    )
    grpo_dir = train(cfg)
    grpo_rows = read_metrics(grpo_dir / "metrics.jsonl")
    grpo_model = load_policy(ModelConfig(name_or_path=str(grpo_dir / "model"))).model.eval()
    grpo_engine = MultiTurnSampler(make_sampler(grpo_model, tok), tools, tok, max_turns=s.max_turns,
                                   max_tool_tokens=s.max_tool_tokens)
    final = evaluate_search(tok, grpo_engine, heldout, rewards, max_new_tokens=s.max_new_tokens, seed=seed)
    budget = grpo_budget(grpo_rows, s.grpo_prompts * s.grpo_generations)

    # The control: the cold start's own SFT run (the live `model`, which `engine` samples
    # from) continued for GRPO's budget instead
    control = None
    if s.control:
        control = control_arm(sft, budget, lambda: measure()["exact_match"], points=s.control_points,
                              log_dir=run_dir / "control", anneal=s.control_anneal)
    wall = time.perf_counter() - t_start

    plot = plot_demo(run_dir / "demo.png", history, grpo_rows, cold["exact_match"], control, metric="held-out exact match",
                     grpo_extra={"share searched": "tools/share_with_call"})
    summary = {
        "seed": seed, "eval_size": len(heldout), "exact_match_cold_start": cold["exact_match"], "exact_match_grpo": final["exact_match"],
        "searched_cold_start": cold["searched"], "searched_grpo": final["searched"],
        "cold_start": {k: v for k, v in cold.items() if k != "samples"},
        "grpo": {k: v for k, v in final.items() if k != "samples"},
        "sft_steps": len(history), "sft_traces": len(traces), "grpo_steps": len(grpo_rows),
        "grpo_train_seconds": budget.seconds, "grpo_sampled_tokens": budget.tokens,
        "seconds_cold_start": t_cold, "seconds_total": wall, "cpu": cpu_model(), "threads": s.threads,
        "run_dir": str(run_dir), "plot": str(plot),
    }
    if control is not None:
        summary.update(control.summary("exact_match"))
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    (run_dir / "samples_heldout.json").write_text(json.dumps({"cold_start": cold["samples"],
                                                              "grpo": final["samples"]}, indent=2))
    _print_table(summary)
    return summary


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _print_table(s: dict) -> None:
    from grpokit.demos.control import control_lines

    c, g = s["cold_start"], s["grpo"]
    lines = [
        "",
        "=" * 64,
        f"grpokit demo search: {s['eval_size']} held-out questions (greedy; entities never seen in training)",
        "-" * 64,
        f"exact match after cold start: {100 * s['exact_match_cold_start']:.1f}%",
        f"exact match after GRPO: {100 * s['exact_match_grpo']:.1f}%",
        f"change: {100 * (s['exact_match_grpo'] - s['exact_match_cold_start']):+.1f} points",
        *control_lines(s, "exact match", "exact_match", "questions"),
        f"share of questions searched: {_pct(c['searched'])} -> {_pct(g['searched'])}",
        f"exact match, single-hop: {_pct(c.get('exact_match_1hop'))} -> {_pct(g.get('exact_match_1hop'))}; "
        f"two-hop: {_pct(c.get('exact_match_2hop'))} -> {_pct(g.get('exact_match_2hop'))}",
        f"exact match with a search: {_pct(c['exact_match_searched'])} -> {_pct(g['exact_match_searched'])}; "
        f"without: {_pct(c['exact_match_not_searched'])} -> {_pct(g['exact_match_not_searched'])}",
        f"tool calls per question: {c['calls']:.2f} -> {g['calls']:.2f}",
        f"steps: {s['sft_steps']} cold start ({s['sft_traces']} traces), {s['grpo_steps']} GRPO "
        f"({s['grpo_train_seconds'] / 60:.1f} min of training, {s['grpo_sampled_tokens']} sampled tokens)",
        f"wall time: {s['seconds_total'] / 60:.1f} min (cold start {s['seconds_cold_start'] / 60:.1f} min); "
        f"CPU: {s['cpu']}, {s['threads']} thread{'s' if s['threads'] != 1 else ''}",
        f"run directory: {s['run_dir']}",
        f"plot: {s['plot']}",
        "=" * 64,
    ]
    print("\n".join(lines), flush=True)
