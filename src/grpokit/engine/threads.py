"""torch's intra-op threads: their number for the length of a block, and parking its
idle OpenMP workers so that threads of our own get the cores."""
from __future__ import annotations

import contextlib
import ctypes
import threading

import torch


@contextlib.contextmanager
def intra_op_threads(n: int | None, *, park: bool = False):
    """torch's intra-op thread count set to n inside the block (unchanged when None);
    park: first stop torch's idle OpenMP workers from spinning (`park_openmp_workers`)."""
    if n is None:
        yield
        return
    if park:
        park_openmp_workers()
    before = torch.get_num_threads()
    _outer.append(before)
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        _outer.pop()


_outer: list[int] = []  # the thread counts intra_op_threads blocks replaced, outermost first


def available_threads() -> int:
    """torch's intra-op thread count outside any intra_op_threads block: what code with
    threads of its own (the whole C decode step) may use while torch is held to fewer."""
    return _outer[0] if _outer else torch.get_num_threads()


def _openmp_runtime():
    """torch's OpenMP runtime (GNU libgomp or Intel's libiomp) when it is loaded, else None."""
    if "omp" not in _state:
        _state["omp"] = None
        try:
            with open("/proc/self/maps") as f:
                paths = {line.split()[-1] for line in f if ("libgomp" in line or "libiomp" in line) and "/" in line}
        except OSError:  # not Linux
            paths = set()
        for path in sorted(paths):
            try:
                lib = ctypes.CDLL(path)
                fn = lib.omp_pause_resource_all
            except (OSError, AttributeError):
                continue
            fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
            _state["omp"] = fn
            break
    return _state["omp"]


_state: dict[str, object] = {}
OMP_PAUSE_SOFT = 1  # omp_pause_soft of OpenMP 5.0's omp_pause_resource_t


def park_openmp_workers() -> bool:
    """Stop torch's idle OpenMP workers from spinning, so threads of our own get the cores.

    After each parallel region GNU OpenMP's workers busy-wait before they sleep, for
    several milliseconds on current x86 CPUs (the spin counts `pause` instructions of
    ~140 cycles each): 7-10 ms of a core burned after one torch op, measured here.
    omp_pause_resource_all ends them; torch's next parallel region starts them again
    (a few hundred microseconds). Only from the main thread, where no parallel region of
    ours can be running. Returns True when the workers were stopped."""
    fn = _openmp_runtime()
    if fn is None or threading.current_thread() is not threading.main_thread():
        return False
    return fn(OMP_PAUSE_SOFT) == 0
