"""Readers: turn input files into document rows.

Inputs are listed in the job config as paths (files, folders or glob patterns) with a kind:

- ``html``: saved web pages, one per file, plain or gzip (``.html``, ``.htm``, ``.html.gz``);
- ``warc``: WARC or ARC archives, gzip or not; each HTTP response becomes a web document and
  each WET ``conversion`` record a text document;
- ``book``: Project Gutenberg plain-text books (the extract stage removes header and footer);
- ``auto``: chosen per file from its name.

A file that cannot be read, or a record that is corrupt, becomes a dropped row with stage
``read`` and a reason, so the ledger counts it; the job carries on with the rest.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from pipeline.records import Document, make_document, mark_dropped, to_table

__all__ = ["InputFile", "discover_inputs", "file_digest", "read_batch", "read_file", "sniff_kind"]

log = logging.getLogger(__name__)

READ_STAGE = "read"
HTML_SUFFIXES = (".html", ".htm", ".html.gz", ".htm.gz", ".xhtml")
WARC_SUFFIXES = (".warc", ".warc.gz", ".arc", ".arc.gz", ".wet", ".wet.gz", ".warc.wet.gz")
BOOK_SUFFIXES = (".txt", ".txt.gz")
KINDS = ("auto", "html", "warc", "book")


@dataclass(frozen=True)
class InputFile:
    """One file to read and the reader it goes to."""

    path: str
    kind: str


def sniff_kind(path: str) -> str | None:
    """The reader for a file name, or None when kiln has no reader for it."""
    name = path.lower()
    if name.endswith(WARC_SUFFIXES):
        return "warc"
    if name.endswith(HTML_SUFFIXES):
        return "html"
    if name.endswith(BOOK_SUFFIXES):
        return "book"
    return None


def discover_inputs(specs: list[tuple[str, str]]) -> list[InputFile]:
    """Expand (path-or-glob, kind) pairs into a sorted, de-duplicated list of files.

    Raises FileNotFoundError naming the pattern when one matches nothing, so a typo in a
    config fails before any work starts.
    """
    found: dict[str, InputFile] = {}
    for pattern, kind in specs:
        matches = sorted(glob.glob(pattern, recursive=True))
        if not matches:
            raise FileNotFoundError(f"input {pattern!r} matches no file or folder")
        for match in matches:
            paths = (
                sorted(str(p) for p in Path(match).rglob("*") if p.is_file())
                if os.path.isdir(match)
                else [match]
            )
            for path in paths:
                file_kind = sniff_kind(path) if kind == "auto" else kind
                if file_kind is None or Path(path).name.startswith("."):
                    continue  # README files and the like inside an input folder
                found.setdefault(os.path.abspath(path), InputFile(os.path.abspath(path), file_kind))
    return sorted(found.values(), key=lambda f: f.path)


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as fh:
        data = fh.read()
    if data[:2] == b"\x1f\x8b":  # gzip magic, whatever the suffix says
        data = gzip.decompress(data)
    return data


def _error_row(source: str, url: str, reason: str) -> Document:
    doc = make_document(source, url, text="", meta={"file": url})
    return mark_dropped(doc, READ_STAGE, reason)


def read_html_file(path: str) -> Iterator[Document]:
    raw = _read_bytes(path)
    yield make_document("web", path, raw=raw, meta={"file": path, "content_type": "text/html"})


def read_book_file(path: str) -> Iterator[Document]:
    raw = _read_bytes(path)
    # PG plain text is UTF-8 (often with a BOM); older files may be Latin-1.
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    yield make_document("book", path, text=text, meta={"file": path})


def _clean_target_uri(uri: str | None) -> str:
    # wget writes WARC-Target-URI as <https://...>; strip the angle brackets.
    uri = (uri or "").strip()
    if uri.startswith("<") and uri.endswith(">"):
        uri = uri[1:-1]
    return uri


def read_warc_file(path: str) -> Iterator[Document]:
    """Response and conversion records of a WARC/ARC file as documents.

    Non-HTML responses are dropped with their content type as reason; revisit and request
    records are not documents and are skipped. A corrupt record ends the file with one
    ``read_error`` row: warcio cannot resynchronise inside a damaged gzip member.
    """
    from warcio.archiveiterator import ArchiveIterator

    with open(path, "rb") as fh:
        records = ArchiveIterator(fh, arc2warc=True)
        n = 0
        try:
            for record in records:
                if record.rec_type not in ("response", "conversion", "resource"):
                    continue
                n += 1
                url = _clean_target_uri(record.rec_headers.get_header("WARC-Target-URI"))
                payload = record.content_stream().read()
                meta = {
                    "file": path,
                    "warc_record_id": record.rec_headers.get_header("WARC-Record-ID"),
                    "warc_date": record.rec_headers.get_header("WARC-Date"),
                }
                if record.rec_type == "conversion":
                    text = payload.decode("utf-8", errors="replace")
                    yield make_document("warc", url, text=text, meta=meta)
                    continue
                status, content_type = None, ""
                if record.http_headers is not None:
                    status = record.http_headers.get_statuscode()
                    content_type = record.http_headers.get_header("Content-Type") or ""
                else:
                    content_type = record.rec_headers.get_header("Content-Type") or ""
                meta["content_type"] = content_type
                doc = make_document("warc", url, raw=payload, meta=meta)
                if status and not str(status).startswith("2"):
                    yield mark_dropped(doc, READ_STAGE, f"http_status:{status}")
                elif "html" not in content_type.lower():
                    kind = content_type.split(";")[0].strip().lower() or "unknown"
                    yield mark_dropped(doc, READ_STAGE, f"content_type:{kind}")
                else:
                    yield doc
        except Exception as exc:  # warcio raises several types on damaged archives
            log.warning("%s: stopped after %d records: %s", path, n, exc)
            yield _error_row("warc", f"{path}#record{n + 1}", f"read_error:{type(exc).__name__}")


READERS = {"html": read_html_file, "warc": read_warc_file, "book": read_book_file}


def read_file(item: InputFile) -> list[Document]:
    """All documents of one input file; an unreadable file becomes one dropped row."""
    try:
        return list(READERS[item.kind](item.path))
    except Exception as exc:
        log.warning("cannot read %s: %s", item.path, exc)
        return [_error_row(item.kind, item.path, f"read_error:{type(exc).__name__}")]


def read_batch(batch: pa.Table) -> pa.Table:
    """Ray Data batch function: a batch of InputFile rows in, a table of documents out."""
    docs: list[Document] = []
    for row in batch.to_pylist():
        docs.extend(read_file(InputFile(row["path"], row["kind"])))
    return to_table(docs)


def file_digest(path: str) -> str:
    """sha256 of a file's bytes, recorded in the dataset manifest as its input's identity."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
