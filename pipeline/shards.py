"""Token shards: the on-disk format that the data side writes and the model side reads.

A dataset version is a folder holding ``manifest.json`` and, per shard:

- ``<name>.bin``: the shard's tokens as one flat little-endian array. Every document is followed
  by exactly one end-of-document token. The dtype is the smallest unsigned type that holds every
  id of the vocabulary (uint16 up to 65,536 ids, else uint32).
- ``<name>.idx``: int64 offsets of document starts, plus the end: document ``i`` is
  ``tokens[idx[i]:idx[i+1]]`` (its trailing end-of-document token included).
- ``<name>.docs.jsonl``: the id, source and url of each document in order, so any token can be
  traced back to the page or book it came from.

Shards are named by split and by a hash of the ids they hold, so the same documents always give
the same file names. The manifest records per shard counts and sha256 checksums.

A data job writes in two Ray passes. Workers tokenize batches (:class:`DocumentEncoderFn`); the
driver, from each document's token count alone, plans shards of ``data.shards.target_tokens``
over the documents in order of id (:func:`plan_shards`); then a group-by on the planned shard
brings each shard's documents to one worker, which writes it (:func:`write_shard_group`). The
plan depends only on the documents, never on how Ray split them into blocks, so the same input
gives the same bytes.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.records import from_table, is_kept
from pipeline.store import atomic_write_bytes

__all__ = [
    "ENCODED_SCHEMA",
    "FORMAT_VERSION",
    "DocumentEncoderFn",
    "ShardWriterFn",
    "TokenShards",
    "assign_shards",
    "dtype_for_vocab",
    "id_space",
    "plan_shards",
    "read_manifest",
    "sha256_file",
    "verify_version",
    "write_shard",
    "write_shard_group",
]

FORMAT_VERSION = 1

SHARD_RECORD_SCHEMA = pa.schema(
    [
        ("split", pa.string()),
        ("name", pa.string()),
        ("tokens", pa.int64()),
        ("documents", pa.int64()),
        ("bin_sha256", pa.string()),
        ("idx_sha256", pa.string()),
        ("docs_sha256", pa.string()),
    ]
)


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """uint16 only when every token id (0 .. vocab_size-1) fits in it."""
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)


def id_space(tokenizer) -> int:
    """One more than the largest id the tokenizer can emit (its vocabulary, added tokens too).

    Not always ``get_vocab_size()``: a tokenizer.json given by path may leave holes in its ids.
    """
    return max(tokenizer.get_vocab(with_added_tokens=True).values()) + 1


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# What the encoder hands on for each document: its metadata, its split and its tokens as the
# bytes they will have in a shard (little-endian, the trailing end-of-document token included).
ENCODED_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("url", pa.string()),
        ("split", pa.string()),
        ("n_tokens", pa.int64()),
        # large_binary: 64-bit offsets, so a block of many documents may pass 2 GiB of tokens.
        ("tokens", pa.large_binary()),
    ]
)


class DocumentEncoderFn:
    """Ray Data batch function: tokenize the kept documents of a batch, one row each.

    The rows follow :data:`ENCODED_SCHEMA`; :func:`write_shard` lays any sequence of them out
    as a shard without touching the tokenizer again.
    """

    def __init__(self, tokenizer_json: str, val_ids: frozenset[str], eos_id: int):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_str(tokenizer_json)
        # A document that contains the text "<|endoftext|>" must not put a second EOS into the
        # stream: special tokens are only ever written between documents, by this encoder.
        self.tokenizer.encode_special_tokens = True
        self.val_ids = val_ids
        self.eos_id = eos_id
        self.dtype = dtype_for_vocab(id_space(self.tokenizer)).newbyteorder("<")

    def __call__(self, batch: pa.Table) -> pa.Table:
        docs = [d for d in from_table(batch) if is_kept(d)]
        if not docs:
            return ENCODED_SCHEMA.empty_table()
        # add_special_tokens=False: a given tokenizer's post-processor (BOS, ...) adds nothing;
        # the shard format has exactly one EOS per document and nothing else.
        # encode_batch_fast: the same ids without character offsets, which shards never use.
        encodings = self.tokenizer.encode_batch_fast(
            [d["text"] for d in docs], add_special_tokens=False
        )
        token_lists = [e.ids for e in encodings]  # each .ids builds a new list: once only
        lengths = np.array([len(t) + 1 for t in token_lists], dtype=np.int64)  # +1: the EOS
        idx = np.zeros(len(docs) + 1, dtype=np.int64)
        np.cumsum(lengths, out=idx[1:])
        # One flat array for the batch; each document's row is a slice of its buffer (no copy).
        tokens = np.empty(int(idx[-1]), dtype=self.dtype)
        for start, toks in zip(idx[:-1], token_lists, strict=True):
            tokens[start : start + len(toks)] = toks
            tokens[start + len(toks)] = self.eos_id
        byte_offsets = idx * self.dtype.itemsize
        column = pa.LargeBinaryArray.from_buffers(
            pa.large_binary(), len(docs), [None, pa.py_buffer(byte_offsets), pa.py_buffer(tokens)]
        )
        return pa.Table.from_arrays(
            [
                pa.array([d["id"] for d in docs], pa.string()),
                pa.array([d["source"] for d in docs], pa.string()),
                pa.array([d["url"] for d in docs], pa.string()),
                pa.array(["val" if d["id"] in self.val_ids else "train" for d in docs]),
                pa.array(lengths),
                column,
            ],
            schema=ENCODED_SCHEMA,
        )


def write_shard(folder: str | Path, split: str, encoded: pa.Table) -> dict:
    """Write the encoded documents ``encoded`` (all of ``split``, in order) as one shard.

    Returns the shard's manifest row. Each file is written under a temporary name and renamed
    into place, so a reader never sees half a shard.
    """
    folder = Path(folder)
    ids = encoded["id"].to_pylist()
    digest = hashlib.sha1("\n".join(ids).encode()).hexdigest()[:16]
    name = f"{split}-{digest}"
    idx = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(encoded["n_tokens"].to_numpy(), out=idx[1:])
    # The rows' token bytes, back to back: the values buffer of one contiguous array.
    column = encoded["tokens"].combine_chunks()
    offsets = np.frombuffer(column.buffers()[1], dtype="<i8")[
        column.offset : column.offset + len(column) + 1
    ]
    data = column.buffers()[2].slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
    docs_jsonl = "".join(
        json.dumps({"id": i, "source": s, "url": u}) + "\n"
        for i, s, u in zip(
            ids, encoded["source"].to_pylist(), encoded["url"].to_pylist(), strict=True
        )
    ).encode()
    atomic_write_bytes(folder / f"{name}.bin", data.to_pybytes())
    atomic_write_bytes(folder / f"{name}.idx", idx.astype("<i8").tobytes())
    atomic_write_bytes(folder / f"{name}.docs.jsonl", docs_jsonl)
    return {
        "split": split,
        "name": name,
        "tokens": int(idx[-1]),
        "documents": len(ids),
        "bin_sha256": sha256_file(folder / f"{name}.bin"),
        "idx_sha256": sha256_file(folder / f"{name}.idx"),
        "docs_sha256": sha256_file(folder / f"{name}.docs.jsonl"),
    }


class ShardWriterFn:
    """Tokenize one batch of documents and write it whole: at most one train and one
    validation shard, in batch order. Returns one row per shard written.

    The building block for small versions and tests; a data job packs its documents into
    shards of a target size instead (:func:`plan_shards`, :func:`write_shard_group`).
    """

    def __init__(self, tokenizer_json: str, folder: str, val_ids: frozenset[str], eos_id: int):
        self.encoder = DocumentEncoderFn(tokenizer_json, val_ids, eos_id)
        self.folder = Path(folder)

    def __call__(self, batch: pa.Table) -> pa.Table:
        encoded = self.encoder(batch)
        records = []
        for split in ("train", "val"):
            chosen = encoded.filter(pc.equal(encoded["split"], split))
            if chosen.num_rows:
                records.append(write_shard(self.folder, split, chosen))
        return pa.Table.from_pylist(records, schema=SHARD_RECORD_SCHEMA)


def plan_shards(sizes: pa.Table, target_tokens: int) -> list[tuple[str, str]]:
    """Where each shard starts: ``(split, first document id)``, in sorted order.

    ``sizes`` has a row per document with its ``split``, ``id`` and ``n_tokens`` (end of
    document included). Within a split, documents go in order of id (a hash, so the order
    does not depend on how the input was read or on how many blocks Ray made of it) and a
    shard is closed at the first document that brings it to ``target_tokens``: every shard
    but the last of a split reaches the target, by less than one document. Documents with the
    same id (identical documents, when dedup is off) always share a shard.
    """
    if target_tokens < 1:
        raise ValueError(f"target_tokens must be at least 1, got {target_tokens}")
    starts: list[tuple[str, str]] = []
    for split in ("train", "val"):
        part = sizes.filter(pc.equal(sizes["split"], split)).sort_by("id")
        ids = part["id"].to_pylist()
        ends = np.cumsum(part["n_tokens"].to_numpy())  # tokens through each document
        first, taken = 0, 0
        while first < len(ids):
            starts.append((split, ids[first]))
            # The first document at which the shard holds target_tokens (or the split's last).
            last = min(int(np.searchsorted(ends, taken + target_tokens)), len(ids) - 1)
            while last + 1 < len(ids) and ids[last + 1] == ids[last]:
                last += 1
            taken, first = int(ends[last]), last + 1
    return starts


def assign_shards(batch: pa.Table, starts: list[tuple[str, str]]) -> pa.Table:
    """Ray Data batch function: add the ``shard`` column, the index into ``starts`` (from
    :func:`plan_shards`) of the shard each document belongs to."""
    shard = [
        bisect.bisect_right(starts, key) - 1
        for key in zip(batch["split"].to_pylist(), batch["id"].to_pylist(), strict=True)
    ]
    return batch.append_column("shard", pa.array(shard, pa.int64()))


def write_shard_group(group: pa.Table, folder: str) -> pa.Table:
    """Ray Data group function: write the documents of one planned shard (rows of one
    ``shard`` value, in any order) in order of id; one manifest row."""
    ordered = group.sort_by("id")
    record = write_shard(folder, ordered["split"][0].as_py(), ordered)
    return pa.Table.from_pylist([record], schema=SHARD_RECORD_SCHEMA)


def read_manifest(version_dir: str | Path) -> dict[str, Any]:
    path = Path(version_dir) / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(f"{version_dir} holds no manifest.json: not a dataset version")
    return json.loads(path.read_text())


def eos_token_of(version_dir: str | Path | None) -> str:
    """The end-of-document token a dataset version was written with (data.tokenizer.eos_token
    or a given tokenizer's own), falling back to kiln's default for versions that predate it."""
    from pipeline.tokenizer import EOS_TOKEN

    if version_dir is None or not (Path(version_dir) / "manifest.json").exists():
        return EOS_TOKEN
    return read_manifest(version_dir).get("tokenizer", {}).get("eos_token") or EOS_TOKEN


def verify_version(version_dir: str | Path, checksum_only: set[str] | None = None) -> list[str]:
    """Re-check every shard against the manifest; return the problems found (empty if none).

    With ``checksum_only``, only the shards of those names are hashed; the others are checked
    for presence and size (cheap, for shards a parent version verified already).
    """
    version_dir = Path(version_dir)
    manifest = read_manifest(version_dir)
    dtype = np.dtype(manifest["dtype"])
    problems = []
    for shard in manifest["shards"]:
        if checksum_only is not None and shard["name"] not in checksum_only:
            for suffix in (".bin", ".idx", ".docs.jsonl"):
                if not (version_dir / f"{shard['name']}{suffix}").exists():
                    problems.append(f"{shard['name']}{suffix}: missing")
        else:
            problems += _checksum_problems(version_dir, shard)
        bin_path = version_dir / f"{shard['name']}.bin"
        if bin_path.exists() and bin_path.stat().st_size != shard["tokens"] * dtype.itemsize:
            problems.append(f"{bin_path.name}: size does not match {shard['tokens']} tokens")
    return problems


def _checksum_problems(version_dir: Path, shard: dict) -> list[str]:
    problems = []
    for suffix, key in (
        (".bin", "bin_sha256"),
        (".idx", "idx_sha256"),
        (".docs.jsonl", "docs_sha256"),
    ):
        path = version_dir / f"{shard['name']}{suffix}"
        if not path.exists():
            problems.append(f"{path.name}: missing")
        elif sha256_file(path) != shard[key]:
            problems.append(f"{path.name}: checksum differs from the manifest")
    return problems


class TokenShards:
    """Read-only view of one split of a dataset version, as numpy memmaps."""

    def __init__(self, version_dir: str | Path, split: str):
        self.version_dir = Path(version_dir)
        self.manifest = read_manifest(self.version_dir)
        self.split = split
        self.dtype = np.dtype(self.manifest["dtype"]).newbyteorder("<")
        self.eos_id = int(self.manifest["tokenizer"]["eos_id"])
        self.shards = [s for s in self.manifest["shards"] if s["split"] == split]
        if not self.shards:
            raise ValueError(f"dataset version {self.version_dir} has no {split!r} shards")
        self._tokens = [
            np.memmap(self.version_dir / f"{s['name']}.bin", dtype=self.dtype, mode="r")
            for s in self.shards
        ]
        self._idx = [
            np.fromfile(self.version_dir / f"{s['name']}.idx", dtype="<i8") for s in self.shards
        ]

    @property
    def num_tokens(self) -> int:
        return sum(len(t) for t in self._tokens)

    @property
    def num_documents(self) -> int:
        return sum(len(i) - 1 for i in self._idx)

    def shard_tokens(self) -> list[np.ndarray]:
        return self._tokens

    def documents(self):
        """Each document's tokens, end-of-document token excluded, in shard order."""
        for tokens, idx in zip(self._tokens, self._idx, strict=True):
            for start, end in zip(idx[:-1], idx[1:], strict=True):
                yield np.asarray(tokens[start : end - 1])
