"""Incremental refresh on the sample split into two arrivals, on a local Ray instance."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest

from pipeline.config import DataConfig
from pipeline.refresh import refresh
from pipeline.shards import TokenShards, read_manifest
from pipeline.store import DatasetStore, StoreLockedError
from pipeline.versions import check_version
from tests.helpers import SAMPLE

WEB = sorted((SAMPLE / "web").glob("*.html.gz"))
FIRST = [
    *WEB[:2],
    SAMPLE / "books" / "pg120_Treasure_Island__2019_release.txt",
    SAMPLE / "books" / "pg35_The_Time_Machine.txt",
]
# The 2022 Treasure Island is a near duplicate of the 2019 one, which the first version holds.
SECOND = [
    *WEB[2:4],
    SAMPLE / "books" / "pg120_Treasure_Island__2022_release.txt",
    SAMPLE / "books" / "pg41_The_Legend_of_Sleepy_Hollow.txt",
]


def _config(folder) -> DataConfig:
    return DataConfig(
        dataset_name="news",
        inputs=[{"path": str(folder)}],
        filter={"languages": ["en", "de", "fr"]},
        tokenizer={"vocab_size": 1024},
    )


def _doc_ids(version_dir) -> list[str]:
    manifest = read_manifest(version_dir)
    ids = []
    for shard in manifest["shards"]:
        lines = (version_dir / f"{shard['name']}.docs.jsonl").read_text().splitlines()
        ids += [json.loads(line)["id"] for line in lines]
    return ids


def _arrive(incoming, files) -> None:
    for f in files:
        if f.suffix == ".txt":
            # The books' first 150,000 characters and their licence footer keep the test fast;
            # the two Treasure Islands stay near duplicates.
            text = f.read_text(encoding="utf-8-sig")
            footer = text.index("*** END OF TH")
            (incoming / f.name).write_text(text[: min(150_000, footer)] + "\n\n" + text[footer:])
        else:
            shutil.copy(f, incoming / f.name)


@pytest.fixture(scope="module")
def arrivals(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("refresh")
    incoming = root / "incoming"
    incoming.mkdir()
    store = DatasetStore(root / "store")

    _arrive(incoming, FIRST)
    first = refresh(_config(incoming), store, "r1", connect=lambda: 2)
    _arrive(incoming, SECOND)
    second = refresh(_config(incoming), store, "r2", connect=lambda: 2)
    again = refresh(_config(incoming), store, "r3", connect=lambda: pytest.fail("no work"))
    return store, first, second, again


@pytest.mark.slow
def test_first_refresh_builds_the_first_version(arrivals):
    store, first, _, _ = arrivals
    assert first.committed and first.version == "v0001" and first.parent is None
    assert first.inputs_new == len(FIRST)
    assert read_manifest(first.version_dir)["kind"] == "build"


@pytest.mark.slow
def test_second_version_is_the_first_plus_the_new_unique_documents(arrivals):
    store, first, second, _ = arrivals
    assert second.committed and second.version == "v0002" and second.parent == "v0001"
    assert second.inputs_new == len(SECOND) and second.inputs_total == len(FIRST) + len(SECOND)

    new_kept = pq.read_table(store.run_dir("r2") / "documents")["id"].to_pylist()
    old_ids, new_ids = _doc_ids(first.version_dir), _doc_ids(second.version_dir)
    assert sorted(new_ids) == sorted(old_ids + new_kept)
    assert len(set(new_ids)) == len(new_ids)

    # The second Treasure Island was dropped as a duplicate of the first version's copy.
    assert second.ledger.dropped["dedup"] == {"near_duplicate": 1}
    assert second.stats["dedup"]["duplicates_of_earlier_versions"] == 1
    rejects = pq.read_table(store.run_dir("r2") / "rejects").to_pylist()
    (dup,) = [r for r in rejects if r["drop_stage"] == "dedup"]
    assert "2022" in dup["url"] and dict(dup["meta"])["duplicate_of"] in old_ids
    assert second.added["documents"] == len(new_kept) == second.ledger.documents_kept


@pytest.mark.slow
def test_parent_shards_are_linked_not_rewritten(arrivals):
    _, first, second, _ = arrivals
    parent, child = read_manifest(first.version_dir), read_manifest(second.version_dir)
    assert child["shards"][: len(parent["shards"])] == [
        {**s, "added_in": "v0001"} for s in parent["shards"]
    ]
    for shard in parent["shards"]:
        a = (first.version_dir / f"{shard['name']}.bin").stat()
        b = (second.version_dir / f"{shard['name']}.bin").stat()
        assert (a.st_ino, a.st_dev) == (b.st_ino, b.st_dev)
    assert child["tokenizer"] == parent["tokenizer"]
    # The dedup keys accumulate: a later refresh reads only the current version's.
    assert child["dedup_keys"]["rows"] > parent["dedup_keys"]["rows"]
    assert len(child["inputs"]) == len(FIRST) + len(SECOND)
    for split in ("train", "val"):
        shards = TokenShards(second.version_dir, split)
        assert shards.num_tokens == child["splits"][split]["tokens"]


@pytest.mark.slow
def test_manifests_verify(arrivals):
    store, first, second, _ = arrivals
    assert check_version(store, first.version_dir) == []
    assert check_version(store, second.version_dir) == []


@pytest.mark.slow
def test_refresh_on_the_same_inputs_adds_nothing(arrivals):
    store, _, second, again = arrivals
    assert not again.committed and again.inputs_new == 0
    assert "nothing new" in again.message
    assert store.versions("news") == ["v0001", "v0002"]
    assert store.current_version("news") == second.version_dir


@pytest.mark.slow
def test_a_refresh_with_dedup_off_carries_the_earlier_keys_forward(ray_local, tmp_path, caplog):
    # Found in the field: a version built with dedup off stored no keys, and every later
    # refresh silently stopped deduping against all the versions before it. Its own documents
    # have no keys: later refreshes say so.
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    store = DatasetStore(tmp_path / "store")
    cfg = _config(incoming)
    _arrive(incoming, FIRST[2:])  # the 2019 Treasure Island and The Time Machine
    first = refresh(cfg, store, "r1", connect=lambda: 2)
    _arrive(incoming, WEB[:2])
    off = cfg.model_copy(update={"dedup": cfg.dedup.model_copy(update={"enabled": False})})
    second = refresh(off, store, "r2", connect=lambda: 2)
    kept_keys = read_manifest(first.version_dir)["dedup_keys"]
    assert read_manifest(second.version_dir)["dedup_keys"] == {**kept_keys, "unkeyed": ["v0002"]}
    assert kept_keys["settings"] == cfg.dedup.key_settings()

    _arrive(incoming, [SAMPLE / "books" / "pg120_Treasure_Island__2022_release.txt"])
    with caplog.at_level("WARNING", logger="pipeline.refresh"):
        third = refresh(cfg, store, "r3", connect=lambda: 2)
    assert third.stats["dedup"]["duplicates_of_earlier_versions"] == 1  # the 2019 release's
    assert "documents of v0002 were added with dedup off" in caplog.text
    assert read_manifest(third.version_dir)["dedup_keys"]["unkeyed"] == ["v0002"]


def test_versions_without_keys_are_named_and_no_keys_refuse_nothing(tmp_path, caplog):
    from pipeline.refresh import _check_compatible, _unkeyed_versions

    cfg = _config(tmp_path)
    built_without = {"version": "v0001", "config": cfg.model_dump()}
    assert _unkeyed_versions(built_without) == ["v0001"]
    with caplog.at_level("WARNING", logger="pipeline.refresh"):
        _check_compatible(cfg, built_without)
    assert "documents of v0001 were added with dedup off" in caplog.text
    # Only unkeyed versions so far, their entry written under other settings: no keys to miss.
    stored = cfg.model_copy(update={"dedup": cfg.dedup.model_copy(update={"num_perm": 64})})
    empty = {"rows": 0, "settings": stored.dedup.key_settings(), "unkeyed": ["v0001", "v0002"]}
    _check_compatible(cfg, {"version": "v0002", "config": stored.model_dump(), "dedup_keys": empty})


def test_a_second_writer_is_refused_while_one_holds_the_lock(tmp_path):
    store = DatasetStore(tmp_path)
    with (
        store.lock("d"),
        pytest.raises(StoreLockedError, match="another process"),
        store.lock("d"),
    ):
        pass
    with store.lock("d"):  # released again
        pass


def test_uncommitted_leftovers_are_listed_and_discarded(tmp_path):
    store = DatasetStore(tmp_path)
    with store.new_version("d") as (_, folder):
        (folder / "manifest.json").write_text("{}")
    base = store.dataset_dir("d")
    (base / ".v0002.tmp-abcd1234").mkdir()  # a staging folder of a killed job
    (base / "v0002").mkdir()  # renamed into place, CURRENT never moved
    assert [p.name for p in store.uncommitted("d")] == [".v0002.tmp-abcd1234", "v0002"]
    store.discard_uncommitted("d")
    assert store.uncommitted("d") == [] and store.versions("d") == ["v0001"]


def test_refresh_refuses_dedup_settings_its_stored_keys_were_not_made_with(tmp_path):
    from pipeline.errors import InputError
    from pipeline.store import atomic_write_json

    store = DatasetStore(tmp_path / "store")
    cfg = _config(tmp_path)
    with store.new_version("news") as (version, folder):
        atomic_write_json(
            folder / "manifest.json",
            {
                "version": version,
                "inputs": [],
                "shards": [],
                "config": cfg.model_dump(),
                "dedup_keys": {"folder": "dedup_keys", "rows": 1},
            },
        )
    changed = cfg.model_copy(update={"dedup": cfg.dedup.model_copy(update={"shingle_size": 3})})
    with pytest.raises(InputError, match="data.dedup.shingle_size is 3 but version v0001"):
        refresh(changed, store, "r", connect=lambda: pytest.fail("must fail before Ray"))


def test_a_parent_stored_before_word_split_existed_was_keyed_on_whitespace(tmp_path):
    from pipeline.errors import InputError
    from pipeline.refresh import _check_compatible

    cfg = _config(tmp_path)
    stored = cfg.model_dump()
    del stored["dedup"]["word_split"]  # what versions stored before the setting wrote
    parent = {
        "version": "v0001",
        "config": stored,
        "dedup_keys": {"folder": "dedup_keys", "rows": 1},
    }
    with pytest.raises(InputError, match="set data.dedup.word_split=whitespace"):
        _check_compatible(cfg, parent)
    whitespace = cfg.dedup.model_copy(update={"word_split": "whitespace"})
    _check_compatible(cfg.model_copy(update={"dedup": whitespace}), parent)


def test_a_refresh_compares_bands_and_rows_as_used_not_as_written(tmp_path):
    # Found in the field: a threshold in the refresh's config (9 x 12) was let through against
    # a parent keyed with 14 x 8, and no document could match an earlier version's again.
    from pipeline.errors import InputError
    from pipeline.refresh import _check_compatible

    cfg = _config(tmp_path)
    banded = {"version": "v0001", "config": cfg.model_dump(), "dedup_keys": {"rows": 1}}
    by_threshold = cfg.dedup.model_copy(update={"threshold": 0.8})
    assert by_threshold.lsh() != cfg.dedup.lsh()
    with pytest.raises(InputError, match="set data.dedup.bands=14 and data.dedup.rows=8"):
        _check_compatible(cfg.model_copy(update={"dedup": by_threshold}), banded)

    stored = cfg.model_copy(update={"dedup": by_threshold}).model_dump()
    parent = {"version": "v0001", "config": stored, "dedup_keys": {"rows": 1}}
    with pytest.raises(InputError, match="set data.dedup.threshold=0.8"):
        _check_compatible(cfg, parent)
    bands, rows = by_threshold.lsh()  # the same bands and rows, written out: the same keys
    same = cfg.dedup.model_copy(update={"bands": bands, "rows": rows})
    _check_compatible(cfg.model_copy(update={"dedup": same}), parent)


def test_a_url_is_new_again_when_its_server_says_its_content_changed(tmp_path):
    import functools
    import http.server
    import threading

    from pipeline.refresh import _is_seen, _seen_keys, input_key, url_identity

    (tmp_path / "a.warc.gz").write_bytes(b"x" * 100)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/a.warc.gz"
        before = {"path": url, "kind": "warc", **url_identity(url)}
        assert before["bytes"] == 100 and before["last_modified"]
        (tmp_path / "a.warc.gz").write_bytes(b"y" * 120)
        after = {"path": url, "kind": "warc", **url_identity(url)}
        missing = url_identity(url.replace("a.warc", "b.warc"))  # 404: the URL alone
    finally:
        server.shutdown()
        server.server_close()
    assert input_key(before) != input_key(after) and missing == {}
    assert _is_seen(before, _seen_keys([before])) and not _is_seen(after, _seen_keys([before]))
    # A URL a full build recorded without validators matches the same URL with any.
    assert _is_seen(after, _seen_keys([{"path": url, "kind": "warc"}]))
