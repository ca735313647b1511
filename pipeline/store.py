"""The dataset store: one folder that holds everything a data run produces.

Layout under the store root::

    runs/<run>/             per-run stage outputs: documents/, rejects/, ledger.json, stats.json
    tokenizers/<hash>/      tokenizer.json and meta.json (the hash of what it was trained on)
    datasets/<name>/v0001/  token shards and manifest.json of one dataset version
    datasets/<name>/CURRENT the name of the current version, moved last and atomically

Every file is written under a temporary name and renamed into place, and a version folder is
built under a temporary name and renamed whole, so a killed job never leaves a half-written
file that a later run could mistake for finished work.

The store is a local folder for now; object stores through pyarrow filesystems are future work.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "DatasetStore",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "staging_dir",
]

_VERSION = re.compile(r"^v(\d{4,})$")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a file so that readers see either the old content or all of the new."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


@contextmanager
def staging_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Build a folder under a temporary name; rename it to ``final`` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


class DatasetStore:
    """Paths and atomic operations over one store root."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    # --- locations -------------------------------------------------------------------------

    def run_dir(self, run: str) -> Path:
        return self.root / "runs" / run

    def tokenizer_dir(self, fingerprint: str) -> Path:
        return self.root / "tokenizers" / fingerprint

    def dataset_dir(self, name: str) -> Path:
        return self.root / "datasets" / name

    # --- versions --------------------------------------------------------------------------

    def versions(self, name: str) -> list[str]:
        """Committed versions of a dataset, oldest first (temporary folders are ignored)."""
        folder = self.dataset_dir(name)
        if not folder.is_dir():
            return []
        found = [p.name for p in folder.iterdir() if p.is_dir() and _VERSION.match(p.name)]
        return sorted(found, key=lambda v: int(v[1:]))

    def current_version(self, name: str) -> Path | None:
        """The version the CURRENT pointer names, or None before the first commit."""
        pointer = self.dataset_dir(name) / "CURRENT"
        if not pointer.exists():
            return None
        return self.dataset_dir(name) / pointer.read_text().strip()

    def new_version_name(self, name: str) -> str:
        existing = self.versions(name)
        return f"v{(int(existing[-1][1:]) + 1 if existing else 1):04d}"

    @contextmanager
    def new_version(self, name: str) -> Iterator[tuple[str, Path]]:
        """Stage a new version folder; on success it is renamed into place and made current.

        Moving the CURRENT pointer is the last step, so readers never see a version whose
        files are still being written.
        """
        version = self.new_version_name(name)
        final = self.dataset_dir(name) / version
        with staging_dir(final) as tmp:
            yield version, tmp
        atomic_write_text(self.dataset_dir(name) / "CURRENT", version + "\n")
