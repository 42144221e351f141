"""glibc malloc settings for CPU training, applied by re-executing the command once.

A CPU training step allocates and frees hundreds of activation tensors of a few MiB.
With glibc's defaults, tensors under its sliding mmap threshold (up to 32 MiB) come
from the heap, and what they leave behind when freed stays resident: on the `small`
benchmark model peak RSS swung between 2.0 and 2.6 GiB from run to run for the same
live memory. Two tunables change that:

- glibc.malloc.mmap_threshold=8 MiB: every allocation of 8 MiB or more gets its own
  mapping and goes back to the OS when freed, so RSS follows live memory more closely;
- glibc.malloc.hugetlb=1: those mappings (and the heap) are backed by transparent huge
  pages where the kernel allows it (`madvise` mode), so mapping fresh memory costs one
  fault per 2 MiB instead of one per 4 KiB.

Measured on W2 (docs/performance.md), peak RSS: 2.45-2.6 GiB with glibc's defaults or
BASELINE.md's tunables, 2.22-2.26 GiB at 8 MiB, 2.03 GiB at 4 MiB. The price is page
faults on fresh mappings: at 4 MiB the step took up to 20 % longer in one bench; 8 MiB
is the compromise, within the run-to-run noise of the default in side-by-side runs.

Tunables are read when a process starts, so the `grpokit` command re-executes itself
once with them set. It does nothing when GLIBC_TUNABLES is already set (the user's
choice wins, as in `grpokit bench --allocator tunables`), when GRPOKIT_ALLOCATOR=system,
or off Linux/glibc. glibc versions without `hugetlb` (before 2.35) ignore it.
"""
from __future__ import annotations

import os
import platform
import sys
from typing import Mapping, Sequence

TUNABLES = "glibc.malloc.mmap_threshold=8388608:glibc.malloc.hugetlb=1"
_DONE = "GRPOKIT_ALLOCATOR_SET"  # set in the re-executed process, so it never loops


def tuned_env(env: Mapping[str, str]) -> dict[str, str] | None:
    """The environment to re-execute with, or None when nothing should change."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    if env.get("GRPOKIT_ALLOCATOR", "") == "system" or env.get(_DONE) or "GLIBC_TUNABLES" in env:
        return None
    new = dict(env)
    new["GLIBC_TUNABLES"] = TUNABLES
    new[_DONE] = "1"
    return new


def reexec_tuned(command: Sequence[str]) -> None:
    """Replace this process with `command` under the tuned allocator; return (doing
    nothing) when no change is wanted. Call it first thing, before work is done."""
    env = tuned_env(os.environ)
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *command], env)
