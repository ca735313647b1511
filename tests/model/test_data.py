"""Training windows and validation batches read from real shards."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.data import TrainWindows, validation_windows
from pipeline.records import make_document, to_table
from pipeline.shards import ShardWriterFn
from pipeline.store import atomic_write_json
from pipeline.tokenizer import EOS_TOKEN, train_bpe
from tests.helpers import SAMPLE


@pytest.fixture(scope="module")
def version(tmp_path_factory):
    folder = tmp_path_factory.mktemp("version")
    texts = [
        (SAMPLE / "books" / n).read_text(encoding="utf-8-sig")[:20000]
        for n in (
            "pg35_The_Time_Machine.txt",
            "pg41_The_Legend_of_Sleepy_Hollow.txt",
            "pg43_The_Strange_Case_Of_Dr_Jekyll_And_Mr_Hyd.txt",
        )
    ]
    docs = [make_document("book", f"b{i}", text=t) for i, t in enumerate(texts)]
    tok = train_bpe(texts, vocab_size=500)
    eos = tok.token_to_id(EOS_TOKEN)
    records = ShardWriterFn(tok.to_str(), str(folder), frozenset({docs[2]["id"]}), eos)(
        to_table(docs)
    ).to_pylist()
    (folder / "tokenizer.json").write_text(tok.to_str())
    atomic_write_json(
        folder / "manifest.json",
        {
            "version": "v0001",
            "dtype": "uint16",
            "shards": records,
            "splits": {"val": {"documents": 1}},
            "tokenizer": {"eos_id": eos, "vocab_size": 500},
        },
    )
    return folder


def test_targets_are_inputs_shifted_by_one(version):
    windows = TrainWindows(version, block_size=32, seed=0)
    x, y = windows.batch(4, step=0, rank=0)
    assert x.shape == y.shape == (4, 32) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])


def test_batches_are_a_function_of_step_and_rank(version):
    windows = TrainWindows(version, block_size=32, seed=0)
    a = windows.batch(4, step=7, rank=1)
    assert torch.equal(a[0], windows.batch(4, step=7, rank=1)[0])
    assert not torch.equal(a[0], windows.batch(4, step=7, rank=0)[0])
    assert not torch.equal(a[0], windows.batch(4, step=8, rank=1)[0])


def test_block_larger_than_the_data_is_a_clear_error(version):
    with pytest.raises(ValueError, match="lower model.block_size"):
        TrainWindows(version, block_size=10**7, seed=0)


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_validation_covers_the_same_tokens_whatever_the_batch_size(version, batch_size):
    seen = sum(y.numel() for _, y in validation_windows(version, 64, batch_size))
    tokens = np.fromfile(next(version.glob("val-*.bin")), dtype="<u2")
    assert seen == len(tokens) - 1
