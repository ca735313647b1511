"""Dedup stage: exact duplicates by hash of normalised text, near duplicates by MinHash LSH.

Dedup has to compare every document with every other, so it cannot be a per-document stage.
It runs as a distributed pipeline over a Ray dataset of documents, in which texts never travel
beyond the first step, and signatures not beyond it either unless candidates are verified:

1. **Fingerprint** (Ray ``map_batches``): each kept document becomes one small row: its id, a
   128-bit hash of the id (its *node*, the name it goes by in the shuffle), its length, the hash
   of its normalised text and its bucket keys: one per LSH band of its MinHash signature
   (pipeline/minhash.py), or for a document too short to shingle, one key from its text hash.
   The signature itself is kept only when candidates are to be verified.
2. **Buckets** (Ray ``groupby`` on the key, a distributed shuffle): each bucket key becomes a
   row of 25 bytes (key, node, whether the document is from an earlier version), fewer bytes
   per document than its signature. Documents of earlier versions join here with the keys they
   were stored with (:class:`DedupIndex`). Every bucket holding two or more documents, not all
   of them earlier ones, passes its rows on as candidates.
3. **Clusters** (in the driver): the candidates' documents are looked up by node in the
   fingerprints (and the stored keys), each bucket links its members to its best member (with
   ``verify``, only those whose estimated Jaccard similarity reaches the threshold), and the
   links are joined by union-find. Only candidates are held there, so memory grows with the
   number of duplicates, not of documents.
4. **Mark** (Ray ``map_batches``): every member of a cluster but one is dropped as
   ``exact_duplicate`` (its normalised text equals a kept member's) or ``near_duplicate``,
   with ``meta['duplicate_of']`` naming a kept document.

Steps 1, 2 and 4 run on ``concurrency`` workers (concurrent Ray tasks); the shuffle has at
least as many partitions, and more when the input is large, so that no partition outgrows a
worker (SHUFFLE_PARTITION_ROWS). Which document a cluster keeps is decided by a fixed rule, so
the result does not depend on the number of workers, of blocks, or on input order: a document
of an earlier version always stays; otherwise the longest text (the most complete copy) stays,
ties going to the smallest id. Documents with fewer words than one shingle have no signature
and take part in exact dedup only. Exact copies need no bucket of their own: equal normalised
texts have equal shingles, so equal signatures, and share every band.
"""

from __future__ import annotations

import hashlib
import logging
import math
import warnings
from collections import Counter
from collections.abc import Iterable
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
from pipeline.records import Document, from_table, is_kept, mark_dropped, to_table
from pipeline.stage import Stage

__all__ = [
    "BUCKET_SCHEMA",
    "CANDIDATE_SCHEMA",
    "KEY_SCHEMA",
    "DedupIndex",
    "DedupResult",
    "Duplicate",
    "MarkDuplicates",
    "bucket_candidates",
    "bucket_rows",
    "cluster",
    "collect_members",
    "fingerprint_batch",
    "keep_one_copy",
    "link_buckets",
    "mark_batch",
    "node_of",
    "repeated_documents",
    "run_dedup",
    "shuffle_partitions",
    "worker_args",
]

log = logging.getLogger(__name__)

# Ray Data warns when a step's worker count exceeds its input blocks (a small run); the count is
# a ceiling, not a promise, so the warning tells a user nothing to act on.
warnings.filterwarnings(
    "ignore", message=r"The maximum number of concurrent tasks for", category=UserWarning
)

NODE = pa.binary(16)

FINGERPRINT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("node", NODE),
        ("text_hash", pa.string()),
        ("n_chars", pa.int64()),
        ("has_minhash", pa.bool_()),  # false below the shingle size
        ("keys", pa.list_(pa.int64())),
        ("minhash", pa.binary()),  # num_perm uint32 values, only when candidates are verified
    ]
)

# One row per (document, bucket) through the shuffle.
BUCKET_SCHEMA = pa.schema([("key", pa.int64()), ("node", NODE), ("old", pa.bool_())])

# A bucket's documents passed on to the clustering; ``copies`` counts a document's rows in the
# bucket: more than one when the same document (same id) entered this run more than once.
CANDIDATE_SCHEMA = BUCKET_SCHEMA.append(pa.field("copies", pa.int64()))
_NO_CANDIDATES = CANDIDATE_SCHEMA.empty_table()

# One row per (kept document, bucket): the on-disk format of the dedup index.
KEY_SCHEMA = pa.schema(
    [
        ("key", pa.int64()),
        ("id", pa.string()),
        ("text_hash", pa.string()),
        ("n_chars", pa.int64()),
    ]
)

# What the clustering decided, handed to the mark step as Arrow arrays: a worker maps them from
# the object store instead of unpickling one Python object per duplicate.
_DROP_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("reason", pa.string()),
        ("kept_id", pa.string()),
        ("kept_in_earlier_version", pa.bool_()),
    ]
)

# Documents per batch in the steps that hold texts (fingerprint, mark), so that a worker's
# memory does not grow with its block: fingerprinting a whole block of 2,400 documents of 4 KB
# at once peaked at 451 MB of worker heap against 239 MB for 600 (bench/bench_dedup.py, when a
# batch's shingle sets were all held together; now one document's are).
TEXT_BATCH_DOCS = 256

# Shuffle rows per partition at most, by default (data.dedup.partition_rows). A partition is
# sorted whole by one task, which needs about three times its size (Ray Data's own estimate for a
# sorting reduce); 4 million rows of 25 bytes keep that near 300 MB, so a large input gets more
# partitions instead of larger ones.
SHUFFLE_PARTITION_ROWS = 4_000_000

# The exact-text bucket of a document gets a key from its text hash; banded keys come from
# pipeline.minhash.band_keys. Both are 64-bit hashes, so they do not collide in practice.
_EXACT_PERSON = b"exact-text"
_NODE_PERSON = b"kiln-doc-node"


def _exact_key(text_hash: str) -> int:
    digest = hashlib.blake2b(text_hash.encode(), digest_size=8, person=_EXACT_PERSON).digest()
    return int.from_bytes(digest, "little", signed=True)


def node_of(doc_id: str) -> bytes:
    """A document's name in the shuffle: 128 bits of hash of its id, whatever the id's length.

    Two of a billion ids share one with probability about 1e-21; the clustering checks anyway.
    """
    return hashlib.blake2b(doc_id.encode(), digest_size=16, person=_NODE_PERSON).digest()


def _nodes(ids: pa.Array) -> pa.Array:
    # Rows of one document sit together in the stored keys: hash each distinct id once.
    unique = pc.unique(ids)
    hashed = pa.array([node_of(i) for i in unique.to_pylist()], NODE)
    return hashed.take(pc.index_in(ids, value_set=unique))


def fingerprint_batch(
    batch: pa.Table, hasher: MinHasher, bands: int, rows: int, keep_minhash: bool = False
) -> pa.Table:
    """Ray Data batch function: documents in, one fingerprint row per kept document out."""
    docs = [d for d in from_table(batch) if is_kept(d)]
    sigs = hasher.signatures([d["text"] for d in docs])
    out = {name: [] for name in FINGERPRINT_SCHEMA.names}
    for d, sig in zip(docs, sigs, strict=True):
        text_hash = hashlib.sha1(normalize_text(d["text"]).encode()).hexdigest()
        out["id"].append(d["id"])
        out["node"].append(node_of(d["id"]))
        out["text_hash"].append(text_hash)
        out["n_chars"].append(len(d["text"]))
        out["has_minhash"].append(sig is not None)
        out["keys"].append(
            band_keys(sig, bands, rows) if sig is not None else [_exact_key(text_hash)]
        )
        out["minhash"].append(sig.tobytes() if keep_minhash and sig is not None else None)
    return pa.table(out, schema=FINGERPRINT_SCHEMA)


def bucket_rows(fingerprints: pa.Table) -> pa.Table:
    """Ray Data batch function: fingerprints in, one shuffle row per (document, bucket) out."""
    keys = fingerprints["keys"]
    owner = pc.list_parent_indices(keys)
    return pa.table(
        {
            "key": pc.list_flatten(keys),
            "node": fingerprints["node"].take(owner),
            "old": np.zeros(len(owner), dtype=bool),
        },
        schema=BUCKET_SCHEMA,
    )


def _stored_keys(fingerprints: pa.Table, dropped: pa.Array) -> pa.Table:
    """Ray Data batch function: the kept documents' bucket keys in the dedup index's format."""
    kept = fingerprints.filter(pc.invert(pc.is_in(fingerprints["id"], value_set=dropped)))
    owner = pc.list_parent_indices(kept["keys"])
    columns = {"key": pc.list_flatten(kept["keys"])}
    columns |= {name: kept[name].take(owner) for name in ("id", "text_hash", "n_chars")}
    return pa.table(columns, schema=KEY_SCHEMA)


def _old_bucket_rows(stored: pa.Table) -> pa.Table:
    """Ray Data batch function: an earlier version's stored keys as shuffle rows."""
    return pa.table(
        {
            "key": stored["key"],
            "node": _nodes(stored["id"]),
            "old": np.ones(stored.num_rows, dtype=bool),
        },
        schema=BUCKET_SCHEMA,
    )


def bucket_candidates(group: pa.Table) -> pa.Table:
    """Ray Data group function: one bucket's rows, passed on if they can hold a duplicate.

    A bucket holding a single document, or only documents of earlier versions (decided before),
    yields nothing, unless a document of this run is in it more than once: the same capture
    read twice (say, one WARC file under two names) has one id, and all but one copy must go.
    """
    if group.num_rows < 2:
        return _NO_CANDIDATES
    members = group.group_by(["node", "old"]).aggregate([([], "count_all")])
    copies = members["count_all"]
    new = pc.invert(members["old"])
    repeated = pc.any(pc.and_(new, pc.greater(copies, 1))).as_py()
    if not repeated and (members.num_rows < 2 or not pc.any(new).as_py()):
        return _NO_CANDIDATES
    key = np.full(members.num_rows, group["key"][0].as_py(), dtype=np.int64)
    columns = {"key": key, "node": members["node"], "old": members["old"], "copies": copies}
    return pa.table(columns, schema=CANDIDATE_SCHEMA)


def _select_nodes(batch: pa.Table, nodes: pa.Array, columns: list[str]) -> pa.Table:
    """Ray Data batch function: the rows of the given nodes only."""
    return batch.filter(pc.is_in(batch["node"], value_set=nodes)).select(columns)


def _with_nodes(stored: pa.Table) -> pa.Table:
    return stored.append_column("node", _nodes(stored["id"]))


def _priority(member: dict) -> tuple:
    # Earlier versions first, then the longest text, then the smallest id.
    return (not member["old"], -member["n_chars"], member["id"])


def _similar(a: dict, b: dict, threshold: float) -> bool:
    # Stored keys carry no signature, so links to earlier documents are not verified; documents
    # without one (too short to shingle) only meet in exact buckets.
    if a["text_hash"] == b["text_hash"] or a.get("minhash") is None or b.get("minhash") is None:
        return True
    a_sig = np.frombuffer(a["minhash"], dtype=MINHASH_DTYPE)
    b_sig = np.frombuffer(b["minhash"], dtype=MINHASH_DTYPE)
    return estimated_jaccard(a_sig, b_sig) >= threshold


def link_buckets(
    candidates: pa.Table, members: dict[tuple[bytes, bool], dict], threshold: float | None
) -> list[tuple[dict, dict]]:
    """Links within each candidate bucket: every member to the bucket's best member.

    ``members`` maps (node, old) to the document (id, text_hash, n_chars, old, and its minhash
    when verifying). With a ``threshold``, a member is linked only if its estimated Jaccard
    similarity to the best member reaches it, or its text is the same.
    """
    buckets: dict[int, dict[tuple[str, bool], dict]] = {}
    columns = (candidates[name].to_pylist() for name in BUCKET_SCHEMA.names)
    for key, node, old in zip(*columns, strict=True):
        member = members[node, old]
        buckets.setdefault(key, {})[member["id"], old] = member
    links = []
    for bucket in buckets.values():
        # A bucket passed on for a repeated document alone holds one member: no link.
        ranked = sorted(bucket.values(), key=_priority)
        anchor = ranked[0]
        for member in ranked[1:]:
            if threshold is None or _similar(anchor, member, threshold):
                links.append((anchor, member))
    return links


def collect_members(
    new_rows: Iterable[dict], old_rows: Iterable[dict]
) -> dict[tuple[bytes, bool], dict]:
    """The candidates' documents by (node, old), from their fingerprints and stored keys.

    Raises if two different ids share a node, which would merge two unrelated documents.
    """
    members: dict[tuple[bytes, bool], dict] = {}
    for rows, old in ((new_rows, False), (old_rows, True)):
        for row in rows:
            member = {
                "id": row["id"],
                "text_hash": row["text_hash"],
                "n_chars": row["n_chars"],
                "old": old,
                "minhash": row.get("minhash"),
            }
            seen = members.setdefault((row["node"], old), member)
            if seen["id"] != member["id"]:
                raise RuntimeError(
                    f"dedup: documents {seen['id']!r} and {member['id']!r} have the same 128-bit"
                    " node hash; rename one of them (change its id) and run again"
                )
    return members


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


def cluster(links: Iterable[tuple[dict, dict]]) -> tuple[dict[str, Duplicate], list[int]]:
    """Connected components of the links; returns the documents to drop and cluster sizes.

    A link joins two documents (dicts with id, text_hash, n_chars, old). Nodes are (id, old)
    pairs, so a document of this run that re-appears unchanged from an earlier version (same
    id) is a separate node, linked to and dropped for its old copy.
    """
    uf = _UnionFind()
    nodes: dict[str, dict] = {}

    def node_key(doc: dict) -> str:
        return ("old\0" if doc["old"] else "new\0") + doc["id"]

    for a, b in links:
        for doc in (a, b):
            nodes.setdefault(node_key(doc), doc)
        uf.union(node_key(a), node_key(b))
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


def _drop_table(duplicates: dict[str, Duplicate]) -> pa.Table:
    ids = sorted(duplicates)
    return pa.table(
        {
            "id": ids,
            "reason": [duplicates[i].reason for i in ids],
            "kept_id": [duplicates[i].kept_id for i in ids],
            "kept_in_earlier_version": [duplicates[i].kept_in_earlier_version for i in ids],
        },
        schema=_DROP_SCHEMA,
    )


def mark_batch(batch: pa.Table, drops: pa.Table) -> pa.Table:
    """Ray Data batch function applying :class:`MarkDuplicates` to the batch's duplicates.

    ``drops`` is the clustering's decision as a table (id, reason, kept_id,
    kept_in_earlier_version); only the rows of this batch's documents become Python objects.
    """
    found = pc.index_in(batch["id"], value_set=drops["id"])
    if found.null_count == len(found):
        return batch
    rows = drops.take(found.drop_null()).to_pylist()
    here = {
        r["id"]: Duplicate(r["reason"], r["kept_id"], r["kept_in_earlier_version"]) for r in rows
    }
    return to_table(MarkDuplicates(here).process_batch(from_table(batch)))


def repeated_documents(
    candidates: pa.Table, members: dict[tuple[bytes, bool], dict]
) -> dict[str, int]:
    """Ids of this run's documents that entered it more than once, with their number of copies."""
    new = pc.invert(candidates["old"])
    rows = candidates.filter(pc.and_(new, pc.greater(candidates["copies"], 1)))
    nodes = rows["node"].to_pylist()
    copies = rows["copies"].to_pylist()
    return {members[n, False]["id"]: c for n, c in zip(nodes, copies, strict=True)}


def _rows_of(batch: pa.Table, ids: pa.Array, inside: bool) -> pa.Table:
    """Ray Data batch function: the rows whose id is (``inside``) or is not among ``ids``."""
    mask = pc.is_in(batch["id"], value_set=ids)
    return batch.filter(mask if inside else pc.invert(mask))


def _copy_rank(doc: Document) -> tuple:
    # Copies share their id, so their source, URL and text; what else they carry (meta) decides.
    return (doc["url"], sorted(doc["meta"].items()))


def keep_one_copy(group: pa.Table) -> pa.Table:
    """Ray Data group function: of the kept copies of one document, keep one and drop the rest
    as exact duplicates of it. Which one is fixed by :func:`_copy_rank`, not by input order."""
    docs = from_table(group)
    for doc in sorted((d for d in docs if is_kept(d)), key=_copy_rank)[1:]:
        doc["meta"]["duplicate_of"] = doc["id"]
        mark_dropped(doc, MarkDuplicates.name, "exact_duplicate")
    return to_table(docs)


def _single_copy_keys(
    candidates: pa.Table, members: dict[tuple[bytes, bool], dict], ids: set[str]
) -> pa.Table:
    """The stored keys of documents kept once out of several copies, from their candidate rows
    (a repeated document is a candidate in every one of its buckets)."""
    rows = {}
    columns = (candidates[name].to_pylist() for name in BUCKET_SCHEMA.names)
    for key, node, old in zip(*columns, strict=True):
        member = members[node, old]
        if not old and member["id"] in ids:
            rows[key, member["id"]] = {"key": key, **{k: member[k] for k in KEY_SCHEMA.names[1:]}}
    return pa.Table.from_pylist(list(rows.values()), schema=KEY_SCHEMA)


def _count_fingerprints(batch: pa.Table) -> pa.Table:
    rows = bucket_rows(batch)
    return pa.table(
        {
            "rows": [batch.num_rows],
            "without_minhash": [batch.num_rows - (pc.sum(batch["has_minhash"]).as_py() or 0)],
            "bucket_rows": [rows.num_rows],
            "bucket_bytes": [rows.nbytes],
        }
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


def shuffle_partitions(
    rows: int, workers: int | None, partition_rows: int = SHUFFLE_PARTITION_ROWS
) -> int | None:
    """Partitions of the bucket shuffle: at least one per worker, and enough that none holds
    more than ``partition_rows`` rows. ``None`` (no worker count, a small input) leaves the
    number to Ray Data."""
    needed = math.ceil(rows / partition_rows)
    if workers is None:
        if needed <= 1:
            return None
        import ray

        return max(needed, ray.data.DataContext.get_current().default_hash_shuffle_parallelism)
    return max(needed, workers)


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


def _rows(ds, fn, **fn_kwargs) -> list[dict]:
    """The rows a batch function selects from a dataset, gathered in the driver."""
    out = ds.map_batches(fn, fn_kwargs=fn_kwargs, batch_format="pyarrow")
    return [
        row
        for b in out.iter_batches(batch_format="pyarrow", batch_size=None)
        for row in b.to_pylist()
    ]


def run_dedup(
    ds,
    *,
    num_perm: int,
    bands: int,
    rows: int,
    shingle_size: int,
    word_split: str = "cjk_characters",
    verify_threshold: float | None = None,
    index: DedupIndex | None = None,
    concurrency: int | None = None,
    partition_rows: int = SHUFFLE_PARTITION_ROWS,
) -> DedupResult:
    """Mark exact and near duplicates in a Ray dataset of documents.

    ``index`` holds the keys of earlier versions: documents of this run that duplicate one of
    them are dropped, and earlier documents are never dropped. ``verify_threshold`` turns on
    Jaccard verification of candidate links. ``concurrency`` is the number of workers (see
    :func:`worker_args`) and the least number of shuffle partitions; ``None`` leaves both to
    Ray Data. ``partition_rows`` caps the bucket rows in one shuffle partition. ``word_split``
    says how shingles' words are cut (:data:`pipeline.minhash.WORD_SPLITS`).
    """
    if bands * rows > num_perm:
        raise ValueError(f"dedup: bands x rows ({bands} x {rows}) exceeds num_perm {num_perm}")
    if partition_rows < 1:
        raise ValueError(f"dedup: partition_rows must be at least 1, got {partition_rows}")
    hasher = MinHasher(num_perm=num_perm, shingle_size=shingle_size, word_split=word_split)
    verify = verify_threshold is not None

    workers = worker_args(concurrency)
    fingerprints = ds.map_batches(
        fingerprint_batch,
        fn_kwargs={"hasher": hasher, "bands": bands, "rows": rows, "keep_minhash": verify},
        batch_format="pyarrow",
        batch_size=TEXT_BATCH_DOCS,
        **workers,
    ).materialize()
    counts = fingerprints.map_batches(_count_fingerprints, batch_format="pyarrow").take_all()
    n_fingerprints = sum(c["rows"] for c in counts)
    n_bucket_rows = sum(c["bucket_rows"] for c in counts)

    buckets = fingerprints.map_batches(bucket_rows, batch_format="pyarrow", **workers)
    old = index.dataset() if index is not None else None
    if old is not None:
        n_bucket_rows += old.count()
        buckets = buckets.union(old.map_batches(_old_bucket_rows, batch_format="pyarrow"))

    # No document of this run left to key (every one dropped before dedup): nothing can be a
    # duplicate, and a groupby over blocks without a "key" column would fail.
    candidates = CANDIDATE_SCHEMA.empty_table()
    partitions = None
    if n_fingerprints:
        partitions = shuffle_partitions(n_bucket_rows, concurrency, partition_rows)
        groupby_kwargs = {"num_partitions": partitions} if partitions else {}
        found = (
            buckets.groupby("key", **groupby_kwargs)
            .map_groups(bucket_candidates, batch_format="pyarrow", **workers)
            .iter_batches(batch_format="pyarrow", batch_size=None)
        )
        candidates = pa.concat_tables([CANDIDATE_SCHEMA.empty_table(), *found])

    # Look up the candidates' documents: this run's in the fingerprints, earlier ones in the
    # stored keys. Only documents that share a bucket with another reach the driver.
    new_nodes = pc.unique(candidates.filter(pc.invert(candidates["old"]))["node"])
    old_nodes = pc.unique(candidates.filter(candidates["old"])["node"])
    columns = ["id", "node", "text_hash", "n_chars", "minhash"]
    new_rows = (
        _rows(fingerprints, _select_nodes, nodes=new_nodes, columns=columns)
        if len(new_nodes)
        else []
    )
    old_rows = []
    if len(old_nodes):
        old_rows = _rows(
            old.map_batches(_with_nodes, batch_format="pyarrow"),
            _select_nodes,
            nodes=old_nodes,
            columns=["id", "node", "text_hash", "n_chars"],
        )
    members = collect_members(new_rows, old_rows)
    duplicates, sizes = cluster(link_buckets(candidates, members, verify_threshold))
    # A document that entered more than once goes with all its copies when it duplicates another
    # one; otherwise one copy stays (``single``).
    repeated = repeated_documents(candidates, members)
    single = {i: n for i, n in repeated.items() if i not in duplicates}

    marked = ds.map_batches(
        mark_batch,
        fn_kwargs={"drops": _drop_table(duplicates)},
        batch_format="pyarrow",
        batch_size=TEXT_BATCH_DOCS,
        **workers,
    ).materialize()
    kept_keys = fingerprints.map_batches(
        _stored_keys,
        fn_kwargs={"dropped": pa.array(sorted(set(duplicates) | set(repeated)), pa.string())},
        batch_format="pyarrow",
    )
    if single:
        # Copies of one document cannot be told apart by id, so they meet in a groupby of their
        # own: only their rows, texts and all, go through this shuffle.
        import ray

        ids = pa.array(sorted(single), pa.string())
        copies = marked.map_batches(
            _rows_of, fn_kwargs={"ids": ids, "inside": True}, batch_format="pyarrow"
        )
        others = marked.map_batches(
            _rows_of, fn_kwargs={"ids": ids, "inside": False}, batch_format="pyarrow"
        )
        once = copies.groupby("id").map_groups(keep_one_copy, batch_format="pyarrow")
        marked = others.union(once).materialize()
        kept_keys = kept_keys.union(
            ray.data.from_arrow(_single_copy_keys(candidates, members, set(single)))
        )

    def documents(ids) -> int:  # a repeated document's copies all count
        return sum(repeated.get(i, 1) for i in ids)

    exact = [i for i, d in duplicates.items() if d.reason == "exact_duplicate"]
    near = [i for i, d in duplicates.items() if d.reason == "near_duplicate"]
    stats = {
        "fingerprinted": n_fingerprints,
        "without_minhash": sum(c["without_minhash"] for c in counts),
        "exact_duplicates": documents(exact) + sum(n - 1 for n in single.values()),
        "near_duplicates": documents(near),
        "duplicates_of_earlier_versions": documents(
            i for i, d in duplicates.items() if d.kept_in_earlier_version
        ),
        # Documents that entered this run more than once (the same id): all copies but one go.
        "repeated_documents": len(repeated),
        "clusters": len(sizes),
        "cluster_sizes": dict(sorted(Counter(sizes).items())),
        "largest_cluster": max(sizes, default=0),
        "lsh": {
            "num_perm": num_perm,
            "word_split": word_split,
            "bands": bands,
            "rows": rows,
            "verify": verify,
            "verify_threshold": verify_threshold,
        },
        # What this run's documents put into the object store and through the shuffle: the
        # texts stay out of both (bench/bench_dedup.py compares these with the signatures).
        "fingerprint_bytes": fingerprints.size_bytes(),
        "shuffle_bytes": sum(c["bucket_bytes"] for c in counts),
        "candidates": candidates.num_rows,
        "shuffle_partitions": partitions,
    }
    return DedupResult(marked, kept_keys, stats)
