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

import errno
import fcntl
import json
import logging
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
    "StoreLockedError",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "staging_dir",
]

_VERSION = re.compile(r"^v(\d{4,})$")
_STAGING = re.compile(r"^\.v\d{4,}\.tmp-[0-9a-f]+$")

log = logging.getLogger(__name__)


class StoreLockedError(RuntimeError):
    """Another process is changing the same dataset line right now."""


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
        self.set_current(name, version)

    def set_current(self, name: str, version: str) -> None:
        """Point CURRENT at a committed version (an atomic rename, the commit's last step)."""
        if not (self.dataset_dir(name) / version).is_dir():
            raise FileNotFoundError(f"dataset {name!r} has no version {version}")
        atomic_write_text(self.dataset_dir(name) / "CURRENT", version + "\n")

    def uncommitted(self, name: str) -> list[Path]:
        """What a killed job left behind: staging folders, and versions newer than CURRENT.

        A version folder newer than CURRENT was renamed into place by a job killed before it
        moved the pointer; no reader ever saw it.
        """
        folder = self.dataset_dir(name)
        if not folder.is_dir():
            return []
        current = self.current_version(name)
        floor = int(current.name[1:]) if current is not None else 0
        staging = [p for p in folder.iterdir() if p.is_dir() and _STAGING.match(p.name)]
        newer = [folder / v for v in self.versions(name) if int(v[1:]) > floor]
        return sorted(staging) + newer

    def discard_uncommitted(self, name: str, keep: Path | None = None) -> None:
        """Delete what :meth:`uncommitted` lists (but ``keep``); call only under :meth:`lock`."""
        for path in self.uncommitted(name):
            if path != keep:
                log.info("store: removing %s, left by an interrupted job", path)
                shutil.rmtree(path)

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Hold the dataset line's lock: one writer (data job or refresh) at a time.

        An flock on ``datasets/<name>/.lock``: the kernel drops it when the holder exits, so a
        killed job never leaves a stale lock. A second writer fails at once rather than wait,
        so overlapping scheduled refreshes do not queue up.
        """
        folder = self.dataset_dir(name)
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    raise StoreLockedError(
                        f"dataset {name!r} in {self.root} is being written by another process "
                        f"(its lock datasets/{name}/.lock is held); try again when it finishes"
                    ) from None
                raise
            yield
        finally:
            os.close(fd)
