"""Exact and near-duplicate detection on real books and pages, in process and on Ray."""

from __future__ import annotations

import csv
import gzip
import random
import re
from collections import defaultdict

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import trafilatura

from pipeline.config import DedupConfig
from pipeline.dedup import (
    BUCKET_SCHEMA,
    KEY_SCHEMA,
    SHUFFLE_PARTITION_ROWS,
    DedupIndex,
    _exact_key,
    bucket_candidates,
    bucket_rows,
    cluster,
    collect_members,
    fingerprint_batch,
    link_buckets,
    mark_batch,
    node_of,
    run_dedup,
    shuffle_partitions,
    worker_args,
)
from pipeline.gutenberg import strip_gutenberg
from pipeline.minhash import (
    MinHasher,
    collision_probability,
    lsh_params,
    lsh_threshold,
    normalize_text,
    shingle_words,
)
from pipeline.records import make_document, to_table
from tests.helpers import SAMPLE, need_corpus


def _book(path) -> dict:
    text = strip_gutenberg(path.read_text(encoding="utf-8-sig")).text
    return make_document("book", path.name, text=text)


def _page(path) -> dict:
    text = trafilatura.extract(gzip.decompress(path.read_bytes())) or ""
    return make_document("web", path.name, text=text)


@pytest.fixture(scope="module")
def sample_docs() -> list[dict]:
    books = [_book(p) for p in sorted((SAMPLE / "books").glob("*.txt"))]
    pages = [_page(p) for p in sorted((SAMPLE / "web").glob("*.html.gz"))[:8]]
    return books + pages


def dedup_in_process(docs, *, bands=14, rows=8, threshold=None):
    """The same functions run_dedup runs on Ray, with a dict standing in for the shuffle."""
    fps = fingerprint_batch(to_table(docs), MinHasher(num_perm=112), bands, rows, True)
    buckets = defaultdict(list)
    for row in bucket_rows(fps).to_pylist():
        buckets[row["key"]].append(row)
    candidates = pa.concat_tables(
        [bucket_candidates(pa.Table.from_pylist(b, schema=BUCKET_SCHEMA)) for b in buckets.values()]
    )
    members = collect_members(fps.to_pylist(), [])
    return cluster(link_buckets(candidates, members, threshold))[0]


def test_normalisation_for_exact_and_near_dedup():
    assert normalize_text("  Ｈello\u00a0\n WORLD ") == "hello world"
    assert shingle_words("We’re here -- aren't we?") == shingle_words("we're here — aren’t we")


def test_lsh_parameters():
    assert lsh_threshold(14, 8) == pytest.approx(0.719, abs=0.001)
    assert collision_probability(0.9, 14, 8) > 0.99
    assert collision_probability(0.3, 14, 8) < 0.01
    bands, rows = lsh_params(0.8, 112)
    assert bands * rows <= 112 and 0.75 < lsh_threshold(bands, rows) < 0.88


def test_config_derives_bands_from_a_threshold():
    assert DedupConfig(threshold=0.8).lsh() == lsh_params(0.8, 112)
    assert DedupConfig().lsh() == (14, 8)
    with pytest.raises(ValueError, match="either threshold or bands"):
        DedupConfig(threshold=0.8, bands=10)
    with pytest.raises(ValueError, match="exceeds num_perm"):
        DedupConfig(bands=20, rows=8)
    # An empty shingle would be shared by every text, and every text would merge.
    with pytest.raises(ValueError, match="shingle_size must be at least 1"):
        MinHasher(shingle_size=0)


def test_two_releases_of_treasure_island_become_one_document(sample_docs):
    dups = dedup_in_process(sample_docs)
    assert len(dups) == 1
    [(dropped_id, dup)] = dups.items()
    names = {d["id"]: d["url"] for d in sample_docs}
    assert "Treasure_Island" in names[dropped_id] and "Treasure_Island" in names[dup.kept_id]
    assert dup.reason == "near_duplicate"
    # The longer release stays.
    lengths = {d["id"]: len(d["text"]) for d in sample_docs}
    assert lengths[dup.kept_id] >= lengths[dropped_id]


def test_exact_duplicates_after_normalisation():
    a = make_document("web", "a", text="The cat sat on the mat and looked around the room. " * 3)
    b = make_document("web", "b", text="THE CAT sat on the mat and looked  around the room. " * 3)
    c = make_document("web", "c", text="An entirely different text about ships at sea today.")
    dups = dedup_in_process([a, b, c])
    assert set(dups) == {max(a["id"], b["id"])}  # same length: the smaller id stays
    assert next(iter(dups.values())).reason == "exact_duplicate"


def test_short_documents_get_exact_dedup_only():
    a, b = (make_document("web", u, text="too short") for u in "ab")
    c = make_document("web", "c", text="Too short!")  # same words, different text: kept
    fps = fingerprint_batch(to_table([a, b, c]), MinHasher(shingle_size=5), 14, 8).to_pylist()
    assert not any(fp["has_minhash"] for fp in fps)
    assert len(dedup_in_process([a, b, c])) == 1


def test_kept_documents_do_not_depend_on_input_order(sample_docs):
    first = dedup_in_process(sample_docs)
    for seed in range(3):
        shuffled = sample_docs[:]
        random.Random(seed).shuffle(shuffled)
        assert dedup_in_process(shuffled) == first


def test_verification_drops_links_below_the_threshold():
    words = [f"word{i}" for i in range(400)]
    a = make_document("web", "a", text=" ".join(words))
    # 60 words changed: Jaccard of 5-gram sets about 0.72; 28 bands of 4 rows link it surely.
    b = make_document(
        "web", "b", text=" ".join(f"other{i}" for i in range(60)) + " " + " ".join(words[60:])
    )
    assert len(dedup_in_process([a, b], bands=28, rows=4)) == 1
    assert len(dedup_in_process([a, b], bands=28, rows=4, threshold=0.5)) == 1
    assert dedup_in_process([a, b], bands=28, rows=4, threshold=0.9) == {}


def test_two_ids_with_one_node_hash_stop_the_run_instead_of_merging():
    row = {"node": node_of("a"), "text_hash": "h", "n_chars": 10}
    with pytest.raises(RuntimeError, match="same 128-bit node hash"):
        collect_members([dict(row, id="a"), dict(row, id="b")], [])
    # The same id in this run and in an earlier version is two documents, not a clash.
    members = collect_members([dict(row, id="a")], [dict(row, id="a")])
    assert {old for _, old in members} == {False, True}


def test_shuffle_partitions_grow_with_the_input_not_the_partition():
    assert shuffle_partitions(100, 2) == 2
    assert shuffle_partitions(100, None) is None  # small: Ray Data's default
    assert shuffle_partitions(5 * SHUFFLE_PARTITION_ROWS + 1, 2) == 6
    assert shuffle_partitions(5 * SHUFFLE_PARTITION_ROWS + 1, 16) == 16
    with pytest.raises(ValueError, match="partition_rows must be at least 1"):
        run_dedup(None, num_perm=112, bands=14, rows=8, shingle_size=5, partition_rows=0)


def test_mark_touches_only_the_batches_duplicates():
    docs = [make_document("web", u, text=f"text {u}") for u in "abc"]
    batch = to_table(docs)
    drops = pa.table(
        {
            "id": [docs[1]["id"]],
            "reason": ["near_duplicate"],
            "kept_id": [docs[0]["id"]],
            "kept_in_earlier_version": [False],
        }
    )
    assert mark_batch(batch, drops.slice(0, 0)) is batch  # no duplicate here: passed through
    marked = mark_batch(batch, drops).to_pylist()
    assert [r["drop_reason"] for r in marked] == [None, "near_duplicate", None]
    assert dict(marked[1]["meta"])["duplicate_of"] == docs[0]["id"]


def _main_text(rel: str) -> str:
    path = need_corpus(rel)
    if path.suffix == ".txt":
        return strip_gutenberg(path.read_text(encoding="utf-8-sig")).text
    return trafilatura.extract(gzip.decompress(path.read_bytes())) or ""


def test_labelled_pairs_of_the_corpus():
    """near_dup pairs merge; partial_overlap and shared_boilerplate pairs stay apart."""
    rows = list(csv.DictReader(need_corpus("neardup", "pairs.tsv").open(), delimiter="\t"))
    assert {r["label"] for r in rows} == {"near_dup", "partial_overlap", "shared_boilerplate"}
    for row in rows:
        prefix = "neardup/" if row["kind"] == "book" else ""
        docs = [
            make_document(
                "x", row[side], text=_main_text(prefix + row[side].removeprefix("neardup/"))
            )
            for side in ("a", "b")
        ]
        merged = bool(dedup_in_process(docs))
        assert merged == (row["label"] == "near_dup"), (row["label"], row["a"], row["b"])


# --- on Ray -------------------------------------------------------------------------------


def _retyped(text: str) -> str:
    """A light edit of Chinese or Japanese text: one character changed in every fourth clause,
    about 1-3% of the characters (a re-publication's typo fixes and variant characters)."""
    parts = re.split("([，、,。])", text)
    clauses = [i for i, p in enumerate(parts) if len(p) > 3]
    for i in clauses[3::4]:
        parts[i] = parts[i][:2] + "之" + parts[i][3:]
    return "".join(parts)


def test_chinese_and_japanese_near_copies_meet_when_each_character_is_a_word():
    """Without spaces between words, whitespace (after punctuation is removed) cuts such text
    into clauses, and a shingle of five clauses dies of one changed character: light edits took
    these pages' similarity down to 0.2-0.44. Each character a word keeps it near 0.9."""
    hasher, clauses = MinHasher(), MinHasher(word_split="whitespace")
    keys = {}
    for name in ("gmw", "youth", "qq", "yahoo-4"):  # Chinese news (three), Japanese news
        text = _page(need_corpus("web", "readability", f"{name}.html.gz"))["text"]
        edited = _retyped(text)
        a, b = hasher.shingles(text), hasher.shingles(edited)
        assert len(a & b) / len(a | b) > 0.85, name
        a, b = clauses.shingles(text), clauses.shingles(edited)
        assert len(a & b) / len(a | b) < 0.5, name  # the fault this word rule fixes
        docs = [make_document("web", name, text=text), make_document("web", "x", text=edited)]
        fps = fingerprint_batch(to_table(docs), hasher, 14, 8).to_pylist()
        assert set(fps[0]["keys"]) & set(fps[1]["keys"]), name  # the copies share a bucket
        keys[name] = set(fps[0]["keys"])
    assert not keys["gmw"] & keys["youth"] and not keys["qq"] & keys["yahoo-4"]


def _kept_ids(result) -> set[str]:
    return {r["id"] for r in result.documents.take_all() if r["drop_reason"] is None}


def test_more_workers_than_cpus_share_them(ray_local):
    """4 workers on the 2-CPU test Ray ask for half a CPU each, so all 4 can run at once."""
    cpus = ray_local.cluster_resources()["CPU"]
    assert worker_args(None) == {}
    one, four = worker_args(1), worker_args(4)
    assert one["compute"].size == 1 and one["num_cpus"] == 1.0
    assert four["compute"].size == 4 and four["num_cpus"] * 4 <= cpus
    with pytest.raises(ValueError, match="at least 1"):
        worker_args(0)


@pytest.mark.slow
def test_same_kept_set_whatever_the_blocks_and_workers(ray_local, sample_docs):
    docs = sample_docs + [dict(sample_docs[0], id="copy-of-first", url="copy")]  # an exact copy
    table = to_table(docs)
    results = {}
    # 1, 2 and 4 blocks, and workers (concurrent tasks and shuffle partitions), crossed so that
    # neither follows the other; the reversed input leaves both to Ray Data.
    for blocks, workers in ((1, 4), (2, 2), (4, 1)):
        ds = ray_local.data.from_arrow(table).repartition(blocks)
        result = run_dedup(ds, num_perm=112, bands=14, rows=8, shingle_size=5, concurrency=workers)
        results[blocks, workers] = (_kept_ids(result), result.stats)
    reversed_ds = ray_local.data.from_arrow(to_table(list(reversed(docs)))).repartition(3)
    reversed_result = run_dedup(reversed_ds, num_perm=112, bands=14, rows=8, shingle_size=5)
    kept_sets = [kept for kept, _ in results.values()] + [_kept_ids(reversed_result)]
    assert all(kept == kept_sets[0] for kept in kept_sets)
    for _, stats in results.values():
        assert stats["exact_duplicates"] == 1 and stats["near_duplicates"] == 1
        assert stats["cluster_sizes"] == {2: 2}
    assert len(kept_sets[0]) == len(docs) - 2
    # Texts stay out of the shuffle and the fingerprints, and so do signatures: both take fewer
    # bytes a document than its signature (112 values of 4 bytes).
    stats = results[2, 2][1]
    assert 0 < stats["shuffle_bytes"] < stats["fingerprinted"] * 112 * 4
    assert 0 < stats["fingerprint_bytes"] < stats["fingerprinted"] * 112 * 4


@pytest.mark.slow
def test_a_document_entering_twice_is_kept_once(ray_local, sample_docs):
    """The same capture read twice (one WARC under two names) has one id: one copy stays."""
    book, page, short = sample_docs[0], sample_docs[-1], make_document("web", "s", text="hi")
    # The book three times, the page twice (once with other meta), the short text twice, in
    # different blocks; the second Treasure Island release stays a near duplicate as before.
    other_meta = dict(page, meta={"warc_file": "copy.warc.gz"})
    docs = sample_docs + [short, book, dict(book), other_meta, dict(short)]
    ds = ray_local.data.from_arrow(to_table(docs)).repartition(3)
    result = run_dedup(ds, num_perm=112, bands=14, rows=8, shingle_size=5, concurrency=2)
    rows = result.documents.take_all()
    assert len(rows) == len(docs)  # every row that entered is still there, kept or dropped
    kept = [r["id"] for r in rows if r["drop_reason"] is None]
    assert len(kept) == len(set(kept)) == len(sample_docs) - 1 + 1  # + the short text
    copies = [r for r in rows if r["drop_reason"] and dict(r["meta"])["duplicate_of"] == r["id"]]
    assert sorted(r["id"] for r in copies) == sorted([book["id"]] * 2 + [page["id"], short["id"]])
    assert all(r["drop_reason"] == "exact_duplicate" for r in copies)
    # Which copy of the page stays does not depend on the order: the smallest meta does.
    [kept_page] = [r for r in rows if r["id"] == page["id"] and r["drop_reason"] is None]
    assert dict(kept_page["meta"]) == page["meta"]
    stats = result.stats
    assert stats["repeated_documents"] == 3 and stats["exact_duplicates"] == 4
    assert stats["near_duplicates"] == 1
    # The stored keys hold each kept document once.
    keys = result.keys.take_all()
    assert {k["id"] for k in keys} == set(kept)
    assert len(keys) == len({(k["key"], k["id"]) for k in keys})


@pytest.mark.slow
def test_verification_on_ray(ray_local):
    """Candidates are verified on their signatures, fetched for the candidates alone."""
    words = [f"word{i}" for i in range(400)]
    a = make_document("web", "a", text=" ".join(words))
    b = make_document(  # Jaccard about 0.72 with a (see test_verification_drops_links...)
        "web", "b", text=" ".join(f"other{i}" for i in range(60)) + " " + " ".join(words[60:])
    )
    c = make_document("web", "c", text=a["text"].upper())  # a's text, exactly, once normalised
    ds = ray_local.data.from_arrow(to_table([a, b, c]))

    def dropped(threshold):
        result = run_dedup(
            ds, num_perm=112, bands=28, rows=4, shingle_size=5, verify_threshold=threshold
        )
        rows = result.documents.take_all()
        return {r["url"]: r["drop_reason"] for r in rows if r["drop_reason"]}, result.stats

    strict, stats = dropped(0.9)
    assert strict == {max((a, c), key=lambda d: d["id"])["url"]: "exact_duplicate"}
    assert stats["lsh"]["verify"] and stats["lsh"]["verify_threshold"] == 0.9
    assert stats["candidates"] >= 3
    loose, _ = dropped(0.5)
    assert len(loose) == 2


@pytest.mark.slow
def test_incremental_run_removes_exactly_the_reappearing_documents(
    ray_local, sample_docs, tmp_path
):
    first, later = sample_docs[:10], sample_docs[10:]
    result = run_dedup(
        ray_local.data.from_arrow(to_table(first)), num_perm=112, bands=14, rows=8, shingle_size=5
    )
    kept_first = _kept_ids(result)
    version = tmp_path / "v0001"
    result.keys.write_parquet(str(version / DedupIndex.FOLDER))
    stored = pq.read_table(version / DedupIndex.FOLDER)
    # One row per band for each kept document (all of them long enough to shingle).
    assert stored.num_rows == 14 * len(kept_first)
    # Indexes written before kiln stopped giving documents with a signature an exact-text bucket
    # hold one more row each; such a row must change nothing.
    first_rows = {r["id"]: r for r in stored.to_pylist()}.values()
    legacy = [dict(r, key=_exact_key(r["text_hash"])) for r in first_rows]
    pq.write_table(
        pa.Table.from_pylist(legacy, schema=KEY_SCHEMA),
        version / DedupIndex.FOLDER / "legacy-exact-rows.parquet",
    )

    # The second arrival: everything new, plus three documents of the first one again.
    reappearing = [d for d in first if d["id"] in kept_first][:3]
    arrival = later + [dict(d) for d in reappearing]
    result2 = run_dedup(
        ray_local.data.from_arrow(to_table(arrival)),
        num_perm=112,
        bands=14,
        rows=8,
        shingle_size=5,
        index=DedupIndex([version]),
    )
    rows = result2.documents.take_all()
    dropped = {r["id"]: r for r in rows if r["drop_reason"] is not None}
    assert set(dropped) == {d["id"] for d in reappearing}
    for r in dropped.values():
        assert r["drop_reason"] == "exact_duplicate"
        assert dict(r["meta"])["duplicate_in"] == "earlier_version"
    assert result2.stats["duplicates_of_earlier_versions"] == 3
