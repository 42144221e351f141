"""`grpokit bench`: time grpokit's training loop on the TRL reference workloads (CPU: run.py,
orchestrate.py; GPU: gpu.py; machine facts: machine.py). The command line is cli.py."""
from grpokit.bench.cli import compare, main

__all__ = ["main", "compare"]
