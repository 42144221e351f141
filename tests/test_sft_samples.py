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
