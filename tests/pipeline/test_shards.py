"""Tokenizer training, shard writing and the dataset store."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.gutenberg import strip_gutenberg
from pipeline.records import make_document, to_table
from pipeline.shards import ShardWriterFn, TokenShards, dtype_for_vocab, verify_version
from pipeline.store import DatasetStore, atomic_write_json, staging_dir
from pipeline.tokenizer import EOS_TOKEN, train_bpe
from tests.helpers import SAMPLE


@pytest.fixture(scope="module")
def books() -> list[dict]:
    paths = sorted((SAMPLE / "books").glob("pg4*.txt"))[:3]
    return [
        make_document("book", str(p), text=strip_gutenberg(p.read_text(encoding="utf-8-sig")).text)
        for p in paths
    ]


@pytest.fixture(scope="module")
def tokenizer(books):
    return train_bpe((d["text"] for d in books), vocab_size=1000)


def test_bpe_round_trips_any_text(tokenizer):
    assert tokenizer.get_vocab_size() == 1000
    eos = tokenizer.token_to_id(EOS_TOKEN)
    assert eos is not None
    for text in ["Candide dit: « Voilà! »", "日本語のテキスト", "emoji 🙂 and tabs\t."]:
        assert tokenizer.decode(tokenizer.encode(text).ids) == text


def test_dtype_fits_the_vocabulary():
    assert dtype_for_vocab(65536) == np.uint16
    assert dtype_for_vocab(65537) == np.uint32
    assert np.iinfo(dtype_for_vocab(70000)).max >= 69999


def test_shards_hold_each_document_followed_by_one_eos(tmp_path, books, tokenizer):
    eos = tokenizer.token_to_id(EOS_TOKEN)
    writer = ShardWriterFn(tokenizer.to_str(), str(tmp_path), frozenset({books[0]["id"]}), eos)
    records = writer(to_table(books)).to_pylist()
    assert sorted(r["split"] for r in records) == ["train", "val"]
    manifest = {
        "dtype": "uint16",
        "tokenizer": {"eos_id": eos, "vocab_size": 1000},
        "shards": records,
        "version": "v0001",
    }
    atomic_write_json(tmp_path / "manifest.json", manifest)
    assert verify_version(tmp_path) == []

    train = TokenShards(tmp_path, "train")
    assert train.num_documents == 2
    tokens = np.asarray(train.shard_tokens()[0])
    assert int((tokens == eos).sum()) == 2 and tokens[-1] == eos
    decoded = [tokenizer.decode(d.tolist()) for d in train.documents()]
    assert decoded == [books[1]["text"], books[2]["text"]]

    # Tampering is caught by the checksums.
    bin_path = tmp_path / f"{records[0]['name']}.bin"
    data = bytearray(bin_path.read_bytes())
    data[0] ^= 1
    bin_path.write_bytes(bytes(data))
    assert any("checksum" in p for p in verify_version(tmp_path))


def test_shard_names_depend_only_on_their_documents(tmp_path, books, tokenizer):
    eos = tokenizer.token_to_id(EOS_TOKEN)
    a = ShardWriterFn(tokenizer.to_str(), str(tmp_path / "a"), frozenset(), eos)
    b = ShardWriterFn(tokenizer.to_str(), str(tmp_path / "b"), frozenset(), eos)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert a(to_table(books)).to_pylist() == b(to_table(books)).to_pylist()


def test_failed_version_leaves_nothing_behind(tmp_path):
    store = DatasetStore(tmp_path)
    with pytest.raises(RuntimeError), store.new_version("d") as (version, folder):
        (folder / "half.bin").write_bytes(b"x")
        raise RuntimeError("killed")
    assert store.versions("d") == []
    assert store.current_version("d") is None
    assert list((tmp_path / "datasets" / "d").iterdir()) == []

    with store.new_version("d") as (version, folder):
        (folder / "manifest.json").write_text(json.dumps({"version": version}))
    assert version == "v0001"
    assert store.current_version("d") == tmp_path / "datasets" / "d" / "v0001"
    assert store.new_version_name("d") == "v0002"


def test_staging_dir_replaces_only_on_success(tmp_path):
    final = tmp_path / "out"
    with staging_dir(final) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(ValueError), staging_dir(final) as tmp:
        (tmp / "a").write_text("2")
        raise ValueError
    assert (final / "a").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_the_eos_token_comes_from_the_version_and_the_checkpoint(tmp_path):
    from model.checkpoint import checkpoint_eos_token
    from pipeline.shards import eos_token_of
    from pipeline.store import atomic_write_json
    from pipeline.tokenizer import EOS_TOKEN

    assert eos_token_of(None) == EOS_TOKEN
    atomic_write_json(tmp_path / "manifest.json", {"tokenizer": {"eos_token": "</s>"}})
    assert eos_token_of(tmp_path) == "</s>"
    assert checkpoint_eos_token({"dataset_dir": str(tmp_path)}) == "</s>"
    assert checkpoint_eos_token({"eos_token": "<eod>", "dataset_dir": str(tmp_path)}) == "<eod>"
