"""Readers: turn inputs (files, folders, globs, URLs, dataset names) into document rows.

Inputs are listed in the job config with a kind:

- ``html``: saved web pages, one per file, plain or gzip (``.html``, ``.htm``, ``.html.gz``);
- ``warc``: WARC, ARC or WET archives, gzip or not (pipeline/read_warc.py);
- ``book``: Project Gutenberg plain-text books (the extract stage removes header and footer);
- ``jsonl``, ``parquet``: one document per row (pipeline/read_tables.py);
- ``hf``: a Hugging Face dataset, local files or a hub name (pipeline/read_tables.py);
- ``cc_paths``: a Common Crawl path list (``warc.paths``, ``wet.paths``, gzip or not) whose
  lines name archives by URL, absolute path, or a path relative to the spec's ``base``;
- ``auto``: chosen per file from its name.

Every HTML payload is decoded once here (pipeline/encoding.py) and stored as UTF-8, with the
original charset and how it was found in ``meta``. A file that cannot be read, or a record that
is corrupt, becomes a dropped row with stage ``read`` and a reason, so the ledger counts it; the
job carries on with the rest. What is not a document (revisit, request and metadata records,
files, resyncs) is counted in the reader's stats, which :func:`read_batch` reports to a
:class:`ReadStats` actor so the job can put them in its stats.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import logging
import os
import urllib.request
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa

from pipeline.encoding import decode_text, to_utf8
from pipeline.read_tables import read_hf, read_jsonl, read_parquet
from pipeline.read_warc import READ_STAGE, error_row, read_warc
from pipeline.records import Document, make_document, to_table

__all__ = [
    "KINDS",
    "READ_STAGE",
    "InputFile",
    "ReadStats",
    "discover_inputs",
    "file_digest",
    "input_identity",
    "iter_file",
    "open_input",
    "read_batch",
    "read_file",
    "sniff_kind",
]

log = logging.getLogger(__name__)

HTML_SUFFIXES = (".html", ".htm", ".html.gz", ".htm.gz", ".xhtml")
WARC_SUFFIXES = (".warc", ".warc.gz", ".arc", ".arc.gz", ".wet", ".wet.gz", ".wat", ".wat.gz")
BOOK_SUFFIXES = (".txt", ".txt.gz")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")
PARQUET_SUFFIXES = (".parquet",)
CC_PATHS_SUFFIXES = ("warc.paths", "warc.paths.gz", "wet.paths", "wet.paths.gz")
KINDS = ("auto", "html", "warc", "book", "jsonl", "parquet", "hf", "cc_paths")
# Documents per Arrow table handed to Ray Data: big archives stream out in pieces instead of
# one table the size of the file.
ROWS_PER_TABLE = 256
URL_TIMEOUT_S = 60
# Where relative lines of a Common Crawl path list point by default (Common Crawl's docs,
# "Get Started": the HTTPS endpoint of the public data set).
CC_BASE = "https://data.commoncrawl.org/"


@dataclass(frozen=True)
class InputFile:
    """One input to read, the reader it goes to, and the reader's options."""

    path: str
    kind: str
    text_field: str = "text"
    url_field: str = "url"
    content: str = "text"
    split: str = "train"
    hf_config: str | None = None
    # Where the input sits, said without where the repository or data lives: the URL, or the
    # path below the configured folder (with its name), or the file name. Document ids and
    # URLs of files are made from it, so the same sample gives the same ids in any clone.
    name: str = ""

    def to_row(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def label(self) -> str:
        return self.name or self.path


def is_url(path: str) -> bool:
    return path.startswith(("http://", "https://"))


def sniff_kind(path: str) -> str | None:
    """The reader for a file name, or None when kiln has no reader for it."""
    name = path.lower()
    if name.endswith(CC_PATHS_SUFFIXES):
        return "cc_paths"
    if name.endswith(WARC_SUFFIXES):
        return "warc"
    if name.endswith(HTML_SUFFIXES):
        return "html"
    if name.endswith(BOOK_SUFFIXES):
        return "book"
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    return None


def _spec_fields(spec: Any) -> tuple[str, str, dict[str, Any]]:
    if isinstance(spec, tuple):
        return spec[0], spec[1], {}
    options = {
        k: getattr(spec, k)
        for k in ("text_field", "url_field", "content", "split", "hf_config")
        if getattr(spec, k, None) is not None
    }
    options["base"] = getattr(spec, "base", None)
    return spec.path, spec.kind, options


def _expand_paths_list(listing: str, base: str | None, options: dict) -> list[InputFile]:
    """The archives a Common Crawl path list names."""
    with open_input(listing) as fh:
        data = fh.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if base is None:
        base = CC_BASE
    out = []
    for line in data.decode("utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if is_url(line) or os.path.isabs(line):
            target = line
        elif is_url(base):
            target = base.rstrip("/") + "/" + line.lstrip("/")
        else:
            target = os.path.join(base, line)
        out.append(InputFile(target, "warc", name=line if is_url(line) else target, **options))
    if not out:
        raise FileNotFoundError(f"path list {listing!r} names no archive")
    return out


def discover_inputs(specs: Iterable[Any]) -> list[InputFile]:
    """Expand input specs into a sorted, de-duplicated list of inputs.

    A spec is an InputSpec from the config or a ``(path-or-glob, kind)`` pair. Raises
    FileNotFoundError naming the pattern when one matches nothing, so a typo in a config
    fails before any work starts.
    """
    found: dict[tuple[str, str], InputFile] = {}

    def add(item: InputFile) -> None:
        key = (item.path if is_url(item.path) else os.path.abspath(item.path), item.kind)
        found.setdefault(key, replace(item, path=key[0]))

    for spec in specs:
        pattern, kind, options = _spec_fields(spec)
        base = options.pop("base", None)
        if kind == "hf" and not os.path.exists(pattern):
            add(InputFile(pattern, "hf", name=pattern, **options))  # a hub name
            continue
        if is_url(pattern):
            file_kind = sniff_kind(pattern) if kind == "auto" else kind
            if file_kind is None:
                raise FileNotFoundError(f"input {pattern!r}: cannot tell its kind from the name")
            if file_kind == "cc_paths":
                for item in _expand_paths_list(pattern, base, options):
                    add(item)
            else:
                add(InputFile(pattern, file_kind, name=pattern, **options))
            continue
        matches = sorted(glob.glob(pattern, recursive=True))
        if not matches:
            raise FileNotFoundError(f"input {pattern!r} matches no file or folder")
        for match in matches:
            if kind == "hf":
                add(InputFile(match, "hf", name=Path(match).name, **options))
                continue
            folder = Path(match).parent if os.path.isfile(match) else Path(match).resolve().parent
            paths = (
                sorted(str(p) for p in Path(match).rglob("*") if p.is_file())
                if os.path.isdir(match)
                else [match]
            )
            for path in paths:
                name = os.path.relpath(Path(path).resolve(), folder.resolve())
                file_kind = sniff_kind(path) if kind == "auto" else kind
                if file_kind is None or Path(path).name.startswith("."):
                    continue  # README files and the like inside an input folder
                if file_kind == "cc_paths":
                    for item in _expand_paths_list(path, base, options):
                        add(item)
                else:
                    add(InputFile(path, file_kind, name=name, **options))
    return sorted(found.values(), key=lambda f: (f.path, f.kind))


def open_input(path: str) -> BinaryIO:
    """A local file, or a URL streamed over HTTP(S) (not seekable)."""
    if is_url(path):
        request = urllib.request.Request(path, headers={"User-Agent": "kiln-reader"})
        return urllib.request.urlopen(request, timeout=URL_TIMEOUT_S)  # noqa: S310 - http(s) only
    return open(path, "rb")


def _read_bytes(path: str) -> bytes:
    with open_input(path) as fh:
        data = fh.read()
    if data[:2] == b"\x1f\x8b":  # gzip magic, whatever the suffix says
        data = gzip.decompress(data)
    return data


def read_html(item: InputFile, stats: Counter) -> Iterator[Document]:
    data = _read_bytes(item.path)
    utf8, decoded = to_utf8(data)
    meta = {
        "file": item.path,
        "content_type": "text/html",
        "charset": decoded.encoding,
        "charset_source": decoded.method,
    }
    doc = make_document("web", item.label, raw=data, meta=meta)  # id from the bytes as stored
    doc["raw"] = utf8
    yield doc


def read_book(item: InputFile, stats: Counter) -> Iterator[Document]:
    decoded = decode_text(_read_bytes(item.path))
    meta = {"file": item.path, "charset": decoded.encoding, "charset_source": decoded.method}
    yield make_document("book", item.label, text=decoded.text, meta=meta)


def read_archive(item: InputFile, stats: Counter) -> Iterator[Document]:
    with open_input(item.path) as fh:
        yield from read_warc(item.path, fh, stats, seekable=not is_url(item.path), label=item.label)


READERS = {
    "html": read_html,
    "warc": read_archive,
    "book": read_book,
    "jsonl": read_jsonl,
    "parquet": read_parquet,
    "hf": read_hf,
}


def iter_file(item: InputFile, stats: Counter) -> Iterator[Document]:
    """Documents of one input; a failure to open or read it becomes one dropped row.

    ``stats`` gets ``files``, ``documents``, ``errors`` and whatever the reader counts.
    """
    stats["files"] += 1
    try:
        for doc in READERS[item.kind](item, stats):
            stats["documents"] += 1
            yield doc
    except Exception as exc:
        log.warning("cannot read %s: %s", item.path, exc)
        stats["errors"] += 1
        stats["documents"] += 1
        yield error_row(item.kind, item.label, f"read_error:{type(exc).__name__}")


def read_file(item: InputFile, stats: Counter | None = None) -> list[Document]:
    """All documents of one input, as a list."""
    return list(iter_file(item, Counter() if stats is None else stats))


class ReadStats:
    """Reader counters per input, kept by a Ray actor while a job reads.

    Each input's counts replace any earlier report for it, so a task Ray retries is not
    counted twice.
    """

    def __init__(self) -> None:
        self.by_input: dict[str, tuple[str, dict[str, int]]] = {}

    def report(self, path: str, kind: str, counts: dict[str, int]) -> None:
        self.by_input[path] = (kind, counts)

    def totals(self) -> dict[str, dict[str, int]]:
        """Counts summed per reader kind."""
        out: dict[str, Counter] = {}
        for kind, counts in self.by_input.values():
            out.setdefault(kind, Counter()).update(counts)
        return {k: dict(sorted(v.items())) for k, v in sorted(out.items())}


def read_batch(batch: pa.Table, stats_actor: Any = None) -> Iterator[pa.Table]:
    """Ray Data batch function: InputFile rows in, tables of documents out.

    Yields a table every ROWS_PER_TABLE documents, so a large archive never sits in memory
    whole. With ``stats_actor`` (a Ray handle of :class:`ReadStats`), each input's counters
    are reported once it is read.
    """
    docs: list[Document] = []
    for row in batch.to_pylist():
        item = InputFile(**row)
        stats: Counter = Counter()
        for doc in iter_file(item, stats):
            docs.append(doc)
            if len(docs) >= ROWS_PER_TABLE:
                yield to_table(docs)
                docs = []
        if stats_actor is not None:
            import ray

            ray.get(stats_actor.report.remote(item.path, item.kind, dict(stats)))
    if docs:
        yield to_table(docs)


def file_digest(path: str) -> str:
    """sha256 of a file's bytes, recorded in the dataset manifest as its input's identity."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def input_identity(item: InputFile) -> dict[str, Any]:
    """What the manifest records of an input: checksum and size of a local file; the URL or
    dataset name otherwise (their content is not fetched twice just to hash it)."""
    out: dict[str, Any] = {"path": item.path, "kind": item.kind}
    if os.path.isfile(item.path):
        out.update(sha256=file_digest(item.path), bytes=os.path.getsize(item.path))
    return out
