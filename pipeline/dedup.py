"""Dedup stage: exact duplicates by hash of normalised text, near duplicates by MinHash LSH.

Dedup has to compare every document with every other, so it cannot be a per-document stage.
It runs as a distributed pipeline over a Ray dataset of documents, in which texts never travel
beyond the first step:

1. **Fingerprint** (Ray ``map_batches``): each kept document becomes one small row: its id,
   length, the hash of its normalised text and its MinHash signature (pipeline/minhash.py).
2. **Bucket keys**: each fingerprint becomes ``bands + 1`` rows: one key per LSH band, and one
   for the exact-text hash. Documents of an earlier dataset version join here with the keys
   they were stored with (:class:`DedupIndex`), marked as already kept.
3. **Candidates** (Ray ``groupby`` on the key, a distributed shuffle): every bucket holding two
   or more documents links each member to the bucket's best member. With ``verify``, a link is
   kept only if the two signatures' estimated Jaccard similarity reaches the threshold.
4. **Clusters**: the links go through union-find in the driver. Only linked documents are held
   there, so memory grows with the number of duplicates, not of documents.
5. **Mark** (Ray ``map_batches``): every member of a cluster but one is dropped as
   ``exact_duplicate`` (its normalised text equals a kept member's) or ``near_duplicate``,
   with ``meta['duplicate_of']`` naming a kept document.

Steps 1, 2, 3 and 5 run on ``concurrency`` workers (concurrent Ray tasks; the groupby has as
many partitions). Which document a cluster keeps is decided by a fixed rule, so the result does
not depend on the number of workers, of blocks, or on input order: a document of an earlier
version always stays; otherwise the longest text (the most complete copy) stays, ties going to
the smallest id. Documents with fewer words than one shingle have no signature and take part in
exact dedup only.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.minhash import (
    MINHASH_DTYPE,
    MinHasher,
    band_keys,
    estimated_jaccard,
    normalize_text,
)
from pipeline.records import Document, from_table, is_kept, to_table
from pipeline.stage import Stage

__all__ = [
    "KEY_SCHEMA",
    "DedupIndex",
    "DedupResult",
    "Duplicate",
    "MarkDuplicates",
    "cluster",
    "fingerprint_batch",
    "run_dedup",
    "worker_args",
]

log = logging.getLogger(__name__)

# Ray Data warns when a step's worker count exceeds its input blocks (a small run); the count is
# a ceiling, not a promise, so the warning tells a user nothing to act on.
warnings.filterwarnings(
    "ignore", message=r"The maximum number of concurrent tasks for", category=UserWarning
)

FINGERPRINT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text_hash", pa.string()),
        ("n_chars", pa.int64()),
        ("minhash", pa.binary()),  # num_perm uint32 values; null below the shingle size
    ]
)

# One row per (document, bucket). This is also the on-disk format of the dedup index.
KEY_SCHEMA = pa.schema(
    [
        ("key", pa.int64()),
        ("id", pa.string()),
        ("text_hash", pa.string()),
        ("n_chars", pa.int64()),
    ]
)

_LINK_SCHEMA = pa.schema(
    [
        ("a", pa.string()),
        ("a_hash", pa.string()),
        ("a_chars", pa.int64()),
        ("a_old", pa.bool_()),
        ("b", pa.string()),
        ("b_hash", pa.string()),
        ("b_chars", pa.int64()),
        ("b_old", pa.bool_()),
    ]
)

# Documents per batch in the steps that hold texts (fingerprint, mark). A batch's shingle sets
# take over 100 KB per 4 KB document: fingerprinting a whole block of 2,400 such documents at
# once peaked at 451 MB of worker heap against 239 MB for 600 (bench/bench_dedup.py), so a
# worker's memory grew with its block; in batches it stays put.
TEXT_BATCH_DOCS = 256

# The exact-text bucket of a document gets a key from its text hash; banded keys come from
# pipeline.minhash.band_keys. Both are 64-bit hashes, so they do not collide in practice.
_EXACT_PERSON = b"exact-text"


def _exact_key(text_hash: str) -> int:
    digest = hashlib.blake2b(text_hash.encode(), digest_size=8, person=_EXACT_PERSON).digest()
    return int.from_bytes(digest, "little", signed=True)


def fingerprint_batch(batch: pa.Table, hasher: MinHasher) -> pa.Table:
    """Ray Data batch function: documents in, one fingerprint row per kept document out."""
    docs = [d for d in from_table(batch) if is_kept(d)]
    sigs = hasher.signatures([d["text"] for d in docs])
    rows = [
        {
            "id": d["id"],
            "text_hash": hashlib.sha1(normalize_text(d["text"]).encode()).hexdigest(),
            "n_chars": len(d["text"]),
            "minhash": sig.tobytes() if sig is not None else None,
        }
        for d, sig in zip(docs, sigs, strict=True)
    ]
    return pa.Table.from_pylist(rows, schema=FINGERPRINT_SCHEMA)


def keys_batch(batch: pa.Table, bands: int, rows: int, with_signature: bool) -> pa.Table:
    """Ray Data batch function: fingerprints in, one row per (document, bucket) out."""
    out = {name: [] for name in KEY_SCHEMA.names}
    out["old"] = []
    signatures = []
    for fp in batch.to_pylist():
        keys = [_exact_key(fp["text_hash"])]
        sig = None
        if fp["minhash"] is not None:
            sig = np.frombuffer(fp["minhash"], dtype=MINHASH_DTYPE)
            keys += band_keys(sig, bands, rows)
        for key in keys:
            out["key"].append(key)
            out["id"].append(fp["id"])
            out["text_hash"].append(fp["text_hash"])
            out["n_chars"].append(fp["n_chars"])
            out["old"].append(False)
            signatures.append(fp["minhash"])
    table = pa.table(out, schema=KEY_SCHEMA.append(pa.field("old", pa.bool_())))
    if with_signature:
        table = table.append_column("minhash", pa.array(signatures, type=pa.binary()))
    return table


def _priority(row: dict) -> tuple:
    # Earlier versions first, then the longest text, then the smallest id.
    return (not row["old"], -row["n_chars"], row["id"])


def link_bucket(group: pa.Table, threshold: float | None) -> pa.Table:
    """Ray Data group function: link each member of one bucket to its best member.

    A bucket whose members are all from earlier versions yields nothing: they were decided
    before. With a ``threshold`` (and signatures in the rows), only members whose estimated
    Jaccard similarity to the best member reaches it are linked.
    """
    rows = group.to_pylist()
    if len(rows) < 2 or all(r["old"] for r in rows):
        return pa.Table.from_pylist([], schema=_LINK_SCHEMA)
    # A document re-appearing unchanged has the same id in the index and in this run: the two
    # are different rows (the new copy is the duplicate), so identity is (id, old).
    unique = {}
    for r in rows:
        unique.setdefault((r["id"], r["old"]), r)
    members = sorted(unique.values(), key=_priority)
    anchor = members[0]
    links = []
    for r in members[1:]:
        if threshold is not None and r.get("minhash") and anchor.get("minhash"):
            a = np.frombuffer(anchor["minhash"], dtype=MINHASH_DTYPE)
            b = np.frombuffer(r["minhash"], dtype=MINHASH_DTYPE)
            same_text = r["text_hash"] == anchor["text_hash"]
            if not same_text and estimated_jaccard(a, b) < threshold:
                continue
        links.append(
            {
                "a": anchor["id"],
                "a_hash": anchor["text_hash"],
                "a_chars": anchor["n_chars"],
                "a_old": anchor["old"],
                "b": r["id"],
                "b_hash": r["text_hash"],
                "b_chars": r["n_chars"],
                "b_old": r["old"],
            }
        )
    return pa.Table.from_pylist(links, schema=_LINK_SCHEMA)


@dataclass
class Duplicate:
    """Why a document is removed and which kept document stands in for it."""

    reason: str
    kept_id: str
    kept_in_earlier_version: bool = False


class _UnionFind:
    def __init__(self):
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            lo, hi = sorted((ra, rb))  # roots do not depend on the order of the links
            self.parent[hi] = lo


def cluster(links: list[dict]) -> tuple[dict[str, Duplicate], list[int]]:
    """Connected components of the links; returns the documents to drop and cluster sizes.

    Nodes are (id, old) pairs, so a document of this run that re-appears unchanged from an
    earlier version (same id) is a separate node, linked to and dropped for its old copy.
    """
    uf = _UnionFind()
    nodes: dict[str, dict] = {}

    def node_key(doc_id: str, old: bool) -> str:
        return ("old\0" if old else "new\0") + doc_id

    for link in links:
        for side in ("a", "b"):
            key = node_key(link[side], link[f"{side}_old"])
            nodes.setdefault(
                key,
                {
                    "id": link[side],
                    "text_hash": link[f"{side}_hash"],
                    "n_chars": link[f"{side}_chars"],
                    "old": link[f"{side}_old"],
                },
            )
        uf.union(node_key(link["a"], link["a_old"]), node_key(link["b"], link["b_old"]))
    components: dict[str, list[dict]] = {}
    for key, node in nodes.items():
        components.setdefault(uf.find(key), []).append(node)

    dropped: dict[str, Duplicate] = {}
    sizes = []
    for members in components.values():
        sizes.append(len(members))
        members.sort(key=_priority)
        keeper = members[0]
        kept = [m for m in members if m["old"]] or [keeper]
        kept_hashes: dict[str, dict] = {}
        for m in kept:
            kept_hashes.setdefault(m["text_hash"], m)
        for m in members:
            if m["old"] or m is keeper:
                continue
            same = kept_hashes.get(m["text_hash"])
            stand_in = same or keeper
            dropped[m["id"]] = Duplicate(
                "exact_duplicate" if same else "near_duplicate",
                stand_in["id"],
                kept_in_earlier_version=stand_in["old"],
            )
    return dropped, sizes


class MarkDuplicates(Stage):
    """Apply the clustering's decisions: drop each duplicate, naming the document kept."""

    name = "dedup"

    def __init__(self, duplicates: dict[str, Duplicate]):
        self.duplicates = duplicates

    def process(self, doc: Document) -> str | None:
        dup = self.duplicates.get(doc["id"])
        if dup is None:
            return None
        doc["meta"]["duplicate_of"] = dup.kept_id
        if dup.kept_in_earlier_version:
            doc["meta"]["duplicate_in"] = "earlier_version"
        return dup.reason


def mark_batch(batch: pa.Table, duplicates: dict[str, Duplicate]) -> pa.Table:
    """Ray Data batch function applying :class:`MarkDuplicates`."""
    return to_table(MarkDuplicates(duplicates).process_batch(from_table(batch)))


def _drop_ids(batch: pa.Table, dropped: frozenset[str]) -> pa.Table:
    mask = pc.invert(pc.is_in(batch["id"], value_set=pa.array(sorted(dropped), pa.string())))
    return batch.filter(mask).select(KEY_SCHEMA.names)


def _count_signatures(batch: pa.Table) -> pa.Table:
    return pa.table({"rows": [batch.num_rows], "without_minhash": [batch["minhash"].null_count]})


def _mark_old(batch: pa.Table) -> pa.Table:
    return batch.select(KEY_SCHEMA.names).append_column(
        "old", pa.array([True] * batch.num_rows, pa.bool_())
    )


def worker_args(workers: int | None) -> dict:
    """``map_batches``/``map_groups`` arguments running a step on ``workers`` concurrent Ray tasks.

    Each task asks for one CPU, or for a share of the cluster's CPUs when there are more workers
    than CPUs, so that all of them can run at once (4 workers on 2 CPUs take half a CPU each).
    Tasks rather than an actor pool: a pool holds its CPUs for the whole step, and one that
    holds every CPU starves the upstream tasks reading its input (on Ray 2.60, 4 actors of half
    a CPU on 2 CPUs never received a block). ``None`` leaves the choice to Ray Data.
    """
    if workers is None:
        return {}
    if workers < 1:
        raise ValueError(f"dedup: the number of workers must be at least 1, got {workers}")
    import ray

    cpus = ray.cluster_resources().get("CPU", 1.0)
    return {
        "compute": ray.data.TaskPoolStrategy(size=workers),
        "num_cpus": min(1.0, cpus / workers),
    }


class DedupIndex:
    """Bucket keys of every document kept by earlier dataset versions.

    Each version stores the keys of the documents it added in ``dedup_keys/`` (Parquet, KEY_SCHEMA)
    inside its own folder, committed with it; the index of a dataset is the union over its
    versions. Old signatures are never recomputed: a new run only hashes its own documents.
    """

    FOLDER = "dedup_keys"

    def __init__(self, version_dirs: list[Path]):
        self.parts = [
            p for v in version_dirs for p in sorted((Path(v) / self.FOLDER).glob("*.parquet"))
        ]

    def dataset(self):
        """A Ray dataset of the stored keys, or None when there are none."""
        import ray

        if not self.parts:
            return None
        return ray.data.read_parquet([str(p) for p in self.parts], schema=KEY_SCHEMA)


@dataclass
class DedupResult:
    """The marked documents, the keys to store with the new version, and counts."""

    documents: object  # ray.data.Dataset
    keys: object  # ray.data.Dataset of KEY_SCHEMA rows for the kept documents
    stats: dict = field(default_factory=dict)


def run_dedup(
    ds,
    *,
    num_perm: int,
    bands: int,
    rows: int,
    shingle_size: int,
    verify_threshold: float | None = None,
    index: DedupIndex | None = None,
    concurrency: int | None = None,
) -> DedupResult:
    """Mark exact and near duplicates in a Ray dataset of documents.

    ``index`` holds the keys of earlier versions: documents of this run that duplicate one of
    them are dropped, and earlier documents are never dropped. ``verify_threshold`` turns on
    Jaccard verification of candidate links. ``concurrency`` is the number of workers (see
    :func:`worker_args`) and of shuffle partitions; ``None`` leaves both to Ray Data.
    """
    if bands * rows > num_perm:
        raise ValueError(f"dedup: bands x rows ({bands} x {rows}) exceeds num_perm {num_perm}")
    hasher = MinHasher(num_perm=num_perm, shingle_size=shingle_size)
    verify = verify_threshold is not None

    workers = worker_args(concurrency)
    fingerprints = ds.map_batches(
        fingerprint_batch,
        fn_kwargs={"hasher": hasher},
        batch_format="pyarrow",
        batch_size=TEXT_BATCH_DOCS,
        **workers,
    ).materialize()
    keys = fingerprints.map_batches(
        keys_batch,
        fn_kwargs={"bands": bands, "rows": rows, "with_signature": verify},
        batch_format="pyarrow",
        **workers,
    ).materialize()

    candidates = keys
    old = index.dataset() if index is not None else None
    if old is not None:
        old = old.map_batches(_mark_old, batch_format="pyarrow")
        if verify:
            # Stored keys carry no signature, so links to earlier documents are not verified.
            old = old.map_batches(
                lambda t: t.append_column("minhash", pa.nulls(t.num_rows, pa.binary())),
                batch_format="pyarrow",
            )
        candidates = keys.union(old)

    groupby_kwargs = {"num_partitions": concurrency} if concurrency else {}
    # No document of this run left to key (every one dropped before dedup): nothing can be a
    # duplicate, and a groupby over blocks without a "key" column would fail.
    links = (
        candidates.groupby("key", **groupby_kwargs)
        .map_groups(
            link_bucket,
            fn_kwargs={"threshold": verify_threshold},
            batch_format="pyarrow",
            **workers,
        )
        .take_all()
        if keys.count()
        else []
    )
    duplicates, sizes = cluster(links)

    marked = ds.map_batches(
        mark_batch,
        fn_kwargs={"duplicates": duplicates},
        batch_format="pyarrow",
        batch_size=TEXT_BATCH_DOCS,
        **workers,
    ).materialize()
    kept_keys = keys.map_batches(
        _drop_ids, fn_kwargs={"dropped": frozenset(duplicates)}, batch_format="pyarrow"
    )
    counts = fingerprints.map_batches(_count_signatures, batch_format="pyarrow").take_all()
    n_fingerprints = sum(c["rows"] for c in counts)
    without = sum(c["without_minhash"] for c in counts)
    reasons = Counter(d.reason for d in duplicates.values())
    stats = {
        "fingerprinted": n_fingerprints,
        "without_minhash": without,
        "exact_duplicates": reasons.get("exact_duplicate", 0),
        "near_duplicates": reasons.get("near_duplicate", 0),
        "duplicates_of_earlier_versions": sum(
            d.kept_in_earlier_version for d in duplicates.values()
        ),
        "clusters": len(sizes),
        "cluster_sizes": dict(sorted(Counter(sizes).items())),
        "largest_cluster": max(sizes, default=0),
        "lsh": {"num_perm": num_perm, "bands": bands, "rows": rows, "verify": verify},
        # What this run's documents put into the object store and through the shuffle: the
        # texts stay out of both (bench/bench_dedup.py compares these with the texts' size).
        "fingerprint_bytes": fingerprints.size_bytes(),
        "shuffle_bytes": keys.size_bytes(),
    }
    return DedupResult(marked, kept_keys, stats)
