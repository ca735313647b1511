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


def test_a_plan_closes_each_shard_at_the_target():
    import pyarrow as pa

    from pipeline.shards import plan_shards

    sizes = pa.table(
        {
            "split": ["train"] * 6 + ["val"] * 2,
            "id": ["f", "b", "a", "e", "c", "d", "y", "x"],
            "n_tokens": [5, 3, 4, 9, 2, 2, 1, 1],
        }
    )
    # By id: a4 b3 c2 d2 e9 f5 -> [a b] 7, [c d e] 13, [f] 5 (the last, short); val: [x y] 2.
    assert plan_shards(sizes, 6) == [("train", "a"), ("train", "c"), ("train", "f"), ("val", "x")]
    assert plan_shards(sizes, 1000) == [("train", "a"), ("val", "x")]
    assert len(plan_shards(sizes, 1)) == 8
    # Identical documents (the same id, possible with dedup off) never straddle two shards.
    twins = pa.table({"split": ["train"] * 3, "id": ["a", "a", "b"], "n_tokens": [3, 3, 3]})
    assert plan_shards(twins, 3) == [("train", "a"), ("train", "b")]


@pytest.fixture(scope="module")
def pages(books) -> list[dict]:
    """The books cut into 48 page-sized documents: enough for many small shards."""
    return [
        make_document("book", f"{book['url']}#{i}", text=book["text"][i : i + 3000])
        for book in books
        for i in range(0, 16 * 3000, 3000)
    ]


def _write(ray_local, tmp_path, pages, tokenizer, *, blocks, concurrency, target):
    from pipeline.runner import write_shards

    folder = tmp_path / f"{blocks}-{concurrency}-{target}"
    folder.mkdir()
    kept = ray_local.data.from_arrow(to_table(pages)).repartition(blocks).materialize()
    eos = tokenizer.token_to_id(EOS_TOKEN)
    val_ids = frozenset(p["id"] for p in pages[::10])
    rows = write_shards(
        kept,
        tokenizer.to_str(),
        folder,
        val_ids,
        eos,
        target_tokens=target,
        batch_size=4,
        concurrency=concurrency,
    )
    manifest = {"dtype": "uint16", "tokenizer": {"eos_id": eos}, "shards": rows}
    atomic_write_json(folder / "manifest.json", manifest)
    return folder, rows, val_ids


def test_shards_reach_the_target_whatever_the_blocks(ray_local, tmp_path, pages, tokenizer):
    from model.data import TrainWindows, validation_windows

    target = 5000
    folder, rows, val_ids = _write(
        ray_local, tmp_path, pages, tokenizer, blocks=5, concurrency=2, target=target
    )
    assert verify_version(folder) == []
    train_rows = [r for r in rows if r["split"] == "train"]
    assert len(train_rows) >= 4  # a tiny target gives many shards

    # Every shard but the split's last (the one holding the highest ids) reaches the target;
    # the last may reach it too, by chance.
    def first_id(row):
        return json.loads((folder / f"{row['name']}.docs.jsonl").read_text().splitlines()[0])["id"]

    in_plan_order = sorted(train_rows, key=first_id)
    assert all(r["tokens"] >= target for r in in_plan_order[:-1])

    eos = tokenizer.token_to_id(EOS_TOKEN)
    texts = {p["id"]: p["text"] for p in pages}
    for split, expected in (("train", set(texts) - val_ids), ("val", val_ids)):
        shards = TokenShards(folder, split)
        seen = []
        for row in (r for r in rows if r["split"] == split):
            tokens = np.fromfile(folder / f"{row['name']}.bin", dtype="<u2")
            idx = np.fromfile(folder / f"{row['name']}.idx", dtype="<i8")
            docs_jsonl = (folder / f"{row['name']}.docs.jsonl").read_text().splitlines()
            ids = [json.loads(line)["id"] for line in docs_jsonl]
            assert ids == sorted(ids) and len(ids) == len(idx) - 1 == row["documents"]
            # Exactly one EOS after each document, where the index says it ends.
            assert np.flatnonzero(tokens == eos).tolist() == (idx[1:] - 1).tolist()
            # No shard holds more than the one document that took it to the target.
            assert idx[-2] < target
            for doc_id, start, end in zip(ids, idx[:-1], idx[1:], strict=True):
                assert tokenizer.decode(tokens[start : end - 1].tolist()) == texts[doc_id]
            seen += ids
        assert sorted(seen) == sorted(expected)  # every document, whole, on its own side
        assert shards.num_documents == len(expected)

    # The model side reads the packed shards as one stream.
    windows = TrainWindows(folder, block_size=64, seed=0)
    assert windows.num_tokens == sum(r["tokens"] for r in train_rows)
    assert windows.window(0).shape == (65,)
    val_tokens = sum(y.numel() for _, y in validation_windows(folder, 64, 4))
    assert val_tokens == sum(r["tokens"] - 1 for r in rows if r["split"] == "val")

    # Other block and worker counts give the same files, byte for byte.
    _, again, _ = _write(
        ray_local, tmp_path, pages, tokenizer, blocks=1, concurrency=1, target=target
    )
    assert again == rows
