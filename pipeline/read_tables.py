"""Readers for row-shaped inputs: JSONL and Parquet files, and Hugging Face datasets.

Each row is one document. The input's ``text_field`` names the column holding its content
(``content: text`` for plain text, ``content: html`` for a page to extract) and ``url_field``
where it came from; both may be dotted paths into nested records (``metadata.url``). Other
short scalar fields are kept in ``meta``. A row that is not valid JSON, lacks the text field
or holds no text in it (a list, a number) becomes a dropped row (``read_error:bad_json``,
``read_error:missing_field:<name>``, ``read_error:not_text:<name>``); the file goes on.

JSON may escape half of a UTF-16 surrogate pair on its own (``"\\ud83d"``, an emoji cut in
two); Python reads it into a string that cannot be written as UTF-8. Such code points become
U+FFFD, as undecodable bytes do elsewhere, and are counted (``lone_surrogates``).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pipeline.encoding import decode_text, to_utf8
from pipeline.read_warc import error_row
from pipeline.records import Document, make_document

if TYPE_CHECKING:
    from pipeline.read import InputFile

__all__ = ["read_hf", "read_jsonl", "read_parquet", "row_document"]

# meta is a str->str map carried by every row; long fields (embeddings, line lists) would
# bloat it, so only short scalars are kept.
META_MAX_FIELDS = 32
META_MAX_CHARS = 256
PARQUET_BATCH_ROWS = 1024


# A JSON escape of a surrogate code point, paired or not: only lines with one need scrubbing.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _without_surrogates(value: Any) -> tuple[Any, int]:
    """``value`` with every lone surrogate in its strings (keys too) replaced by U+FFFD, and
    how many were replaced. json.loads has already joined the pairs that were whole."""
    if isinstance(value, str):
        return _SURROGATE.subn("\ufffd", value)
    if isinstance(value, list):
        pairs = [_without_surrogates(v) for v in value]
        return [v for v, _ in pairs], sum(n for _, n in pairs)
    if isinstance(value, dict):
        out, total = {}, 0
        for k, v in value.items():
            (k, a), (v, b) = _without_surrogates(k), _without_surrogates(v)
            out[k] = v
            total += a + b
        return out, total
    return value, 0


def _get(row: dict, dotted: str) -> Any:
    node: Any = row
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _flat_meta(row: dict, skip: set[str], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in row.items():
        name = prefix + str(key)
        if name in skip:
            continue
        if isinstance(value, dict) and not prefix:  # one level of nesting, as 'outer.inner'
            out.update(_flat_meta(value, skip, name + "."))
        elif isinstance(value, (str, int, float, bool)) and len(str(value)) <= META_MAX_CHARS:
            out[name] = str(value)
        if len(out) >= META_MAX_FIELDS:
            break
    return out


def row_document(row: dict, item: InputFile, where: str, fmt: str) -> Document:
    """One row as a document (or a dropped row saying which field was missing)."""
    value = _get(row, item.text_field)
    if value is None:
        return error_row("dataset", where, f"read_error:missing_field:{item.text_field}")
    if not isinstance(value, (str, bytes)):  # str() of a list or a number is not its text
        return error_row("dataset", where, f"read_error:not_text:{item.text_field}")
    url = _get(row, item.url_field)
    url = str(url) if url else where
    meta = {
        **_flat_meta(row, {item.text_field}),
        "file": item.path,
        "format": fmt,
        "row": where.rsplit("#", 1)[-1],
    }
    if item.content == "html":
        utf8, decoded = to_utf8(value)
        meta.update(charset=decoded.encoding, charset_source=decoded.method)
        doc = make_document("web", url, raw=utf8, meta=meta)
        return doc
    text = decode_text(value).text
    return make_document("dataset", url, text=text, meta=meta)


def _open_text(path: str) -> io.TextIOBase:
    from pipeline.read import open_input

    fh = open_input(path)
    head = fh.peek(2)[:2] if hasattr(fh, "peek") else b""
    if head == b"\x1f\x8b" or path.endswith(".gz"):
        fh = gzip.GzipFile(fileobj=fh)
    # utf-8-sig: a byte-order mark at the start is not part of the first row. newline="\n":
    # JSON Lines ends a row at \n only; a bare \r is whitespace inside a row.
    return io.TextIOWrapper(fh, encoding="utf-8-sig", errors="replace", newline="\n")


def read_jsonl(item: InputFile, stats: Counter) -> Iterator[Document]:
    with _open_text(item.path) as fh:
        for n, line in enumerate(fh, start=1):
            line = line.lstrip("\ufeff")  # files joined with cat keep each one's mark
            if not line.strip():
                continue
            where = f"{item.label}#{n}"
            try:
                row = json.loads(line)
            # ValueError: JSONDecodeError, and an integer of over 4,300 digits; RecursionError:
            # nesting deeper than the interpreter's stack. Either is one bad row, not the file.
            except (ValueError, RecursionError):
                stats["errors"] += 1
                yield error_row("dataset", where, "read_error:bad_json")
                continue
            if not isinstance(row, dict):
                stats["errors"] += 1
                yield error_row("dataset", where, "read_error:not_an_object")
                continue
            if _SURROGATE_ESCAPE.search(line):
                row, replaced = _without_surrogates(row)
                if replaced:
                    stats["lone_surrogates"] += replaced
            stats["rows"] += 1
            yield row_document(row, item, where, "jsonl")


def read_parquet(item: InputFile, stats: Counter) -> Iterator[Document]:
    import pyarrow.parquet as pq

    n = 0
    with pq.ParquetFile(item.path) as pf:
        for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            for row in batch.to_pylist():
                n += 1
                stats["rows"] += 1
                yield row_document(row, item, f"{item.label}#{n}", "parquet")


def _load_hf(item: InputFile):
    import datasets

    path = item.path
    if os.path.isdir(path) and os.path.exists(os.path.join(path, "dataset_info.json")):
        loaded = datasets.load_from_disk(path)  # a folder written by save_to_disk
        if isinstance(loaded, datasets.DatasetDict):
            loaded = loaded[item.split]
        return loaded
    if os.path.isfile(path):
        builder = {"jsonl": "json", "json": "json", "parquet": "parquet", "csv": "csv"}
        ext = path.removesuffix(".gz").rsplit(".", 1)[-1].lower()
        if ext not in builder:
            raise ValueError(f"hf input {path}: no dataset builder for .{ext} files")
        return datasets.load_dataset(builder[ext], data_files=path, split=item.split)
    if os.path.isdir(path):
        return datasets.load_dataset(path, name=item.hf_config, split=item.split)
    # A hub name: stream it rather than download the whole dataset before the first row.
    return datasets.load_dataset(path, name=item.hf_config, split=item.split, streaming=True)


def read_hf(item: InputFile, stats: Counter) -> Iterator[Document]:
    for n, row in enumerate(_load_hf(item), start=1):
        stats["rows"] += 1
        yield row_document(row, item, f"{item.label}#{n}", "hf")
