"""Tokenizer options: special tokens, a given tokenizer by path, wide vocabularies, one EOS."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.errors import InputError
from pipeline.records import make_document, to_table
from pipeline.shards import ShardWriterFn, TokenShards, dtype_for_vocab, id_space
from pipeline.store import atomic_write_json
from pipeline.tokenizer import EOS_TOKEN, read_given_tokenizer, train_bpe
from tests.helpers import SAMPLE

TEXT = (SAMPLE / "books" / "pg35_The_Time_Machine.txt").read_text(encoding="utf-8-sig")[:30000]


@pytest.fixture(scope="module")
def small():
    return train_bpe([TEXT], vocab_size=400, special_tokens=["<|pad|>", "<|sep|>"])


def _write_version(folder, tokenizer, docs, eos_id):
    """One train shard of ``docs`` and a manifest, as a data run would write them."""
    writer = ShardWriterFn(tokenizer.to_str(), str(folder), frozenset(), eos_id)
    records = writer(to_table(docs)).to_pylist()
    atomic_write_json(
        folder / "manifest.json",
        {
            "dtype": dtype_for_vocab(id_space(tokenizer)).name,
            "tokenizer": {"eos_id": eos_id},
            "shards": records,
        },
    )
    return TokenShards(folder, "train")


def test_vocab_size_and_special_tokens_are_configurable(small):
    assert small.get_vocab_size() == 400
    # EOS first, then the configured specials in order, all inside the vocabulary size.
    assert [small.token_to_id(t) for t in (EOS_TOKEN, "<|pad|>", "<|sep|>")] == [0, 1, 2]


def test_document_text_that_spells_a_special_token_gets_exactly_one_eos(tmp_path, small):
    eos = small.token_to_id(EOS_TOKEN)
    texts = [f"The Time Traveller {EOS_TOKEN} said <|pad|> nothing.", "Filby laughed."]
    docs = [make_document("web", f"u{i}", text=t) for i, t in enumerate(texts)]
    shards = _write_version(tmp_path, small, docs, eos)
    tokens = np.asarray(shards.shard_tokens()[0])
    # One EOS after each document and nowhere else; the spelled-out token is ordinary text.
    idx = np.fromfile(tmp_path / f"{shards.shards[0]['name']}.idx", dtype="<i8")
    assert np.flatnonzero(tokens == eos).tolist() == (idx[1:] - 1).tolist()
    assert int((tokens == eos).sum()) == 2
    assert int((tokens == small.token_to_id("<|pad|>")).sum()) == 0
    assert [small.decode(d.tolist()) for d in shards.documents()] == texts


def test_vocabulary_over_65535_is_stored_as_uint32_without_wrapping(tmp_path):
    tokenizer = train_bpe([TEXT], vocab_size=400)
    # Widen the vocabulary past uint16 with ordinary added words, so document text maps to
    # ids above 65,535 (a uint16 array would store 65,536 as 0).
    tokenizer.add_tokens([f"zzword{i}" for i in range(66_000)])
    assert id_space(tokenizer) > 65_536
    high = tokenizer.token_to_id("zzword65999")
    assert high > 65_535
    eos = tokenizer.token_to_id(EOS_TOKEN)
    text = "Weena zzword65999 and zzword65536 zzword0"
    shards = _write_version(tmp_path, tokenizer, [make_document("web", "u", text=text)], eos)
    assert shards.dtype == np.dtype("<u4")
    (ids,) = list(shards.documents())
    assert ids.tolist() == tokenizer.encode(text, add_special_tokens=False).ids
    assert high in ids.tolist() and tokenizer.token_to_id("zzword65536") in ids.tolist()
    assert ids.max() > 65_535


def test_given_tokenizer_json_and_hugging_face_folder(tmp_path, small):
    file = tmp_path / "tok.json"
    small.save(str(file))
    text, eos = read_given_tokenizer(file, None)
    assert eos == EOS_TOKEN and json.loads(text)["model"]["type"] == "BPE"

    folder = tmp_path / "hf"
    folder.mkdir()
    small.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"eos_token": {"content": "<|sep|>", "special": True}})
    )
    assert read_given_tokenizer(folder, None)[1] == "<|sep|>"
    assert read_given_tokenizer(folder, "<|pad|>")[1] == "<|pad|>"  # the config wins

    with pytest.raises(InputError, match="no end-of-document token '<eos>'"):
        read_given_tokenizer(file, "<eos>")
    with pytest.raises(InputError, match="no tokenizer.json"):
        read_given_tokenizer(tmp_path / "nowhere", None)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="not a tokenizers JSON"):
        read_given_tokenizer(tmp_path / "bad.json", None)


def test_prepare_tokenizer_copies_a_given_tokenizer_into_the_store(tmp_path, small):
    from pipeline.config import DataConfig
    from pipeline.runner import Processed, prepare_tokenizer
    from pipeline.store import DatasetStore

    small.save(str(tmp_path / "tok.json"))
    cfg = DataConfig(
        inputs=[{"path": "x"}],
        tokenizer={"path": str(tmp_path / "tok.json"), "eos_token": "<|sep|>"},
    )
    store = DatasetStore(tmp_path / "store")
    processed = Processed(None, None, {"a": 1, "b": 2}, {}, [], None, {})
    tokenizer, path, info = prepare_tokenizer(cfg, store, processed)
    assert path.parent.parent == store.root / "tokenizers" and info["fingerprint"].startswith(
        "file-"
    )
    assert info["eos_token"] == "<|sep|>" and info["eos_id"] == 2
    assert info["vocab_size"] == 400 and info["special_tokens"] == sorted(
        [EOS_TOKEN, "<|pad|>", "<|sep|>"]
    )
    assert path.read_text() == (tmp_path / "tok.json").read_text()


def test_a_long_run_of_one_kind_of_character_is_cut_before_bpe_sees_it():
    # Found in the field: a line of Chinese with no punctuation (or a line of digits, or of
    # emoji) is one pre-tokenized piece, and BPE training on it grew with its length squared:
    # a 1.5M-character line never finished.
    from pipeline.tokenizer import MAX_RUN

    runs = {
        "letters": "".join(chr(0x4E00 + (i * 7919) % 500) for i in range(20_000)),
        "digits": "".join(str(i * 7 % 10) for i in range(20_000)),
        "emoji": "".join(chr(0x1F600 + i * 13 % 60) for i in range(20_000)),
        "spaces": " " * 20_000,
        # A symbol and a combining mark in turn: one piece to the byte-level pre-tokenizer.
        "hearts": "\u2764\ufe0f" * 10_000,
    }
    tok = train_bpe([TEXT, *runs.values()], vocab_size=400)
    for kind, run in runs.items():
        pieces = tok.pre_tokenizer.pre_tokenize_str(f"time {run[:300]}")
        assert max(end - start for _, (start, end) in pieces) <= MAX_RUN, kind
        assert tok.decode(tok.encode(run).ids) == run, kind  # nothing lost at the cuts
    # Words of a spaced language are never that long: English is pre-tokenized as before.
    words = tok.pre_tokenizer.pre_tokenize_str(TEXT[:2000])
    assert all(end - start < 30 for _, (start, end) in words)
