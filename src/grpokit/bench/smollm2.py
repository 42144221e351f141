"""Bench workload W3 (`grpokit bench --workload smollm2`): a real pretrained model.

SmolLM2-135M-Instruct (134.5M parameters, 49,152-token vocabulary, written by
`grpokit model get smollm2-135m`), 8 prompts x 4 completions x 128 tokens per step,
beta 0.04; every other setting as W1/W2 (temperature 1.0, lr 1e-5 linear, DAPO token
mean, group-scaled advantages, clip 0.2, fp32, 2 threads, reward: any integer equals
the answer).

Prompts are the 512 arithmetic prompts of W1/W2 ("Compute 51-29. Answer:" without the
"Answer:"), rendered once through the model's chat template with the arithmetic task's
system prompt and stored as text: both implementations then tokenize the same string
(TRL's reward function takes text completions, which conversational prompts would not
give it). grpokit reads them with data.chat_template=off, so nothing wraps them twice.

Assets, next to W1/W2's in --assets:
  models/smollm2-135m/            grpokit model get smollm2-135m --out ASSETS/models/smollm2-135m
  data/smollm2_chat_512.jsonl     written here from data/arith_512.jsonl on first use
The TRL side is benchmarks/trl_smollm2.py, which runs shared/bench/trl_baseline.py on
these assets with W3's shape.
"""
from __future__ import annotations

import json
from pathlib import Path

MODEL_DIR = "smollm2-135m"
DATA_FILE = "smollm2_chat_512.jsonl"
SOURCE_FILE = "arith_512.jsonl"  # W1/W2's prompts (shared/bench/make_assets.py)


def chat_prompt(tokenizer, text: str, system_prompt: str) -> str:
    """One W1/W2 prompt as the instruct model is used: system + user turn, generation prompt."""
    question = text.removesuffix("Answer:").strip()
    return tokenizer.apply_chat_template([{"role": "system", "content": system_prompt},
                                          {"role": "user", "content": question}],
                                         add_generation_prompt=True, tokenize=False)


def prepare_assets(assets: Path) -> Path:
    """Check the model directory and write the chat-rendered data file (once); its path."""
    model = assets / "models" / MODEL_DIR
    if not (model / "config.json").is_file():
        raise FileNotFoundError(f"no model at {model}; get it first: grpokit model get smollm2-135m --out {model}")
    source = assets / "data" / SOURCE_FILE
    if not source.is_file():
        raise FileNotFoundError(f"{source} missing; build the W1/W2 assets first (shared/bench/make_assets.py "
                                f"--out {assets})")
    out = assets / "data" / DATA_FILE
    if out.is_file():
        return out
    from grpokit.model.policy import load_tokenizer
    from grpokit.tasks.formats import task_system_prompt

    tok = load_tokenizer(str(model))
    system = task_system_prompt("task:arithmetic")
    rows = []
    for n, line in enumerate(source.read_text().splitlines(), start=1):
        if line.strip():
            row = json.loads(line)
            if "prompt" not in row or "answer" not in row:
                raise ValueError(f"{source}:{n}: expected {{'prompt', 'answer'}}")
            rows.append({"prompt": chat_prompt(tok, row["prompt"], system), "answer": row["answer"]})
    tmp = out.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.rename(out)
    return out
