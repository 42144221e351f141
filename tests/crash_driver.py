"""Run `grpokit train ARGS` and SIGKILL this process at a chosen moment (a crash test).

    python tests/crash_driver.py KIND N -- train --out RUN ...
    crash_driver.run(KIND, N, ["train", ...])   # in a forked child (faster: no imports)

KIND names the moment, N counts its occurrences in this process (1 = the first):
  state    inside a checkpoint write: model files written to the hidden temp dir, the
           trainer state (optimizer, RNG, sampler, grouper) not yet
  marker   inside a checkpoint write: every file written, the COMPLETE marker not yet
  rename   a checkpoint or the final model fully written, about to be renamed into place
  prune    while deleting an old checkpoint (renamed to .del-*, not yet removed)
  step     in the middle of a training step (while scoring rewards)
  model    writing the final model directory (save_pretrained into its temp dir)
  none     never: run to the end
Nothing here is part of grpokit: the moments are found by wrapping library calls.
"""
from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    return run(argv[0], int(argv[1]), argv[argv.index("--") + 1:])


def run(kind: str, n: int, rest: list[str]) -> int:
    """Patch the moments in, then `grpokit RESt`; meant for a fresh or forked process."""
    counts = {"n": 0}

    def hit(k: str) -> None:
        if k == kind:
            counts["n"] += 1
            if counts["n"] == n:
                sys.stdout.flush()
                os.kill(os.getpid(), signal.SIGKILL)

    import torch

    from grpokit import cli
    from grpokit.rewards import RewardSet
    from transformers import PreTrainedModel

    real_save, real_replace, real_rmtree = torch.save, os.replace, shutil.rmtree
    real_write_text, real_score = Path.write_text, RewardSet.score
    real_save_pretrained = PreTrainedModel.save_pretrained

    def save(obj, f, *a, **k):
        if str(f).endswith("trainer_state.pt"):
            hit("state")
        return real_save(obj, f, *a, **k)

    def write_text(self, *a, **k):
        if self.name == "COMPLETE":
            hit("marker")
        return real_write_text(self, *a, **k)

    def replace(src, dst, *a, **k):
        if Path(src).name.startswith(".tmp-"):
            hit("rename")
        return real_replace(src, dst, *a, **k)

    def rmtree(path, *a, **k):
        if Path(path).name.startswith(".del-"):
            hit("prune")
        return real_rmtree(path, *a, **k)

    def score(self, *a, **k):
        hit("step")
        return real_score(self, *a, **k)

    def save_pretrained(self, directory, *a, **k):
        if Path(directory).name.startswith(".tmp-model"):
            hit("model")
        return real_save_pretrained(self, directory, *a, **k)

    torch.save, os.replace, shutil.rmtree, Path.write_text = save, replace, rmtree, write_text
    RewardSet.score, PreTrainedModel.save_pretrained = score, save_pretrained
    torch.set_num_threads(1)
    return cli.main(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
