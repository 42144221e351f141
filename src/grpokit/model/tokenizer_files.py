"""Loading a saved tokenizer exactly as it was saved (no model knowledge needed, so the
model converters and the policy loader share it without importing each other)."""
from __future__ import annotations

import json
from pathlib import Path

GENERIC_TOKENIZER_CLASSES = {"PreTrainedTokenizerFast", "TokenizersBackend"}


def load_tokenizer(path: str, *, trust_remote_code: bool = False):
    """Load the tokenizer that was saved, never a look-alike.

    transformers 5 maps a generic saved tokenizer to the model family's class (for
    model_type qwen2 it builds Qwen2Tokenizer, which drops spaces of a char tokenizer).
    We load generic ones as PreTrainedTokenizerFast and check the result against the raw
    tokenizer.json; a mismatch is an error rather than a silent swap.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    p = Path(path)
    cls_name = None
    if (p / "tokenizer_config.json").is_file():
        cls_name = json.loads((p / "tokenizer_config.json").read_text()).get("tokenizer_class")
    if (p / "tokenizer.json").is_file() and (cls_name is None or cls_name in GENERIC_TOKENIZER_CLASSES):
        tok = PreTrainedTokenizerFast.from_pretrained(path)
    else:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    check_tokenizer_matches_file(tok, p)
    if tok.pad_token_id is None:
        # Padding is masked everywhere; reusing EOS as pad is safe for that.
        tok.pad_token = tok.eos_token
    return tok


def check_tokenizer_matches_file(tok, path: Path) -> None:
    file = path / "tokenizer.json"
    if not file.is_file():
        return
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(file))
    probe = "Compute 37+48-12. The answer is  73!\n<think>a b</think>"
    got = tok(probe, add_special_tokens=False)["input_ids"]
    want = raw.encode(probe, add_special_tokens=False).ids
    if got != want:
        raise ValueError(
            f"tokenizer loaded from {path} ({type(tok).__name__}) does not match its tokenizer.json: "
            f"{len(got)} vs {len(want)} tokens on a probe string. Refusing to train with a swapped tokenizer; "
            "pass model.tokenizer=DIR or fix tokenizer_config.json's tokenizer_class."
        )
