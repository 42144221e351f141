"""grpokit's C kernels (decode.c, products.c, step.c, train.c), compiled with the machine's C compiler at first use.

The shared library is built once per source text, compiler and CPU into
$GRPOKIT_CACHE (default ~/.cache/grpokit/native) and loaded with ctypes; it needs no
Python or torch headers, so building it takes about a second. Where no compiler is
found, the build fails, or GRPOKIT_NATIVE=0 is set, `library()` returns None and
callers keep their torch code (the same results up to float rounding).
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
SOURCES = [HERE / n for n in ("decode.c", "products.c", "step.c", "train.c")]  # one library
HEADERS = [HERE / "kernels.h"]
LANES = 16  # decode.c's block width (passed to it): head dims and key-cache columns come in multiples of it
FLAGS = ["-O3", "-march=native", "-fopenmp-simd", "-ffp-contract=fast", "-fPIC", "-shared", "-pthread", "-std=c11",
         f"-DLANES={LANES}"]

_i64, _f32, _ptr = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
SIGNATURES = {
    "gk_rms_norm": (None, [_ptr, _ptr, _ptr, _i64, _i64, _f32]),
    "gk_decode_attention": (ctypes.c_int, [_ptr, _i64, _i64, _i64, _i64, _ptr, _ptr, _ptr, _ptr, _ptr, _i64, _i64,
                                           _ptr, _f32, _ptr, ctypes.c_int]),
    "gk_struct_layout": (None, [_ptr]),
    "gk_panel_width": (_i64, []),
    "gk_gemm": (None, [_ptr, _i64, _i64, _ptr, _i64, _ptr, _ptr, ctypes.c_int]),
    "gk_gemm_grad": (ctypes.c_int, [_ptr, _ptr, _i64, _i64, _i64, _ptr, _ptr]),
    "gk_pack_panels": (None, [_ptr, _i64, _i64, _ptr, _i64, _i64]),
    "gk_pack_rows": (None, [_ptr, _i64, _i64, _ptr, _i64, _i64]),
    "gk_decode_step_scratch": (_i64, [_ptr, _i64, _i64, _i64, ctypes.c_int, _i64, ctypes.c_int]),
    "gk_train_grad_floats": (_i64, [_ptr]),
    "gk_train_saved_floats": (_i64, [_ptr, _i64, _ptr, _i64, _i64, ctypes.c_int, ctypes.c_int]),
    "gk_train_work_floats": (_i64, [_ptr, _i64, _ptr, _i64, _i64, ctypes.c_int]),
    "gk_train_forward": (None, [_ptr, _i64, _ptr, _i64, _i64, _ptr, _ptr, _ptr, _ptr, _f32, _ptr, _ptr,
                                ctypes.c_int, _ptr, _ptr, ctypes.c_int]),
    "gk_train_backward": (ctypes.c_int, [_ptr, _i64, _ptr, _i64, _i64, _ptr, _ptr, _ptr, _ptr, _f32, _ptr, _ptr,
                                         _ptr, ctypes.c_int, _ptr, _ptr]),
    "gk_decode_step": (None, [_ptr, _i64, _i64, _ptr, _ptr, _ptr, _i64, _ptr, _ptr, ctypes.c_int, _i64,
                              ctypes.c_int, _ptr]),
}

_state: dict[str, object] = {}


def cpu_fields() -> dict[str, str]:
    """/proc/cpuinfo's fields of the first processor ("vendor_id", "model name",
    "flags", ...); empty where there is no such file."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def _cpu_signature() -> str:
    # -march=native ties the binary to this CPU's instruction set; a cache directory
    # shared between machines must not hand one CPU's build to another.
    fields = cpu_fields()
    return " ".join([platform.machine(), fields.get("model name", ""), fields.get("flags", "")])


def _compiler() -> str | None:
    cc = os.environ.get("CC", "cc")
    return shutil.which(cc)


def cache_dir() -> Path:
    root = os.environ.get("GRPOKIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "grpokit")
    return Path(root) / "native"


def build(cc: str, target: Path, flags: list[str] = FLAGS) -> None:
    """Compile the sources into `target`, atomically: a concurrent build of the same key
    writes its own temporary file and the last rename wins with identical bytes. Other
    `flags` build for another instruction set (the tests build each x86 one they can run)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        proc = subprocess.run([cc, *flags, "-o", tmp, *map(str, SOURCES), "-lm"], capture_output=True, text=True)
        if proc.returncode != 0:
            names = ", ".join(s.name for s in SOURCES)
            raise RuntimeError(f"{cc} failed on {names} in {HERE} (exit {proc.returncode}):\n{proc.stderr.strip()}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load() -> ctypes.CDLL | None:
    if os.environ.get("GRPOKIT_NATIVE", "1") == "0":
        return None
    cc = _compiler()
    if cc is None:
        log.info("no C compiler (set CC): the decode step keeps its torch kernels")
        return None
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
        texts = [p.read_text() for p in SOURCES + HEADERS]
        key = hashlib.sha256("\0".join([*texts, cc, version, " ".join(FLAGS), _cpu_signature()])
                             .encode()).hexdigest()[:16]
        target = cache_dir() / f"grpokit_decode_{key}.so"
        if not target.exists():
            build(cc, target)
        return load(target)
    except (OSError, RuntimeError) as err:
        log.warning("grpokit's C decode kernels are unavailable, using torch's ops instead: %s", err)
        return None


def load(path: Path) -> ctypes.CDLL:
    """A built library with its functions' C signatures set (ctypes would otherwise pass
    Python ints as 32-bit ints)."""
    lib = ctypes.CDLL(str(path))
    for name, (restype, argtypes) in SIGNATURES.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


def library() -> ctypes.CDLL | None:
    """The loaded kernels, or None where they cannot be built (built and loaded once)."""
    if "lib" not in _state:
        _state["lib"] = _load()
    return _state["lib"]  # type: ignore[return-value]
