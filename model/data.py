"""Training and validation windows from a dataset version's token shards.

Training draws windows of ``block_size + 1`` tokens (inputs and their next-token targets) at
random offsets. The generator for a micro-batch is seeded by (seed, step, rank, micro-step), so
the batch that step ``s`` sees on rank ``r`` is a pure function of those numbers: a resumed run
sees exactly the batches an unbroken run would have seen, and ranks never share a stream.
Validation walks non-overlapping windows in a fixed order.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from pipeline.shards import TokenShards

__all__ = ["TrainWindows", "validation_windows"]


class TrainWindows:
    """Random windows over a split's shards, weighted by shard size."""

    def __init__(self, version_dir: str | Path, block_size: int, seed: int, split: str = "train"):
        self.shards = TokenShards(version_dir, split)
        self.block_size = block_size
        self.seed = seed
        arrays = self.shards.shard_tokens()
        self._arrays = [a for a in arrays if len(a) > block_size + 1]
        if not self._arrays:
            longest = max(len(a) for a in arrays)
            raise ValueError(
                f"no {split} shard holds more than block_size + 1 = {block_size + 1} tokens "
                f"(longest: {longest}); lower model.block_size or add data"
            )
        sizes = np.array([len(a) - block_size - 1 for a in self._arrays], dtype=np.float64)
        self._weights = sizes / sizes.sum()

    @property
    def num_tokens(self) -> int:
        return sum(len(a) for a in self._arrays)

    def batch(self, batch_size: int, *, step: int, rank: int, micro: int = 0):
        """(inputs, targets), each a (batch_size, block_size) int64 tensor."""
        rng = np.random.default_rng([self.seed, step, rank, micro])
        which = rng.choice(len(self._arrays), size=batch_size, p=self._weights)
        rows = []
        for shard in which:
            arr = self._arrays[shard]
            start = int(rng.integers(0, len(arr) - self.block_size - 1))
            rows.append(np.asarray(arr[start : start + self.block_size + 1], dtype=np.int64))
        window = torch.from_numpy(np.stack(rows))  # (B, block_size + 1)
        return window[:, :-1].contiguous(), window[:, 1:].contiguous()


def validation_windows(
    version_dir: str | Path, block_size: int, batch_size: int, max_windows: int | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Non-overlapping (inputs, targets) batches covering the validation split in order.

    The last window of a shard may be shorter than ``block_size``, so a small validation split
    is still scored. Windows are batched only with windows of the same length, so no padding
    enters the loss and the set of scored tokens does not depend on ``batch_size``.
    """
    shards = TokenShards(version_dir, "val")
    windows: list[np.ndarray] = []
    for arr in shards.shard_tokens():
        for start in range(0, len(arr) - 1, block_size):
            end = min(start + block_size + 1, len(arr))
            windows.append(np.asarray(arr[start:end], dtype=np.int64))
            if max_windows and len(windows) >= max_windows:
                break
        if max_windows and len(windows) >= max_windows:
            break
    by_length: dict[int, list[np.ndarray]] = {}
    for w in windows:
        by_length.setdefault(len(w), []).append(w)
    for length in sorted(by_length, reverse=True):
        group = by_length[length]
        for i in range(0, len(group), batch_size):
            window = torch.from_numpy(np.stack(group[i : i + batch_size]))
            yield window[:, :-1], window[:, 1:]
