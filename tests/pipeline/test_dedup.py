"""Exact and near-duplicate detection on real books and pages, in process and on Ray."""

from __future__ import annotations

import csv
import gzip
import random
from collections import defaultdict

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import trafilatura

from pipeline.config import DedupConfig
from pipeline.dedup import (
    DedupIndex,
    cluster,
    fingerprint_batch,
    keys_batch,
    link_bucket,
    run_dedup,
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


def dedup_in_process(docs, *, bands=14, rows=8, threshold=None, old_keys=None):
    """The same functions run_dedup runs on Ray, with a dict standing in for the shuffle."""
    hasher = MinHasher(num_perm=112)
    fps = fingerprint_batch(to_table(docs), hasher)
    keys = keys_batch(fps, bands, rows, with_signature=threshold is not None)
    if old_keys is not None:
        keys = pa.concat_tables([keys, old_keys], promote_options="default")
    buckets = defaultdict(list)
    for row in keys.to_pylist():
        buckets[row["key"]].append(row)
    links = []
    for rows_ in buckets.values():
        links += link_bucket(pa.Table.from_pylist(rows_, schema=keys.schema), threshold).to_pylist()
    return cluster(links)[0]


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
    fps = fingerprint_batch(to_table([a, b, c]), MinHasher(shingle_size=5)).to_pylist()
    assert all(fp["minhash"] is None for fp in fps)
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
    # Texts stay out of the shuffle: its rows are a small fraction of the texts' bytes.
    stats = results[2, 2][1]
    assert 0 < stats["shuffle_bytes"] < sum(len(d["text"]) for d in docs) / 10


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
    assert sum(pq.read_metadata(p).num_rows for p in (version / DedupIndex.FOLDER).glob("*")) > 0

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
