"""Readers on real input: the bundled sample, every WARC file and book of the shared corpus,
Common Crawl path lists, JSONL, Parquet and Hugging Face datasets."""

from __future__ import annotations

import gzip
import io
import json
import threading
import zlib
from collections import Counter
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.gutenberg import strip_gutenberg
from pipeline.read import (
    InputFile,
    ReadStats,
    discover_inputs,
    read_batch,
    read_file,
    sniff_kind,
)
from pipeline.records import from_table, is_kept, to_table
from tests.helpers import CORPUS, SAMPLE, need_corpus


def test_discover_inputs_expands_folders_and_skips_readmes():
    files = discover_inputs([(str(SAMPLE), "auto")])
    kinds = Counter(f.kind for f in files)
    assert kinds == {"html": 27, "book": 11, "warc": 1}
    assert not any(f.path.endswith(".md") for f in files)
    assert files == sorted(files, key=lambda f: f.path)


def test_discover_inputs_names_a_pattern_that_matches_nothing():
    with pytest.raises(FileNotFoundError, match="no-such-folder"):
        discover_inputs([(str(SAMPLE / "no-such-folder"), "auto")])


def test_html_file_becomes_one_web_document_with_utf8_bytes():
    path = SAMPLE / "web" / "flowfx.de.tmux.html.gz"
    [doc] = read_file(InputFile(str(path), "html"))
    assert doc["source"] == "web"
    assert doc["raw"].lstrip().lower().startswith(b"<!doctype html")  # gunzipped
    assert doc["meta"]["charset"] == "utf-8"
    assert is_kept(doc)
    # The id is stable: reading the same file twice gives the same id.
    assert read_file(InputFile(str(path), "html"))[0]["id"] == doc["id"]


def test_a_folder_of_plain_html_files_reads_like_the_gzip_ones(tmp_path):
    folder = tmp_path / "pages"
    (folder / "nested").mkdir(parents=True)
    sources = {
        SAMPLE / "web" / "flowfx.de.tmux.html.gz": folder / "tmux.html",
        SAMPLE / "web" / "anarc.at.cdpath.html.gz": folder / "nested" / "cdpath.htm",
    }
    (folder / "README.md").write_text("not a page")
    # A windows-1252 page from the shared corpus, where present: decoded, not mangled.
    cp1252 = CORPUS / "web" / "trafilatura" / "auto-presse.de-minisuv.html.gz"
    if cp1252.exists():
        sources[cp1252] = folder / "auto.html"
    for gz_path, plain in sources.items():
        plain.write_bytes(gzip.decompress(gz_path.read_bytes()))

    files = discover_inputs([(str(folder), "auto")])
    assert [f.kind for f in files] == ["html"] * len(sources)
    assert sorted(Path(f.path).name for f in files) == sorted(p.name for p in sources.values())
    by_name = {Path(f.path).name: f for f in files}
    for gz_path, plain in sources.items():
        stats = Counter()
        [doc] = read_file(by_name[plain.name], stats)
        [from_gz] = read_file(InputFile(str(gz_path), "html"))
        assert doc["source"] == "web" and is_kept(doc) and stats["errors"] == 0
        assert doc["url"] == str(plain.relative_to(tmp_path))  # named below the folder given
        assert doc["raw"] == from_gz["raw"]  # the same UTF-8 bytes as the gzip copy
        assert doc["meta"]["charset"] == from_gz["meta"]["charset"]
    if cp1252.exists():
        [auto] = read_file(by_name["auto.html"])
        assert auto["meta"]["charset"] == "cp1252"
        assert "für".encode() in auto["raw"]


def test_sample_warc_yields_the_wikipedia_capture():
    [doc] = read_file(InputFile(str(SAMPLE / "warc" / "whirlwind.warc.gz"), "warc"))
    assert doc["url"] == "https://an.wikipedia.org/wiki/Escopete"
    assert doc["meta"]["content_type"].startswith("text/html")
    assert b"Escopete" in doc["raw"]


def test_book_is_read_as_text():
    [doc] = read_file(InputFile(str(SAMPLE / "books" / "pg35_The_Time_Machine.txt"), "book"))
    assert doc["source"] == "book"
    assert "Time Traveller" in doc["text"]
    assert not doc["text"].startswith("\ufeff")


def test_unreadable_file_is_a_counted_rejection_not_a_crash(tmp_path):
    missing = tmp_path / "gone.warc.gz"
    stats = Counter()
    [row] = read_file(InputFile(str(missing), "warc"), stats)
    assert row["drop_stage"] == "read"
    assert row["drop_reason"].startswith("read_error:")
    assert stats["errors"] == 1


# Every WARC/ARC/WET/WAT file of the corpus: documents kept, rejected by reason, and the
# records that are not documents (revisits) or could not be read (errors).
WARC_EXPECTED = {
    "commoncrawl_whirlwind/whirlwind.warc.gz": (1, {}, 0, 0),
    "commoncrawl_whirlwind/whirlwind.warc.wet": (1, {}, 0, 0),
    "commoncrawl_whirlwind/whirlwind.warc.wet.gz": (1, {}, 0, 0),
    "commoncrawl_whirlwind/whirlwind.warc.wat.gz": (0, {}, 0, 0),
    "dolma/sample-0000.warc.gz": (22, {"content_type:text/plain": 2}, 0, 0),
    "dolma/sample-0001.warc.gz": (15, {"content_type:text/plain": 2}, 0, 0),
    "pywb/dupes.warc.gz": (
        1,
        {"http_status:302": 1, "content_type:application/x-javascript": 1},
        9,
        0,
    ),
    "pywb/example-url-agnostic-orig.warc.gz": (1, {}, 0, 0),
    "pywb/example-url-agnostic-revisit.warc.gz": (0, {}, 1, 0),
    "pywb/example-wget-1-14.warc.gz": (1, {"content_type:text/plain": 3}, 0, 0),
    "pywb/example-wpull.warc.gz": (1, {"content_type:text/plain": 1}, 0, 0),
    "pywb/iana.warc.gz": (16, None, 123, 0),
    "warcio/example-bad-non-chunked.warc.gz": (0, {"read_error:ArchiveLoadFailed": 1}, 0, 1),
    "warcio/example-digest.warc": (0, {}, 0, 0),
    "warcio/example-iana.org-chunked.warc": (1, {}, 0, 0),
    "warcio/example-resource.warc.gz": (1, {}, 0, 0),
    "warcio/example-space-in-target-uri.warc.gz": (0, {"content_type:image/png": 1}, 0, 0),
    "warcio/example-trunc.warc": (0, {"read_error:truncated": 1}, 0, 1),
    "warcio/example-wget-bad-target-uri.warc.gz": (1, {"content_type:text/plain": 2}, 0, 0),
    "warcio/example-wrong-chunks.warc.gz": (
        0,
        {"read_error:truncated": 1, "read_error:ArchiveLoadFailed": 1},
        0,
        2,
    ),
    "warcio/example.arc.gz": (1, {}, 0, 0),
    "warcio/example.warc": (1, {}, 1, 0),
    "warcio/example.warc.gz": (1, {}, 1, 0),
    "warcio/post-test.warc.gz": (0, {"content_type:application/json": 3}, 0, 0),
}


@pytest.mark.parametrize("name", sorted(WARC_EXPECTED))
def test_corpus_warc_files(name):
    path = need_corpus("warc", name)
    stats = Counter()
    docs = read_file(InputFile(str(path), sniff_kind(str(path))), stats)
    kept = [d for d in docs if is_kept(d)]
    rejected = Counter(d["drop_reason"] for d in docs if not is_kept(d))
    n_kept, reasons, revisits, errors = WARC_EXPECTED[name]
    assert len(kept) == n_kept
    if reasons is not None:
        assert dict(rejected) == reasons
    assert stats["revisits"] == revisits
    assert stats["errors"] == errors
    # wget writes target URIs in angle brackets; they must come out clean.
    assert all(not d["url"].startswith("<") for d in docs)
    for d in kept:
        if d["raw"] is not None:
            d["raw"].decode("utf-8")  # stored as UTF-8 whatever the page's charset


def test_every_corpus_archive_is_covered_and_reads():
    folder = need_corpus("warc")
    archives = {
        str(p.relative_to(folder)) for p in folder.rglob("*") if sniff_kind(str(p)) == "warc"
    }
    assert archives == set(WARC_EXPECTED)  # .cdxj files are indexes, not archives
    assert all(sniff_kind(str(p)) is None for p in folder.rglob("*.cdxj"))


def _gzip_warc(bodies: list[bytes]) -> bytes:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    out = io.BytesIO()
    writer = WARCWriter(out, gzip=True)
    for i, body in enumerate(bodies):
        http = StatusAndHeaders("200 OK", [("Content-Type", "text/html")], protocol="HTTP/1.1")
        writer.write_record(
            writer.create_warc_record(
                f"http://example.com/{i}", "response", payload=io.BytesIO(body), http_headers=http
            )
        )
    return out.getvalue()


def test_a_corrupt_record_in_the_middle_costs_only_that_record(tmp_path):
    bodies = [f"<html><body>page {i} {'x' * 2000}</body></html>".encode() for i in range(3)]
    data = bytearray(_gzip_warc(bodies))
    members = [i for i in range(len(data)) if data[i : i + 3] == b"\x1f\x8b\x08"]
    middle = members[1]
    data[middle + 40 : middle + 60] = b"\xff" * 20  # damage the second record's deflate data
    path = tmp_path / "damaged.warc.gz"
    path.write_bytes(bytes(data))
    stats = Counter()
    docs = read_file(InputFile(str(path), "warc"), stats)
    kept = [d["url"] for d in docs if is_kept(d)]
    assert kept == ["http://example.com/0", "http://example.com/2"]
    assert stats["errors"] == 1 and stats["resyncs"] == 1
    [error] = [d for d in docs if not is_kept(d)]
    assert error["drop_reason"].startswith("read_error:")


def test_a_mangled_record_in_an_uncompressed_file_is_skipped(tmp_path):
    bodies = [f"<html><body>page {i}</body></html>".encode() for i in range(3)]
    plain = gzip.decompress(_gzip_warc(bodies))
    first, second = [i for i in range(len(plain)) if plain.startswith(b"WARC/1.", i)][1:3]
    mangled = plain[:first] + b"GARBAGE LINE\r\n" + plain[first + 10 : second] + plain[second:]
    path = tmp_path / "mangled.warc"
    path.write_bytes(mangled)
    stats = Counter()
    docs = read_file(InputFile(str(path), "warc"), stats)
    assert [d["url"] for d in docs if is_kept(d)] == [
        "http://example.com/0",
        "http://example.com/2",
    ]
    assert stats["errors"] == 1


def test_a_corrupt_record_is_logged_as_a_short_printable_excerpt(tmp_path, caplog):
    bodies = [f"<html><body>page {i} {'x' * 2000}</body></html>".encode() for i in range(3)]
    data = bytearray(_gzip_warc(bodies))
    middle = [i for i in range(len(data)) if data[i : i + 3] == b"\x1f\x8b\x08"][1]
    data[middle + 40 : middle + 60] = b"\xff" * 20
    path = tmp_path / "damaged.warc.gz"
    path.write_bytes(bytes(data))
    with caplog.at_level("WARNING", logger="pipeline.read_warc"):
        read_file(InputFile(str(path), "warc"))
    [message] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "ArchiveLoadFailed" in message and message.isprintable()
    assert len(message) < len(str(path)) + 100 + 4 * 80  # the repr of 80 characters at most


# --- archives cut short: a file that ends inside a record --------------------------------------
# The cut record is counted as read_error:truncated, the records before it are read as usual,
# and every record that entered is accounted for: records in = records read + errors.


def _records(data: bytes) -> list[tuple[int, str, str]]:
    """(offset, type, WARC-Record-ID) of each record of a whole archive, as warcio finds them."""
    from warcio.archiveiterator import ArchiveIterator

    out = []
    records = ArchiveIterator(io.BytesIO(data), arc2warc=True)
    for record in records:
        record_id = record.rec_headers.get_header("WARC-Record-ID")
        out.append((records.get_record_offset(), record.rec_type, record_id))
    return out


def _uncompressed_cut(data: bytes, start: int, where: str) -> int:
    """How many bytes of the record at ``start`` (uncompressed) reach into ``where``."""
    warc_end = data.index(b"\r\n\r\n", start) + 4
    http_end = data.index(b"\r\n\r\n", warc_end) + 4
    end = data.find(b"WARC/1.", http_end)
    return {
        "warc_headers": 30,
        "http_headers": warc_end - start + 20,
        "payload": http_end - start + 100,
        "record_end": (len(data) if end < 0 else end) - start - 2,  # in the blank lines after it
    }[where]


def _compressed_cut(member: bytes, uncompressed: int) -> int:
    """The fewest bytes of a gzip member that inflate to more than ``uncompressed`` bytes."""
    d = zlib.decompressobj(31)
    out = 0
    for n in range(len(member)):
        out += len(d.decompress(member[n : n + 1]))
        if out > uncompressed:
            return n + 1
    raise AssertionError("member too short")


class _Unseekable(io.RawIOBase):
    """A stream read once, like an archive fetched over HTTP."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._data.read(size)


CUT_ARCHIVES = ["dolma/sample-0000.warc.gz", "pywb/iana.warc.gz"]
# Where in a response record the file ends: whole bytes into its gzip member (as a newcomer
# cutting the file would), or a place in the record's text (WARC headers, HTTP headers,
# payload, the blank lines after it), found in the inflated text and cut there in the gzip
# member or the uncompressed file; or in the gzip trailer, the record's text all there.
CUT_PLACES = [
    *[("gzip", n) for n in (10, 50, 400)],
    *[
        (kind, place)
        for kind in ("gzip", "plain")
        for place in ("warc_headers", "http_headers", "payload", "record_end")
    ],
    ("gzip", "gzip_trailer"),
]


@pytest.mark.parametrize("seekable", [True, False], ids=["file", "stream"])
@pytest.mark.parametrize(("kind", "place"), CUT_PLACES, ids=lambda v: str(v))
@pytest.mark.parametrize("name", CUT_ARCHIVES)
def test_an_archive_cut_inside_a_record_loses_no_record(tmp_path, name, kind, place, seekable):
    from pipeline.read_warc import read_warc

    whole = need_corpus("warc", name).read_bytes()
    if kind == "plain":
        whole = gzip.decompress(whole)
    records = _records(whole)
    index = [i for i, (_, rtype, _) in enumerate(records) if rtype == "response"][3]
    start = records[index][0]
    if kind == "plain":
        cut = start + _uncompressed_cut(whole, start, place)
    else:
        member = whole[start : records[index + 1][0]]
        if place == "gzip_trailer":
            cut = start + len(member) - 4
        elif isinstance(place, int):
            cut = start + place
        else:
            text = gzip.decompress(member)
            cut = start + _compressed_cut(member, _uncompressed_cut(text, 0, place))
    data = whole[:cut]

    stats = Counter()
    if seekable:
        path = tmp_path / Path(name).name.replace(".gz", ".gz" if kind == "gzip" else "")
        path.write_bytes(data)
        docs = read_file(InputFile(str(path), "warc"), stats)
    else:
        docs = list(read_warc(name, _Unseekable(data), stats, seekable=False))

    before = {record_id for _, _, record_id in records[:index]}
    full = read_file(InputFile(str(need_corpus("warc", name)), "warc"))
    if kind == "plain" and place == "record_end":
        # Only blank lines between records are missing: the record is whole, and read.
        assert stats["errors"] == 0
        assert sum(n for key, n in stats.items() if key.startswith("records:")) == index + 1
        before.add(records[index][2])
        assert [d["id"] for d in docs] == [
            d["id"] for d in full if d["meta"].get("warc_record_id") in before
        ]
        return
    # The record cut short is one counted error, with its reason and where it starts.
    [cut_row] = [d for d in docs if (d["drop_reason"] or "").startswith("read_error:")]
    assert cut_row["drop_reason"] == "read_error:truncated"
    assert cut_row["meta"]["offset"] == str(start)
    assert stats["errors"] == 1
    # Every record before it is read, and nothing is lost.
    read = sum(n for key, n in stats.items() if key.startswith("records:"))
    assert read == index
    assert read + stats["errors"] == index + 1
    # The documents of those records are the ones a whole read gives for them.
    expected = [d["id"] for d in full if d["meta"].get("warc_record_id") in before]
    assert [d["id"] for d in docs if d is not cut_row] == expected


def test_empty_gzip_members_at_the_end_are_not_a_cut_record(tmp_path):
    whole = need_corpus("warc", "dolma", "sample-0000.warc.gz").read_bytes()
    path = tmp_path / "padded.warc.gz"
    path.write_bytes(whole + gzip.compress(b"") + gzip.compress(b"\r\n"))
    stats = Counter()
    docs = read_file(InputFile(str(path), "warc"), stats)
    assert stats["errors"] == 0 and sum(is_kept(d) for d in docs) == 22


# --- books -------------------------------------------------------------------------------------


def test_every_corpus_book_reads_and_loses_header_and_footer():
    folder = need_corpus("books")
    books = sorted(folder.glob("*.txt"))
    assert len(books) == 34
    for path in books:
        stats = Counter()
        [doc] = read_file(InputFile(str(path), "book"), stats)
        assert is_kept(doc) and stats["errors"] == 0
        assert not doc["text"].startswith("\ufeff")
        book = strip_gutenberg(doc["text"])
        assert book.found_start and book.found_end, path.name
        assert "PROJECT GUTENBERG EBOOK" not in book.text.upper()[:2000], path.name
        assert "SMALL PRINT" not in book.text.upper(), path.name
        assert 0.6 * len(doc["text"]) < len(book.text), path.name


def test_a_book_without_markers_keeps_its_text(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes("\ufeffChapter 1\n\nA book with no licence at all.\n".encode())
    [doc] = read_file(InputFile(str(path), "book"))
    book = strip_gutenberg(doc["text"])
    assert book.text == "Chapter 1\n\nA book with no licence at all."
    assert not book.found_start


# --- Common Crawl path lists ---------------------------------------------------------------


def _paths_list(tmp_path, lines: list[str], gz: bool) -> str:
    data = ("\n".join(lines) + "\n").encode()
    path = tmp_path / ("warc.paths.gz" if gz else "warc.paths")
    path.write_bytes(gzip.compress(data) if gz else data)
    return str(path)


def test_cc_path_list_of_local_files(tmp_path):
    from pipeline.config import InputSpec

    folder = need_corpus("warc")
    listing = _paths_list(
        tmp_path, ["warcio/example.warc.gz", "commoncrawl_whirlwind/whirlwind.warc.wet.gz"], True
    )
    files = discover_inputs([InputSpec(path=listing, base=str(folder))])
    assert [f.kind for f in files] == ["warc", "warc"]
    docs = [d for f in files for d in read_file(f)]
    assert sum(is_kept(d) for d in docs) == 2


@pytest.fixture()
def warc_server():
    """The corpus's warc/ folder served over HTTP on loopback."""
    folder = need_corpus("warc")
    handler = partial(SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_cc_path_list_of_urls(tmp_path, warc_server):
    from pipeline.config import InputSpec

    listing = _paths_list(tmp_path, ["dolma/sample-0001.warc.gz", "warcio/example.warc"], False)
    files = discover_inputs([InputSpec(path=listing, kind="cc_paths", base=warc_server + "/")])
    assert all(f.path.startswith(warc_server) for f in files)
    stats = Counter()
    docs = [d for f in files for d in read_file(f, stats)]
    assert sum(is_kept(d) for d in docs) == 15 + 1
    assert stats["revisits"] == 1 and stats["errors"] == 0


# --- JSONL, Parquet, Hugging Face --------------------------------------------------------------


def test_jsonl_rows_become_documents_with_nested_url(tmp_path):
    folder = need_corpus("webtext")
    stats = Counter()
    docs = []
    for path in sorted(folder.glob("*.jsonl.gz")):
        docs += read_file(InputFile(str(path), "jsonl", url_field="metadata.url"), stats)
    assert len(docs) == 30 and all(is_kept(d) for d in docs)
    assert all(d["url"].startswith("http") and d["source"] == "dataset" for d in docs)
    assert all(d["meta"]["metadata.language"] == "en" for d in docs)
    assert stats["rows"] == 30


def test_bad_jsonl_lines_are_counted_and_the_file_goes_on(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "one", "url": "u1"}\n{not json\n{"body": "x"}\n{"text": "four"}\n')
    stats = Counter()
    docs = read_file(InputFile(str(path), "jsonl"), stats)
    reasons = [d["drop_reason"] for d in docs]
    assert reasons == [None, "read_error:bad_json", "read_error:missing_field:text", None]
    assert [d["text"] for d in docs if is_kept(d)] == ["one", "four"]


def test_jsonl_rows_without_text_or_with_half_an_emoji_neither_crash_nor_vanish(tmp_path):
    # Found in the field: one lone surrogate escape (an emoji cut in two) made the whole job
    # fail when the batch was written as UTF-8, and a list in the text field became its repr.
    path = tmp_path / "rows.jsonl"
    path.write_text(
        '{"text": "cut \\ud83d here", "url": "u\\udc00", "title": "\\ud800"}\n'
        '{"text": "whole \\ud83d\\ude00 emoji"}\n'
        '{"text": ["a", "b"]}\n'
        '{"text": 12345}\n'
        '{"text": "after"}\n'
    )
    stats = Counter()
    docs = read_file(InputFile(str(path), "jsonl"), stats)
    assert [d["drop_reason"] for d in docs] == [
        None,
        None,
        "read_error:not_text:text",
        "read_error:not_text:text",
        None,
    ]
    assert docs[0]["text"] == "cut \ufffd here" and docs[0]["url"] == "u\ufffd"
    assert docs[0]["meta"]["title"] == "\ufffd"
    assert docs[1]["text"] == "whole \U0001f600 emoji"  # a whole pair is one character
    assert stats["lone_surrogates"] == 3 and stats["rows"] == 5
    to_table(docs)  # writes as UTF-8: what failed before


def test_a_row_python_cannot_parse_is_one_bad_row_and_a_bom_is_not_text(tmp_path):
    # Found in the field: an integer of 5,000 digits (ValueError) or 50,000 nested lists
    # (RecursionError) ended the whole file, and a byte-order mark cost the first row.
    path = tmp_path / "rows.jsonl"
    path.write_bytes(
        b"\xef\xbb\xbf"
        + b'{"text": "first"}\n'
        + b'{"text": "x", "n": '
        + b"9" * 5000
        + b"}\n"
        + b'{"text": "x", "deep": '
        + b"[" * 50_000
        + b"]" * 50_000
        + b"}\n"
        + b'{"text": "cr",\r "url": "u"}\r\n'  # a bare \r is JSON whitespace, not a line end
        + b'\xef\xbb\xbf{"text": "last"}\n'  # a second file's BOM, joined with cat
    )
    stats = Counter()
    docs = read_file(InputFile(str(path), "jsonl"), stats)
    assert [d["drop_reason"] for d in docs] == [None, *["read_error:bad_json"] * 2, None, None]
    assert [d["text"] for d in docs if is_kept(d)] == ["first", "cr", "last"]
    assert docs[-1]["meta"]["row"] == "5"


def test_html_in_a_jsonl_field_is_stored_like_the_same_page_from_a_file(tmp_path):
    page_path = need_corpus("web", "trafilatura", "auto-presse.de-minisuv.html.gz")
    [from_file] = read_file(InputFile(str(page_path), "html"))
    page = gzip.decompress(page_path.read_bytes()).decode("cp1252")
    rows = tmp_path / "pages.jsonl"
    rows.write_text(json.dumps({"html": page, "url": "https://auto-presse.de/x"}) + "\n")
    [from_row] = read_file(InputFile(str(rows), "jsonl", text_field="html", content="html"))
    assert from_row["source"] == "web" and from_row["raw"] == from_file["raw"]


def test_parquet_rows_become_documents(tmp_path):
    path = tmp_path / "docs.parquet"
    pq.write_table(
        pa.table({"text": ["alpha", "beta"], "url": ["u1", "u2"], "score": [1, 2]}), path
    )
    docs = read_file(InputFile(str(path), sniff_kind(str(path))))
    assert [(d["text"], d["url"], d["meta"]["score"]) for d in docs] == [
        ("alpha", "u1", "1"),
        ("beta", "u2", "2"),
    ]


def test_hugging_face_dataset_from_local_files_and_from_disk(tmp_path):
    import datasets

    src = need_corpus("webtext", "ccnet_head-0091.jsonl.gz")
    from_files = read_file(InputFile(str(src), "hf", url_field="metadata.url"))
    assert len(from_files) == 10 and all(is_kept(d) for d in from_files)
    saved = tmp_path / "saved"
    datasets.Dataset.from_dict({"text": ["a b c", "d e f"], "url": ["x", "y"]}).save_to_disk(saved)
    [spec] = discover_inputs([type("Spec", (), {"path": str(saved), "kind": "hf"})()])
    assert [d["text"] for d in read_file(spec)] == ["a b c", "d e f"]


# --- batches for Ray Data -------------------------------------------------------------------


def test_read_batch_streams_tables_and_counts(monkeypatch):
    import pipeline.read as read

    monkeypatch.setattr(read, "ROWS_PER_TABLE", 5)
    inputs = discover_inputs([(str(SAMPLE / "web"), "html"), (str(SAMPLE / "warc"), "warc")])
    batch = pa.Table.from_pylist([f.to_row() for f in inputs])
    tables = list(read_batch(batch))
    assert [t.num_rows for t in tables] == [5] * 5 + [3]
    docs = [d for t in tables for d in from_table(t)]
    assert len(docs) == 28
    stats = ReadStats()
    stats.report("a", "warc", {"revisits": 2, "files": 1})
    stats.report("a", "warc", {"revisits": 2, "files": 1})  # a retried task reports again
    stats.report("b", "warc", {"revisits": 1, "files": 1})
    assert stats.totals() == {"warc": {"files": 2, "revisits": 3}}


def test_document_ids_do_not_depend_on_where_the_sample_lives(tmp_path):
    """The same files read from two clones give the same ids and URLs (no absolute paths)."""
    import shutil

    seen = []
    for clone in ("a/deep/clone", "b"):
        root = tmp_path / clone / "sample"
        shutil.copytree(SAMPLE / "web", root / "web")
        shutil.copytree(SAMPLE / "books", root / "books")
        docs = [
            d
            for item in discover_inputs(
                [(str(root / "web"), "html"), (str(root / "books"), "book")]
            )
            for d in read_file(item)
        ]
        assert docs and all(str(tmp_path) not in d["url"] for d in docs)
        seen.append(sorted((d["id"], d["url"]) for d in docs))
    assert seen[0] == seen[1]
    assert any(url.startswith("web/") for _, url in seen[0])
