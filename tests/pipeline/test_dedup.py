"""Exact and near-duplicate detection on real books and pages."""

from __future__ import annotations

import csv
import gzip
import random

import pytest
import trafilatura

from pipeline.dedup import MinHasher, find_duplicates, normalize_text, run_dedup
from pipeline.gutenberg import strip_gutenberg
from pipeline.records import make_document, to_table
from tests.helpers import SAMPLE, need_corpus


def _fingerprints(docs: list[dict], hasher: MinHasher) -> list[dict]:
    import hashlib

    sigs = hasher.signatures([d["text"] for d in docs])
    return [
        {
            "id": d["id"],
            "text_hash": hashlib.sha1(normalize_text(d["text"]).encode()).hexdigest(),
            "n_chars": len(d["text"]),
            "minhash": None if s is None else s.tobytes(),
        }
        for d, s in zip(docs, sigs, strict=True)
    ]


def _book(path) -> dict:
    return make_document(
        "book", str(path), text=strip_gutenberg(path.read_text(encoding="utf-8-sig")).text
    )


def test_normalize_text():
    assert normalize_text("  Ｈello\u00a0\n WORLD ") == "hello world"


def test_two_releases_of_treasure_island_become_one_document():
    docs = [_book(p) for p in sorted((SAMPLE / "books").glob("*.txt"))]
    dups = find_duplicates(_fingerprints(docs, MinHasher()), bands=14, rows=8)
    assert len(dups) == 1
    [(dropped_id, dup)] = dups.items()
    names = {d["id"]: d["url"] for d in docs}
    assert "Treasure_Island" in names[dropped_id] and "Treasure_Island" in names[dup.kept_id]
    assert dup.reason == "near_duplicate"


def test_exact_duplicates_after_normalisation():
    a = make_document("web", "a", text="The cat sat on the mat and looked around the room. " * 3)
    b = make_document("web", "b", text="THE CAT sat on the mat and looked  around the room. " * 3)
    c = make_document("web", "c", text="An entirely different text about ships at sea today.")
    dups = find_duplicates(_fingerprints([a, b, c], MinHasher()), bands=14, rows=8)
    assert set(dups) == {max(a["id"], b["id"])} or set(dups) == {min(a["id"], b["id"])}
    assert next(iter(dups.values())).reason == "exact_duplicate"


def test_short_documents_get_exact_dedup_only():
    a = make_document("web", "a", text="too short")
    b = make_document("web", "b", text="too short")
    fps = _fingerprints([a, b], MinHasher(shingle_size=5))
    assert all(fp["minhash"] is None for fp in fps)
    assert len(find_duplicates(fps, bands=14, rows=8)) == 1


def test_kept_document_does_not_depend_on_input_order():
    docs = [_book(p) for p in sorted((SAMPLE / "books").glob("*.txt"))]
    fps = _fingerprints(docs, MinHasher())
    first = find_duplicates(fps, bands=14, rows=8)
    for seed in range(3):
        shuffled = fps[:]
        random.Random(seed).shuffle(shuffled)
        assert find_duplicates(shuffled, bands=14, rows=8) == first


def _main_text(rel: str) -> str:
    path = need_corpus(rel)
    if path.suffix == ".txt":
        return strip_gutenberg(path.read_text(encoding="utf-8-sig")).text
    return trafilatura.extract(gzip.open(path).read()) or ""


def _pairs():
    path = need_corpus("neardup", "pairs.tsv")
    return list(csv.DictReader(path.open(), delimiter="\t"))


def test_labelled_pairs_of_the_corpus():
    """near_dup pairs merge; shared_boilerplate and partial_overlap pairs stay apart."""
    hasher = MinHasher()
    for row in _pairs():
        prefix = "neardup/" if row["kind"] == "book" else ""
        a = make_document(
            "x", row["a"], text=_main_text(prefix + row["a"].removeprefix("neardup/"))
        )
        b = make_document(
            "x", row["b"], text=_main_text(prefix + row["b"].removeprefix("neardup/"))
        )
        merged = bool(find_duplicates(_fingerprints([a, b], hasher), bands=14, rows=8))
        assert merged == (row["label"] == "near_dup"), (row["label"], row["a"], row["b"])


def test_run_dedup_on_ray_marks_the_duplicate(ray_local):
    docs = [_book(p) for p in sorted((SAMPLE / "books").glob("pg120_*.txt"))]
    docs.append(_book(SAMPLE / "books" / "pg35_The_Time_Machine.txt"))
    ds = ray_local.data.from_arrow(to_table(docs))
    marked, summary = run_dedup(ds, num_perm=112, bands=14, rows=8, shingle_size=5)
    rows = marked.take_all()
    assert sorted(r["drop_reason"] or "kept" for r in rows) == ["kept", "kept", "near_duplicate"]
    assert summary["near_duplicates"] == 1
    with pytest.raises(ValueError, match="must equal num_perm"):
        run_dedup(ds, num_perm=112, bands=10, rows=8, shingle_size=5)
