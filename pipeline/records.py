"""The document record that flows between pipeline stages, and its Arrow schema.

A document is one row. Every stage receives rows and returns the same rows: a stage that
rejects a document does not delete it but sets ``drop_stage`` and ``drop_reason`` and trims its
text to a short sample. Later stages pass such rows through untouched, so at the end of a run

    documents in = documents kept + documents dropped (by stage and reason)

holds by construction and the rejects can be written out beside the kept documents.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

__all__ = [
    "DOCUMENT_SCHEMA",
    "REJECT_SAMPLE_CHARS",
    "Document",
    "document_id",
    "from_table",
    "is_kept",
    "make_document",
    "mark_dropped",
    "to_table",
]

# A document is a plain dict with these keys; see make_document for their meaning.
Document = dict[str, Any]

# How much of a rejected document's text is kept for inspection in the rejects output.
REJECT_SAMPLE_CHARS = 500

DOCUMENT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("url", pa.string()),
        pa.field("text", pa.large_string()),
        # Undecoded payload (HTML bytes) waiting for the extract stage; None afterwards.
        pa.field("raw", pa.large_binary()),
        # Free-form metadata, all values as strings so every block shares one schema.
        pa.field("meta", pa.map_(pa.string(), pa.string())),
        pa.field("drop_stage", pa.string()),
        pa.field("drop_reason", pa.string()),
    ]
)


def document_id(source: str, url: str, content: bytes | str) -> str:
    """A stable id from where a document came from and what it holds.

    The same capture read twice gets the same id; a changed page at the same URL gets a new one.
    """
    if isinstance(content, str):
        content = content.encode("utf-8", errors="surrogatepass")
    h = hashlib.sha1()
    for part in (source.encode(), b"\0", url.encode("utf-8", errors="replace"), b"\0", content):
        h.update(part)
    return h.hexdigest()[:20]


def make_document(
    source: str,
    url: str,
    *,
    text: str | None = None,
    raw: bytes | None = None,
    meta: dict[str, Any] | None = None,
    doc_id: str | None = None,
) -> Document:
    """Build a document row.

    ``source`` names the kind of input (``web``, ``warc``, ``book``, ...), ``url`` is the URL or
    the file path it came from, ``text`` the plain text (empty until extraction for HTML),
    ``raw`` the undecoded payload, ``meta`` strings such as title, language and fetch time.
    """
    content = raw if raw is not None else (text or "")
    return {
        "id": doc_id or document_id(source, url, content),
        "source": source,
        "url": url,
        "text": text or "",
        "raw": raw,
        "meta": {k: str(v) for k, v in (meta or {}).items() if v is not None},
        "drop_stage": None,
        "drop_reason": None,
    }


def is_kept(doc: Document) -> bool:
    """True while no stage has rejected the document."""
    return doc.get("drop_reason") is None


def mark_dropped(doc: Document, stage: str, reason: str) -> Document:
    """Reject a document: record who and why, keep a short text sample, free the payload."""
    doc["drop_stage"] = stage
    doc["drop_reason"] = reason
    doc["text"] = (doc.get("text") or "")[:REJECT_SAMPLE_CHARS]
    doc["raw"] = None
    return doc


def to_table(docs: Iterable[Document]) -> pa.Table:
    """Rows to an Arrow table with the document schema (meta dicts become Arrow maps)."""
    rows = []
    for d in docs:
        row = {name: d.get(name) for name in DOCUMENT_SCHEMA.names}
        row["meta"] = list((row["meta"] or {}).items())
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=DOCUMENT_SCHEMA)


def from_table(table: pa.Table) -> list[Document]:
    """An Arrow table (or a Ray batch of one) back to document rows."""
    docs = table.to_pylist()
    for d in docs:
        meta = d.get("meta")
        if isinstance(meta, list):
            d["meta"] = dict(meta)
        elif meta is None:
            d["meta"] = {}
    return docs
