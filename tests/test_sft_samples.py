"""`grpokit sft` with held-out prompts: it measures accuracy on them and writes the
fine-tuned model's completions of the first few to samples.jsonl (through the Sampler)."""
import json

from grpokit import cli


def test_sft_with_eval_data_writes_scored_samples(tmp_path):
    out = tmp_path / "sft"
    assert cli.main(["sft", "--data", "task:arithmetic", "--model", "tiny:xs", "--out", str(out), "--steps", "2",
                     "eval_data=task:arithmetic:test", "batch_size=4", "max_seq_len=96"]) == 0
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert rows and all("reward/accuracy" in r and r["completion"] is not None for r in rows)


def test_sft_eval_every_measures_along_the_way(tmp_path):
    out = tmp_path / "sft"
    assert cli.main(["sft", "--data", "task:arithmetic_short", "--model", "tiny:xs", "--out", str(out), "--steps", "4",
                     "eval_data=task:arithmetic_short:test", "eval_every=2", "batch_size=4", "max_seq_len=64"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "accuracy" in r] == [2, 4]


def test_sft_stop_at_needs_eval_data_and_an_accuracy(capsys, tmp_path):
    recipe = tmp_path / "sft.yaml"
    recipe.write_text("kind: sft\ndata: task:arithmetic\n")
    assert cli.main(["validate", str(recipe), "stop_at=0.05"]) == 1
    assert "stop_at is set but eval_data is not: give eval_data" in capsys.readouterr().out
    assert cli.main(["validate", str(recipe), "stop_at=5", "eval_data=task:arithmetic:test"]) == 1
    assert "stop_at = 5.0: must be an accuracy in (0, 1]" in capsys.readouterr().out
    assert cli.main(["validate", str(recipe), "stop_at=0.05", "eval_data=task:arithmetic:test", "eval_every=50"]) == 0
