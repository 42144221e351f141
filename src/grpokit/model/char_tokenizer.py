"""A character-level tokenizer fitted to training text, saved in Hugging Face format.

Used by `tiny` models. Reasoning tags (`<think>`, `</answer>`, ...) are single tokens,
which shortens completions a lot at character level. The result is a plain
PreTrainedTokenizerFast, so it saves and loads like any other tokenizer.
"""
from __future__ import annotations

from typing import Iterable

PAD, EOS, UNK = "<|pad|>", "<|endoftext|>", "<|unk|>"
TAGS = ("<think>", "</think>", "<answer>", "</answer>", "<search>", "</search>", "<result>", "</result>")
# Chat turns for prompts given as messages; kept short because every char is a token.
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")


def build_char_tokenizer(texts: Iterable[str], *, include_printable: bool = True):
    """Vocabulary = special tokens + tags + every character seen (+ printable ASCII)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars: set[str] = set()
    for t in texts:
        chars.update(t)
    if include_printable:
        chars.update(chr(c) for c in range(32, 127))
        chars.add("\n")
    vocab = {tok: i for i, tok in enumerate([PAD, EOS, UNK])}
    for c in sorted(chars):
        vocab.setdefault(c, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # Every character is its own pre-token, newlines included.
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.add_special_tokens([AddedToken(t, normalized=False) for t in (PAD, EOS, UNK)])
    core.add_tokens([AddedToken(t, normalized=False, single_word=False) for t in TAGS + ROLE_TOKENS])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=PAD, eos_token=EOS, unk_token=UNK, clean_up_tokenization_spaces=False
    )
    tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "left"
    return tok
