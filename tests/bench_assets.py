"""The bench's assets folder in miniature (what shared/bench/make_assets.py writes: a model
directory and data/arith_512.jsonl), for the bench tests of every workload."""
from __future__ import annotations

import json
from pathlib import Path


def write_assets(root: Path, model_dir: str, chat_template: str | None = None) -> Path:
    """A tiny:xs model at root/models/model_dir (with chat_template, when given) and 20
    arithmetic prompts; returns root."""
    from grpokit.model.policy import create_tiny

    model, tok = create_tiny("tiny:xs", ["Compute 12+34. Answer: 46"], seed=0)
    if chat_template is not None:
        tok.chat_template = chat_template
    d = root / "models" / model_dir
    model.save_pretrained(d)
    tok.save_pretrained(d)
    (root / "data").mkdir()
    rows = [{"prompt": f"Compute {a}+{b}. Answer:", "answer": str(a + b)} for a in range(10, 20) for b in (11, 12)]
    (root / "data" / "arith_512.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root
