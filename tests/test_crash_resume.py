"""SIGKILL a seeded training run at chosen moments (inside checkpoint writes, while pruning,
mid-step, in the final save), resume it each time, and require the final weights,
metrics.jsonl (wall-clock fields aside) and samples.jsonl to be bit-identical to a run
that was never interrupted. One short test per feature that carries state across a
checkpoint: a reference model (beta > 0), a stateful grouper, tools, LoRA, dynamic sampling. The kills
happen in forked child processes (tests/crash_driver.py); the reference run and the
last resume run in-process. benchmarks/crash_soak.py runs longer schedules.
"""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest
import torch

from grpokit import cli

sys.path.insert(0, str(Path(__file__).parent))
import crash_driver  # noqa: E402
REWARD = '''
def count_a(completion, **_):
    """Share of the completion's characters that are the letter a."""
    return completion.count("a") / max(1, len(completion))
'''
# Wall-clock fields differ between any two runs; everything else must match bit for bit.
CLOCK_KEYS = ("time", "elapsed", "step_time", "tokens_per_s")

FEATURES = {
    "beta": ["algorithm.beta=0.04"],
    "temporal_grouper": ["algorithm.grouping=temporal", "algorithm.group.window=2", "algorithm.group.replay=true"],
    "tools": ["rollout.tools=[calculator]", "rollout.max_turns=2"],
    "lora": ["model.lora.r=4", "model.lora.alpha=8"],
    "dynamic_sampling": ["algorithm.dynamic_sampling=true"],  # refill draws, completions_total
}
# Each kill lands in checkpoint work: the 2nd checkpoint's write (model files out, trainer
# state not yet), then the first prune (an old checkpoint renamed to .del-*, not yet removed).
SHORT = [("state", 2), ("prune", 1)]
LONG = [("state", 2), ("marker", 2), ("prune", 1), ("rename", 2), ("step", 2), ("model", 1)]


def base_args(tmp: Path, steps: int = 4) -> list[str]:
    data = tmp / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Write {i}:", "answer": "a"}) + "\n" for i in range(6)))
    (tmp / "crash_rewards.py").write_text(REWARD)
    return ["train", "--model", "tiny:xs", "--data", str(data), "--reward", f"{tmp / 'crash_rewards.py'}:count_a",
            "--steps", str(steps), "--seed", "3", "rollout.max_new_tokens=6", "rollout.prompts_per_step=2",
            "rollout.num_generations=4", "optim.lr=3e-3", "run.save_every=1", "run.keep_checkpoints=2",
            "run.threads=1", "run.progress=false", "run.log_samples=2", "data.eval_size=0"]


def kill_run(args: list[str], kind: str, n: int, resume: bool) -> None:
    """Run in a forked child (the imports are done already) that SIGKILLs itself at the moment."""
    argv = [*args, *(["--resume"] if resume else [])]
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            crash_driver.run(kind, n, argv)
        finally:
            os._exit(3)  # reached only if the moment never came
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, \
        f"{kind}#{n} did not kill the run (wait status {status})"


def run_with_kills(args: list[str], out: Path, kills: list[tuple[str, int]]) -> None:
    args = [*args, "--out", str(out)]
    for i, (kind, n) in enumerate(kills):
        kill_run(args, kind, n, resume=i > 0)
    assert cli.main([*args, "--resume"]) == 0


def metrics(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in CLOCK_KEYS and not k.startswith("time/")} for r in rows]


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def assert_same_run(ref: Path, got: Path) -> None:
    a, b = weights(ref / "model"), weights(got / "model")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    assert metrics(got / "metrics.jsonl") == metrics(ref / "metrics.jsonl")
    assert (got / "samples.jsonl").read_bytes() == (ref / "samples.jsonl").read_bytes()
    leftovers = [p.name for p in (got / "checkpoints").iterdir() if p.name.startswith(".")]
    assert leftovers == []  # temp, .old and .del dirs of the killed processes are cleaned up


def crash_test(tmp_path: Path, extra: list[str], kills: list[tuple[str, int]], steps: int = 4) -> None:
    args = [*base_args(tmp_path, steps), *extra]
    assert cli.main([*args, "--out", str(tmp_path / "ref")]) == 0
    rows = metrics(tmp_path / "ref" / "metrics.jsonl")
    assert any(r["trained_rows"] > 0 for r in rows)  # the run learns something, so weights can differ
    run_with_kills(args, tmp_path / "run", kills)
    assert_same_run(tmp_path / "ref", tmp_path / "run")


@pytest.mark.parametrize("feature", list(FEATURES))
def test_killed_in_checkpoint_writes_resumes_bit_identically(tmp_path, feature):
    crash_test(tmp_path, FEATURES[feature], SHORT)


@pytest.mark.slow
@pytest.mark.parametrize("feature", list(FEATURES))
def test_killed_six_times_resumes_bit_identically(tmp_path, feature):
    crash_test(tmp_path, FEATURES[feature], LONG, steps=6)
