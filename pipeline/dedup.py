"""Dedup stage: exact duplicates by hash of normalised text, near duplicates by MinHash LSH.

Dedup needs to see every document at once, so unlike the per-document stages it runs in three
steps over a materialised Ray dataset:

1. in parallel, each kept document gets a fingerprint: the hash of its normalised text and a
   MinHash signature over word n-grams (datasketch);
2. in the driver, documents with the same hash, or that datasketch's MinHashLSH puts in a
   common band bucket, are joined into clusters (union-find);
3. in parallel, every document of a cluster but one is marked ``exact_duplicate`` or
   ``near_duplicate``, with ``meta['duplicate_of']`` naming the one kept.

Which document a cluster keeps does not depend on input order: the one with the most
characters (the most complete copy), ties broken by the smallest id.

Step 2 holds one signature per document in the driver's memory (112 x 4 bytes each): fine for
the sample and for millions of documents, not for billions. Issue #5 moves it to a distributed
shuffle.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipeline.records import Document, from_table, is_kept, to_table
from pipeline.stage import Stage

__all__ = [
    "MinHasher",
    "MarkDuplicates",
    "fingerprint_batch",
    "find_duplicates",
    "normalize_text",
    "shingle_words",
    "run_dedup",
]

_SPACE = re.compile(r"\s+")

# datasketch's permutation scheme (its default since 2.0): 32-bit values, so a signature of 112
# permutations is 448 bytes. Sketches of different schemes cannot be compared.
MINHASH_SCHEME = "affine32"
MINHASH_DTYPE = np.uint32

SIGNATURE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text_hash", pa.string()),
        ("n_chars", pa.int64()),
        ("minhash", pa.binary()),  # num_perm uint32 values; null below the shingle size
    ]
)


def normalize_text(text: str) -> str:
    """Unicode NFKC, case-folded, whitespace runs collapsed: what "the same text" means for
    exact dedup."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def _is_punctuation(ch: str) -> bool:
    return unicodedata.category(ch).startswith("P")


# Punctuation code points map to a space, built once: str.translate is fast with a dict.
_PUNCTUATION_TO_SPACE = {cp: " " for cp in range(0x110000) if _is_punctuation(chr(cp))}


def shingle_words(text: str) -> list[str]:
    """Words for near-dup shingles: normalised, with punctuation removed.

    Releases of the same text often differ only in typography (straight or curly quotes, "--"
    or an em dash); without this, "we're" and "we’re" would be different words.
    """
    return normalize_text(text).translate(_PUNCTUATION_TO_SPACE).split()


class MinHasher:
    """MinHash signatures over word n-grams of normalised text."""

    def __init__(self, *, num_perm: int = 112, shingle_size: int = 5, seed: int = 1):
        self.num_perm = num_perm
        self.shingle_size = shingle_size
        self.seed = seed

    def shingles(self, text: str) -> set[bytes]:
        words = shingle_words(text)
        n = self.shingle_size
        return {" ".join(words[i : i + n]).encode() for i in range(len(words) - n + 1)}

    def signatures(self, texts: list[str]) -> list[np.ndarray | None]:
        """One uint32 signature per text; None for texts shorter than one shingle."""
        from datasketch import MinHash

        shingle_sets = [self.shingles(t) for t in texts]
        present = [i for i, s in enumerate(shingle_sets) if s]
        # MinHash.bulk hashes all shingles of a batch together, several times faster than
        # one update() call per shingle.
        hashes = MinHash.bulk(
            [list(shingle_sets[i]) for i in present],
            num_perm=self.num_perm,
            seed=self.seed,
            scheme=MINHASH_SCHEME,
        )
        out: list[np.ndarray | None] = [None] * len(texts)
        for i, mh in zip(present, hashes, strict=True):
            out[i] = np.asarray(mh.hashvalues, dtype=MINHASH_DTYPE)
        return out


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
    return pa.Table.from_pylist(rows, schema=SIGNATURE_SCHEMA)


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
            # Attach the larger id under the smaller one so roots do not depend on order.
            lo, hi = sorted((ra, rb))
            self.parent[hi] = lo


@dataclass
class Duplicate:
    """Why a document is removed and which document stays in its place."""

    reason: str
    kept_id: str


def find_duplicates(
    fingerprints: list[dict], *, bands: int, rows: int, seed: int = 1
) -> dict[str, Duplicate]:
    """Cluster documents by exact hash and by LSH band collisions; return the ones to drop."""
    from datasketch import MinHash, MinHashLSH

    fingerprints = sorted(fingerprints, key=lambda f: f["id"])  # order-independent result
    uf = _UnionFind()
    exact_root: dict[str, str] = {}
    for fp in fingerprints:
        uf.find(fp["id"])
        first = exact_root.setdefault(fp["text_hash"], fp["id"])
        if first != fp["id"]:
            uf.union(first, fp["id"])

    lsh = MinHashLSH(num_perm=bands * rows, params=(bands, rows))
    for fp in fingerprints:
        if fp["minhash"] is None:
            continue  # shorter than one shingle: exact dedup only
        values = np.frombuffer(fp["minhash"], dtype=MINHASH_DTYPE)
        mh = MinHash(num_perm=bands * rows, seed=seed, hashvalues=values, scheme=MINHASH_SCHEME)
        for other in lsh.query(mh):
            uf.union(other, fp["id"])
        lsh.insert(fp["id"], mh)

    clusters: dict[str, list[dict]] = {}
    for fp in fingerprints:
        clusters.setdefault(uf.find(fp["id"]), []).append(fp)

    dropped: dict[str, Duplicate] = {}
    for members in clusters.values():
        if len(members) == 1:
            continue
        keep = min(members, key=lambda f: (-f["n_chars"], f["id"]))
        for fp in members:
            if fp is keep:
                continue
            reason = "exact_duplicate" if fp["text_hash"] == keep["text_hash"] else "near_duplicate"
            dropped[fp["id"]] = Duplicate(reason, keep["id"])
    return dropped


class MarkDuplicates(Stage):
    """Apply the driver's decisions: drop each duplicate, naming the document kept instead."""

    name = "dedup"

    def __init__(self, duplicates: dict[str, Duplicate]):
        self.duplicates = duplicates

    def process(self, doc: Document) -> str | None:
        dup = self.duplicates.get(doc["id"])
        if dup is None:
            return None
        doc["meta"]["duplicate_of"] = dup.kept_id
        return dup.reason


def mark_batch(batch: pa.Table, duplicates: dict[str, Duplicate]) -> pa.Table:
    """Ray Data batch function applying :class:`MarkDuplicates`."""
    return to_table(MarkDuplicates(duplicates).process_batch(from_table(batch)))


def run_dedup(ds, *, num_perm: int, bands: int, rows: int, shingle_size: int):
    """Mark exact and near duplicates in a materialised Ray dataset of documents.

    Returns the marked dataset (materialised) and a summary for the run's stats.
    """
    if bands * rows != num_perm:
        raise ValueError(f"dedup: bands x rows ({bands} x {rows}) must equal num_perm {num_perm}")
    hasher = MinHasher(num_perm=num_perm, shingle_size=shingle_size)
    fingerprints = ds.map_batches(
        fingerprint_batch, fn_kwargs={"hasher": hasher}, batch_format="pyarrow"
    ).take_all()
    duplicates = find_duplicates(fingerprints, bands=bands, rows=rows, seed=hasher.seed)
    marked = ds.map_batches(
        mark_batch, fn_kwargs={"duplicates": duplicates}, batch_format="pyarrow"
    ).materialize()
    summary = {
        "fingerprinted": len(fingerprints),
        "exact_duplicates": sum(d.reason == "exact_duplicate" for d in duplicates.values()),
        "near_duplicates": sum(d.reason == "near_duplicate" for d in duplicates.values()),
        "without_minhash": sum(fp["minhash"] is None for fp in fingerprints),
    }
    return marked, summary
