"""`grpokit study gradient`: what each grouping strategy does to the policy-gradient
estimator, measured at one checkpoint instead of through noisy accuracy curves.

    grpokit study gradient [--model DIR] [--prompts 16] [--reference 64] [--pool 64]
                           [--generations 8] [--resamples 200] [--strategies prompt,batch,...]
                           [--scales group,none] [--sketch 8192] [--out DIR]

What is computed (grpokit.algo.estimator has the formulas and their tests):

1. The model (`--model`: a model directory, a run directory's final model or latest
   checkpoint, or `tiny:xs`-style names; default: the grouping study's arithmetic cold
   start, built once under OUT/cold_start) samples, for P fixed training prompts, K
   reference completions and M pool completions each, at the GRPO temperature. All are
   scored with the task's rewards.
2. Each completion's score vector h_i = grad sum_t log pi(y_it) is computed once (one
   forward and backward per completion) and kept as a count sketch of dimension
   `--sketch` (0 = exact vectors; a sketch keeps inner products in expectation, off by
   at most sqrt(2 / (k delta)) ||x|| ||y|| with probability 1 - delta).
3. The reference gradient: the K completions per prompt with a leave-one-out prompt
   baseline (unbiased for the policy gradient with scale none), scaled as the run
   scales, weighted as the loss aggregation weights (`loss_weights`). Its own error is
   estimated from its two halves (K/2 completions each): `half_agreement`.
4. Each strategy, R times: G of the M pooled completions per prompt (a fresh draw each
   time, without replacement; every strategy sees the same draws, so differences between
   strategies are paired), grouped by a fresh grouper, advantages exactly as training
   computes them (Groups.advantages with the preset's estimator, scale and eps), and the
   gradient of the surrogate at ratio 1, sum_i c_i A_i h_i. Against the reference: cosine
   (mean, 95% CI; also to the plain policy gradient, the scale-none reference, whatever
   the strategy's scale), relative MSE, the spread of directions and the variation of sizes, and
   each completion's baseline (r - A with scale none: the group mean the strategy used)
   against its prompt's mean reward over the K reference completions.

The reference and the pool are separate samples, so the reference's error adds the same
amount (its rel_error) to every strategy's relative MSE and caps every cosine at its
cos_truth: the same for every strategy, so it does not reorder them (in expectation). Stateful groupers start empty
(one step: `reward` buckets by this step's success rates); `temporal` first sees
`--history` earlier steps of other prompts (G completions each, from the same policy),
so past rows join its baselines as in training (replay is not measured: replayed rows'
gradients would need the policy of an earlier step).

Outputs: OUT/gradient.md (the table), OUT/gradient.json (every number, the settings, the
machine, threads, seed and wall time), OUT/gradient.png (cosine to the plain policy
gradient with 95% CIs).
"""
from __future__ import annotations

import dataclasses
import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from grpokit.algo import estimator as est

# name -> (grouper spec, algorithm.group options); any registered grouper name works too
STRATEGIES: dict[str, tuple[str, dict]] = {
    "prompt": ("prompt", {}),
    "batch": ("batch", {}),
    "semantic": ("semantic", {}),
    "adaptive": ("adaptive", {}),
    "reward": ("reward", {}),
    "complexity": ("complexity", {}),
    "multiscale": ("multiscale", {}),
    "shrink": ("prompt", {"shrink": True}),
    "multiscale-shrink": ("multiscale", {"shrink": True}),
    "temporal": ("temporal", {"base": "semantic"}),
}
DEFAULT_STRATEGIES = ("prompt", "batch", "semantic", "reward", "complexity", "multiscale", "shrink",
                      "multiscale-shrink", "temporal")
BASELINE = "prompt"


@dataclass
class GradientSettings:
    task: str = "arithmetic"
    model: str | None = None  # None: the grouping study's cold start, built under OUT/cold_start
    prompts: int = 16  # P
    reference: int = 64  # K completions per prompt for the reference gradient
    pool: int = 64  # M completions per prompt the resamples are drawn from
    generations: int = 8  # G: the normal budget per prompt
    resamples: int = 200  # R
    strategies: tuple = DEFAULT_STRATEGIES
    scales: tuple = ("group", "none")
    history: int = 4  # earlier steps the temporal grouper has seen
    sketch: int = 8192  # 0 = exact score vectors
    preset: str = "grpo"
    temperature: float | None = None  # None: the study's GRPO temperature
    max_new_tokens: int | None = None
    seed: int = 0
    threads: int = 1
    extra: list = field(default_factory=list)  # key=value overrides of the TrainConfig used to build


# ----------------------------------------------------------------------------- the model


def resolve_model(spec: str) -> str:
    """A model directory from --model: the directory itself, a run's final model, or its
    latest complete checkpoint; other strings (e.g. tiny:xs, hub names) pass through."""
    from grpokit.checkpoint import latest_checkpoint

    path = Path(spec).expanduser()
    if not path.exists():
        if spec.startswith(("/", ".", "~", "runs/")):  # a local path, not a hub name
            raise FileNotFoundError(f"--model: {spec} does not exist (expected a model directory, a run "
                                    "directory or tiny:xs)")
        return spec
    if (path / "config.json").is_file():
        return str(path)
    if (path / "model" / "config.json").is_file():
        return str(path / "model")
    ckpt = latest_checkpoint(path)
    if ckpt is not None:
        return str(ckpt)
    raise FileNotFoundError(f"--model: {spec} holds no config.json, no model/ and no complete checkpoint "
                            "(expected a model directory or a run directory)")


# ----------------------------------------------------------------------------- sampling and score vectors


@dataclass
class Sampled:
    """Completions of `prompt_index` prompts, prompt-major, `per_prompt` each."""

    rewards: torch.Tensor  # [N]
    prompt_ids: torch.Tensor  # [N] dataset ids
    lengths: torch.Tensor  # [N] trained tokens
    embeddings: torch.Tensor | None  # [N, H]
    prompt_lengths: torch.Tensor  # [N]
    fields: list
    prompts: list
    per_prompt: int
    batch: object = None  # the RolloutBatch (for score vectors)

    def rows(self, idx: torch.Tensor) -> dict:
        i = idx.tolist()
        return dict(prompt_ids=self.prompt_ids[idx], rewards=self.rewards[idx], fields=[self.fields[j] for j in i],
                    embeddings=None if self.embeddings is None else self.embeddings[idx], lengths=self.lengths[idx],
                    prompts=[self.prompts[j] for j in i], prompt_lengths=self.prompt_lengths[idx])


def sample(comp, cfg, indices: list[int], per_prompt: int, step: int) -> Sampled:
    """per_prompt completions of each prompt (keyed sampling, as training draws them), scored."""
    from grpokit.train import collect

    cfg = dataclasses.replace(cfg, rollout=dataclasses.replace(cfg.rollout, num_generations=per_prompt))
    batch = collect(comp, cfg, indices, None, step)
    examples = [comp.train_examples[indices[i]] for i in batch.example_index.tolist()]
    scores = comp.rewards.score([e.prompt for e in examples], batch.completions, [e.fields for e in examples],
                                batch.completion_ids)
    return Sampled(rewards=scores.total.double(), prompt_ids=torch.tensor([e.id for e in examples]),
                   lengths=batch.loss_mask.sum(1).long(), embeddings=batch.context_embedding,
                   prompt_lengths=batch.attention_mask[:, :batch.prompt_len].sum(1),
                   fields=[e.fields for e in examples], prompts=[e.prompt for e in examples],
                   per_prompt=per_prompt, batch=batch)


def score_vectors(model, batch, sketch: est.CountSketch, *, temperature: float) -> torch.Tensor:
    """[N, k]: the sketch of h_i = grad sum_t log pi(y_it) for every row (one forward and
    backward per row: a batched backward would give only the sum)."""
    from grpokit.model.forward import sequence_logprobs, trim_padding

    params = [p for p in model.parameters() if p.requires_grad]
    out = torch.zeros((batch.size, sketch.out_dim), dtype=torch.float64)
    model.eval()  # no dropout noise in the score vectors
    for i in range(batch.size):
        ids, attn, m = trim_padding(batch.input_ids[i:i + 1], batch.attention_mask[i:i + 1], batch.loss_mask[i:i + 1])
        if float(m.sum()) == 0:
            continue  # an empty completion has no trained token: h_i = 0
        logp, _ = sequence_logprobs(model, ids, attn, m, temperature=temperature)
        grads = torch.autograd.grad(logp.sum(), params, allow_unused=True)
        flat = torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])
        out[i] = sketch(flat)
    return out


# ----------------------------------------------------------------------------- strategies


def strategy_spec(name: str) -> tuple[str, dict]:
    if name in STRATEGIES:
        spec, opts = STRATEGIES[name]
        return spec, dict(opts)
    return name, {}


def make_strategy(name: str, s: GradientSettings):
    from grpokit.grouping import make_grouper

    spec, opts = strategy_spec(name)
    return make_grouper(spec, seed=s.seed, num_generations=s.generations, **opts)


def check_strategy(name: str, s: GradientSettings) -> str | None:
    """None when the study can measure the strategy; else why not (one line)."""
    from grpokit.registry import RegistryError

    spec, opts = strategy_spec(name)
    if opts.get("budget"):
        return f"{name}: a sample budget changes completions per prompt; not measured at a fixed budget"
    if opts.get("replay"):
        return f"{name}: replayed rows' gradients need an earlier policy; not measured"
    try:
        make_strategy(name, s)
    except (ValueError, TypeError, RegistryError) as e:
        return f"{name}: {e}"
    return None


def experience(data: dict, step: int):
    from grpokit.types import Experience

    return Experience(step=step, **data)


# ----------------------------------------------------------------------------- the study


def measure(s: GradientSettings, ref: Sampled, pool: Sampled, h_ref: torch.Tensor, h_pool: torch.Tensor, *,
            advantage_fn, agg: str, eps: float, max_len: int, history: list[Sampled] | None = None,
            log=print) -> dict:
    """Every number of the study from sampled completions and their score vectors (no model)."""
    p, k, m, g = s.prompts, ref.per_prompt, pool.per_prompt, s.generations
    prompt_of_ref = torch.arange(p).repeat_interleave(k)  # [P K]
    mu = torch.zeros(p, dtype=torch.float64).index_add_(0, prompt_of_ref, ref.rewards) / k  # [P] true mean reward
    prompt_of_pool = torch.arange(p).repeat_interleave(m)  # [P M]
    mu_pool = torch.zeros(p, dtype=torch.float64).index_add_(0, prompt_of_pool, pool.rewards) / m  # [P]
    sq_dev = torch.zeros(p, dtype=torch.float64).index_add_(0, prompt_of_ref, (ref.rewards - mu[prompt_of_ref]) ** 2)
    mu_se = float((sq_dev / max(k - 1, 1) / k).mean().sqrt())  # typical standard error of mu_p: sqrt(mean var_p / K)

    def weighted(scale: str, rows: torch.Tensor) -> torch.Tensor:
        r, pid = ref.rewards[rows], ref.prompt_ids[rows]
        c = est.loss_weights(ref.lengths[rows], agg, max_len=max_len)
        return (c * est.reference_advantages(r, pid, scale=scale, eps=eps)) @ h_ref[rows]  # [k]

    half = k // 2
    first = (torch.arange(p)[:, None] * k + torch.arange(half)[None]).flatten()
    second = (torch.arange(p)[:, None] * k + torch.arange(half, 2 * half)[None]).flatten()
    references = {}
    for scale in dict.fromkeys([*s.scales, "none"]):  # "none": the plain policy gradient, every row's cos_pg
        references[scale] = {"g": weighted(scale, torch.arange(p * k)),
                             **est.half_agreement(weighted(scale, first), weighted(scale, second))}

    gen = torch.Generator().manual_seed(s.seed)
    subsets = est.draw_subsets(m, g, p, s.resamples, gen)  # [R, P, G]
    rows = (torch.arange(p)[None, :, None] * m + subsets).reshape(s.resamples, p * g)  # [R, N] rows of the pool
    prompt_index = torch.arange(p).repeat_interleave(g)  # [N]
    hist_order = None
    if history:
        n_hist = history[0].prompt_ids.numel() // history[0].per_prompt
        hist_order = torch.rand((s.resamples, n_hist), generator=gen).argsort(dim=1)  # [R, history prompts]

    results = []
    for name in s.strategies:
        t0 = time.perf_counter()
        weights = {scale: torch.zeros((s.resamples, m * p), dtype=torch.float64) for scale in s.scales}
        baselines = torch.zeros((s.resamples, p * g), dtype=torch.float64)
        for r in range(s.resamples):
            grouper = make_strategy(name, s)
            step = 1
            if history and hasattr(grouper, "_steps"):  # temporal: earlier steps of other prompts first
                step = _warm(grouper, history[0], hist_order[r], p * g, s.history)
            data = pool.rows(rows[r])
            exp = experience(data, step)
            groups = grouper(exp)
            c = est.loss_weights(data["lengths"], agg, max_len=max_len)  # [N]
            for scale in s.scales:
                adv = groups.advantages(data["rewards"], advantage_fn, scale=scale, eps=eps).double()  # [N]
                weights[scale][r, rows[r]] = c * adv
            plain = groups.advantages(data["rewards"], advantage_fn, scale="none", eps=eps).double()
            baselines[r] = data["rewards"] - plain
        base = est.baseline_errors(baselines, mu, mu_pool, prompt_index.expand(s.resamples, -1))
        for scale in s.scales:
            gs = weights[scale] @ h_pool  # [R, k]
            g_ref = references[scale]["g"]
            cos = est.cosine(gs, g_ref)
            mean_g = gs.mean(dim=0)
            row = {"strategy": name, "scale": scale, "cos": est.mean_ci(cos), "cos_sd": float(cos.std()),
                   "cos_pg": est.mean_ci(est.cosine(gs, references["none"]["g"])),
                   "rel_mse": est.mean_ci(est.relative_mse(gs, g_ref)),
                   "cos_of_mean": float(est.cosine(mean_g[None], g_ref)[0]),
                   "norm_ratio": float(gs.norm(dim=1).mean() / g_ref.norm()),
                   "direction_spread": est.direction_spread(gs), "size_cv": est.size_cv(gs),
                   "baseline": base, "_cos": cos}
            results.append(row)
        log(f"  {name:<18} {time.perf_counter() - t0:5.1f} s  " + "  ".join(
            f"cos[{r['scale']}] {r['cos'][0]:.3f}" for r in results if r["strategy"] == name))
    for row in results:  # paired with prompt grouping on the same draws
        same = [b for b in results if b["strategy"] == BASELINE and b["scale"] == row["scale"]]
        row["cos_minus_prompt"] = est.mean_ci(row["_cos"] - same[0]["_cos"]) if same else None
    for row in results:
        row.pop("_cos")
    refs = {scale: {k_: v for k_, v in ref_.items() if k_ != "g"} | {"norm": float(ref_["g"].norm())}
            for scale, ref_ in references.items()}
    return {"reference": refs, "rows": results, "mean_reward": float(mu.mean()), "mu_se": mu_se,
            "prompt_means": mu.tolist()}


def _warm(grouper, hist: Sampled, order: torch.Tensor, per_step: int, steps: int) -> int:
    """Feed the temporal grouper `steps` earlier steps of history rows (in the given prompt
    order); returns the step number of the current one."""
    per = hist.per_prompt
    n_prompts = hist.prompt_ids.numel() // per
    prompts_per_step = n_prompts // steps
    for t in range(steps):
        chosen = order[t * prompts_per_step:(t + 1) * prompts_per_step]
        idx = (chosen[:, None] * per + torch.arange(per)[None]).flatten()
        grouper(experience(hist.rows(idx), t + 1))
    return steps + 1


def run(s: GradientSettings, out: Path, *, cold_start=None, log=print) -> dict:
    """The study; cold_start(): the default model's directory when s.model is None (the
    grouping study passes its own cold start, built once under OUT/cold_start)."""
    from grpokit.build import build
    from grpokit.config import load_config
    from grpokit.config.schema import TrainConfig
    from grpokit.demos.demo import DemoSettings
    from grpokit.demos.study import StudySettings
    from grpokit.grouping import make_grouper
    from grpokit.optim import set_threads

    t_start = time.perf_counter()
    set_threads(s.threads)
    out.mkdir(parents=True, exist_ok=True)
    bad = [why for why in (check_strategy(n, s) for n in s.strategies) if why]
    if bad:
        raise ValueError(f"--strategies: {bad[0]}")
    if s.model is None and cold_start is None:
        raise ValueError("no model: give --model DIR (or a cold_start function)")
    model = resolve_model(s.model) if s.model else str(cold_start())
    # the GRPO sampling of the grouping study, at whose checkpoints the estimator is measured
    temperature = s.temperature if s.temperature is not None else StudySettings.temperature
    max_new = s.max_new_tokens if s.max_new_tokens is not None else DemoSettings.max_new_tokens
    cfg = load_config(TrainConfig, None, [
        f"model.name_or_path={model}", f"data.train=task:{s.task}", f"rollout.num_generations={s.generations}",
        f"rollout.prompts_per_step={s.prompts}", f"rollout.max_new_tokens={max_new}",
        f"rollout.temperature={temperature}", f"algorithm.preset={s.preset}", f"run.seed={s.seed}",
        f"run.threads={s.threads}", "data.eval_size=1", *s.extra])
    comp = build(cfg)
    algo = comp.algorithm
    # the sampler records context embeddings when the grouper asks: every strategy may need them
    comp = dataclasses.replace(comp, grouper=make_grouper("semantic", seed=s.seed))
    order = torch.randperm(len(comp.train_examples), generator=torch.Generator().manual_seed(s.seed)).tolist()
    temporal = any(strategy_spec(n)[0] == "temporal" for n in s.strategies)
    need = s.prompts * (1 + (s.history if temporal else 0))  # temporal's earlier steps: other prompts
    if need > len(order):
        raise ValueError(f"--prompts: {need} prompts needed, the task's train split has {len(order)}")
    study_idx, hist_idx = order[:s.prompts], order[s.prompts:need]
    t0 = time.perf_counter()
    both = sample(comp, cfg, study_idx, s.reference + s.pool, step=1)
    ref_rows = torch.cat([torch.arange(i * both.per_prompt, i * both.per_prompt + s.reference)
                          for i in range(s.prompts)])
    pool_rows = torch.cat([torch.arange(i * both.per_prompt + s.reference, (i + 1) * both.per_prompt)
                           for i in range(s.prompts)])
    history = [sample(comp, cfg, hist_idx, s.generations, step=2)] if hist_idx else None
    t_sample = time.perf_counter() - t0
    log(f"sampled {both.rewards.numel()} completions of {s.prompts} prompts"
        + (f" and {history[0].rewards.numel()} of {len(hist_idx)} history prompts" if history else "")
        + f" in {t_sample:.0f} s; mean reward {float(both.rewards.mean()):.3f}")
    params = sum(p.numel() for p in comp.policy.model.parameters() if p.requires_grad)
    sketch = est.CountSketch(params, s.sketch, seed=s.seed + 1)
    t0 = time.perf_counter()
    h = score_vectors(comp.policy.model, both.batch, sketch, temperature=temperature)
    t_vectors = time.perf_counter() - t0
    log(f"score vectors of {both.rewards.numel()} completions ({params:,} parameters"
        + (f", sketched to {s.sketch}" if s.sketch else ", exact") + f") in {t_vectors:.0f} s")

    def part(rows: torch.Tensor, per: int) -> Sampled:
        return Sampled(per_prompt=per, **both.rows(rows))

    t0 = time.perf_counter()
    res = measure(s, part(ref_rows, s.reference), part(pool_rows, s.pool), h[ref_rows], h[pool_rows],
                  advantage_fn=comp.advantage_fn, agg=algo.loss_agg, eps=algo.eps, max_len=max_new,
                  history=history, log=log)
    t_measure = time.perf_counter() - t0
    res.update({
        "settings": {**dataclasses.asdict(s), "model": model, "temperature": temperature, "max_new_tokens": max_new,
                     "loss_agg": algo.loss_agg, "eps": algo.eps, "advantage": algo.advantage,
                     "parameters": params, "sketch_error_bound_95": sketch.error_bound(0.05)},
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "torch": torch.__version__, "threads": torch.get_num_threads()},
        "seconds": {"sampling": t_sample, "score_vectors": t_vectors, "strategies": t_measure,
                    "total": time.perf_counter() - t_start}})
    (out / "gradient.json").write_text(json.dumps(res, indent=1, default=str))
    (out / "gradient.md").write_text(markdown(res))
    try:
        plot(res, out / "gradient.png")
    except ImportError:  # matplotlib is optional
        pass
    log(markdown(res))
    return res


# ----------------------------------------------------------------------------- output


def markdown(res: dict) -> str:
    s = res["settings"]
    lines = [f"# The policy-gradient estimator per grouping strategy on `{s['task']}`", "",
             f"Model {s['model']} ({s['parameters']:,} parameters), {s['prompts']} prompts, mean reward "
             f"{res['mean_reward']:.3f}; reference {s['reference']} completions per prompt; each strategy "
             f"{s['resamples']} resamples of {s['generations']} completions per prompt from a separate pool of "
             f"{s['pool']}; advantage {s['advantage']}, loss_agg {s['loss_agg']}, temperature {s['temperature']}; "
             + (f"score vectors count-sketched to {s['sketch']} dimensions (inner products within "
                f"{s['sketch_error_bound_95']:.3f} ||x|| ||y|| at 95%)" if s["sketch"] else "exact score vectors")
             + f"; seed {s['seed']}, {res['machine']['threads']} thread(s), {res['seconds']['total']:.0f} s.", ""]
    for scale, ref in res["reference"].items():
        lines.append(f"Reference (scale {scale}): halves agree at cos {ref['cos_halves']:.3f}; estimated relative "
                     f"error {ref['rel_error']:.3f}, so its expected cosine to the true gradient is "
                     f"{ref['cos_truth']:.3f} (the ceiling of every cosine below).")
    lines += ["", f"Prompt means from the reference samples have a standard error of about {res['mu_se']:.3f} "
                  "(the floor of the baseline RMSE).", "",
              "| strategy | scale | cos to reference (95% CI) | minus prompt's (paired, 95% CI) | "
              "cos to policy gradient | rel. MSE | cos of mean gradient | mean norm / reference's | "
              "direction spread | size CV | baseline RMSE | baseline bias |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        c = r["cos"]
        d = r.get("cos_minus_prompt")
        diff = "-" if d is None or r["strategy"] == BASELINE else f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]"
        lines.append(f"| {r['strategy']} | {r['scale']} | {c[0]:.3f} [{c[1]:.3f}, {c[2]:.3f}] | {diff} | "
                     f"{r['cos_pg'][0]:.3f} | {r['rel_mse'][0]:.2f} | {r['cos_of_mean']:.3f} | {r['norm_ratio']:.2f} | "
                     f"{r['direction_spread']:.3f} | {r['size_cv']:.3f} | {r['baseline']['rmse']:.3f} | "
                     f"{r['baseline']['bias']:.3f} |")
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> Path:
    """Each strategy's cosine to the plain policy gradient (the scale-none reference), per
    advantage scale: the one target that does not depend on the scaling being measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scales = list(dict.fromkeys(r["scale"] for r in res["rows"]))
    names = list(dict.fromkeys(r["strategy"] for r in res["rows"]))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / max(len(scales), 1)
    for j, scale in enumerate(scales):
        rows = {r["strategy"]: r for r in res["rows"] if r["scale"] == scale}
        xs = [i + (j - (len(scales) - 1) / 2) * width for i in range(len(names))]
        ys = [rows[n]["cos_pg"][0] for n in names]
        err = [[rows[n]["cos_pg"][0] - rows[n]["cos_pg"][1] for n in names],
               [rows[n]["cos_pg"][2] - rows[n]["cos_pg"][0] for n in names]]
        ax.bar(xs, ys, width=width, yerr=err, capsize=2, label=f"scale {scale}")
    ax.axhline(res["reference"]["none"]["cos_truth"], linestyle=":", linewidth=1, color="grey")
    lows = [r["cos_pg"][1] for r in res["rows"] if r["cos_pg"][1] == r["cos_pg"][1]]  # NaN-free
    ax.set_ylim(max(0.0, min(lows, default=0.0) - 0.05), 1.0)  # differences of a few hundredths stay visible
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("cosine to the policy gradient")
    ax.set_title("mean over resamples, 95% CI; dotted: the reference's own expected cosine to the truth", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def add_parser(sub) -> None:
    p = sub.add_parser("gradient", help="each strategy's policy-gradient estimate against a many-sample reference")
    d = GradientSettings()
    p.add_argument("--model", help="model directory, run directory (final model or latest checkpoint) or tiny:xs; "
                                   "default: the grouping study's cold start on --task, built under OUT/cold_start "
                                   "(on a task other than arithmetic that can take hours: see docs/grouping.md)")
    p.add_argument("--task", default=d.task, help="a built-in task (e.g. arithmetic, mixture) (default: %(default)s)")
    for name, typ, what in (("prompts", int, "P, fixed training prompts"),
                            ("reference", int, "K, completions per prompt for the reference (even, >= 4)"),
                            ("pool", int, "M, completions per prompt the resamples draw from"),
                            ("generations", int, "G, completions per prompt in one resample (the normal budget)"),
                            ("resamples", int, "R, resamples per strategy"),
                            ("history", int, "earlier steps the temporal grouper sees first"),
                            ("sketch", int, "count-sketch dimension of the score vectors (0 = exact)"),
                            ("seed", int, "seed"), ("threads", int, "torch threads"),
                            ("max_new_tokens", int, "default: the grouping study's"),
                            ("temperature", float, "default: the grouping study's GRPO temperature")):
        p.add_argument(f"--{name.replace('_', '-')}", type=typ, help=f"{what} (default: {getattr(d, name)})")
    p.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES),
                   help=f"comma-separated: {', '.join(STRATEGIES)}, or any grouper name (`grpokit list groupers`); "
                        f"{BASELINE} is always included")
    p.add_argument("--scales", default=",".join(d.scales), help="advantage scales to measure: group, batch, none")
    p.add_argument("--preset", default=d.preset, help="algorithm preset (estimator, loss aggregation, eps)")
    p.add_argument("--out", default="runs/study-gradient")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the config the model is built with")


def settings_from(args, error) -> GradientSettings:
    s = GradientSettings(task=args.task, model=args.model, preset=args.preset, extra=list(args.overrides))
    for name in ("prompts", "reference", "pool", "generations", "resamples", "history", "sketch", "seed", "threads",
                 "max_new_tokens", "temperature"):
        if getattr(args, name) is not None:
            setattr(s, name, getattr(args, name))
    names = [n.strip() for n in args.strategies.split(",") if n.strip()]
    if BASELINE not in names:
        names.insert(0, BASELINE)
    s.strategies = tuple(dict.fromkeys(names))
    from grpokit.algo.advantages import SCALES

    s.scales = tuple(x.strip() for x in args.scales.split(",") if x.strip())
    for x in s.scales:
        if x not in SCALES:
            error(f"--scales: unknown scale {x!r}; valid: {', '.join(SCALES)}")
    checks = (("prompts", s.prompts >= 1, ">= 1"), ("reference", s.reference >= 4 and s.reference % 2 == 0,
              "an even number >= 4 (its halves bound its error)"), ("generations", s.generations >= 1, ">= 1"),
              ("pool", s.pool >= s.generations, f">= --generations ({s.generations})"),
              ("resamples", s.resamples >= 2, ">= 2"), ("sketch", s.sketch >= 0, ">= 0 (0 = exact)"),
              ("history", s.history >= 1, ">= 1"), ("threads", s.threads >= 1, ">= 1"))
    for name, ok, expected in checks:
        if not ok:
            error(f"--{name}: got {getattr(s, name)}, expected {expected}")
    if s.model is not None:
        try:
            s.model = resolve_model(s.model)
        except FileNotFoundError as e:
            error(str(e))
    for n in s.strategies:
        why = check_strategy(n, s)
        if why:
            error(f"--strategies: {why}")
    return s
