"""Looking at a dataset line: its versions for ``kiln data status``, checks for ``kiln data verify``."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pipeline.shards import read_manifest, verify_version
from pipeline.store import DatasetStore

__all__ = ["check_version", "format_status", "version_rows"]


def version_rows(store: DatasetStore, name: str) -> list[dict]:
    """One row per committed or left-over version of a dataset, newest first."""
    current = store.current_version(name)
    uncommitted = set(store.uncommitted(name))
    rows = []
    for version in reversed(store.versions(name)):
        folder = store.dataset_dir(name) / version
        try:
            m = read_manifest(folder)
        except FileNotFoundError:
            rows.append({"version": version, "state": "broken (no manifest.json)"})
            continue
        sp = m.get("splits", {})
        rows.append(
            {
                "version": version,
                "state": "current"
                if current is not None and folder == current
                else ("uncommitted" if folder in uncommitted else "committed"),
                "created_at": m.get("created_at"),
                "kind": m.get("kind", "build"),
                "parent": m.get("parent"),
                "train_tokens": sp.get("train", {}).get("tokens", 0),
                "train_documents": sp.get("train", {}).get("documents", 0),
                "val_tokens": sp.get("val", {}).get("tokens", 0),
                "val_documents": sp.get("val", {}).get("documents", 0),
                "shards": len(m.get("shards", [])),
                "inputs": len(m.get("inputs", [])),
                "added_documents": m.get("added", {}).get(
                    "documents",
                    sp.get("train", {}).get("documents", 0) + sp.get("val", {}).get("documents", 0),
                ),
                "tokenizer": m.get("tokenizer", {}).get("fingerprint"),
            }
        )
    return rows


def format_status(store: DatasetStore, name: str, rows: list[dict]) -> str:
    """The table `kiln data status` prints."""
    current = store.current_version(name)
    head = f"dataset {name!r} in {store.root}: "
    if not rows:
        return head + "no versions yet (`kiln data` or `kiln data refresh` builds the first)"
    lines = [head + f"{len(rows)} version(s), CURRENT = {current.name if current else 'none'}"]
    lines.append(
        f"  {'version':<8} {'created (UTC)':<25} {'kind':<8} {'parent':<7} "
        f"{'train tokens / docs':>22} {'val tokens / docs':>20} {'inputs':>6} {'added':>6}  tokenizer"
    )
    for r in rows:
        if "created_at" not in r:
            lines.append(f"  {r['version']:<8} {r['state']}")
            continue
        mark = "*" if r["state"] == "current" else " "
        lines.append(
            f"{mark} {r['version']:<8} {r['created_at'] or '?':<25} {r['kind']:<8} "
            f"{r['parent'] or '-':<7} "
            f"{r['train_tokens']:>13,} / {r['train_documents']:<6,} "
            f"{r['val_tokens']:>11,} / {r['val_documents']:<6,} {r['inputs']:>6} "
            f"{'+' + str(r['added_documents']):>6}  {r['tokenizer']}"
            + (
                "   (uncommitted: left by an interrupted job)"
                if r["state"] == "uncommitted"
                else ""
            )
        )
    lines.append("* = CURRENT; added = documents this version added to its parent")
    return "\n".join(lines)


def check_version(store: DatasetStore, version_dir: str | Path) -> list[str]:
    """Every problem with a version: shard checksums and sizes, tokenizer file, dedup keys."""
    version_dir = Path(version_dir)
    problems = verify_version(version_dir)
    manifest = read_manifest(version_dir)
    tok = manifest.get("tokenizer", {})
    if tok.get("path"):
        path = store.root / tok["path"]
        if not path.exists():
            problems.append(f"tokenizer {tok['path']}: missing from the store")
        elif tok.get("sha256") and hashlib.sha256(path.read_bytes()).hexdigest() != tok["sha256"]:
            problems.append(f"tokenizer {tok['path']}: checksum differs from the manifest")
    keys = manifest.get("dedup_keys")
    if keys:
        import pyarrow.parquet as pq

        parts = sorted((version_dir / keys["folder"]).glob("*.parquet"))
        rows = sum(pq.read_metadata(p).num_rows for p in parts)
        if rows != keys["rows"]:
            problems.append(f"{keys['folder']}/: {rows} rows, the manifest says {keys['rows']}")
    splits = manifest.get("splits", {})
    for split, totals in splits.items():
        tokens = sum(s["tokens"] for s in manifest["shards"] if s["split"] == split)
        if tokens != totals.get("tokens"):
            problems.append(f"split {split}: shards hold {tokens} tokens, splits say {totals}")
    return problems
