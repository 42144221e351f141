"""`grpokit export`: a trained policy as a plain Hugging Face model directory.

The result loads with `AutoModelForCausalLM.from_pretrained(DIR)` and
`AutoTokenizer.from_pretrained(DIR)` (and so with `vllm.LLM(model=DIR)`), with no
grpokit, peft or trust_remote_code, and gives the trained policy's logits.

Sources:
  a run directory      its final model (`model/`, LoRA already merged there), else its
                       newest complete checkpoint (the command says which)
  a checkpoint         `RUN/checkpoints/step-N`: full weights are copied; a LoRA run's
                       checkpoint holds the adapter only and needs --merge-lora, which
                       rebuilds the base model the run trained on and folds the adapter in
  a model directory    anything `--model` accepts (e.g. the output of `grpokit sft`)

The built-in `tiny` models use a character tokenizer (grpokit.model.char_tokenizer). Hugging
Face's AutoTokenizer does not load it as saved for some architectures (for model_type
qwen2 it builds a byte-level Qwen2Tokenizer from the vocabulary, which drops spaces), so
the export rewrites it as the equivalent byte-level BPE: the same token ids, spelled in
the byte alphabet, with merges that rebuild multi-byte characters. The export checks
that AutoTokenizer then encodes every character of the vocabulary as before.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grpokit.checkpoint import BASE_MODEL_FILE, CONFIG_FILE, latest_checkpoint

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
MODEL_DIR = "model"
# grpokit's own files in a model or checkpoint directory; not part of a plain export.
NOT_EXPORTED = {"trainer_state.pt", "COMPLETE", CONFIG_FILE, BASE_MODEL_FILE}


@dataclass
class ExportResult:
    source: Path  # the model or checkpoint directory read
    out: Path
    notes: list[str] = field(default_factory=list)  # what the command tells the user


def resolve_source(path: str | os.PathLike) -> tuple[Path, list[str]]:
    """The model or checkpoint directory to export from a user's RUN_DIR argument."""
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: no such directory (expected a run, checkpoint or model directory)")
    if _is_model_dir(p):
        return p, []
    if _is_model_dir(p / MODEL_DIR):
        return p / MODEL_DIR, [f"{p} is a run directory: exporting its final model ({p / MODEL_DIR})"]
    ckpt = latest_checkpoint(p)
    if ckpt is not None:
        return ckpt, [f"{p} has no final model (the run did not finish): exporting its newest checkpoint, {ckpt.name}"]
    raise FileNotFoundError(f"{p}: neither a run directory (with model/ or checkpoints/step-N) nor a model or "
                            f"checkpoint directory (config.json or {ADAPTER_CONFIG})")


def export_model(source: str | os.PathLike, out: str | os.PathLike, *, merge_lora: bool = False) -> ExportResult:
    """Write `out` (absent or empty; never overwritten) from a run, checkpoint or model directory."""
    dest = Path(out)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ValueError(f"--out {dest}: already exists and is not an empty directory; export never overwrites, "
                         "choose a new directory")
    src, notes = resolve_source(source)
    result = ExportResult(source=src, out=dest, notes=notes)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.export-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        if (src / ADAPTER_CONFIG).is_file():
            if not merge_lora:
                raise ValueError(f"{src} holds a LoRA adapter only (a checkpoint of a LoRA run): pass --merge-lora "
                                 "to fold it into the base model, or export the run directory, whose final model "
                                 "is saved merged")
            _write_merged(src, tmp)
            notes.append("LoRA adapter merged into the base weights")
        else:
            _copy_model_files(src, tmp)
            if merge_lora:
                notes.append(_merge_note(src))
        note = portable_char_tokenizer(tmp)
        if note:
            notes.append(note)
        if dest.exists():
            dest.rmdir()  # empty, checked above
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


# ----------------------------------------------------------------------------- sources


def _is_model_dir(p: Path) -> bool:
    return p.is_dir() and ((p / "config.json").is_file() or (p / ADAPTER_CONFIG).is_file())


def _merge_note(src: Path) -> str:
    note = src / BASE_MODEL_FILE
    if note.is_file() and json.loads(note.read_text()).get("merged"):
        return "--merge-lora: the LoRA adapter was merged when the run saved this model"
    return "--merge-lora: the source has no LoRA adapter; its weights are exported as they are"


def _copy_model_files(src: Path, dest: Path) -> None:
    """Every file of the model directory except grpokit's own (bytes as trained)."""
    for f in sorted(src.iterdir()):
        if f.is_file() and f.name not in NOT_EXPORTED and not f.name.startswith("."):
            shutil.copy2(f, dest / f.name)


def _write_merged(ckpt: Path, dest: Path) -> None:
    """Rebuild the base model the run trained on, load the checkpoint's adapter, merge, save."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from grpokit.config.io import load_config
    from grpokit.config import TrainConfig
    from grpokit.model.policy import is_tiny, load_policy, load_tokenizer

    if not (ckpt / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{ckpt}: a LoRA adapter without {CONFIG_FILE}; cannot tell which base model it "
                                "belongs to")
    if not (ckpt / ADAPTER_WEIGHTS).is_file():
        raise FileNotFoundError(f"{ckpt}: no {ADAPTER_WEIGHTS}")
    cfg = load_config(TrainConfig, str(ckpt / CONFIG_FILE), [])
    model_cfg = dataclasses.replace(cfg.model, device="cpu")
    tokenizer = load_tokenizer(str(ckpt))
    fit: list[str] = []
    if is_tiny(model_cfg.name_or_path):
        # A tiny base is random weights from the run's seed over a vocabulary fitted to the
        # data; the saved tokenizer's characters rebuild the same vocabulary.
        fit = [t for t in tokenizer.get_vocab() if len(t) == 1]
    policy = load_policy(model_cfg, fit_texts=fit, seed=cfg.run.seed)
    if policy.tokenizer.get_vocab() != tokenizer.get_vocab():
        raise ValueError(f"{ckpt}: the rebuilt base model's vocabulary differs from the checkpoint's tokenizer; "
                         "the base cannot be reproduced")
    set_peft_model_state_dict(policy.model, load_file(str(ckpt / ADAPTER_WEIGHTS)))
    model = policy.model.merge_and_unload()
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)


# ----------------------------------------------------------------------------- tokenizer


REWRITTEN = ("character tokenizer rewritten as the equivalent byte-level BPE, so AutoTokenizer loads it "
             "(same token ids)")


def portable_char_tokenizer(directory: Path) -> str | None:
    """Rewrite grpokit's character tokenizer in `directory` as a byte-level BPE with the
    same ids. Returns what was done, for the user; None (untouched) for any other tokenizer.
    Where AutoTokenizer would still encode differently, the original is put back and the
    note says how to load it."""
    path = directory / "tokenizer.json"
    if not path.is_file():
        return None
    original = path.read_text(encoding="utf-8")
    raw = json.loads(original)
    model = raw.get("model", {})
    added = raw.get("added_tokens", [])
    special = {a["content"] for a in added}
    chars = {t: i for t, i in model.get("vocab", {}).items() if t not in special}
    if model.get("type") != "WordLevel" or not chars or any(len(t) != 1 for t in chars):
        return None
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    before = Tokenizer.from_file(str(path))
    byte_char = _bytes_to_unicode()
    vocab: dict[str, int] = {a["content"]: a["id"] for a in added}
    merges: list[tuple[str, str]] = []
    next_id = max([*chars.values(), *vocab.values()]) + 1
    for ch, i in sorted(chars.items(), key=lambda kv: kv[1]):
        parts = [byte_char[b] for b in ch.encode("utf-8")]
        vocab["".join(parts)] = i
        # merges join a multi-byte character left to right; its bytes and partial pieces
        # need ids of their own, above the model's vocabulary (they never survive a whole
        # character, so the model never sees them)
        for part in parts if len(parts) > 1 else ():  # each byte of a multi-byte character
            if part not in vocab:
                vocab[part] = next_id
                next_id += 1
        for k in range(2, len(parts) + 1):
            left, piece = "".join(parts[:k - 1]), "".join(parts[:k])
            if (left, parts[k - 1]) not in merges:
                merges.append((left, parts[k - 1]))
            if piece not in vocab:
                vocab[piece] = next_id
                next_id += 1
    unk = model.get("unk_token")
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=unk))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.add_special_tokens([AddedToken(a["content"], normalized=False, special=True) for a in added if a["special"]])
    bpe.add_tokens([AddedToken(a["content"], normalized=False, special=False) for a in added if not a["special"]])
    bpe.save(str(path))
    # every character, and each combining mark after letters (a loader that normalises
    # text, as Qwen2Tokenizer does with NFC, would join them into one character)
    probe = "".join(sorted(chars)) + "".join(sorted(special)) + "".join(
        f"a{c}e{c}" for c in sorted(chars) if unicodedata.combining(c))
    differs = _auto_tokenizer_differs(directory, before, probe)
    if differs:
        path.write_text(original, encoding="utf-8")
        return (f"character tokenizer kept as trained: AutoTokenizer would load it as {differs}, which encodes "
                "it differently; load it with transformers.PreTrainedTokenizerFast.from_pretrained(DIR)")
    return REWRITTEN


def _auto_tokenizer_differs(directory: Path, before: Any, probe: str) -> str | None:
    """The class AutoTokenizer builds when it encodes `probe` differently from `before`."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(directory))
    want = before.encode(probe, add_special_tokens=False).ids
    got = tok(probe, add_special_tokens=False)["input_ids"]
    return None if got == want else type(tok).__name__


def _bytes_to_unicode() -> dict[int, str]:
    """The byte alphabet of byte-level BPE (GPT-2): printable bytes stand for themselves,
    the others are shifted to unused code points from 256 on."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    out, shift = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + shift)
            shift += 1
    return out
