"""Loads and saves models and tokenizers: the one module that knows Hugging Face.

`tiny[:SIZE[:ARCH]]` builds a fresh small Qwen2/Llama-style model with a character
tokenizer fitted to the training text; everything else goes through
AutoModelForCausalLM from a local directory (or a hub id, for users who have one).
"""
from __future__ import annotations

import copy
import json
import logging
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import torch

from grpokit.config.schema import ModelConfig
from grpokit.model.char_tokenizer import CHAT_TEMPLATE as CHAR_CHAT_TEMPLATE
from grpokit.model.device import resolve_device
from grpokit.model.tokenizer_files import GENERIC_TOKENIZER_CLASSES, load_tokenizer  # noqa: F401 (re-exported)

log = logging.getLogger("grpokit")

# name -> (hidden, layers, heads, kv heads, intermediate)
TINY_SIZES = {
    "xs": (128, 4, 4, 2, 512),
    "s": (192, 4, 6, 2, 768),
    "m": (256, 6, 8, 4, 1024),
    "l": (512, 8, 8, 4, 1408),
}
TINY_DEFAULT = "s"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Tokenizer classes that are only a generic wrapper around tokenizer.json; for these,
# AutoTokenizer may substitute the model family's own class and change tokenization.


@dataclass
class Policy:
    model: torch.nn.Module
    tokenizer: object
    is_lora: bool = False

    @property
    def eos_ids(self) -> set[int]:
        return eos_token_ids(self.model, self.tokenizer)


def is_tiny(name: str) -> bool:
    return name == "tiny" or name.startswith("tiny:")


def parse_tiny(name: str) -> tuple[str, str]:
    parts = name.split(":")
    size = parts[1] if len(parts) > 1 and parts[1] else TINY_DEFAULT
    arch = parts[2] if len(parts) > 2 else "qwen2"
    if size not in TINY_SIZES:
        raise ValueError(f"unknown tiny size {size!r} in {name!r}; sizes: {', '.join(TINY_SIZES)}")
    if arch not in ("qwen2", "llama"):
        raise ValueError(f"unknown tiny architecture {arch!r} in {name!r}; use qwen2 or llama")
    return size, arch


def create_tiny(name: str, texts: Iterable[str], *, seed: int = 0, max_positions: int = 1024):
    """A freshly initialised small model plus a character tokenizer fitted to `texts`."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from grpokit.model.char_tokenizer import build_char_tokenizer

    size, arch = parse_tiny(name)
    hidden, layers, heads, kv, inter = TINY_SIZES[size]
    tokenizer = build_char_tokenizer(texts)
    cfg_cls, model_cls = (Qwen2Config, Qwen2ForCausalLM) if arch == "qwen2" else (LlamaConfig, LlamaForCausalLM)
    config = cfg_cls(
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv, intermediate_size=inter, max_position_embeddings=max_positions,
        tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    with _seeded(seed):
        model = model_cls(config)
    return model, tokenizer


def load_policy(cfg: ModelConfig, *, fit_texts: Iterable[str] = (), seed: int = 0) -> Policy:
    """Model + tokenizer from a ModelConfig; applies LoRA when cfg.lora.r > 0."""
    dtype = DTYPES[cfg.dtype]
    if is_tiny(cfg.name_or_path):
        model, tokenizer = create_tiny(cfg.name_or_path, fit_texts, seed=seed)
        model = model.to(dtype)
    else:
        from transformers import AutoModelForCausalLM

        path = cfg.name_or_path
        if path.endswith(".gguf"):  # a llama.cpp file: converted once into a cache directory
            from grpokit.model.get import gguf_model_dir

            path = str(gguf_model_dir(path))
        from grpokit.model.files import ModelFileError, check_model_files, check_tokenizer_files, locate_model

        path, note = locate_model(path)  # a run directory stands for its model
        if note:
            print(f"grpokit: {note}")
        local = Path(path).is_dir()
        if local:
            check_model_files(path, cfg.tokenizer)  # one-line errors for what transformers would trip on
        elif cfg.tokenizer:
            check_tokenizer_files(cfg.tokenizer)
        kwargs = {"dtype": dtype, "trust_remote_code": cfg.trust_remote_code}
        if cfg.attn_implementation:
            kwargs["attn_implementation"] = cfg.attn_implementation
        try:
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        except OSError as e:
            if local:
                raise
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelFileError(f"model.name_or_path = {path!r}: not a local directory, and the Hugging Face hub "
                                 f"could not provide it ({first})") from None
        tokenizer = load_tokenizer(cfg.tokenizer or path, trust_remote_code=cfg.trust_remote_code)
    is_lora = cfg.lora.r > 0
    if is_lora:
        from peft import LoraConfig as PeftLoraConfig
        from peft import get_peft_model

        targets = list(cfg.lora.target_modules) or "all-linear"
        model = get_peft_model(model, PeftLoraConfig(
            r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
            target_modules=targets, task_type="CAUSAL_LM"))
    model.to(resolve_device(cfg.device))
    model.config.use_cache = True
    return Policy(model=model, tokenizer=tokenizer, is_lora=is_lora)


def eos_token_ids(model, tokenizer) -> set[int]:
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen = getattr(model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None) if gen is not None else None
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, (list, tuple)):
        ids.update(int(e) for e in eos)
    return ids


class Reference:
    """Frozen reference policy for the KL term.

    Under LoRA the reference is the base model with the adapter switched off, so no
    second copy of the weights is held; otherwise a frozen deep copy.
    """

    def __init__(self, policy: Policy):
        self._policy = policy
        if policy.is_lora:
            self.model = policy.model
        else:
            self.model = copy.deepcopy(policy.model).eval()
            for p in self.model.parameters():
                p.requires_grad_(False)

    @contextmanager
    def active(self) -> Iterator[torch.nn.Module]:
        ctx = self._policy.model.disable_adapter() if self._policy.is_lora else nullcontext()
        with ctx, torch.no_grad():
            yield self.model


CHAT_TEMPLATE_MODES = ("auto", "on", "off")


def uses_chat_template(tokenizer, prompt, mode: str = "auto") -> bool:
    """Whether `prompt` goes through the tokenizer's chat template.

    Chat messages always do (there is no other way to render them). Plain text does
    under mode "auto" when the tokenizer has a template (an instruct model expects its
    turn markers; a bare question often gets an empty answer) and under "on"; "off"
    keeps text as it is, for base models whose tokenizer happens to carry a template.
    "auto" leaves text alone for grpokit's character tokenizer: its template exists only
    to render message prompts, and `tiny` models learn from plain text.
    """
    if mode not in CHAT_TEMPLATE_MODES:
        raise ValueError(f"data.chat_template: expected one of {', '.join(CHAT_TEMPLATE_MODES)}, got {mode!r}")
    if not isinstance(prompt, str):
        return True
    has_template = getattr(tokenizer, "chat_template", None) is not None
    if mode == "on" and not has_template:
        raise ValueError("data.chat_template=on but the tokenizer has no chat template; "
                         "use auto or off, or a tokenizer with a chat_template")
    return mode == "on" or (mode == "auto" and has_template and tokenizer.chat_template != CHAR_CHAT_TEMPLATE)


def render_prompt(tokenizer, prompt, system_prompt: str | None = None, chat_template: str = "auto") -> str:
    """Prompt text as the model sees it: chat messages, and text prompts when the
    tokenizer has a chat template (see uses_chat_template), go through the template,
    a text prompt as one user message. The system prompt is added to templated prompts
    that have none; text rendered without a template is returned unchanged."""
    if not uses_chat_template(tokenizer, prompt, chat_template):
        return prompt
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if system_prompt and not (messages and messages[0].get("role") == "system"):
        messages = [{"role": "system", "content": system_prompt}] + messages
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("prompts are chat messages but the tokenizer has no chat template; "
                         "give plain-text prompts or a tokenizer with a chat_template")
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def encode_prompts(tokenizer, prompts, *, max_tokens: int = 0, system_prompt: str | None = None,
                   chat_template: str = "auto") -> list[list[int]]:
    out = []
    for p in prompts:
        templated = uses_chat_template(tokenizer, p, chat_template)
        text = render_prompt(tokenizer, p, system_prompt, chat_template)
        # A chat template already writes any BOS it needs.
        ids = tokenizer(text, add_special_tokens=not templated)["input_ids"]
        if max_tokens and len(ids) > max_tokens:
            ids = ids[-max_tokens:]  # keep the end, where the question usually is
        out.append(list(ids))
    return out


@contextmanager
def _seeded(seed: int):
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(state)
