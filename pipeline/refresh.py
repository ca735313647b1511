"""Incremental refresh: add only what is new to a dataset line, as a new version.

``kiln data refresh`` is the data job in incremental mode, meant to run on a schedule:

1. Expand the configured inputs and hash each local file (sha256). An input is *seen* when the
   current version's manifest lists the same path with the same checksum. A URL is seen when
   it is listed with the validators a HEAD request returns now (ETag, else Last-Modified and
   length; its content is not fetched just to hash it); a hub dataset name when the same name
   is listed. Seen inputs are not read again.
2. Nothing new: nothing is committed and CURRENT stays where it is (the run says so). This is
   what makes a refresh idempotent: a second run on the same inputs adds nothing.
3. New inputs go through every stage; dedup runs against the dedup keys stored in the current
   version (which holds those of every version before it), so a page or book already in the
   dataset is dropped as a duplicate of an earlier version.
4. The surviving documents are tokenized with the current version's tokenizer (a new
   tokenizer means new ids: that is a new dataset line, ``kiln data`` with another
   ``data.dataset_name``) and written as new shards. The new version holds hard links to the
   parent's shards and dedup keys (nothing recomputed, no bytes copied) plus the new ones.
   New inputs whose documents are all dropped still give a version, with no new shards, so
   that they count as seen and the next refresh does not read them again.
5. The version folder is built under a temporary name and renamed whole; CURRENT is moved
   last. A refresh killed at any point leaves either nothing, or a complete version folder
   that CURRENT does not name yet. The next run, under the dataset's lock, finishes the
   commit of such a folder if it was made from the same parent, inputs and config (its
   ``refresh_key``), and deletes any other leftover; the version it commits is the same,
   checksum for checksum, as an unbroken run's.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import DataConfig, DedupConfig
from pipeline.crashpoints import crash_point
from pipeline.dedup import DedupIndex
from pipeline.errors import InputError
from pipeline.ledger import Ledger
from pipeline.read import input_identity, is_url
from pipeline.runner import (
    choose_validation,
    process_inputs,
    resolve_inputs,
    run_data,
    split_totals,
    write_dedup_keys,
    write_shards,
)
from pipeline.shards import FORMAT_VERSION, read_manifest, verify_version
from pipeline.store import DatasetStore, atomic_write_json, atomic_write_text, staging_dir
from pipeline.tokenizer import load_tokenizer

__all__ = ["RefreshResult", "check_refresh", "input_key", "refresh", "url_identity"]

log = logging.getLogger(__name__)

# Dedup settings that must match the parent's: its stored keys were computed with them. Bands
# and rows are compared as used, derived from a threshold where one was set.
_DEDUP_KEYS_SETTINGS = ("num_perm", "shingle_size", "word_split")


@dataclass
class RefreshResult:
    """What a refresh did. ``committed`` is False when there was nothing new."""

    committed: bool
    dataset: str
    version: str | None
    version_dir: Path | None
    parent: str | None
    inputs_total: int
    inputs_new: int
    message: str
    ledger: Ledger | None = None
    added: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    recovered: bool = False  # a killed run's complete version was committed instead


def input_key(identity: dict) -> str:
    """What makes an input the same input: path and content hash; a URL and what its server
    says of its content (ETag, else Last-Modified and length); a dataset name."""
    if identity.get("sha256"):
        return f"{identity['path']}\0{identity['sha256']}"
    validators = [identity.get(k) for k in _URL_VALIDATORS if identity.get(k) is not None]
    return "\0".join([identity["path"], *map(str, validators)])


# Response headers that change when a URL's content does (RFC 9110, section 8.8), as recorded.
_URL_VALIDATORS = ("etag", "last_modified", "bytes")


def url_identity(url: str, timeout_s: float = 30.0) -> dict:
    """What a HEAD request says of a URL's content, so a changed file counts as new.

    Fetching every archive again only to hash it would cost as much as reading it; the
    server's validators are what HTTP offers instead (Common Crawl's files never change, so
    their URL alone would do). A server that refuses HEAD gives the URL alone.
    """
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "kiln-reader"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            headers = response.headers
    except (OSError, urllib.error.URLError) as exc:
        log.warning("refresh: HEAD %s failed (%s); the URL alone identifies it", url, exc)
        return {}
    found = {
        "etag": headers.get("ETag"),
        "last_modified": None if headers.get("ETag") else headers.get("Last-Modified"),
        "bytes": int(headers["Content-Length"]) if headers.get("Content-Length") else None,
    }
    return {k: v for k, v in found.items() if v is not None}


def _identities(files: list) -> list[dict]:
    """input_identity of each input, with HEAD validators for URLs (fetched in parallel)."""
    from concurrent.futures import ThreadPoolExecutor

    identities = [input_identity(f) for f in files]
    urls = [i for i, ident in enumerate(identities) if is_url(ident["path"])]
    if urls:
        with ThreadPoolExecutor(max_workers=min(16, len(urls))) as pool:
            extras = list(pool.map(lambda i: url_identity(files[i].path), urls))
        for i, extra in zip(urls, extras, strict=True):
            identities[i].update(extra)
    return identities


def _seen_keys(parent_inputs: list[dict]) -> set[str]:
    """Keys of the inputs a version holds. A URL recorded without validators (by a full build)
    also matches the same URL with any: there is nothing to tell its content by."""
    return {input_key(i) for i in parent_inputs}


def _is_seen(identity: dict, seen: set[str]) -> bool:
    return input_key(identity) in seen or (is_url(identity["path"]) and identity["path"] in seen)


def _refresh_key(parent: dict, new_inputs: list[dict], cfg: DataConfig) -> str:
    """Names one refresh attempt: the same parent, new inputs and config give the same key."""
    payload = {
        "parent": parent["version"],
        "parent_shards": [s["bin_sha256"] for s in parent["shards"]],
        "inputs": new_inputs,
        "config": cfg.model_dump(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _stored_key_settings(parent: dict) -> dict:
    """What the parent's dedup keys were computed with (DedupConfig.key_settings).

    Versions stored before the manifest recorded it: from their config, with whitespace word
    splitting (all there was then).
    """
    if "settings" in parent["dedup_keys"]:
        return parent["dedup_keys"]["settings"]
    old = parent["config"]["dedup"]
    given = {"num_perm": old["num_perm"], "shingle_size": old["shingle_size"]}
    given["word_split"] = old.get("word_split", "whitespace")
    if old.get("threshold") is not None:
        given["threshold"] = old["threshold"]
    else:
        given.update(bands=old["bands"], rows=old["rows"])
    return DedupConfig(**given).key_settings()


def _unkeyed_versions(parent: dict) -> list[str]:
    """Versions whose documents are not in the parent's dedup keys: added with dedup off."""
    if "dedup_keys" not in parent:  # a build with dedup off
        return [parent["version"]]
    return list(parent["dedup_keys"].get("unkeyed", []))


def _check_compatible(cfg: DataConfig, parent: dict) -> None:
    """Refuse settings under which the parent's dedup keys would not match new ones."""
    if cfg.tokenizer.path is not None:
        log.info("refresh: data.tokenizer.path is ignored; the parent's tokenizer is reused")
    if not cfg.dedup.enabled:
        return
    unkeyed = _unkeyed_versions(parent)
    if unkeyed:
        log.warning(
            "refresh: the documents of %s were added with dedup off and have no dedup keys, "
            "so new copies of them are kept; only the other versions' documents are deduped "
            "against",
            ", ".join(unkeyed),
        )
    if not parent.get("dedup_keys", {}).get("rows"):
        return  # no keys at all: nothing they could fail to match
    stored, mine = _stored_key_settings(parent), cfg.dedup.key_settings()
    version = parent["version"]
    for key in _DEDUP_KEYS_SETTINGS:
        if mine[key] != stored[key]:
            raise InputError(
                f"data.dedup.{key} is {mine[key]} but version {version} stored its dedup keys "
                f"with {stored[key]}; a refresh must use the same MinHash settings: set "
                f"data.dedup.{key}={stored[key]} (or start a new dataset line)"
            )
    lsh = (stored["bands"], stored["rows"])
    if (mine["bands"], mine["rows"]) != lsh:
        how = f"data.dedup.bands={lsh[0]} and data.dedup.rows={lsh[1]}, no threshold"
        threshold = parent["config"]["dedup"].get("threshold")
        if (
            threshold is not None
            and cfg.dedup.model_copy(update={"threshold": threshold}).lsh() == lsh
        ):
            how = f"data.dedup.threshold={threshold}"
        raise InputError(
            f"data.dedup bands x rows would be {mine['bands']} x {mine['rows']} but version "
            f"{version} stored its dedup keys with {lsh[0]} x {lsh[1]}, so its documents "
            f"could never match new ones; set {how} (or start a new dataset line)"
        )


def _link(src: Path, dst: Path) -> None:
    """Hard-link a parent's file into the new version; copy where links are not possible."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or one without hard links
        shutil.copy2(src, dst)


def check_refresh(cfg: DataConfig, store: DatasetStore) -> str | None:
    """The checks a refresh makes before reading anything, for ``--dry-run``: raises
    :class:`InputError` where the refresh would, and returns the version it would build on
    (None when there is none yet and it would build the first)."""
    parent_dir = store.current_version(cfg.dataset_name)
    if parent_dir is None:
        return None
    parent = read_manifest(parent_dir)
    _check_compatible(cfg, parent)
    return parent["version"]


def refresh(
    cfg: DataConfig,
    store: DatasetStore,
    run: str,
    *,
    connect: Callable[[], int],
) -> RefreshResult:
    """Add the inputs not seen by the current version as a new version of ``cfg.dataset_name``.

    ``connect`` starts or joins Ray and returns the parallelism to use; it is called only when
    there is work, so a refresh with nothing new costs a directory listing and the hashing.
    With no version yet, the refresh is a full data run (:func:`pipeline.runner.run_data`).
    """
    name = cfg.dataset_name
    t0 = time.time()
    with store.lock(name):
        parent_dir = store.current_version(name)
        if parent_dir is None:
            store.discard_uncommitted(name)
            log.info("refresh: dataset %r has no version yet; building the first", name)
            result = run_data(cfg, store, run, concurrency=connect(), hold_lock=False)
            manifest = read_manifest(result.version_dir)
            return RefreshResult(
                committed=True,
                dataset=name,
                version=result.version,
                version_dir=result.version_dir,
                parent=None,
                inputs_total=len(manifest["inputs"]),
                inputs_new=len(manifest["inputs"]),
                message=f"no earlier version: built {name}/{result.version} from every input",
                ledger=result.ledger,
                added=manifest["splits"],
                stats=result.stats,
            )

        parent = read_manifest(parent_dir)
        _check_compatible(cfg, parent)
        files, crawl_stats = resolve_inputs(cfg, store)
        seen = _seen_keys(parent["inputs"])
        identities = _identities(files)
        fresh = [(f, i) for f, i in zip(files, identities, strict=True) if not _is_seen(i, seen)]
        log.info(
            "refresh: %d inputs, %d seen in %s, %d new",
            len(files),
            len(files) - len(fresh),
            parent["version"],
            len(fresh),
        )
        if not fresh:
            store.discard_uncommitted(name)
            return RefreshResult(
                committed=False,
                dataset=name,
                version=parent["version"],
                version_dir=parent_dir,
                parent=parent.get("parent"),
                inputs_total=len(files),
                inputs_new=0,
                message=f"nothing new: all {len(files)} inputs are in {name}/{parent['version']}; "
                "no version committed",
            )

        new_identities = [i for _, i in fresh]
        key = _refresh_key(parent, new_identities, cfg)
        recovered = _finish_interrupted_commit(store, name, parent, key)
        if recovered is not None:
            version_dir = store.dataset_dir(name) / recovered
            manifest = read_manifest(version_dir)
            return RefreshResult(
                committed=True,
                dataset=name,
                version=recovered,
                version_dir=version_dir,
                parent=parent["version"],
                inputs_total=len(files),
                inputs_new=len(fresh),
                message=f"committed {name}/{recovered}, which an interrupted refresh had "
                "finished writing",
                ledger=_ledger_from_dict(manifest["ledger"]),
                added=manifest["added"],
                recovered=True,
            )
        store.discard_uncommitted(name)

        run_dir = store.run_dir(run)
        run_dir.mkdir(parents=True, exist_ok=True)
        concurrency = connect()
        index = DedupIndex([parent_dir]) if cfg.dedup.enabled else None
        processed = process_inputs(
            cfg, [f for f, _ in fresh], run_dir, concurrency=concurrency, index=index
        )
        crash_point("refresh:processed")
        t_processed = time.time()

        # Validation is chosen among the new documents only, by the same rule as a full build,
        # so a document never moves between splits from one version to the next.
        doc_chars = processed.doc_chars
        val_ids = (
            choose_validation(doc_chars, parent["config"]["shards"]["val_fraction"])
            if len(doc_chars) >= 2
            else frozenset()
        )
        tok = parent["tokenizer"]
        tokenizer = load_tokenizer(store.root / tok["path"])

        version = store.new_version_name(name)
        with staging_dir(store.dataset_dir(name) / version) as tmp:
            for shard in parent["shards"]:
                for suffix in (".bin", ".idx", ".docs.jsonl"):
                    _link(parent_dir / f"{shard['name']}{suffix}", tmp / f"{shard['name']}{suffix}")
            new_rows = []
            if doc_chars:
                new_rows = write_shards(
                    processed.kept,
                    tokenizer.to_str(),
                    tmp,
                    val_ids,
                    tok["eos_id"],
                    target_tokens=cfg.shards.target_tokens,
                    batch_size=cfg.batch_size,
                    concurrency=concurrency,
                )
            crash_point("refresh:shards_written")
            # Shard names hash their document ids, so a clash means documents the parent holds
            # already (possible only with dedup off); two manifest rows for one file would not do.
            clash = {r["name"] for r in new_rows} & {s["name"] for s in parent["shards"]}
            if clash:
                raise InputError(
                    f"new shard(s) {sorted(clash)} hold the same documents as shards of "
                    f"{parent['version']}: the new inputs repeat documents it has (turn "
                    "data.dedup.enabled on to drop them)"
                )
            parent_rows = [
                {**s, "added_in": s.get("added_in", parent["version"])} for s in parent["shards"]
            ]
            shards = parent_rows + [{**r, "added_in": version} for r in new_rows]
            added = {
                "inputs": len(fresh),
                "documents": len(doc_chars),
                "shards": [r["name"] for r in new_rows],
                **split_totals(new_rows),
            }
            manifest = {
                "format_version": FORMAT_VERSION,
                "dataset": name,
                "version": version,
                "parent": parent["version"],
                "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "run": run,
                "kind": "refresh",
                "refresh_key": key,
                "dtype": parent["dtype"],
                "tokenizer": tok,
                "splits": split_totals(shards),
                "shards": shards,
                "added": added,
                "inputs": sorted(parent["inputs"] + new_identities, key=lambda i: i["path"]),
                "config": cfg.model_dump(),
                "ledger": processed.ledger.to_dict(),
            }
            # Keys are carried forward even by a refresh with dedup off (which adds none of
            # its own), so that a later refresh still dedupes against everything before it;
            # the versions whose documents have no keys are listed, so it can say so.
            settings = (
                _stored_key_settings(parent) if "dedup_keys" in parent else cfg.dedup.key_settings()
            )
            added_unkeyed = [] if cfg.dedup.enabled or not doc_chars else [version]
            manifest["dedup_keys"] = {
                **_store_dedup_keys(parent_dir, tmp, processed, doc_chars),
                "settings": settings,
                "unkeyed": _unkeyed_versions(parent) + added_unkeyed,
            }
            atomic_write_json(tmp / "manifest.json", manifest)
        crash_point("refresh:version_renamed")
        store.set_current(name, version)
        crash_point("refresh:committed")

    version_dir = store.dataset_dir(name) / version
    stats = {
        **processed.stats,
        **({"crawl": crawl_stats} if crawl_stats is not None else {}),
        "added": added,
        "splits": manifest["splits"],
        "dataset_version": str(version_dir),
    }
    stats["seconds"].update(
        shards=round(time.time() - t_processed, 2), total=round(time.time() - t0, 2)
    )
    atomic_write_text(
        run_dir / "rejects_sample.jsonl",
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in processed.reject_samples),
    )
    atomic_write_json(run_dir / "stats.json", stats)
    return RefreshResult(
        committed=True,
        dataset=name,
        version=version,
        version_dir=version_dir,
        parent=parent["version"],
        inputs_total=len(files),
        inputs_new=len(fresh),
        message=f"committed {name}/{version}: {len(fresh)} new inputs, "
        f"{len(doc_chars)} new documents on top of {parent['version']}",
        ledger=processed.ledger,
        added=added,
        stats=stats,
    )


def _store_dedup_keys(parent_dir: Path, folder: Path, processed, doc_chars: dict) -> dict:
    """The new version's dedup keys: the parent's (linked) and those of its new documents."""
    keys_dir = folder / DedupIndex.FOLDER
    for part in sorted((parent_dir / DedupIndex.FOLDER).glob("*.parquet")):
        _link(part, keys_dir / part.name)
    parent_rows = 0
    if keys_dir.is_dir():
        import pyarrow.parquet as pq

        parent_rows = sum(pq.read_metadata(p).num_rows for p in keys_dir.glob("*.parquet"))
    new_rows = 0
    if doc_chars and processed.dedup_keys is not None:
        # Written beside, then moved in: the writer names its files itself, and the folder
        # already holds the parent's.
        entry = write_dedup_keys(processed.dedup_keys, folder / ".new_keys")
        new_rows = entry["rows"]
        keys_dir.mkdir(exist_ok=True)
        for part in sorted((folder / ".new_keys" / DedupIndex.FOLDER).glob("*.parquet")):
            os.replace(part, keys_dir / part.name)
        shutil.rmtree(folder / ".new_keys")
    return {"folder": DedupIndex.FOLDER, "rows": parent_rows + new_rows}


def _finish_interrupted_commit(
    store: DatasetStore, name: str, parent: dict, key: str
) -> str | None:
    """Commit a version a killed refresh renamed into place but did not point CURRENT at.

    Only a folder made from the same parent, new inputs and config (the same ``refresh_key``)
    whose files all match its manifest qualifies; it is exactly what this run would write.
    """
    for path in store.uncommitted(name):
        if not path.name.startswith("v"):
            continue  # a staging folder: never complete
        try:
            manifest = read_manifest(path)
        except (FileNotFoundError, json.JSONDecodeError):
            continue
        if manifest.get("refresh_key") != key:
            continue
        # The parent's shards are links to files the parent verified; hash only the new ones.
        new = {s["name"] for s in manifest["shards"] if s.get("added_in") == path.name}
        if not verify_version(path, checksum_only=new):
            store.discard_uncommitted(name, keep=path)
            store.set_current(name, path.name)
            log.info("refresh: committed %s, left complete by an interrupted refresh", path)
            return path.name
    return None


def _ledger_from_dict(data: dict) -> Ledger:
    """A Ledger back from the manifest's form of it (Ledger.to_dict)."""
    return Ledger(
        stages=[s["stage"] for s in data["stages"]],
        documents_in=data["documents_in"],
        dropped={s["stage"]: s["reasons"] for s in data["stages"]},
    )
