"""Rank body for tests/test_dist.py's 2-process gloo checks of grpokit.dist (run by
torch.multiprocessing.spawn; writes what it saw to <out>/rank<r>.json)."""
from __future__ import annotations

import json
import os
import sys

import torch


def main(rank: int, out: str, port: int) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), GRPOKIT_DIST_TIMEOUT="60")
    from grpokit import dist
    from grpokit.rewards.manager import RewardScores

    world = dist.init()
    seen = {"rank": world.rank, "size": world.size}
    # gradients: rank 0 reached a and b, rank 1 only a; c reached by no rank
    a, b, c = (torch.nn.Parameter(torch.zeros(2)) for _ in range(3))
    a.grad = torch.tensor([1.0, 2.0]) * (rank + 1)
    if rank == 0:
        b.grad = torch.tensor([5.0, 7.0])
    dist.sum_gradients(world, [a, b, c])
    seen["grads"] = [a.grad.tolist(), b.grad.tolist(), c.grad]
    # token-weighted metrics: rank 0 kl 0.2 over 10 tokens, rank 1 kl 0.4 over 30 tokens
    w = 10.0 if rank == 0 else 30.0
    kl = 0.2 if rank == 0 else 0.4
    seen["metrics"] = dist.reduce_metrics(world, {"kl": kl * w}, {"kl": w})
    seen["total"] = dist.total(world, rank + 1.5)
    # reward scores: a breakdown key only rank 1 produced
    parts = {"fmt/ok": torch.tensor([1.0])} if rank == 1 else {}
    scores = RewardScores(total=torch.tensor([float(rank)] * (rank + 1)),
                          per_reward={"acc": torch.tensor([float(rank)] * (rank + 1))},
                          parts={k: v.repeat(rank + 1) for k, v in parts.items()}, not_applicable={"acc": rank})
    got = dist.gather_scores(world, scores)
    seen["scores"] = {"total": got.total.tolist(), "parts": {k: v.tolist() for k, v in got.parts.items()},
                      "na": got.not_applicable}
    dist.teardown()
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(seen, f)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]))
