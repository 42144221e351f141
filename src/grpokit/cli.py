"""The `grpokit` command: demo | sft | train | eval | report | export | list | validate | bench | study.

    grpokit train --config arithmetic run.steps=50
    grpokit train --model runs/sft --data prompts.jsonl --reward accuracy --reward format@0.1 --out runs/rl
    grpokit validate my_recipe.yaml algorithm.beta=0.04

Settings come from, in increasing precedence: the config defaults, the YAML recipe
(`--config`), the command's flags, and `key=value` overrides. Every command's `--help`
lists all keys. torch and transformers are imported only inside the commands, so
`grpokit --help` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any, Sequence

from grpokit.config.schema import EvalConfig, SFTConfig, TrainConfig
from grpokit.config.help import config_help
from grpokit.config.io import (KINDS, ConfigError, builtin_recipes, dotted_keys, dump_yaml, load_config,
                               parse_reward, read_yaml, recipe_kind, resolve_recipe)
from grpokit.config.diff import format_changes
from grpokit.config.validation import advisories, validate
from grpokit.signals import Interrupted

PROG = "grpokit"
LIST_CATEGORIES = ("rewards", "losses", "presets", "advantages", "groupers", "tasks", "tools")


# OSErrors about a path the user named (an --out that is a file, a directory without
# write permission): shown as "path: reason", never as a traceback.
FILE_ERRORS = (PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)


class UsageError(Exception):
    """A command-line mistake; printed as `grpokit: error: ...`, exit code 2."""


# --------------------------------------------------------------------------- parser


def _epilog(cls: type, example: str) -> str:
    return (
        f"examples:\n{example}\n\n"
        "settings (YAML keys of a --config recipe; override any with key=value, values read as YAML):\n"
        + config_help(cls)
    )


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _add_overrides(p: argparse.ArgumentParser, example: str = "algorithm.beta=0.04 run.steps=50") -> None:
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help=f"set any key listed below, e.g. {example} (applied last)")


def _add_config(p: argparse.ArgumentParser) -> None:
    names = ", ".join(builtin_recipes())
    p.add_argument("--config", "-c", metavar="RECIPE",
                   help=f"YAML recipe file, or a built-in recipe name ({names})")


def _add_reward(p: argparse.ArgumentParser, key: str) -> None:
    p.add_argument("--reward", action="append", metavar="NAME[@WEIGHT]",
                   help=f"reward function (repeat for several; replaces `{key}`): a registered name "
                        "(grpokit list rewards), module:function or file.py:function, optionally "
                        "with @WEIGHT, e.g. --reward accuracy --reward format@0.1")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="GRPO training for causal language models (group-relative RL with rule-based rewards).",
        formatter_class=_formatter,
        epilog="Run `grpokit COMMAND --help` for a command's flags and every config key.\n"
               "Set GRPOKIT_DEBUG=1 to see full tracebacks on errors.",
    )
    from grpokit import __version__

    parser.add_argument("--version", action="version", version=f"grpokit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    # demo
    p = sub.add_parser("demo", help="seeded end-to-end demo on the arithmetic task (cold start, GRPO, control)",
                       description="Run the built-in demo: a small model learns multi-step arithmetic "
                                   "(supervised cold start, then GRPO), beside a control that trains on with SFT "
                                   "for GRPO's budget, and reports held-out accuracy.",
                       formatter_class=_formatter,
                       epilog="examples:\n  grpokit demo --quick\n  grpokit demo search --seed 1")
    p.add_argument("variant", nargs="?", choices=("search",),
                   help="`search`: the tool-use demo (search QA with a BM25 tool)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--out", metavar="DIR", help="run directory (default: runs/demo or runs/demo-search)")
    p.add_argument("--quick", action="store_true", help="a shorter run, for a smoke test")
    p.add_argument("--threads", type=int, metavar="N", help="torch threads (default: 2, the machine the demos "
                   "were measured on)")
    p.add_argument("--no-control", action="store_true",
                   help="skip the control arm (more SFT for GRPO's budget): about a third less time")
    p.set_defaults(func=cmd_demo)

    # sft
    p = sub.add_parser("sft", help="supervised cold start on reasoning traces",
                       description=SFTConfig.__doc__, formatter_class=_formatter,
                       epilog=_epilog(SFTConfig, "  grpokit sft --data task:arithmetic --model tiny --out runs/sft\n"
                                                 "  grpokit sft --data traces.jsonl --model models/qwen "
                                                 "--out runs/sft lr=2e-5 batch_size=8"))
    _add_config(p)
    p.add_argument("--data", metavar="PATH", help="traces (sets `data`): JSONL file or task:NAME")
    p.add_argument("--model", metavar="NAME_OR_PATH", help="model to fine-tune (sets `model.name_or_path`)")
    p.add_argument("--out", metavar="DIR", help="output model directory (sets `out`)")
    p.add_argument("--steps", type=int, metavar="N", help="optimizer steps (sets `steps`)")
    p.add_argument("--seed", type=int, metavar="N", help="random seed (sets `seed`)")
    _add_overrides(p, "lr=2e-5 batch_size=8")
    p.set_defaults(func=cmd_sft, config_cls=SFTConfig,
                   flag_keys={"data": "data", "model": "model.name_or_path", "out": "out", "steps": "steps",
                              "seed": "seed"})

    # train
    p = sub.add_parser("train", help="GRPO training on prompts with rule-based rewards",
                       description=TrainConfig.__doc__, formatter_class=_formatter,
                       epilog=_epilog(TrainConfig,
                                      "  grpokit train --config arithmetic\n"
                                      "  grpokit train --config recipe.yaml algorithm.beta=0.04 run.steps=50\n"
                                      "  grpokit train --model runs/sft --data prompts.jsonl --reward accuracy "
                                      "--reward my_pkg.rewards:brevity@0.2 --out runs/rl --steps 200"))
    _add_config(p)
    p.add_argument("--model", metavar="NAME_OR_PATH", help="policy model (sets `model.name_or_path`)")
    p.add_argument("--data", metavar="PATH", help="training prompts (sets `data.train`): a file, task:NAME, or "
                                                  "hf:NAME[:CONFIG[:SPLIT]] (a cached `datasets` dataset)")
    _add_reward(p, "rewards")
    p.add_argument("--out", metavar="DIR", help="run directory (sets `run.out`)")
    p.add_argument("--steps", type=int, metavar="N", help="optimizer steps (sets `run.steps`)")
    p.add_argument("--seed", type=int, metavar="N", help="random seed (sets `run.seed`)")
    p.add_argument("--resume", action="store_true", default=None,
                   help="continue the run in --out from its newest checkpoint, with its saved settings "
                        "(sets `run.resume`)")
    p.add_argument("--overwrite", action="store_true", default=None,
                   help="start afresh in an --out that holds a run, moving the old run aside (sets `run.overwrite`)")
    p.add_argument("--nproc", type=int, metavar="N",
                   help="data-parallel processes on this machine: runs `torchrun --nproc-per-node N -m grpokit "
                        "train ...` (several machines: call torchrun yourself, docs/distributed.md)")
    _add_overrides(p)
    p.set_defaults(func=cmd_train, config_cls=TrainConfig,
                   flag_keys={"model": "model.name_or_path", "data": "data.train", "reward": "rewards",
                              "out": "run.out", "steps": "run.steps", "seed": "run.seed", "resume": "run.resume",
                              "overwrite": "run.overwrite"})

    # eval
    p = sub.add_parser("eval", help="accuracy and rewards of a model on held-out prompts",
                       description=EvalConfig.__doc__, formatter_class=_formatter,
                       epilog=_epilog(EvalConfig, "  grpokit eval --model runs/rl --data task:arithmetic:test\n"
                                                  "  grpokit eval --model runs/rl --data test.jsonl --limit 100 "
                                                  "--samples-out samples.jsonl"))
    _add_config(p)
    p.add_argument("--model", metavar="NAME_OR_PATH", help="model directory (sets `model.name_or_path`)")
    p.add_argument("--data", metavar="PATH", help="prompts with answers (sets `data`): a file or task:NAME")
    p.add_argument("--limit", type=int, metavar="N", help="evaluate only the first N rows (sets `limit`)")
    p.add_argument("--samples-out", metavar="FILE", help="write every sample to this JSONL file (sets `samples_out`)")
    _add_reward(p, "rewards")
    p.add_argument("--seed", type=int, metavar="N", help="random seed (sets `seed`)")
    _add_overrides(p, "max_new_tokens=256 temperature=0.7")
    p.set_defaults(func=cmd_eval, config_cls=EvalConfig,
                   flag_keys={"model": "model.name_or_path", "data": "data", "limit": "limit",
                              "samples_out": "samples_out", "reward": "rewards", "seed": "seed"})

    # list
    p = sub.add_parser("list", help="registered rewards, losses, presets, advantages, groupers, tasks, tools",
                       description="List the names a recipe can use, with one line of documentation each.",
                       formatter_class=_formatter,
                       epilog="categories:\n"
                              "  rewards     reward functions (rewards: in a recipe, --reward)\n"
                              "  losses      per-token policy losses (algorithm.loss)\n"
                              "  presets     algorithm presets: GRPO variants (algorithm.preset)\n"
                              "  advantages  advantage estimators (algorithm.advantage)\n"
                              "  groupers    group formation strategies (algorithm.grouping)\n"
                              "  tasks       built-in tasks (data.train=task:NAME)\n"
                              "  tools       tools available to multi-turn rollouts")
    p.add_argument("category", choices=LIST_CATEGORIES, metavar="CATEGORY",
                   help="one of: " + ", ".join(LIST_CATEGORIES))
    p.set_defaults(func=cmd_list)

    # validate
    p = sub.add_parser("validate", help="check a recipe (types, ranges, names, paths) and print what it changes",
                       description="Load a recipe with its overrides, check it, and print the settings that "
                                   "differ from the defaults (--full: the whole resolved config). A launch "
                                   "file (accelerate config, SLURM script) is checked for what grpokit needs "
                                   "of it, a SLURM script's recipe included. "
                                   "Exit code 0: OK; 1: problems found; 2: the recipe cannot be read.",
                       formatter_class=_formatter,
                       epilog=_epilog(TrainConfig, "  grpokit validate recipe.yaml\n"
                                                   "  grpokit validate arithmetic run.steps=10\n"
                                                   "  grpokit validate traces.yaml --kind sft\n"
                                                   "  grpokit validate recipes/launch/accelerate_fsdp.yaml\n"
                                                   "  grpokit validate recipes/launch/slurm_two_nodes.sbatch"))
    p.add_argument("recipe", help="YAML recipe file, or a built-in recipe name ("
                                  + ", ".join(builtin_recipes()) + "), or a launch file: an accelerate "
                                  "config or a SLURM batch script (docs/distributed.md)")
    p.add_argument("--kind", choices=tuple(KINDS),
                   help="which config the recipe is (default: the recipe's `kind:` key, else train)")
    p.add_argument("--full", action="store_true", help="print the whole resolved config, not only what differs "
                                                       "from the defaults")
    _add_overrides(p)
    p.set_defaults(func=cmd_validate)

    # report, export: grpokit.report and grpokit.export do the work
    p = sub.add_parser("report", help="one self-contained HTML page of one or more runs (plots, groups, completions)",
                       description="Write a self-contained HTML report (no server, no network) of run directories: "
                                   "metrics against step with the runs overlaid, step time split, groups, a "
                                   "completion browser and the configs with their differences.",
                       formatter_class=_formatter,
                       epilog="examples:\n  grpokit report runs/rl\n  grpokit report runs/a runs/b --out compare.html")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories written by `grpokit train`")
    p.add_argument("--out", metavar="FILE", help="HTML file (default: RUN_DIR/report.html for one run, "
                                                  "./report.html for several)")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("export", help="write a plain Hugging Face model directory from a run or checkpoint",
                       description="Export a trained policy as a plain Hugging Face model directory that "
                                   "AutoModelForCausalLM / AutoTokenizer / vllm.LLM load without grpokit.",
                       formatter_class=_formatter,
                       epilog="examples:\n  grpokit export runs/rl --out models/rl\n"
                              "  grpokit export runs/rl/checkpoints/step-000050 --out models/rl-50 --merge-lora")
    p.add_argument("source", metavar="RUN_DIR", help="a run directory (its final model, else its newest "
                                                    "checkpoint) or a checkpoint / model directory")
    p.add_argument("--out", metavar="DIR", required=True, help="new directory to write (must be absent or empty)")
    p.add_argument("--merge-lora", action="store_true",
                   help="fold a LoRA adapter into the base weights (needed for an adapter-only checkpoint)")
    p.set_defaults(func=cmd_export)

    # bench: arguments belong to grpokit.bench; main() forwards them untouched
    sub.add_parser("bench", help="benchmarks (arguments are passed to grpokit.bench)", add_help=False)
    sub.add_parser("model", help="get a pretrained model without a hub: `grpokit model get smollm2-135m --out DIR`",
                   add_help=False)
    sub.add_parser("study", help="studies: `grpokit study grouping` (accuracy per completion), `grpokit study gradient` (the gradient estimator), `grpokit study forgetting` (a second task family after GRPO) (arguments are passed to grpokit.demos.study_cli)",
                   add_help=False)
    return parser


# --------------------------------------------------------------------------- helpers


def _flag_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Flags the user gave, as {dotted key: value} (flags left out set nothing)."""
    out: dict[str, Any] = {}
    for dest, key in args.flag_keys.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if dest == "reward":
            value = [_reward_flag(v) for v in value]
        out[key] = value
    return out


def _reward_flag(text: str) -> dict[str, Any]:
    name, weight = parse_reward(text)
    if not name:
        raise UsageError(f"--reward {text!r}: expected NAME or NAME@WEIGHT, e.g. --reward format@0.1")
    if weight is None and "@" in text:
        raise UsageError(f"--reward {text!r}: the weight after '@' must be a number, e.g. format@0.1")
    return {"name": name} if weight is None else {"name": name, "weight": weight}


def _load(args: argparse.Namespace) -> Any:
    return load_config(args.config_cls, args.config, args.overrides, data=_flag_settings(args))


def _load_checked(args: argparse.Namespace) -> Any:
    cfg = _load(args)
    problems = validate(cfg)
    if problems:
        raise ConfigError("the config has problems (`grpokit validate` checks a recipe):\n  - "
                          + "\n  - ".join(problems))
    return cfg


def _import_optional(module: str, what: str) -> Any:
    """Import a part of grpokit that may not be written yet, with a clear error if absent."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (module == e.name or module.startswith(e.name + ".")):
            raise UsageError(f"{what} is not available in this version of grpokit ({module} is missing)") from None
        raise


# --------------------------------------------------------------------------- commands


def _given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """{dotted key: value} of what this command line sets: the recipe's own keys, flags, overrides."""
    from grpokit.config.io import apply_overrides
    from grpokit.run_dir import flatten

    given: dict[str, Any] = {}
    if args.config:
        raw = read_yaml(resolve_recipe(args.config))
        given.update(flatten({k: v for k, v in raw.items() if k != "kind"}, args.config_cls))
    given.update(_flag_settings(args))
    given.update(flatten(apply_overrides({}, args.overrides, args.config_cls), args.config_cls))
    return given


def cmd_train(args: argparse.Namespace) -> int:
    cfg = _load(args)
    if cfg.run.resume:
        # Resume continues the run as it was saved; what the command line gives again is
        # applied on top, and train() refuses changes that would make it another run.
        from grpokit.run_dir import complete_checkpoints, resume_config

        if complete_checkpoints(cfg.run.out):
            cfg = resume_config(args.config_cls, cfg.run.out, _given_settings(args))
    problems = validate(cfg)
    if problems:
        raise ConfigError("the config has problems (`grpokit validate` checks a recipe):\n  - "
                          + "\n  - ".join(problems))
    dist = importlib.import_module("grpokit.dist")
    if args.nproc is not None and args.nproc > 1:  # check the recipe here, then hand over to torchrun
        os.execv(sys.executable, dist.torchrun_command(args.nproc, args.raw_argv))
    train = importlib.import_module("grpokit.train").train
    out = train(cfg)
    if dist.init().main:
        print(f"{PROG}: training finished; run directory: {out}")
    return 0


def cmd_sft(args: argparse.Namespace) -> int:
    cfg = _load_checked(args)
    sft = importlib.import_module("grpokit.sft").sft
    out = sft(cfg)
    print(f"{PROG}: supervised training finished; model directory: {out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    cfg = _load_checked(args)
    evaluate = importlib.import_module("grpokit.evaluate").evaluate
    result = evaluate(cfg)
    print(result.format_report())
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    report = importlib.import_module("grpokit.report")
    out = report.write_report(args.run_dirs, args.out)
    print(f"{PROG}: report written: {out} (open it in a browser)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    export = importlib.import_module("grpokit.export")
    result = export.export_model(args.source, args.out, merge_lora=args.merge_lora)
    for line in result.notes:
        print(f"{PROG}: {line}")
    print(f"{PROG}: exported {result.source} -> {result.out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    if args.variant == "search":
        module = _import_optional("grpokit.demos.search", "the search demo (`grpokit demo search`)")
        out = args.out or "runs/demo-search"
    else:
        module = _import_optional("grpokit.demos.demo", "the demo")
        out = args.out or "runs/demo"
    result = module.run_demo(seed=args.seed, out=out, quick=args.quick, threads=args.threads,
                             control=False if args.no_control else None)
    if hasattr(result, "format_report"):
        print(result.format_report())
    return int(result) if isinstance(result, int) and not isinstance(result, bool) else 0


def _registry_for(category: str) -> Any:
    if category == "rewards":
        return getattr(_import_optional("grpokit.rewards", "`list rewards`"), "REWARDS")
    if category == "losses":
        return _import_optional("grpokit.algo.losses", "`list losses`").LOSSES
    if category == "presets":
        return _import_optional("grpokit.config.presets", "`list presets`").PRESETS
    if category == "advantages":
        return _import_optional("grpokit.algo.advantages", "`list advantages`").ADVANTAGES
    if category == "groupers":
        return _import_optional("grpokit.grouping", "`list groupers`").GROUPERS
    if category == "tasks":
        tasks = _import_optional("grpokit.tasks", "`list tasks`")
        tasks.load_builtins()
        return tasks.TASKS
    if category == "tools":
        tools = _import_optional("grpokit.tools", "`list tools`")
        if not hasattr(tools, "TOOLS"):
            raise UsageError("`list tools` is not available in this version of grpokit (grpokit.tools has no TOOLS)")
        return tools.TOOLS
    raise UsageError(f"unknown category {category!r}; valid: {', '.join(LIST_CATEGORIES)}")


def cmd_list(args: argparse.Namespace) -> int:
    try:
        reg = _registry_for(args.category)
    except AttributeError:
        raise UsageError(f"`list {args.category}` is not available in this version of grpokit") from None
    names = reg.names()
    if not names:
        print(f"(no {args.category} registered)")
        return 0
    width = max(len(n) for n in names)
    for name in names:
        doc = reg.doc(name)
        print(f"{name:<{width}}  {doc}".rstrip())
        if args.category == "tools":
            print(f"{'':<{width}}  {_tool_usage(name, reg.get(name))}")
    return 0


def _tool_usage(name: str, factory: Any) -> str:
    """`tag: <name>query</name>; arguments: corpus (required), k=3, ...` for `list tools`."""
    from grpokit.tools.base import REQUIRED, factory_arguments

    args = factory_arguments(factory)
    text = ", ".join(f"{a} (required)" if d is REQUIRED else f"{a}={d!r}" for a, d in args) or "none"
    return f"tag: <{name}>query</{name}>; arguments: {text}"


def cmd_validate(args: argparse.Namespace) -> int:
    from grpokit.config.launch import launch_kind

    if launch_kind(args.recipe):  # an accelerate config or a SLURM script, not a recipe
        return _validate_launch_file(args)
    path = resolve_recipe(args.recipe)
    kind = args.kind or recipe_kind(read_yaml(path))
    cfg = load_config(KINDS[kind], args.recipe, args.overrides)
    problems = validate(cfg)
    if problems:
        print(f"{args.recipe}: {len(problems)} problem{'s' if len(problems) > 1 else ''}:")
        for problem in problems:
            print(f"  - {problem}")
        return 1
    where = args.recipe if str(path) == args.recipe else f"{args.recipe} ({path})"
    print(f"{where}: OK ({kind} config)")
    for warning in advisories(cfg):
        print(f"  warning: {warning}")
    print()
    if args.full:
        print(dump_yaml(cfg).rstrip())
    else:
        print(f"settings that differ from the defaults (--full prints all):\n{format_changes(cfg)}")
    return 0


def _validate_launch_file(args: argparse.Namespace) -> int:
    from grpokit.config.launch import check_launch_file

    if args.overrides or args.kind:
        raise UsageError(f"{args.recipe} is a launch file: key=value overrides and --kind apply to recipes "
                         "(a SLURM script's recipe is checked with the overrides on its own grpokit line)")
    check = check_launch_file(args.recipe)
    if check.problems:
        n = len(check.problems)
        print(f"{args.recipe}: {n} problem{'s' if n > 1 else ''}:")
        for problem in check.problems:
            print(f"  - {problem}")
    else:
        print(f"{args.recipe}: OK ({check.summary})")
    for warning in check.warnings:
        print(f"  warning: {warning}")
    return 1 if check.problems else 0


FORWARDED = {"bench": "grpokit.bench", "study": "grpokit.demos.study_cli", "model": "grpokit.model.get"}  # command -> module with main(argv)


def cmd_forward(module: str, argv: Sequence[str]) -> int:
    """Commands whose arguments belong to another module's own parser."""
    mod = _import_optional(FORWARDED[module], f"`grpokit {module}`")
    result = mod.main(list(argv))
    return int(result or 0)


# --------------------------------------------------------------------------- main


def _split_extras(args: argparse.Namespace, extras: list[str]) -> None:
    """Unrecognised tokens: `key=value` ones (argparse leaves those after a flag) become
    overrides; anything else is an error that says what the user probably meant."""
    for token in extras:
        if "=" in token and not token.startswith("-") and hasattr(args, "overrides"):
            args.overrides.append(token)
            continue
        if token.startswith("-") and hasattr(args, "overrides"):
            name = token.lstrip("-").split("=", 1)[0]
            keys = dotted_keys(args.config_cls) if hasattr(args, "config_cls") else []
            dotted = name.replace("-", "_")
            match = [k for k in keys if k == dotted or k.rsplit(".", 1)[-1] == dotted]
            if match:
                raise UsageError(f"unrecognized option {token!r}; config keys are set without dashes, "
                                 f"as key=value: {match[0]}=VALUE")
        raise UsageError(f"unrecognized argument {token!r} (see `grpokit {args.command} --help`)")


def _is_user_error(exc: BaseException) -> bool:
    from grpokit.registry import RegistryError

    if isinstance(exc, (ConfigError, UsageError, RegistryError, FileNotFoundError, ValueError)):
        return True
    return any(cls.__name__ == "RewardError" for cls in type(exc).__mro__)


def console_main(launcher: Sequence[str] | None = None) -> int:
    """The `grpokit` console script: re-executed once under grpokit's malloc settings
    (`grpokit.engine.allocator`), then `main`. launcher: the interpreter arguments that
    start this command again (default: the script, sys.argv[0])."""
    from grpokit.engine.allocator import reexec_tuned

    reexec_tuned([*(launcher or [sys.argv[0]]), *sys.argv[1:]])
    return main()


def main(argv: Sequence[str] | None = None) -> int:
    """The `grpokit` command's work; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # transformers' own per-file bars ("Loading weights", "Writing model shards") would
    # interleave with ours; set before transformers is first imported.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    debug = os.environ.get("GRPOKIT_DEBUG", "") not in ("", "0")
    parser = build_parser()
    try:
        if argv and argv[0] in FORWARDED:
            return cmd_forward(argv[0], argv[1:])
        try:
            args, extras = parser.parse_known_args(argv)
        except SystemExit as e:  # --help, --version, or a usage error argparse already printed
            return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
        if args.command is None:
            parser.print_help()
            return 2
        if extras:
            _split_extras(args, extras)
        for token in getattr(args, "overrides", []) or []:
            if "=" not in token:
                raise UsageError(
                    f"{token!r} is not a key=value override; write settings as key=value "
                    f"(e.g. run.steps=50), and flags with dashes (see `grpokit {args.command} --help`)")
        args.raw_argv = argv
        return args.func(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - user errors become one line; bugs keep their traceback
        if isinstance(exc, Interrupted):  # SIGINT/SIGTERM: the checkpoint is saved, the message says how to resume
            print(f"{PROG}: {exc}", file=sys.stderr)
            return exc.exit_code
        if isinstance(exc, FILE_ERRORS) and exc.filename and not debug:
            # a path the user gave that cannot be used: one line, path first
            print(f"{PROG}: error: {exc.filename}: {exc.strerror or type(exc).__name__}", file=sys.stderr)
            return 2
        if debug or not _is_user_error(exc):
            raise
        rank = f" (rank {os.environ['RANK']})" if os.environ.get("WORLD_SIZE", "1") not in ("", "1") else ""
        print(f"{PROG}: error{rank}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
