"""The `grpokit` argument parser: one subcommand per command, each with its flags, its
`key=value` overrides and an epilog listing every config key (grpokit.config.help)."""
from __future__ import annotations

import argparse

from grpokit.cli_commands import (LIST_CATEGORIES, PROG, cmd_demo, cmd_eval, cmd_export, cmd_list, cmd_report,
                                  cmd_sft, cmd_train, cmd_validate)
from grpokit.config.help import config_help
from grpokit.config.io import KINDS, builtin_recipes
from grpokit.config.schema import EvalConfig, SFTConfig, TrainConfig


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
    p.add_argument("--control-schedule", choices=("cosine", "constant"),
                   help="the control's learning rate: `cosine` decays it to 0 over GRPO's token budget, as GRPO's "
                        "stage does; `constant` goes on at the cold start's rate (default: cosine for the "
                        "arithmetic demo, constant for search)")
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
