"""The `grpokit` command: demo | sft | train | eval | report | export | list | validate | bench | study.

    grpokit train --config arithmetic run.steps=50
    grpokit train --model runs/sft --data prompts.jsonl --reward accuracy --reward format@0.1 --out runs/rl
    grpokit validate my_recipe.yaml algorithm.beta=0.04

Settings come from, in increasing precedence: the config defaults, the YAML recipe
(`--config`), the command's flags, and `key=value` overrides. Every command's `--help`
lists all keys. torch and transformers are imported only inside the commands, so
`grpokit --help` stays fast.

This module runs one command and turns user errors into one line; grpokit.cli_parser
builds the parser and grpokit.cli_commands does each command's work.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from grpokit.cli_commands import FORWARDED, PROG, UsageError, cmd_forward
from grpokit.cli_parser import build_parser
from grpokit.config.io import ConfigError, dotted_keys
from grpokit.signals import Interrupted


# OSErrors about a path the user named (an --out that is a file, a directory without
# write permission): shown as "path: reason", never as a traceback.
FILE_ERRORS = (PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)



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
