"""Sampling speed of grpokit's own engine vs the vLLM sampler on one model directory.

    VLLM_ENABLE_V1_MULTIPROCESSING=0 PYTHONPATH=src .venv-vllm/bin/python benchmarks/vllm_sampling.py \
        /tmp/grpo_assets/models/tiny --prompts 4 --group 8 --tokens 64

Rows = prompts x group (a GRPO step's shape), temperature 1, after one warm-up call each;
prints tokens/s of each backend (median of --repeats), the vLLM engine's start-up, one
weight sync, and the batched policy forward that gives the groupers' prompt embeddings.
Prompts come from the bench data (data/arith_512.jsonl next to models/).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"

import torch  # noqa: E402

from grpokit.model.policy import load_tokenizer  # noqa: E402
from grpokit.rollout.generate import generate  # noqa: E402
from grpokit.rollout.vllm import SamplingParams, VLLMSampler, prompt_embeddings  # noqa: E402


def timed(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    tok = load_tokenizer(args.model)
    data = Path(args.model).parents[1] / "data" / "arith_512.jsonl"
    texts = [json.loads(line)["prompt"] for line in data.read_text().splitlines()[:args.prompts]]
    rows = [tok(t)["input_ids"] for t in texts for _ in range(args.group)]
    eos = {tok.eos_token_id}
    res = {}

    def ours():
        return generate(model, rows, max_new_tokens=args.tokens, eos_ids=eos, pad_id=tok.pad_token_id,
                        generator=torch.Generator().manual_seed(0))
    ours()
    t, out = timed(ours, args.repeats)
    res["grpokit_tok_s"] = sum(map(len, out.completion_ids)) / t

    t0 = time.perf_counter()
    sampler = VLLMSampler(model, tok, eos_ids=eos, pad_id=tok.pad_token_id, max_model_len=512, seed=0)
    res["vllm_start_s"] = time.perf_counter() - t0
    torch.set_num_threads(args.threads)
    params = SamplingParams(max_new_tokens=args.tokens)
    sampler.sample(rows, params, generator=torch.Generator().manual_seed(0))
    t, out = timed(lambda: sampler.sample(rows, params, generator=torch.Generator().manual_seed(0)), args.repeats)
    res["vllm_tok_s"] = sum(map(len, out.completion_ids)) / t
    res["vllm_sync_s"], _ = timed(lambda: sampler.sync_weights(model), 1)
    res["embeddings_s"], _ = timed(lambda: prompt_embeddings(model, rows, pad_id=tok.pad_token_id), args.repeats)
    res.update(rows=len(rows), tokens=args.tokens, load=os.getloadavg()[0])
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in res.items()}))


if __name__ == "__main__":
    main()
