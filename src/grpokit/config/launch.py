"""Checks of launch files: an accelerate config and a SLURM batch script that start
`grpokit train` on several processes (`grpokit validate FILE`; docs/distributed.md).

    check = check_launch_file("recipes/launch/slurm_two_nodes.sbatch")
    check.problems   # ["FILE:LINE: what is wrong; what was expected"], [] when it starts as meant
    check.warnings   # settings grpokit does not honour, values it cannot check

grpokit joins the processes a launcher starts through torchrun's variables (WORLD_SIZE,
RANK, MASTER_ADDR, ...) and picks FSDP (run.parallel auto) when ACCELERATE_USE_FSDP=true.
In accelerate 1.16 (commands/launch.py, utils/launch.py) only the torchrun launcher used
for MULTI_GPU and FSDP configs sets those, also on a machine without GPUs; an FSDP
config adds ACCELERATE_USE_FSDP=true and FSDP_VERSION. A MULTI_CPU or NO config takes
the simple launcher: one process (or mpirun with a hostfile, which sets no WORLD_SIZE).
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from grpokit.config.io import ConfigError, read_yaml, show, suggest

# distributed_type values grpokit runs under: torchrun's launcher (MULTI_GPU, FSDP) or one process
ACCELERATE_TYPES = ("MULTI_GPU", "FSDP", "MULTI_CPU", "NO")
# accelerate 1.16's ClusterConfig fields (commands/config/config_args.py), plus the two
# older keys it still converts (fp16, dynamo_backend); any other key makes it refuse the file
ACCELERATE_KEYS = (
    "compute_environment", "distributed_type", "mixed_precision", "use_cpu", "debug", "num_processes",
    "machine_rank", "num_machines", "gpu_ids", "main_process_ip", "main_process_port", "rdzv_backend",
    "same_network", "main_training_function", "enable_cpu_affinity", "fp8_config", "deepspeed_config",
    "fsdp_config", "parallelism_config", "megatron_lm_config", "mpirun_config", "downcast_bf16", "tpu_name",
    "tpu_zone", "tpu_use_cluster", "tpu_use_sudo", "command_file", "commands", "tpu_vm", "tpu_env",
    "dynamo_config", "fp16", "dynamo_backend",
)
# fsdp_config settings that change how a run behaves but that grpokit's sharding does not read
FSDP_IGNORED = {"fsdp_offload_params": "parameters stay on the device",
                "fsdp_activation_checkpointing": "activations are kept"}
# torchrun options that take no value (torch 2.13's parser); every other option takes one
TORCHRUN_FLAGS = {"--standalone", "-m", "--module", "--no-python", "--no_python", "--run-path", "--run_path",
                  "--virtual-local-rank", "--virtual_local_rank", "-h", "--help"}
SLURM_NODE_VARS = ("SLURM_NNODES", "SLURM_JOB_NUM_NODES")  # what sbatch sets from --nodes
SBATCH_SHORT = {"-N": "nodes", "-n": "ntasks", "-c": "cpus-per-task", "-G": "gpus", "-J": "job-name"}


@dataclass
class LaunchCheck:
    kind: str  # "accelerate" or "slurm"
    summary: str = ""  # what the file starts, for the OK line
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def launch_kind(path: str | Path) -> str | None:
    """'slurm' for a batch script, 'accelerate' for an accelerate config, None for
    anything else (a recipe)."""
    p = Path(path).expanduser()
    if not p.is_file():
        return None
    if p.suffix in (".sbatch", ".slurm"):
        return "slurm"
    if p.suffix in (".yaml", ".yml", ".json"):
        data = read_yaml(p)
        return "accelerate" if "distributed_type" in data or "compute_environment" in data else None
    head = p.read_text(errors="replace")[:4096]
    return "slurm" if head.startswith("#!") and "#SBATCH" in head else None


def check_launch_file(path: str | Path) -> LaunchCheck:
    """The problems and warnings of a launch file (kind from launch_kind)."""
    kind = launch_kind(path)
    if kind == "accelerate":
        return check_accelerate(path)
    if kind == "slurm":
        return check_slurm(path)
    raise ConfigError(f"{path}: neither an accelerate config (distributed_type, compute_environment keys) "
                      "nor a SLURM script (#SBATCH lines)")


# --------------------------------------------------------------------------- accelerate


def check_accelerate(path: str | Path) -> LaunchCheck:
    d = read_yaml(path)
    out = LaunchCheck("accelerate")
    p, w = out.problems, out.warnings

    def problem(key: str, text: str) -> None:
        p.append(f"{path}: {key}{' = ' + show(d[key]) if key in d else ''}: {text}")

    for key in d:
        if key not in ACCELERATE_KEYS:
            p.append(f"{path}: {key}: not a key of accelerate 1.16's config (accelerate launch refuses the file)"
                     + suggest(str(key), ACCELERATE_KEYS))
    env = d.get("compute_environment", "LOCAL_MACHINE")
    if env != "LOCAL_MACHINE":
        problem("compute_environment", "expected LOCAL_MACHINE (the machines you start accelerate launch on)")
    kind = d.get("distributed_type")
    if kind is None:
        p.append(f"{path}: distributed_type: missing; expected one of {', '.join(ACCELERATE_TYPES)}")
    elif kind not in ACCELERATE_TYPES:
        why = " (grpokit does not run under DeepSpeed)" if kind == "DEEPSPEED" else ""
        problem("distributed_type", f"expected one of {', '.join(ACCELERATE_TYPES)}{why}")
    fsdp = d.get("fsdp_config") or {}
    if kind == "FSDP":
        if not isinstance(fsdp, dict):
            problem("fsdp_config", "expected a mapping with fsdp_version: 2")
            fsdp = {}
        version = fsdp.get("fsdp_version", fsdp.get("version"))
        if version != 2:
            # accelerate exports FSDP_VERSION=1 when the key is missing
            got = "missing" if version is None else f"= {show(version)}"
            p.append(f"{path}: fsdp_config.fsdp_version {got}: expected 2 (grpokit shards with torch's "
                     "fully_shard, FSDP2)")
        for key, why in FSDP_IGNORED.items():
            if fsdp.get(key) is True:
                w.append(f"{path}: fsdp_config.{key} = true: grpokit does not read it ({why})")

    machines = _positive_int(d, "num_machines", 1, problem)
    processes = _positive_int(d, "num_processes", 1 if kind == "NO" else None, problem)  # accelerate's defaults
    if processes is None and "num_processes" not in d and kind not in (None, "NO"):
        w.append(f"{path}: num_processes: not set; accelerate launch then needs --num_processes")
    if processes and machines and processes % machines:
        problem("num_processes", f"expected a multiple of num_machines = {machines} (each machine starts "
                                 "num_processes / num_machines)")
    if machines and machines > 1 and not d.get("main_process_ip"):
        p.append(f"{path}: main_process_ip: missing; expected the first machine's address when "
                 f"num_machines = {machines}")
    if kind in ("MULTI_CPU", "NO") and processes and processes > 1:
        problem("num_processes", f"expected 1 with distributed_type {kind}: accelerate launch starts one process "
                                 "there (mpirun with mpirun_config sets no WORLD_SIZE, which grpokit reads); for "
                                 "several CPU processes use distributed_type MULTI_GPU (torchrun, also without "
                                 "GPUs) or grpokit train --nproc N")

    mp = d.get("mixed_precision", "no")
    if mp is False:  # a bare `no` in YAML
        problem("mixed_precision", "write 'no' in quotes (YAML reads a bare no as false and accelerate launch "
                                   "fails on it)")
    elif mp not in (None, "no"):
        w.append(f"{path}: mixed_precision = {show(mp)}: grpokit does not read it (ACCELERATE_MIXED_PRECISION); "
                 "expected 'no', and model.dtype (e.g. bfloat16) in the recipe")
    if d.get("deepspeed_config") and kind != "DEEPSPEED":
        w.append(f"{path}: deepspeed_config: grpokit does not read it (no DeepSpeed)")
    dynamo = d.get("dynamo_config") or {}
    backend = dynamo.get("dynamo_backend") if isinstance(dynamo, dict) else None
    backend = backend or d.get("dynamo_backend")
    if backend and str(backend).upper() != "NO":
        w.append(f"{path}: dynamo_config.dynamo_backend = {show(backend)}: grpokit does not compile the model "
                 "(it ignores ACCELERATE_DYNAMO_BACKEND); expected 'NO'")

    sharding = " (fsdp_version 2; run.parallel auto shards the policy)" if kind == "FSDP" else ""
    out.summary = (f"accelerate config: {kind}{sharding}, {processes or '--num_processes'} processes "
                   f"on {machines} machine{'s' if machines != 1 else ''}")
    return out


def _positive_int(d: dict, key: str, default: int | None, problem) -> int | None:
    if key not in d:
        return default
    value = d[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        problem(key, "expected a positive integer")
        return None
    return value


# --------------------------------------------------------------------------- SLURM


def recipe_problems(recipe: str, overrides: list[str]) -> list[str]:
    """`grpokit validate RECIPE OVERRIDES...`'s problems for a train recipe."""
    from grpokit.config.io import load_config
    from grpokit.config.schema import TrainConfig
    from grpokit.config.validation import validate

    try:
        return validate(load_config(TrainConfig, recipe, overrides))
    except ConfigError as e:
        return [str(e)]


@dataclass
class _Line:
    number: int  # 1-based, of the first physical line
    text: str


def _logical_lines(text: str) -> list[_Line]:
    """Lines with backslash continuations joined, each with its first line's number."""
    out: list[_Line] = []
    pending: _Line | None = None
    for i, raw in enumerate(text.splitlines(), 1):
        if pending is None:
            pending = _Line(i, "")
        if raw.endswith("\\") and not raw.lstrip().startswith("#"):
            pending.text += raw[:-1] + " "
            continue
        pending.text += raw
        out.append(pending)
        pending = None
    if pending is not None:
        out.append(pending)
    return out


def _sbatch_options(line: _Line, where: str, p: list[str]) -> dict[str, str]:
    """The options of one `#SBATCH` line (long names, without dashes)."""
    try:
        tokens = shlex.split(line.text.strip()[len("#SBATCH"):], comments=True)
    except ValueError as e:
        p.append(f"{where}:{line.number}: cannot read this #SBATCH line ({e})")
        return {}
    out: dict[str, str] = {}
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if t.startswith("--"):
            name, eq, value = t[2:].partition("=")
            if not eq and i + 1 < len(tokens) and not tokens[i + 1].startswith("-"):
                value, i = tokens[i + 1], i + 1
            out[name] = value
        elif t[:2] in SBATCH_SHORT:
            value = t[2:]
            if not value and i + 1 < len(tokens):
                value, i = tokens[i + 1], i + 1
            out[SBATCH_SHORT[t[:2]]] = value
        i += 1
    return out


def _torchrun_split(tokens: list[str]) -> tuple[int, dict[str, str | bool], list[str]] | None:
    """(index of the launcher token, torchrun's options, [script, script args...]) for a
    command that runs torchrun or `python -m torch.distributed.run`; None otherwise."""
    start = None
    for i, t in enumerate(tokens):
        if Path(t).name == "torchrun":
            start = i + 1
        elif t == "torch.distributed.run" and i > 0 and tokens[i - 1] == "-m":
            start = i + 1
        if start is not None:
            break
    if start is None:
        return None
    opts: dict[str, str | bool] = {}
    i = start
    while i < len(tokens) and tokens[i].startswith("-"):
        name, eq, value = tokens[i].partition("=")
        key = name.lstrip("-").replace("_", "-")
        if eq:
            opts[key] = value
        elif name in TORCHRUN_FLAGS:
            opts[key] = True
        elif i + 1 < len(tokens):
            opts[key], i = tokens[i + 1], i + 1
        i += 1
    return start - 1, opts, tokens[i:]


def _count(value: str, nodes: int) -> int | None:
    """A node count as torchrun reads it (N, N:N, or sbatch's own variables = nodes)."""
    v = value.strip()
    if re.fullmatch(r"\$\{?(" + "|".join(SLURM_NODE_VARS) + r")\}?", v):
        return nodes
    m = re.fullmatch(r"(\d+)(?::(\d+))?", v)
    if m and (m.group(2) is None or m.group(1) == m.group(2)):
        return int(m.group(1))
    return None


def check_slurm(path: str | Path) -> LaunchCheck:
    """A batch script that runs `srun ... torchrun ... -m grpokit train --config RECIPE`
    once per node: node counts agree, several nodes meet at a rendezvous endpoint, and
    the recipe exists (relative to the current folder: the job starts in the folder
    sbatch is called from) and validates with the overrides on the grpokit line."""
    where = str(path)
    out = LaunchCheck("slurm")
    p, w = out.problems, out.warnings
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"cannot read {where!r}: {e.strerror or e}") from None
    lines = _logical_lines(text)
    sbatch: dict[str, tuple[str, int]] = {}
    commands: list[tuple[_Line, list[str]]] = []
    in_header = True  # sbatch reads #SBATCH lines up to the first command only
    for line in lines:
        s = line.text.strip()
        if s.startswith("#SBATCH"):
            if not in_header:
                w.append(f"{where}:{line.number}: #SBATCH after the first command: sbatch ignores it")
                continue
            for k, v in _sbatch_options(line, where, p).items():
                sbatch[k] = (v, line.number)
        elif s and not s.startswith("#"):
            in_header = False
            try:
                commands.append((line, shlex.split(s, comments=True)))
            except ValueError:
                pass  # shell syntax shlex cannot read (heredocs, ...): not a launch line
    nodes_value, nodes_line = sbatch.get("nodes", ("1", 0))
    nodes = int(nodes_value) if nodes_value.isdigit() else None
    if nodes is None:
        p.append(f"{where}:{nodes_line}: #SBATCH --nodes={nodes_value}: expected a number of nodes")
    tasks_value, tasks_line = sbatch.get("ntasks-per-node", ("1", 0))
    if tasks_value != "1":
        p.append(f"{where}:{tasks_line}: #SBATCH --ntasks-per-node={tasks_value}: expected 1 (torchrun starts "
                 "the node's processes itself; one srun task per node)")

    found = next(((line, split) for line, tokens in commands if (split := _torchrun_split(tokens))), None)
    if found is None:
        p.append(f"{where}: no torchrun line; expected `srun torchrun --nnodes N ... -m grpokit train "
                 "--config RECIPE` (grpokit joins its processes through torchrun's variables)")
        return out
    line, (at, opts, script) = found
    tokens = shlex.split(line.text.strip(), comments=True)
    at_line = f"{where}:{line.number}"
    nnodes_value = str(opts.get("nnodes", "1"))
    nnodes = _count(nnodes_value, nodes or 0)
    if nnodes is None:
        p.append(f"{at_line}: torchrun --nnodes {nnodes_value}: expected a number (or $SLURM_NNODES)")
    elif nodes is not None and nnodes != nodes:
        p.append(f"{at_line}: torchrun --nnodes {nnodes_value}, but #SBATCH --nodes={nodes} "
                 f"(line {nodes_line or 'none: 1 node'}); expected the same number")
    several = (nnodes or 0) > 1 or (nodes or 0) > 1
    if several:
        if "srun" not in tokens[:at]:
            p.append(f"{at_line}: torchrun without srun runs on the first node only; expected "
                     "`srun torchrun ...` (one task per node)")
        if opts.get("standalone"):
            p.append(f"{at_line}: torchrun --standalone on {nnodes} nodes: expected --rdzv-backend c10d "
                     "--rdzv-endpoint HOST:PORT (the first node's hostname)")
        elif not opts.get("rdzv-endpoint") and not opts.get("master-addr"):
            p.append(f"{at_line}: torchrun on {nnodes} nodes without a rendezvous endpoint; expected "
                     "--rdzv-backend c10d --rdzv-endpoint HOST:PORT (the first node's hostname)")
        elif opts.get("rdzv-endpoint") and opts.get("rdzv-backend", "static") == "static" \
                and "node-rank" not in opts:
            p.append(f"{at_line}: torchrun --rdzv-endpoint with the static rendezvous (the default) needs "
                     "--node-rank on every node; expected --rdzv-backend c10d")
    gpus = sbatch.get("gpus-per-node", ("", 0))[0].rpartition(":")[2]
    per_node = str(opts.get("nproc-per-node", "1"))
    if gpus.isdigit() and per_node.isdigit() and gpus != per_node:
        w.append(f"{at_line}: torchrun --nproc-per-node {per_node}, but #SBATCH --gpus-per-node={gpus}: "
                 "one process per GPU is the usual layout")

    module = opts.get("module") or opts.get("m")
    program = script[0] if script else ""
    if not (module and program == "grpokit" or Path(program).name == "grpokit") or script[1:2] != ["train"]:
        shown = " ".join(script[:2]) if Path(program).name == "grpokit" else program or "nothing"
        p.append(f"{at_line}: torchrun starts {shown}; expected "
                 "-m grpokit train --config RECIPE")
        return out
    args = script[2:]
    recipe = next((args[i + 1] for i, a in enumerate(args[:-1]) if a == "--config"), None)
    recipe = recipe or next((a.split("=", 1)[1] for a in args if a.startswith("--config=")), None)
    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    if recipe is None:
        p.append(f"{at_line}: grpokit train without --config; expected --config RECIPE")
    elif "$" in recipe:
        w.append(f"{at_line}: --config {recipe}: a shell variable, not checked")
    else:
        from grpokit.config.io import resolve_recipe

        try:
            resolve_recipe(recipe)
        except ConfigError:
            p.append(f"{at_line}: --config {recipe}: no such recipe in {Path.cwd()} (the job starts in the "
                     "folder sbatch is called from)")
            recipe = None
        if recipe is not None:
            p += [f"{at_line}: {recipe}: {problem}" for problem in recipe_problems(recipe, overrides)]
    rendezvous = f", {opts.get('rdzv-backend', 'static')} rendezvous" if several else ""
    out.summary = (f"SLURM script: {nodes} node{'s' if nodes != 1 else ''} x torchrun --nproc-per-node "
                   f"{per_node}{rendezvous}; grpokit train --config {recipe or '(not checked)'}")
    return out
