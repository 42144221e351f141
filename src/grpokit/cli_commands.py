"""The `grpokit` commands' work: each `cmd_*` takes the parsed arguments and returns the
exit code (grpokit.cli parses and reports errors; grpokit.cli_parser builds the parser).
torch and transformers are imported only inside the commands, so `grpokit --help` stays fast."""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any, Sequence

from grpokit.config.io import (KINDS, ConfigError, dump_yaml, load_config, parse_reward, read_yaml, recipe_kind,
                               resolve_recipe)
from grpokit.config.diff import format_changes
from grpokit.config.validation import advisories, validate

PROG = "grpokit"
LIST_CATEGORIES = ("rewards", "losses", "presets", "advantages", "groupers", "tasks", "tools")


class UsageError(Exception):
    """A command-line mistake; printed as `grpokit: error: ...`, exit code 2."""


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
                             control=False if args.no_control else None,
                             control_anneal=None if args.control_schedule is None else args.control_schedule == "cosine")
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
