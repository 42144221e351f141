"""One real, seeded end-to-end GRPO run through the CLI, as a user would type it."""
import json

import pytest

from grpokit import cli

REWARD_FILE = '''
def count_a(completion, **_):
    """Share of the completion's characters that are the letter a."""
    return completion.count("a") / max(1, len(completion))
'''


def _metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_train_raises_reward_then_eval_and_resume(tmp_path, capsys):
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Write {i}:", "answer": "a"}) + "\n" for i in range(32)))
    (tmp_path / "my_rewards.py").write_text(REWARD_FILE)
    out = tmp_path / "run"
    args = ["train", "--model", "tiny:xs", "--data", str(data), "--reward", f"{tmp_path / 'my_rewards.py'}:count_a",
            "--out", str(out), "--steps", "30", "rollout.max_new_tokens=10", "rollout.prompts_per_step=4",
            "rollout.num_generations=8", "optim.lr=3e-3", "run.save_every=15", "run.progress=false",
            "algorithm.preset=dapo"]
    assert cli.main(args) == 0
    rows = _metrics(out)
    assert [r["step"] for r in rows] == list(range(1, 31))
    first = sum(r["reward"] for r in rows[:5]) / 5
    last = sum(r["reward"] for r in rows[-5:]) / 5
    assert last > first + 0.15, (first, last)
    assert (out / "model" / "config.json").is_file()
    assert (out / "samples.jsonl").read_text().strip()
    assert (out / "metrics.png").read_bytes()[:4] == b"\x89PNG"

    # The trained directory is a model `--model` accepts.
    test = tmp_path / "test.jsonl"
    test.write_text(json.dumps({"prompt": "Write 99:", "answer": "a"}) + "\n")
    capsys.readouterr()
    assert cli.main(["eval", "--model", str(out / "model"), "--data", str(test), "--samples-out",
                     str(tmp_path / "s.jsonl"), "max_new_tokens=10"]) == 0
    report = capsys.readouterr().out
    assert "accuracy:" in report
    assert (tmp_path / "s.jsonl").read_text().count("\n") == 1

    # Resuming from the step-15 checkpoint reproduces steps 16..30 exactly.
    import shutil

    shutil.rmtree(out / "checkpoints" / "step-000030")
    assert cli.main(args + ["--resume"]) == 0
    again = _metrics(out)
    assert [r["step"] for r in again] == list(range(1, 31))
    assert [r["reward"] for r in again[15:]] == pytest.approx([r["reward"] for r in rows[15:]], abs=1e-6)
