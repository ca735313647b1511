"""A small real dataset version (three sample books, BPE vocabulary of 500) for model tests."""

from __future__ import annotations

import pytest

from pipeline.records import make_document, to_table
from pipeline.shards import ShardWriterFn
from pipeline.store import atomic_write_json
from pipeline.tokenizer import EOS_TOKEN, train_bpe
from tests.helpers import SAMPLE

BOOKS = (
    "pg35_The_Time_Machine.txt",
    "pg41_The_Legend_of_Sleepy_Hollow.txt",
    "pg43_The_Strange_Case_Of_Dr_Jekyll_And_Mr_Hyd.txt",
)


def write_version(folder, *, chars: int = 20000, vocab_size: int = 500):
    """Shards (two train books, one val book), manifest and tokenizer.json in ``folder``."""
    texts = [(SAMPLE / "books" / n).read_text(encoding="utf-8-sig")[:chars] for n in BOOKS]
    docs = [make_document("book", f"b{i}", text=t) for i, t in enumerate(texts)]
    tok = train_bpe(texts, vocab_size=vocab_size)
    eos = tok.token_to_id(EOS_TOKEN)
    writer = ShardWriterFn(tok.to_str(), str(folder), frozenset({docs[2]["id"]}), eos)
    # One shard per train book, so the token stream crosses a shard seam.
    records = writer(to_table(docs[:1])).to_pylist() + writer(to_table(docs[1:])).to_pylist()
    atomic_write_json(
        folder / "manifest.json",
        {
            "version": "v0001",
            "dtype": "uint16",
            "shards": records,
            "splits": {"val": {"documents": 1}},
            "tokenizer": {"eos_id": eos, "vocab_size": vocab_size},
        },
    )
    tok.save(str(folder / "tokenizer.json"))
    return folder


@pytest.fixture(scope="session")
def version(tmp_path_factory):
    return write_version(tmp_path_factory.mktemp("version"))


def write_final(folder, version, *, block_size: int = 128):
    """An exported checkpoint (the ``final`` folder a training run writes) of an untrained model
    on ``version``, with the lineage fields training records in meta.json."""
    import shutil

    import torch

    from model.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=500, block_size=block_size, n_layer=2, n_head=2, d_model=32))
    folder.mkdir(parents=True)
    torch.save(model.state_dict(), folder / "model.pt")
    atomic_write_json(folder / "config.json", model.config.to_dict())
    atomic_write_json(
        folder / "meta.json",
        {"dataset_dir": str(version), "dataset_version": "v0001", "steps": 0, "run": "test-run"},
    )
    shutil.copyfile(version / "tokenizer.json", folder / "tokenizer.json")
    return folder


@pytest.fixture(scope="session")
def final(version, tmp_path_factory):
    return write_final(tmp_path_factory.mktemp("ckpt") / "final", version)


@pytest.fixture
def one_thread():
    """One intra-op thread for tests of tiny models: on a busy two-core machine, torch's second
    thread spin-waits and a 32-wide matmul takes ~100x longer (measured: a 24-token generation
    0.02 s with one thread, 3.6 s with two, at load 15)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
