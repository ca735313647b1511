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
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.records import from_table, is_kept
from pipeline.store import atomic_write_bytes

__all__ = [
    "FORMAT_VERSION",
    "ShardWriterFn",
    "TokenShards",
    "dtype_for_vocab",
    "id_space",
    "read_manifest",
    "sha256_file",
    "verify_version",
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


def _write_shard(folder: Path, split: str, docs: list[dict], token_lists, eos_id: int, dtype):
    ids = "\n".join(d["id"] for d in docs).encode()
    name = f"{split}-{hashlib.sha1(ids).hexdigest()[:16]}"
    lengths = np.array([len(t) + 1 for t in token_lists], dtype=np.int64)  # +1: the EOS token
    idx = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=idx[1:])
    tokens = np.empty(int(idx[-1]), dtype=dtype)
    for start, toks in zip(idx[:-1], token_lists, strict=True):
        tokens[start : start + len(toks)] = toks
        tokens[start + len(toks)] = eos_id
    docs_jsonl = "".join(
        json.dumps({"id": d["id"], "source": d["source"], "url": d["url"]}) + "\n" for d in docs
    ).encode()
    atomic_write_bytes(folder / f"{name}.bin", tokens.astype(dtype.newbyteorder("<")).tobytes())
    atomic_write_bytes(folder / f"{name}.idx", idx.astype("<i8").tobytes())
    atomic_write_bytes(folder / f"{name}.docs.jsonl", docs_jsonl)
    return {
        "split": split,
        "name": name,
        "tokens": int(idx[-1]),
        "documents": len(docs),
        "bin_sha256": sha256_file(folder / f"{name}.bin"),
        "idx_sha256": sha256_file(folder / f"{name}.idx"),
        "docs_sha256": sha256_file(folder / f"{name}.docs.jsonl"),
    }


class ShardWriterFn:
    """Ray Data batch function: tokenize the kept documents of a batch and write its shards.

    Each batch becomes at most one train and one validation shard, written in parallel by
    whichever workers hold the batches. Returns one row per shard written.
    """

    def __init__(self, tokenizer_json: str, folder: str, val_ids: frozenset[str], eos_id: int):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_str(tokenizer_json)
        # A document that contains the text "<|endoftext|>" must not put a second EOS into the
        # stream: special tokens are only ever written between documents, by _write_shard.
        self.tokenizer.encode_special_tokens = True
        self.folder = Path(folder)
        self.val_ids = val_ids
        self.eos_id = eos_id
        self.dtype = dtype_for_vocab(id_space(self.tokenizer))

    def __call__(self, batch: pa.Table) -> pa.Table:
        docs = [d for d in from_table(batch) if is_kept(d)]
        records = []
        if docs:
            # add_special_tokens=False: a given tokenizer's post-processor (BOS, ...) adds
            # nothing; the shard format has exactly one EOS per document and nothing else.
            encodings = self.tokenizer.encode_batch(
                [d["text"] for d in docs], add_special_tokens=False
            )
            for split in ("train", "val"):
                chosen = [
                    (d, e.ids)
                    for d, e in zip(docs, encodings, strict=True)
                    if (d["id"] in self.val_ids) == (split == "val")
                ]
                if chosen:
                    records.append(
                        _write_shard(
                            self.folder,
                            split,
                            [d for d, _ in chosen],
                            [ids for _, ids in chosen],
                            self.eos_id,
                            self.dtype,
                        )
                    )
        return pa.Table.from_pylist(records, schema=SHARD_RECORD_SCHEMA)


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
