"""Reading WARC, ARC and WET archives, gzip or not, into document rows.

- ``response`` records (and ARC records, converted) whose HTTP status is 2xx and whose content
  type is HTML become web documents; their payload is de-chunked, decompressed and stored as
  UTF-8 (pipeline/encoding.py) for the extract stage. Other statuses and content types become
  dropped rows (``http_status:<code>``, ``content_type:<type>``).
- ``resource`` records are treated like responses without HTTP headers.
- ``conversion`` records (WET) become text documents.
- ``revisit`` records point at an earlier capture of the same payload; they are counted in the
  reader's stats, never read as pages. ``request``, ``metadata`` (WAT) and ``warcinfo``
  records are counted too.
- wget writes ``WARC-Target-URI: <https://...>``; the angle brackets are removed.
- A truncated record (payload shorter than its HTTP Content-Length, or a compressed body that
  ends early) and a corrupt record (one warcio cannot parse) become dropped rows
  ``read_error:truncated`` / ``read_error:<Exception>``. Reading then resumes at the next record
  start found in the file (the next gzip member, or the next ``WARC/1.x`` line of an
  uncompressed file), so one bad record does not cost the rest of the file.
- A file that ends inside a record (a download or copy cut short) loses no record silently:
  warcio stops quietly on a gzip member that ends early, or yields the part it could read, so
  each record is checked once read (its gzip member finished, its WARC Content-Length bytes
  all there, its headers complete), and bytes left after the last record are looked at. The
  cut record becomes ``read_error:truncated``; records before it are read as usual. A gzip
  member that does not inflate is ``read_error:CorruptRecord``. Only what a record *is* gets
  counted in ``records:<type>``: a cut record is counted as an error instead.
"""

from __future__ import annotations

import logging
import mmap
import re
import zlib
from collections import Counter
from collections.abc import Iterator
from typing import BinaryIO

from pipeline.encoding import decode_text, to_utf8
from pipeline.records import Document, make_document, mark_dropped

__all__ = ["READ_STAGE", "clean_target_uri", "error_row", "read_warc"]

log = logging.getLogger(__name__)

READ_STAGE = "read"
GZIP_MAGIC = b"\x1f\x8b\x08"
# An uncompressed record starts on its own line with the version; ARC v1 records start with
# "<url> <ip> <14-digit date> ...".
_WARC_START = re.compile(rb"(?:^|\n)(WARC/1\.\d)\r?\n")
_ARC_START = re.compile(rb"^\S+ \S+ \d{14} ")
_HTML_SNIFF = re.compile(rb"^\s*(<!--.*?-->\s*)*<(!doctype\s+html|html|head|body)\b", re.I | re.S)
_PAGE_RECORDS = ("response", "resource")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_CONTENT_LENGTH = re.compile(rb"(?im)^content-length:[ \t]*(\d+)[ \t]*\r?$")
# Bytes of a stream that cannot seek kept for a second look at where it ends.
_KEEP_TAIL = 1 << 20
# How much of a corrupt record's error message goes into the log.
_LOG_EXCERPT = 80


def clean_target_uri(uri: str | None) -> str:
    """A WARC-Target-URI without the angle brackets wget puts around it."""
    uri = (uri or "").strip()
    if uri.startswith("<") and uri.endswith(">"):
        uri = uri[1:-1].strip()
    return uri


def error_row(source: str, where: str, reason: str, meta: dict | None = None) -> Document:
    """A dropped row standing for something that could not be read."""
    doc = make_document(source, where, text="", meta={"file": where, **(meta or {})})
    return mark_dropped(doc, READ_STAGE, reason)


class TruncatedRecord(Exception):
    """A record's payload ends before its declared length."""


class CorruptRecord(Exception):
    """A record whose gzip member does not inflate."""

    def __init__(self, offset: int) -> None:
        super().__init__(f"gzip member at byte {offset} does not inflate")
        self.offset = offset


class _TailKeeper:
    """A stream that cannot seek, with how far it has been read, whether it has ended, and
    its last bytes, so the end of an archive cut short can be looked at again."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh, self.pos, self.ended = fh, 0, False
        self.head = b""
        self.tail = bytearray()

    def read(self, size: int | None = -1) -> bytes:
        data = self.fh.read() if size is None or size < 0 else self.fh.read(size)
        if not data and size != 0:
            self.ended = True
        if len(self.head) < 2:
            self.head += data[:2]
        self.pos += len(data)
        self.tail += data
        if len(self.tail) > 2 * _KEEP_TAIL:
            del self.tail[:-_KEEP_TAIL]
        return data

    def tell(self) -> int:
        return self.pos


def _excerpt(exc: Exception) -> str:
    """A short, printable form of an exception whose message may carry raw record bytes."""
    text = str(exc)
    short = repr(text[:_LOG_EXCERPT])
    return f"{type(exc).__name__}: {short}{'...' if len(text) > _LOG_EXCERPT else ''}"


def _gzip_member(buf, start: int) -> tuple[str, int]:
    """Whether the gzip member at ``start`` of ``buf`` is ``complete`` (and where it ends),
    ``cut`` by the end of ``buf``, or ``corrupt``."""
    d = zlib.decompressobj(31)
    pos, pending = start, b""
    try:
        while not d.eof:
            if not pending:
                if pos >= len(buf):
                    return "cut", len(buf)
                pending = bytes(buf[pos : pos + 65536])
                pos += len(pending)
            d.decompress(pending, 1 << 20)  # output is only counted, never kept
            pending = d.unconsumed_tail
    except zlib.error:
        return "corrupt", start
    return "complete", pos - len(d.unused_data) - len(d.unconsumed_tail)


def _plain_record(buf, start: int) -> str:
    """Whether the uncompressed record at ``start`` of ``buf`` is ``cut`` by the end of ``buf``
    (header block without its blank line, or fewer bytes than its Content-Length) or not."""
    while buf[start : start + 1] in (b"\r", b"\n"):
        start += 1
    end = _HEADER_END.search(buf, start)
    if end is None:
        return "cut"
    m = _CONTENT_LENGTH.search(bytes(buf[start : end.end()]))
    if m and end.end() + int(m.group(1)) > len(buf):
        return "cut"
    return "complete"


def _record_state(view: tuple | None, start: int, gzipped: bool) -> str | None:
    """``complete``, ``cut`` or ``corrupt`` for the record at file offset ``start``; None when
    those bytes are no longer at hand (a long stream) or ``start`` is not a gzip member."""
    if view is None:
        return None
    buf, base = view
    at = start - base
    if at < 0 or at > len(buf):
        return None
    if not gzipped:
        return _plain_record(buf, at)
    if buf[at : at + 3] != GZIP_MAGIC:
        return "cut" if at >= len(buf) else None
    return _gzip_member(buf, at)[0]


def _leftover_state(view: tuple | None, start: int, gzipped: bool) -> str:
    """What the bytes from ``start`` to the end, where warcio found no record, are: ``cut`` or
    ``corrupt`` records, or ``complete`` (empty gzip members, which hold no record)."""
    if view is None or not gzipped:
        return "cut"
    buf, base = view
    at = start - base
    if at < 0:
        return "cut"
    while at < len(buf):
        if buf[at : at + 3] != GZIP_MAGIC:
            return "cut"
        state, end = _gzip_member(buf, at)
        if state != "complete":
            return state
        at = end
    return "complete"


def _dechunk(raw: bytes) -> bytes:
    """Body of a chunked transfer encoding; raises TruncatedRecord when it ends early."""
    out, pos = bytearray(), 0
    while True:
        eol = raw.find(b"\r\n", pos)
        if eol < 0:
            raise TruncatedRecord("chunked body ends inside a chunk header")
        size_field = raw[pos:eol].split(b";", 1)[0].strip()
        try:
            size = int(size_field, 16)
        except ValueError:
            raise TruncatedRecord(f"bad chunk size {size_field[:20]!r}") from None
        if size == 0:
            return bytes(out)
        start = eol + 2
        if start + size > len(raw):
            raise TruncatedRecord("chunked body ends inside a chunk")
        out += raw[start : start + size]
        pos = start + size + 2


def _decompress(raw: bytes, encoding: str) -> bytes:
    """Undo gzip/deflate content encoding; a body that is not compressed at all (servers and
    crawlers that store decoded bodies under the original header) is returned as is."""
    if encoding == "gzip" and not raw.startswith(b"\x1f\x8b"):
        return raw
    wbits = 47 if encoding == "gzip" else 15  # 32+15: gzip or zlib header; 15: zlib
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(raw) + d.flush()
    except zlib.error:
        if encoding == "deflate":  # some servers send raw deflate without the zlib header
            d = zlib.decompressobj(-15)
            out = d.decompress(raw) + d.flush()
        else:
            raise TruncatedRecord("compressed body is corrupt") from None
    if not d.eof:
        raise TruncatedRecord("compressed body ends early")
    return out


def _payload(record) -> bytes:
    """The record's body as the server meant it: de-chunked and decompressed."""
    raw = record.raw_stream.read()
    headers = record.http_headers
    if headers is None:
        return raw
    status = str(headers.get_statuscode() or "")
    chunked = (headers.get_header("Transfer-Encoding") or "").lower() == "chunked"
    length = headers.get_header("Content-Length")
    if chunked:
        try:
            raw = _dechunk(raw)
        except TruncatedRecord:
            # Many crawlers de-chunk the body but keep the header; only a body that looks
            # chunked (hex size, CRLF) is malformed.
            if re.match(rb"^[0-9a-fA-F]+\s*(;[^\r\n]*)?\r\n", raw):
                raise
    elif status.startswith("2") and length and length.strip().isdigit() and len(raw) < int(length):
        raise TruncatedRecord(f"payload has {len(raw)} of {length} bytes")
    encoding = (headers.get_header("Content-Encoding") or "").strip().lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        raw = _decompress(raw, "deflate" if encoding == "deflate" else "gzip")
    return raw


def _content_type(record) -> str:
    if record.http_headers is not None:
        return record.http_headers.get_header("Content-Type") or ""
    return record.rec_headers.get_header("Content-Type") or ""


def _page(record, url: str, meta: dict, stats: Counter) -> Document:
    payload = _payload(record)
    content_type = _content_type(record)
    meta["content_type"] = content_type
    status = record.http_headers.get_statuscode() if record.http_headers is not None else None
    if status:
        meta["http_status"] = status
    truncated = record.rec_headers.get_header("WARC-Truncated")
    if truncated:  # cut by the crawler on purpose (length or time limit): usable, flagged
        meta["warc_truncated"] = truncated
        stats["records_cut_by_crawler"] += 1
    mime = content_type.split(";")[0].strip().lower()
    if not mime and _HTML_SNIFF.match(payload[:1024]):
        mime = "text/html"
    if status and not str(status).startswith("2"):
        return mark_dropped(
            make_document("warc", url, raw=payload, meta=meta), READ_STAGE, f"http_status:{status}"
        )
    if "html" not in mime:
        return mark_dropped(
            make_document("warc", url, raw=payload, meta=meta),
            READ_STAGE,
            f"content_type:{mime or 'unknown'}",
        )
    utf8, decoded = to_utf8(payload, content_type)
    meta["charset"] = decoded.encoding
    meta["charset_source"] = decoded.method
    # The id is derived from the bytes as captured, so it does not move if decoding improves.
    doc = make_document("warc", url, raw=payload, meta=meta)
    doc["raw"] = utf8
    return doc


def _conversion(record, url: str, meta: dict) -> Document:
    payload = record.raw_stream.read()
    decoded = decode_text(payload, record.rec_headers.get_header("Content-Type"))
    language = record.rec_headers.get_header("WARC-Identified-Content-Language")
    if language:
        meta["warc_language"] = language
    return make_document("warc", url, text=decoded.text, meta=meta)


def _next_record_start(mm: mmap.mmap, after: int, gzipped: bool) -> int | None:
    """Offset of the first plausible record start beyond ``after``, or None."""
    if not gzipped:
        m = _WARC_START.search(mm, after)
        return None if m is None else m.start(1)
    pos = after
    while True:
        pos = mm.find(GZIP_MAGIC, pos)
        if pos < 0:
            return None
        try:
            head = zlib.decompressobj(31).decompress(mm[pos : pos + 4096], 512)
        except zlib.error:
            head = b""
        head = head.lstrip(b"\r\n")
        if head.startswith(b"WARC/1.") or _ARC_START.match(head):
            return pos
        pos += 1


def _is_cut(records, record, view: tuple | None, gzipped: bool, at_end: bool) -> bool:
    """Whether ``record``, read to its end, is cut short: the file ended inside it, or its gzip
    member ended before its WARC Content-Length. Raises CorruptRecord when its gzip member
    does not inflate."""
    decompressor = getattr(records.reader, "decompressor", None)
    if decompressor is not None and not getattr(decompressor, "eof", True):
        # The record's gzip member has not ended: cut by the end of the file, corrupt, or a
        # member holding more records (not chunked, which warcio reports itself).
        start = records.get_record_offset()
        state = _record_state(view, start, True)
        if state == "corrupt":
            raise CorruptRecord(start)
        return state == "cut" or (state is None and at_end)
    if getattr(record.raw_stream, "limit", 0) > 0:  # fewer bytes than its WARC Content-Length
        return True
    declared = (record.rec_headers.get_header("Content-Length") or "").strip()
    # Uncompressed, a header block cut short has no (or half a) Content-Length line.
    return decompressor is None and record.format == "warc" and not declared.isdigit()


def read_warc(
    path: str, fh: BinaryIO, stats: Counter, *, seekable: bool, label: str | None = None
) -> Iterator[Document]:
    """Documents of one archive opened as ``fh``; ``stats`` gets a count per record type,
    revisits, errors and resyncs. Corrupt regions are skipped only when ``fh`` can seek.
    ``label`` names the archive in error rows (default: ``path``)."""
    label = label or path
    from warcio.archiveiterator import ArchiveIterator

    mm = None
    size = 0
    stream: BinaryIO | _TailKeeper = fh
    if seekable:
        fh.seek(0)
        gzipped = fh.read(2) == b"\x1f\x8b"
        size = fh.seek(0, 2)
        fh.seek(0)
    else:
        stream = keeper = _TailKeeper(fh)

    def is_gzipped() -> bool:
        return gzipped if seekable else keeper.head[:2] == b"\x1f\x8b"

    def view() -> tuple | None:
        """The archive's bytes for a second look, and the offset of the first of them."""
        nonlocal mm
        if not seekable:
            return keeper.tail, keeper.pos - len(keeper.tail)
        if size == 0:
            return None
        if mm is None:
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        return mm, 0

    def at_end() -> bool:
        return fh.tell() >= size if seekable else keeper.ended

    def cut_row(where: int, what: str, meta: dict | None = None) -> Document:
        stats["errors"] += 1
        log.info("%s: record at byte %d is cut short (%s)", path, where, what)
        return error_row(
            "warc",
            f"{label}#offset={where}",
            "read_error:truncated",
            {**(meta or {}), "offset": where},
        )

    offset = 0
    yielded_since_restart = True
    try:
        while True:
            if seekable:
                fh.seek(offset)
            records = ArchiveIterator(stream, arc2warc=True)
            try:
                for record in records:
                    yielded_since_restart = True
                    rtype = record.rec_type
                    url = clean_target_uri(record.rec_headers.get_header("WARC-Target-URI"))
                    meta = {
                        "file": path,
                        "warc_record_id": record.rec_headers.get_header("WARC-Record-ID"),
                        "warc_date": record.rec_headers.get_header("WARC-Date"),
                    }
                    doc, truncated = None, None
                    try:
                        if rtype == "conversion":
                            doc = _conversion(record, url, meta)
                        elif rtype in _PAGE_RECORDS:
                            doc = _page(record, url, meta, stats)
                    except TruncatedRecord as exc:
                        truncated = exc
                    records.read_to_end()  # so that the check below sees the whole record
                    if _is_cut(records, record, view(), is_gzipped(), at_end()):
                        where = records.get_record_offset()
                        yield cut_row(where, f"{rtype} {url}", {**meta, "warc_target_uri": url})
                        continue
                    stats[f"records:{rtype}"] += 1
                    if rtype == "revisit":
                        stats["revisits"] += 1
                    elif truncated is not None:
                        stats["errors"] += 1
                        log.info("%s: truncated record %s: %s", path, url, truncated)
                        yield error_row("warc", url or label, "read_error:truncated", meta)
                    elif doc is not None:
                        yield doc
                # warcio ends quietly on a gzip member too short to give a line of text.
                end = records.offset
                if stream.tell() > end:
                    state = _leftover_state(view(), end, is_gzipped())
                    if state == "cut":
                        yield cut_row(end, "no record could be read from it")
                    elif state == "corrupt":
                        raise CorruptRecord(end)
                return
            except Exception as exc:  # warcio raises several types on damaged archives
                where = exc.offset if isinstance(exc, CorruptRecord) else records.offset
                cut = not isinstance(exc, CorruptRecord) and (
                    _record_state(view(), where, is_gzipped()) == "cut"
                )
                if cut:  # warcio fails on headers that the end of the file cut short
                    yield cut_row(where, _excerpt(exc))
                    return
                if yielded_since_restart:  # a new damaged region, not the same one again
                    stats["errors"] += 1
                    log.warning("%s: corrupt record at byte %d: %s", path, where, _excerpt(exc))
                    yield error_row(
                        "warc",
                        f"{label}#offset={where}",
                        f"read_error:{type(exc).__name__}",
                        {"offset": where},
                    )
                if not seekable:
                    return
                nxt = _next_record_start(view()[0], max(where, offset) + 1, gzipped)
                if nxt is None:
                    return
                stats["resyncs"] += 1
                offset, yielded_since_restart = nxt, False
    finally:
        if mm is not None:
            mm.close()
