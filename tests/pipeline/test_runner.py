"""The whole data side on the bundled sample, on a local Ray instance."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from pipeline.config import DataConfig
from pipeline.runner import choose_validation, run_data
from pipeline.shards import TokenShards, read_manifest, verify_version
from pipeline.store import DatasetStore
from tests.helpers import SAMPLE


@pytest.fixture(scope="module")
def result(ray_local, tmp_path_factory):
    cfg = DataConfig(
        inputs=[
            {"path": str(SAMPLE / "web")},
            {"path": str(SAMPLE / "warc")},
            {"path": str(SAMPLE / "books")},
        ],
        filter={"languages": ["en", "de", "fr"]},
        tokenizer={"vocab_size": 2048},
    )
    store = DatasetStore(tmp_path_factory.mktemp("store"))
    return run_data(cfg, store, "test-run", concurrency=2), store


@pytest.mark.slow
def test_ledger_balances_for_every_stage(result):
    res, _ = result
    ledger = res.ledger
    assert ledger.balanced
    assert ledger.documents_in == 39  # 27 pages + 1 WARC response + 11 books
    for stage in ledger.per_stage():
        assert stage["in"] == stage["kept"] + stage["dropped"]
    assert ledger.stages == [
        "read",
        "extract",
        "length",
        "language",
        "gopher_repetition",
        "gopher_quality",
        "c4",
        "fineweb",
        "decontam",
        "pii",
        "dedup",
    ]
    assert ledger.dropped["language"] == {"language:an": 1}  # the Aragonese Wikipedia page
    # A game's quest list and a dance school's figure notes repeat themselves by Gopher's rules.
    assert ledger.dropped["gopher_repetition"] == {
        "dup_5gram_char_fraction": 1,
        "dup_9gram_char_fraction": 1,
    }
    assert ledger.dropped["dedup"] == {"near_duplicate": 1}  # the second Treasure Island
    assert ledger.documents_kept == 35
    assert sum(ledger.dropped[s] != {} for s in ledger.stages) == 3


@pytest.mark.slow
def test_rejects_are_sampled_and_counters_summed(result):
    res, _ = result
    lines = (res.run_dir / "rejects_sample.jsonl").read_text().splitlines()
    samples = [json.loads(line) for line in lines]
    assert {(r["stage"], r["reason"]) for r in samples} == {
        (stage, reason) for stage, reasons in res.ledger.dropped.items() for reason in reasons
    }
    assert all(r["url"] and r["text"] for r in samples)
    stats = json.loads((res.run_dir / "stats.json").read_text())
    assert stats["counters"]["c4_lines_removed"] > 0


@pytest.mark.slow
def test_stage_outputs_hold_every_document_once(result):
    res, _ = result
    kept = pq.read_table(res.run_dir / "documents")
    rejects = pq.read_table(res.run_dir / "rejects")
    assert kept.num_rows == res.ledger.documents_kept
    assert rejects.num_rows == res.ledger.documents_dropped
    assert set(kept["id"].to_pylist()).isdisjoint(rejects["id"].to_pylist())
    assert "raw" not in kept.column_names


@pytest.mark.slow
def test_manifest_matches_the_shards(result):
    res, store = result
    assert verify_version(res.version_dir) == []
    manifest = read_manifest(res.version_dir)
    assert store.current_version("sample") == res.version_dir
    train, val = TokenShards(res.version_dir, "train"), TokenShards(res.version_dir, "val")
    assert train.num_tokens == manifest["splits"]["train"]["tokens"]
    assert val.num_documents == manifest["splits"]["val"]["documents"]
    assert train.num_documents + val.num_documents == res.ledger.documents_kept
    assert manifest["ledger"]["balanced"]
    assert len(manifest["inputs"]) == 39 and all(len(i["sha256"]) == 64 for i in manifest["inputs"])
    assert manifest["tokenizer"]["vocab_size"] == 2048 and manifest["dtype"] == "uint16"


def test_validation_split_is_stable_and_never_empty():
    sizes = {f"doc{i}": 100 for i in range(50)}
    val = choose_validation(sizes, 0.1)
    assert 5 <= len(val) <= 6
    assert choose_validation(dict(reversed(list(sizes.items()))), 0.1) == val
    assert len(choose_validation({"a": 10, "b": 10}, 0.01)) == 1
    with pytest.raises(ValueError, match="at least 2"):
        choose_validation({"a": 1}, 0.1)


@pytest.mark.slow
def test_data_job_crawls_its_seeds_then_reads_the_warc_files(ray_local, tmp_path):
    from tests.helpers import need_corpus
    from tests.pipeline.crawl.site import LoopbackSite

    corpus = need_corpus("web").parent
    with LoopbackSite(corpus) as site:
        cfg = DataConfig(
            crawl={
                "seeds": [site.base + "/"],
                "feeds": [site.base + "/feed.xml"],
                "max_depth": 1,
                "min_delay_s": 0.05,
                "timeout_s": 1.0,
                "max_retries": 0,
                "allow_networks": ["127.0.0.0/8"],
            },
            tokenizer={"vocab_size": 1024},
            dedup={"enabled": False},
        )
        res = run_data(cfg, DatasetStore(tmp_path / "store"), "crawl-run", concurrency=2)
    crawl = res.stats["crawl"]
    assert crawl["pages_stored"] == 7  # the index and 6 pages; /flaky's 503 is not retried
    assert crawl["pages"]["robots_disallowed"] == 1 and crawl["pages"]["http_503"] == 1
    assert crawl["skipped"]["off_domain"] >= 3  # the private hosts are not in scope here
    assert (tmp_path / "store" / "raw" / "crawl" / crawl["name"] / "state.json").exists()
    assert res.stats["read"]["warc"]["files"] == crawl["warc_files"]
    assert res.ledger.documents_in == 7 and res.ledger.balanced


def test_a_run_where_every_document_is_dropped_ends_with_its_ledger(ray_local, tmp_path):
    # Nothing reaches dedup: the job must stop with a clear error, the ledger written and
    # balanced, rather than fail inside dedup's shuffle.
    from pipeline.errors import InputError

    pages = tmp_path / "pages"
    pages.mkdir()
    (pages / "empty.html").write_bytes(b"")
    (pages / "binary.html").write_bytes(bytes(range(256)) * 64)
    store = DatasetStore(tmp_path / "store")
    cfg = DataConfig(inputs=[{"path": str(pages), "kind": "html"}], tokenizer={"vocab_size": 512})
    with pytest.raises(InputError, match="only 0 document"):
        run_data(cfg, store, "all-dropped", concurrency=2)
    ledger = json.loads((store.root / "runs" / "all-dropped" / "ledger.json").read_text())
    assert ledger["documents_in"] == 2 and ledger["documents_kept"] == 0
