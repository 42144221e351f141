"""The catalogue of the CLI's inputs, wrong and right: one row per case, as a user types it.

Each row: (command line, what is wrong with it, a fragment the message must contain,
the exit code). Run from a workspace that `make_workspace` fills with small files (a
saved tiny model, broken copies of it, fake run directories, data files). test_errors.py
runs every row in-process and checks docs/errors.md is this table rendered;
`python tests/test_errors.py` rewrites docs/errors.md.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

# Small, quick settings for rows that get as far as building a model.
QUICK = ["rollout.max_new_tokens=4", "rollout.prompts_per_step=2", "rollout.num_generations=2", "run.progress=false"]
T = ["train", "--model", "tiny:xs", "--data", "p.jsonl", "--out", "out", *QUICK]

CASES: list[tuple[list[str], str, str, int]] = [
    # ---- data files
    (["train", "--data", "missing.jsonl"], "data file that does not exist", "data.train = 'missing.jsonl': no such file", 2),
    (["train", "--data", "gsm8k:missing.jsonl"], "gsm8k:PATH, file missing", "data.train = 'missing.jsonl': no such file", 2),
    (["train", "--data", "task:nosuch"], "unknown built-in task", "unknown task 'nosuch'", 2),
    ([*T, "--data", "bad_utf8.jsonl"], "prompt file with a non-UTF-8 byte", "bad_utf8.jsonl:2: not UTF-8 text (byte 0xff", 2),
    ([*T, "--data", "malformed.jsonl"], "a line that is not JSON", "malformed.jsonl:2: malformed JSON", 2),
    ([*T, "--data", "empty.jsonl"], "empty data file", "empty.jsonl: no rows", 2),
    ([*T, "--data", "no_prompt.jsonl"], "rows without the prompt column", "missing the prompt field 'prompt'", 2),
    ([*T, "--data", "dict_answer.jsonl"], "`answer` a dict (accuracy cannot read it)",
     "row 1: field 'answer' is a dict {'value': 3}; the accuracy reward expects a number or text", 2),
    ([*T, "--data", "no_answer.jsonl"], "rows without `answer` (accuracy needs it)", "row 1: no 'answer' field", 2),
    ([*T, "--data", "long.jsonl", "data.max_prompt_tokens=5000"], "prompt longer than the model's positions",
     "row 2: the prompt is 1200 tokens", 2),
    ([*T, "--data", "list_prompt.jsonl"], "prompt that is a number", "field 'prompt' is int 7; expected a string", 2),
    ([*T, "--data", "data.xml"], "unsupported file type", "unsupported file type '.xml'", 2),
    # ---- models
    (["train", "--model", "runs/sftt"], "typo of a local directory", "'runs/sftt': no such directory (did you mean 'runs/sft'?)", 2),
    (["train", "--model", "./nope"], "local path that does not exist", "'./nope': no such directory", 2),
    (["train", "--model", "models/notok"], "model directory without tokenizer files", "no tokenizer files", 2),
    (["train", "--model", "models/cfgonly"], "config.json only", "models/cfgonly: no weights", 2),
    (["train", "--model", "models/corrupt"], "corrupt config.json", "config.json: not valid JSON (line 1", 2),
    (["train", "--model", "models/notype"], "config.json without model_type", "has no 'model_type'", 2),
    (["train", "--model", "models/cut"], "model.safetensors cut short", "model.safetensors: cut short", 2),
    (["train", "--model", "models/empty"], "empty directory as the model", "the directory has no config.json", 2),
    (["train", "--model", "p.jsonl"], "a file as the model", "'p.jsonl': is a file; expected a model directory", 2),
    (["train", "--model", "tiny:huge"], "unknown tiny size", "unknown tiny size 'huge'", 2),
    (["train", "--model", "runs/partial"], "run directory with neither model nor checkpoint",
     "neither a final model", 2),
    ([*T, "--model", "runs/rl", "--steps", "1"], "a run directory as the model (accepted)",
     "runs/rl is a run directory; using its final model runs/rl/model", 0),
    (["eval", "--model", "runs/rl", "--data", "p.jsonl", "max_new_tokens=2"], "eval of a run directory (accepted)",
     "using its final model", 0),
    (["eval", "--model", "runs/ckpt", "--data", "p.jsonl", "max_new_tokens=2"],
     "eval of an unfinished run (accepted: newest checkpoint)", "using its newest checkpoint (step 2)", 0),
    (["eval", "--model", "runs/sftt", "--data", "p.jsonl"], "eval: typo of a local directory", "no such directory", 2),
    (["eval", "--model", "tiny", "--data", "p.jsonl"], "eval of an untrained model", "eval needs a trained model", 2),
    (["eval", "--model", "models/notok", "--data", "p.jsonl"], "eval: model without tokenizer", "no tokenizer files", 2),
    (["eval", "--model", "models/good", "--data", "dict_answer.jsonl"], "eval: `answer` a dict",
     "field 'answer' is a dict", 2),
    (["eval", "--model", "models/good", "--data", "bad_utf8.jsonl"], "eval: non-UTF-8 data", "bad_utf8.jsonl:2: not UTF-8", 2),
    (["eval", "--model", "models/good", "--data", "gsm8k:missing.jsonl"], "eval: gsm8k:PATH missing",
     "data = 'missing.jsonl': no such file", 2),
    (["eval", "--model", "models/good", "--data", "gsm8k:gsm.jsonl", "max_new_tokens=2"], "eval: gsm8k:PATH (accepted)",
     "accuracy:", 0),
    (["eval", "--model", "models/good"], "eval without data", "data: empty", 2),
    # ---- run directories
    ([*T, "--out", "outfile"], "--out that is a file", "run.out = 'outfile': is a file", 2),
    ([*T, "--out", "/sys/grpokit-run"], "--out where nothing can be written", "cannot write there", 2),
    ([*T, "--out", "runs/rl"], "--out holding a finished run",
     "runs/rl already holds a finished run (step 2); continue it with --resume, choose a new --out, or replace it "
     "with --overwrite", 2),
    ([*T, "--out", "runs/partial"], "--out holding an interrupted run", "already holds an interrupted run", 2),
    ([*T, "--out", "notrun"], "--out holding files that are not a run", "holds files that are not a grpokit run", 2),
    (["train", "--out", "runs/partial", "--resume"], "--resume without a checkpoint", "nothing to resume", 2),
    (["train", "--out", "fresh", "--resume"], "--resume in a new directory", "holds no run; nothing to resume", 2),
    (["train", "--out", "runs/ckpt", "--resume", "algorithm.beta=0.1"], "--resume changing the algorithm",
     "--resume: algorithm.beta = 0.1 differs from the run's 0.0", 2),
    (["train", "--out", "runs/ckpt", "--resume", "--steps", "1"], "--resume with fewer steps than done",
     "already at step 2", 2),
    (["train", "--out", "runs/ckpt", "--resume", "--overwrite"], "--resume and --overwrite together", "choose one", 2),
    (["sft", "--data", "traces.jsonl", "--model", "tiny:xs", "--out", "outfile"], "sft --out that is a file",
     "out = 'outfile': is a file", 2),
    (["sft", "--data", "traces.jsonl", "--model", "tiny:xs", "--out", "notrun"], "sft --out holding other files",
     "holds files that grpokit did not write", 2),
    # ---- rewards and tools
    (["train", "--reward", "nosuch"], "unknown reward", "unknown reward; valid:", 2),
    (["train", "--reward", "format@x"], "reward weight that is not a number", "the weight after '@' must be a number", 2),
    (["train", "--reward", "nomodule_xyz:fn"], "reward module that cannot be imported", "cannot load it", 2),
    (["train", "rollout.tools=[search]"], "search tool without its corpus", "the search tool needs corpus", 2),
    (["train", "rollout.tools=[nosuch]"], "unknown tool", "rollout.tools[0] = 'nosuch': unknown", 2),
    (["train", "rollout.tools=[{name: calculator, kwargs: {digits: 3}}]"], "unknown tool argument",
     "rollout.tools[0].kwargs.digits: unknown argument of the calculator tool", 2),
    # ---- settings
    (["train", "algorithm.beta=-1"], "negative KL coefficient", "algorithm.beta = -1.0: must be >= 0", 2),
    (["train", "rollout.num_generations=1"], "group of one", "rollout.num_generations = 1: must be >= 2", 2),
    (["train", "run.steps=abc"], "steps that is not a number", "'run.steps' in override 'run.steps=abc' expects an integer", 2),
    (["train", "run.stepz=3"], "misspelt key", "unknown key 'run.stepz'", 2),
    (["train", "steps=3"], "key without its section", "did you mean 'run.steps'", 2),
    (["train", "--lr", "1e-5"], "a config key written as a flag", "config keys are set without dashes, as key=value: optim.lr=VALUE", 2),
    (["train", "foo"], "a word that is not key=value", "'foo' is not a key=value override", 2),
    (["train", "optim.schedule=cosin"], "value outside the choices", "valid choices: constant, linear, cosine (did you mean 'cosine'?)", 2),
    (["train", "algorithm.preset=nosuch"], "unknown preset", "algorithm.preset = 'nosuch': unknown", 2),
    (["train", "algorithm.grouping=nosuch"], "unknown grouper", "algorithm.grouping = 'nosuch': unknown", 2),
    (["train", "model.device=tpu"], "unknown device", "expected auto, cpu, cuda or cuda:N", 2),
    (["train", "rollout.backend=vllm"], "the vLLM backend without its extra", "vLLM is not installed; pip install 'grpokit[vllm]'", 2),
    (["train", "optim.betas=[0.9]"], "one AdamW beta", "must be two numbers in [0, 1)", 2),
    (["train", "run.save_minutes=-1"], "negative checkpoint interval", "run.save_minutes = -1.0: must be >= 0", 2),
    # ---- recipes
    (["train", "--config", "nosuch.yaml"], "recipe that does not exist", "config file 'nosuch.yaml' does not exist", 2),
    (["train", "--config", "bad_yaml.yaml"], "YAML syntax error", "bad_yaml.yaml:3:1: YAML syntax error", 2),
    (["train", "--config", "list.yaml"], "recipe that is a list", "a recipe must be a mapping", 2),
    (["train", "--config", "sft_recipe.yaml"], "an sft recipe given to train", "is a 'sft' recipe", 2),
    (["validate", "missing_model.yaml"], "validate: model directory missing", "'./models/nope': no such directory", 1),
    (["validate", "missing_data.yaml"], "validate: data file missing", "data.train = 'nope.jsonl': no such file", 1),
    (["validate", "arithmetic", "rollout.tools=[search]"], "validate: search without corpus", "needs corpus", 1),
    (["validate", "arithmetic", "data.train=gsm8k:gsm.jsonl", "model.name_or_path=tiny"], "validate: gsm8k:PATH (accepted)", "OK (train config)", 0),
    (["validate", "nosuch.yaml"], "validate: recipe missing", "does not exist", 2),
    (["validate", "arithmetic"], "validate: the recipe's model is missing from runs/",
     "model.name_or_path = 'runs/sft-arithmetic': no such directory", 1),
    # ---- sft data and commands
    (["sft", "--data", "missing.jsonl", "--model", "tiny:xs"], "sft: data missing", "no such file", 2),
    (["sft", "--data", "gsm8k:missing.jsonl", "--model", "tiny:xs"], "sft: gsm8k:PATH missing", "no such file", 2),
    (["sft", "--data", "p.jsonl", "--model", "tiny:xs", "--out", "sftout", "--steps", "1"], "sft: rows without completion",
     "expected 'prompt' and 'completion' fields", 2),
    (["sft", "--data", "traces.jsonl", "--model", "runs/sftt"], "sft: typo of a local model directory",
     "no such directory", 2),
    (["list", "optimizers"], "unknown list category", "invalid choice: 'optimizers'", 2),
    (["trian"], "misspelt command", "invalid choice: 'trian'", 2),
]


# --------------------------------------------------------------------------- workspace


def _jsonl(path: Path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def make_workspace(root: Path) -> None:
    """Every file the rows name, small: data files, a saved tiny model and broken copies,
    fake run directories (finished, interrupted, with a checkpoint)."""
    import yaml

    from grpokit.config.io import to_dict
    from grpokit.config.schema import TrainConfig
    from grpokit.model.policy import create_tiny

    prompts = [{"prompt": f"Compute {i}+1.", "answer": str(i + 1)} for i in range(4)]
    _jsonl(root / "p.jsonl", prompts)
    (root / "bad_utf8.jsonl").write_bytes(b'{"prompt": "a", "answer": "1"}\n{"prompt": "caf\xff", "answer": "2"}\n')
    (root / "malformed.jsonl").write_text('{"prompt": "a", "answer": "1"}\n{"prompt": "b",\n')
    (root / "empty.jsonl").write_text("\n")
    _jsonl(root / "no_prompt.jsonl", [{"question": "a", "answer": "1"}])
    _jsonl(root / "dict_answer.jsonl", [{"prompt": "a", "answer": {"value": 3}}])
    _jsonl(root / "no_answer.jsonl", [{"prompt": "a", "steps": 2}])
    _jsonl(root / "long.jsonl", [{"prompt": "short", "answer": "1"}, {"prompt": "x" * 1200, "answer": "1"}])
    _jsonl(root / "list_prompt.jsonl", [{"prompt": 7, "answer": "1"}])
    (root / "data.xml").write_text("<rows/>")
    _jsonl(root / "traces.jsonl", [{"prompt": "Compute 1+1.", "completion": "<answer>2</answer>"}])
    _jsonl(root / "gsm.jsonl", [{"question": "What is 1+1?", "answer": "1+1=2\n#### 2"}])
    (root / "outfile").write_text("not a directory\n")
    (root / "notrun").mkdir()
    (root / "notrun" / "notes.txt").write_text("mine\n")

    models = root / "models"
    good = models / "good"
    model, tok = create_tiny("tiny:xs", [r["prompt"] for r in prompts] + ["<answer></answer>"], seed=0)
    model.save_pretrained(good)
    tok.save_pretrained(good)
    notok = models / "notok"
    shutil.copytree(good, notok)
    for f in notok.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "vocab", "chat_template")):
            f.unlink()
    (models / "cfgonly").mkdir()
    shutil.copy(good / "config.json", models / "cfgonly")
    shutil.copytree(good, models / "corrupt")
    (models / "corrupt" / "config.json").write_text('{"model_type": "qwen2",,}')
    shutil.copytree(good, models / "notype")
    (models / "notype" / "config.json").write_text('{"hidden_size": 8}')
    shutil.copytree(good, models / "cut")
    weights = models / "cut" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    (models / "empty").mkdir()

    runs = root / "runs"
    shutil.copytree(good, runs / "sft")  # what `runs/sftt` is a typo of

    def fake_run(name: str, *, final: bool, ckpt: bool) -> None:
        run = runs / name
        run.mkdir(parents=True)
        cfg = TrainConfig()
        cfg.model.name_or_path, cfg.data.train, cfg.run.out, cfg.run.steps = "tiny:xs", "p.jsonl", f"runs/{name}", 5
        text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
        (run / "config.yaml").write_text(text)
        (run / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n')
        if ckpt:
            step = run / "checkpoints" / "step-000002"
            shutil.copytree(good, step)
            (step / "config.yaml").write_text(text)
            (step / "COMPLETE").write_text('{"step": 2}\n')
        if final:
            shutil.copytree(good, run / "model")
            (run / "model" / "COMPLETE").write_text('{"model": true}\n')

    fake_run("rl", final=True, ckpt=True)
    fake_run("partial", final=False, ckpt=False)
    fake_run("ckpt", final=False, ckpt=True)

    (root / "bad_yaml.yaml").write_text("run:\n  steps: [1, 2\n")
    (root / "list.yaml").write_text("- a\n- b\n")
    (root / "sft_recipe.yaml").write_text("kind: sft\ndata: traces.jsonl\n")
    (root / "missing_model.yaml").write_text("model:\n  name_or_path: ./models/nope\n")
    (root / "missing_data.yaml").write_text("data:\n  train: nope.jsonl\n")


# --------------------------------------------------------------------------- docs


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render() -> str:
    """docs/errors.md: the table above, for users."""
    lines = [
        "# What grpokit says when an input is wrong",
        "",
        "Every row is a command as a user types it, what is wrong with it, a part of the one-line",
        "message grpokit prints (`grpokit: error: ...` on stderr, or the `validate` report) and the",
        "exit code: 2 for an input that cannot be used, 1 when `validate` finds problems, 0 where",
        "the input is accepted. No row ends in a traceback (`GRPOKIT_DEBUG=1` shows one when you",
        "need it). The files the rows name are small fixtures: `p.jsonl` (prompts with answers),",
        "`models/good` (a saved tiny model) and broken copies of it, `runs/rl` (a finished run),",
        "`runs/ckpt` (a run stopped after its step-2 checkpoint), `runs/partial` (a run stopped",
        "before any checkpoint), `outfile` (a file), `notrun` (a directory of someone's files).",
        "",
        "This page is generated from `tests/error_cases.py`, and `tests/test_errors.py` runs every",
        "row (regenerate with `python tests/test_errors.py`).",
        "",
        f"{len(CASES)} cases.",
        "",
        "| command | what is wrong | message contains | exit |",
        "|---|---|---|---|",
    ]
    for argv, what, fragment, code in CASES:
        cmd = "grpokit " + " ".join(a if " " not in a and a else repr(a) for a in argv)
        lines.append(f"| `{_cell(cmd)}` | {_cell(what)} | `{_cell(fragment)}` | {code} |")
    return "\n".join(lines) + "\n"
