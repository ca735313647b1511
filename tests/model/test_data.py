"""Training windows and validation batches read from real shards."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.data import TrainWindows, validation_windows
from pipeline.shards import TokenShards


def _stream(version) -> np.ndarray:
    return np.concatenate([np.asarray(a) for a in TokenShards(version, "train").shard_tokens()])


def _batch(windows, tokens, **kw):
    args = dict(micro_batch_size=4, micro=0, rank=0, world_size=1)
    args.update(kw)
    return windows.micro_batch(tokens, **args)


def test_targets_are_inputs_shifted_by_one(version):
    windows = TrainWindows(version, block_size=32, seed=0)
    x, y = _batch(windows, 0)
    assert x.shape == y.shape == (4, 32) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])


def test_an_epoch_covers_every_token_once_with_no_off_by_one(version):
    block = 32
    windows = TrainWindows(version, block_size=block, seed=3)
    stream = _stream(version)
    assert windows.num_windows == (len(stream) - 1) // block
    # The windows that start block_size apart, each block_size + 1 tokens long: consecutive
    # windows share one token, so every token after the first is a target exactly once.
    expected = sorted(
        stream[s : s + block + 1].astype(np.int64).tobytes()
        for s in range(0, windows.num_windows * block, block)
    )
    epoch = sorted(windows.window(i).tobytes() for i in range(windows.num_windows))
    assert epoch == expected
    assert windows.tokens_per_epoch == windows.num_windows * block


def test_a_window_can_span_a_shard_seam(version):
    block = 64
    windows = TrainWindows(version, block_size=block, seed=0)
    first_shard = len(TokenShards(version, "train").shard_tokens()[0])
    seam_window = first_shard // block  # the window whose tokens run across the seam
    stream = _stream(version)
    tokens = windows._tokens(seam_window * block, (seam_window + 1) * block + 1)
    assert np.array_equal(tokens, stream[seam_window * block : (seam_window + 1) * block + 1])


def test_order_is_seeded_and_differs_by_epoch(version):
    a = TrainWindows(version, block_size=32, seed=7)
    b = TrainWindows(version, block_size=32, seed=7)
    c = TrainWindows(version, block_size=32, seed=8)
    n = a.num_windows
    assert all(np.array_equal(a.window(i), b.window(i)) for i in range(0, 2 * n, 37))
    assert not all(np.array_equal(a.window(i), c.window(i)) for i in range(20))
    # The second epoch visits the same windows in another order.
    first = [a.window(i).tobytes() for i in range(n)]
    second = [a.window(n + i).tobytes() for i in range(n)]
    assert sorted(first) == sorted(second) and first != second


def test_ranks_read_disjoint_parts_that_together_cover_the_step(version):
    windows = TrainWindows(version, block_size=32, seed=0)
    rows = {}
    for rank in range(2):
        for micro in range(2):
            x, _ = _batch(windows, 0, micro_batch_size=3, micro=micro, rank=rank, world_size=2)
            rows[(rank, micro)] = {r.numpy().tobytes() for r in x}
    everything = set().union(*rows.values())
    assert len(everything) == 12  # 2 ranks x 2 micro-batches x 3 windows, none shared
    one_rank = set()
    for micro in range(4):  # the same step on one rank with 4 micro-batches
        x, _ = _batch(windows, 0, micro_batch_size=3, micro=micro)
        one_rank |= {r.numpy().tobytes() for r in x}
    assert one_rank == everything


def test_position_in_tokens_resumes_exactly(version):
    block, batch = 32, 4
    windows = TrainWindows(version, block_size=block, seed=0)
    tokens_per_step = block * batch
    unbroken = [_batch(windows, s * tokens_per_step, micro_batch_size=batch)[0] for s in range(6)]
    resumed = TrainWindows(version, block_size=block, seed=0)  # a new process
    for s in range(3, 6):
        x, _ = _batch(resumed, s * tokens_per_step, micro_batch_size=batch)
        assert torch.equal(x, unbroken[s])


def test_position_must_be_a_window_boundary(version):
    windows = TrainWindows(version, block_size=32, seed=0)
    with pytest.raises(ValueError, match="not a multiple of block_size"):
        _batch(windows, 33)


def test_block_larger_than_the_data_is_a_clear_error(version):
    with pytest.raises(ValueError, match="lower model.block_size"):
        TrainWindows(version, block_size=10**7, seed=0)


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_validation_covers_the_same_tokens_whatever_the_batch_size(version, batch_size):
    seen = sum(y.numel() for _, y in validation_windows(version, 64, batch_size))
    tokens = np.fromfile(next(version.glob("val-*.bin")), dtype="<u2")
    assert seen == len(tokens) - 1
