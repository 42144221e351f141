"""Keyed sampling randomness: one random stream per completion.

A single process-wide generator hands out its numbers in the order rows are sampled,
so which completion gets which numbers depends on how many rows a process samples
and in what order. Keyed streams give the completion for (seed, step, prompt
position, completion index) the same numbers wherever it is sampled, so a run
samples the same completions with 1 process or N (`rollout.seeding: keyed`).

Each row owns a CPU torch.Generator seeded from a hash of its key; the sampling loop
draws exactly one uniform per generated token from the row's own stream, so the
stream is also independent of batch size and of which rows finish first.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import torch


def row_seed(seed: int, step: int, prompt: int, completion: int) -> int:
    """A 63-bit seed for one completion's stream (blake2b of the key: keys that differ
    in any part give unrelated streams)."""
    digest = hashlib.blake2b(f"{seed}/{step}/{prompt}/{completion}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class RowStreams:
    """Per-row generators for one `Sampler.sample` call, in row order. Samplers pass it
    where a torch.Generator goes: `take(rows)` narrows it to a subset of rows (a batch
    chunk, the rows still decoding, a multi-turn round) sharing the same streams, and
    `uniform()` draws one number per row from each row's stream."""

    def __init__(self, generators: Sequence[torch.Generator]):
        self.generators = list(generators)

    @classmethod
    def for_rows(cls, seed: int, step: int, keys: Sequence[tuple[int, int]]) -> "RowStreams":
        """keys: (prompt position in the step's prompt list, completion index) per row."""
        return cls([torch.Generator().manual_seed(row_seed(seed, step, p, k)) for p, k in keys])

    def __len__(self) -> int:
        return len(self.generators)

    def take(self, rows: Sequence[int]) -> "RowStreams":
        return RowStreams([self.generators[i] for i in rows])

    def uniform(self) -> torch.Tensor:
        """[B, 1] float32 on the CPU: the next uniform of every row's stream."""
        return torch.cat([torch.rand(1, 1, generator=g) for g in self.generators])

    def seeds(self) -> list[int]:
        """One integer seed per row, drawn from the rows' streams (for samplers that
        take per-row seeds instead of drawing their own uniforms)."""
        return [int(torch.randint(0, 2 ** 62, (1,), generator=g)) for g in self.generators]


def keyed(generator) -> bool:
    return isinstance(generator, RowStreams)


def resolve(mode: str, world_size: int) -> str:
    """rollout.seeding -> 'keyed' or 'global' for a run of world_size processes."""
    if mode == "auto":
        return "keyed" if world_size > 1 else "global"
    if mode == "global" and world_size > 1:
        raise ValueError(f"rollout.seeding=global: one generator cannot be shared by {world_size} processes; "
                         "use keyed (or auto)")
    if mode not in ("global", "keyed"):
        raise ValueError(f"rollout.seeding={mode!r}: expected auto, global or keyed")
    return mode
