"""What a benchmark needs to know about the machine: CPU load from /proc/stat (so a
run on a busy machine is recognised), waiting for idle, the CPU's name, and the fp32
matmul ceiling that "% of ceiling" is measured against."""
from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from typing import Any, Sequence

from grpokit.engine import native


def cpu_snapshot() -> tuple[float, float, list[str], float]:
    """(system busy s from /proc/stat, this process's user+sys CPU s, loadavg, steal s)."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    busy = (vals[0] + vals[1] + vals[2] + vals[5] + vals[6]) / hz  # user nice system irq softirq
    steal = vals[7] / hz if len(vals) > 7 else 0.0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    return busy, ru.ru_utime + ru.ru_stime, load, steal


def machine_load(before, after, seconds: float) -> dict[str, Any]:
    own = after[1] - before[1]
    foreign = max(0.0, (after[0] - before[0]) - own)
    return {"loadavg_before": before[2], "loadavg_after": after[2], "own_cpu_s": own,
            "own_cores_avg": own / max(seconds, 1e-9), "foreign_cpu_s": foreign,
            "foreign_cores_avg": foreign / max(seconds, 1e-9), "steal_s": after[3] - before[3]}


def wait_idle(window: float = 10.0, max_busy: float = 0.10, timeout: float = 600.0) -> bool:
    """Block until all processes together use < max_busy cores over `window` seconds
    (the method of shared/bench/wait_idle.py). False on timeout."""
    start = time.time()
    while True:
        b0 = cpu_snapshot()[0]
        time.sleep(window)
        busy = (cpu_snapshot()[0] - b0) / window
        if busy < max_busy:
            print(f"[bench] machine idle: {busy:.2f} busy cores over {window:.0f}s "
                  f"(waited {time.time() - start:.0f}s)", flush=True)
            return True
        if time.time() - start > timeout:
            print(f"[bench] WARNING: machine still busy ({busy:.2f} cores) after {timeout:.0f}s; running anyway "
                  "(the run records the foreign load)", flush=True)
            return False
        print(f"[bench] machine busy: {busy:.2f} cores, waiting...", flush=True)


def cpu_name() -> str:
    return native.cpu_fields().get("model name") or platform.processor()


def measure_ceiling(threads: int, reps: int = 20, size: int = 2048) -> dict[str, Any]:
    """fp32 matmul rate: median over `reps` samples of size^3 matmuls, as flops_ceiling.py
    measures it (same shape, repetition count and inner-loop rule). The result has its
    key `ceiling_flops_per_s`, so either file works as --ceiling-json."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    out = torch.empty(size, size)
    for _ in range(3):
        torch.matmul(a, b, out=out)
    t = time.perf_counter()
    torch.matmul(a, b, out=out)
    one = max(time.perf_counter() - t, 1e-7)
    inner = max(1, int(0.2 / one / 5))
    samples = []
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(inner):
            torch.matmul(a, b, out=out)
        samples.append((time.perf_counter() - t) / inner)
    med = statistics.median(samples)
    flop = 2.0 * size ** 3
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "shape": f"{size}^3 fp32",
            "ceiling_flops_per_s": flop / med, "best_flops_per_s": flop / min(samples), "reps": reps,
            "inner": inner, "method": "grpokit.bench.measure_ceiling (flops_ceiling.py's primary measurement)"}


def summarize(xs: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "mean": statistics.fmean(xs),
            "n": len(xs)}
