"""Training and validation windows from a dataset version's token shards.

Training reads the split as one token stream (the shards in manifest order; every document
already ends with an end-of-document token, so joining shards joins documents). The stream is
cut into windows of ``block_size + 1`` tokens that start ``block_size`` apart: window ``w``
holds tokens ``[w * block_size, (w + 1) * block_size]``, its inputs are the first
``block_size`` and its targets the last ``block_size``, so each token after the first is a
target exactly once per epoch and no token is skipped or repeated at a window seam.

Each epoch visits every window once, in an order shuffled by ``(seed, epoch)``. The windows of
all epochs, in that order, form the global stream; a training step takes the next
``micro_batch_size * grad_accum_steps * world_size`` windows of it, and each rank reads its own
disjoint slice of them. The position in the stream is kept as tokens consumed (windows read
times ``block_size``), which does not depend on how many ranks read it: a run resumed with a
different number of processes continues at the same token, and with the same global batch
(for example 2 ranks x 1 micro-batch, or 1 rank x 2 accumulated micro-batches) sees the same
windows in every step.

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
    """The training split as a seeded, shuffled stream of windows, read by token position."""

    def __init__(self, version_dir: str | Path, block_size: int, seed: int, split: str = "train"):
        shards = TokenShards(version_dir, split)
        self.block_size = block_size
        self.seed = seed
        self._arrays = [a for a in shards.shard_tokens() if len(a)]
        # Where each shard starts in the joined stream; the last entry is the total.
        self._offsets = np.zeros(len(self._arrays) + 1, dtype=np.int64)
        np.cumsum([len(a) for a in self._arrays], out=self._offsets[1:])
        self.num_tokens = int(self._offsets[-1])
        self.num_windows = (self.num_tokens - 1) // block_size
        if self.num_windows < 1:
            raise ValueError(
                f"the {split} split holds {self.num_tokens} tokens, fewer than block_size + 1 = "
                f"{block_size + 1}; lower model.block_size or add data"
            )
        self._order_epoch = -1
        self._order = np.empty(0, dtype=np.int64)

    @property
    def tokens_per_epoch(self) -> int:
        """Target tokens in one pass over every window."""
        return self.num_windows * self.block_size

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if epoch != self._order_epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._order = rng.permutation(self.num_windows)
            self._order_epoch = epoch
        return self._order

    def _tokens(self, start: int, end: int) -> np.ndarray:
        """Tokens ``[start, end)`` of the joined stream, across shard seams."""
        first = int(np.searchsorted(self._offsets, start, side="right")) - 1
        pieces = []
        shard = first
        while start < end:
            base = int(self._offsets[shard])
            arr = self._arrays[shard]
            stop = min(end, base + len(arr))
            pieces.append(np.asarray(arr[start - base : stop - base], dtype=np.int64))
            start = stop
            shard += 1
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def window(self, index: int) -> np.ndarray:
        """The ``block_size + 1`` tokens of window ``index`` of the global stream."""
        epoch, i = divmod(index, self.num_windows)
        w = int(self._epoch_order(epoch)[i])
        return self._tokens(w * self.block_size, (w + 1) * self.block_size + 1)

    def micro_batch(
        self,
        tokens_consumed: int,
        *,
        micro_batch_size: int,
        micro: int,
        rank: int,
        world_size: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) of one rank's micro-batch, each (micro_batch_size, block_size).

        ``tokens_consumed`` is the stream position at the start of the optimizer step. Within
        a step, micro-batch ``m`` of rank ``r`` reads windows ``m * world_size + r`` (counted
        in micro-batches of ``micro_batch_size`` windows) after that position.
        """
        if tokens_consumed % self.block_size:
            raise ValueError(
                f"tokens_consumed ({tokens_consumed}) is not a multiple of block_size "
                f"({self.block_size}): it does not mark a window boundary"
            )
        first = tokens_consumed // self.block_size + (micro * world_size + rank) * micro_batch_size
        rows = [self.window(first + i) for i in range(micro_batch_size)]
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
