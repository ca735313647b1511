"""The extract stage on real pages and on bad input: every page ends as text or a counted
rejection, and no page can hang a worker."""

from __future__ import annotations

import gzip
import time

import pytest

from pipeline.extract import ExtractStage
from pipeline.filters import LengthFilter
from pipeline.records import is_kept, make_document
from tests.helpers import SAMPLE


@pytest.fixture(scope="module")
def stage():
    s = ExtractStage()
    s.setup()
    yield s
    s.close()


def _page(name: str) -> dict:
    raw = gzip.decompress((SAMPLE / "web" / name).read_bytes())
    return make_document("web", f"sample/web/{name}", raw=raw)


def test_every_sample_page_gives_text_and_metadata(stage):
    pages = sorted(p.name for p in (SAMPLE / "web").glob("*.html.gz"))
    docs = stage.process_batch([_page(n) for n in pages])
    assert all(is_kept(d) for d in docs), [
        (d["url"], d["drop_reason"]) for d in docs if not is_kept(d)
    ]
    for d in docs:
        assert len(d["text"].split()) > 50
        assert d["raw"] is None  # payload freed once extracted
        assert d["meta"].get("title") and d["meta"].get("date")
        assert d["meta"]["encoding"] == "utf-8"
    assert sum("site" in d["meta"] for d in docs) >= 20
    assert sum("declared_language" in d["meta"] for d in docs) >= 20


def test_main_text_without_boilerplate(stage):
    [doc] = stage.process_batch([_page("flowfx.de.tmux.html.gz")])
    assert "tmux" in doc["text"]
    assert doc["meta"]["title"] == "Copy & paste from tmux to system clipboard"
    assert doc["meta"]["date"] == "2020-01-16"


NAV_ONLY = (
    b"<html><head><title>Example</title></head><body><nav><ul>"
    + b"".join(b"<li><a href='/s%d'>Section %d</a></li>" % (i, i) for i in range(12))
    + b"</ul></nav><footer><a href='/imprint'>Imprint</a></footer></body></html>"
)
BIG_TABLE = b"<table>" + b"<tr><td>cell</td><td>0</td></tr>" * 1_000_000 + b"</table>"
SINGLE_LINE_5MB = b"<html><body><p>" + b"word " * 1_000_000 + b"</p></body></html>"


@pytest.mark.parametrize(
    "raw, outcomes",
    [
        (b"", {("extract", "empty_page")}),
        (b"   \n ", {("extract", "empty_page")}),
        # trafilatura may keep the link texts or nothing; either way the page does not survive
        (NAV_ONLY, {("extract", "no_main_text"), ("length", "too_short")}),
        ((SAMPLE / "warc" / "whirlwind.warc.gz").read_bytes(), {("extract", "binary_content")}),
        (bytes(range(256)) * 64, {("extract", "binary_content")}),
        (SINGLE_LINE_5MB, {("extract", "page_too_large")}),
        (b"<html><body>" + BIG_TABLE + b"</body></html>", {("extract", "page_too_large")}),
    ],
    ids=["empty", "blank", "navigation-only", "gzip-as-html", "binary", "5MB-line", "huge-table"],
)
def test_bad_pages_are_counted_rejections(stage, raw, outcomes):
    docs = [make_document("web", "http://example.com/x", raw=raw)]
    for s in (stage, LengthFilter(min_words=50)):
        docs = s.process_batch(docs)
    assert (docs[0]["drop_stage"], docs[0]["drop_reason"]) in outcomes


def test_a_5mb_single_line_under_a_raised_cap_is_extracted():
    stage = ExtractStage(max_page_bytes=8 * 1024 * 1024)
    try:
        [doc] = stage.process_batch([make_document("web", "x", raw=SINGLE_LINE_5MB)])
    finally:
        stage.close()
    assert is_kept(doc) and doc["text"].count("word") == 1_000_000


def test_a_page_over_the_time_limit_is_given_up_and_the_next_page_is_fine():
    # 60,000 table rows fit under the size cap but take trafilatura about 15 s.
    table = b"<html><body>" + BIG_TABLE[: 7 + 33 * 60_000] + b"</table></body></html>"
    # A limit with room for an ordinary page on a busy machine (under load a 100 KB page took
    # over a second), still far below the table's 15 s.
    stage = ExtractStage(time_limit_seconds=4.0)
    try:
        stage.process_batch([_page("anarc.at.cdpath.html.gz")])  # child started and warm
        t0 = time.monotonic()
        slow, good = stage.process_batch(
            [make_document("web", "x", raw=table), _page("anarc.at.cdpath.html.gz")]
        )
        elapsed = time.monotonic() - t0
    finally:
        stage.close()
    assert slow["drop_reason"] == "extract_timeout"
    assert is_kept(good) and "CDPATH" in good["text"]
    assert elapsed < 14  # 4 s for the slow page, a new child for the next


def test_a_wrongly_declared_charset_still_gives_the_right_text(stage):
    german = _page("rete-mirabile.net.15jahre.html.gz")
    german["raw"] = german["raw"].decode("utf-8").encode("cp1252", errors="replace")
    german["meta"]["content_type"] = "text/html; charset=utf-8"  # the header lies too
    [doc] = stage.process_batch([german])
    assert is_kept(doc) and "für" in doc["text"] and "\ufffd" not in doc["text"]


def test_an_exception_on_one_document_is_counted_and_the_batch_goes_on(stage):
    broken = make_document("web", "http://example.com/broken", raw=b"<html>")
    broken["raw"] = 12345  # not bytes
    good = _page("anarc.at.cdpath.html.gz")
    docs = stage.process_batch([broken, good])
    assert docs[0]["drop_reason"].startswith("error:")
    assert is_kept(docs[1])


def test_text_with_nothing_visible_is_empty_text(stage):
    # Zero-width spaces, NULs and byte-order marks were kept as documents of "text".
    texts = [
        "\u200b\u200b",
        "\x00\x00\x00",
        " \ufeff\u2060 \n",
        "\ufe0f \u3164 \u034f\u17b4 \u115f\u3000",  # variation selector, fillers, marks
        "\u200b!",
        "\ue000",
        "\U0001fae9",  # an emoji newer than Python 3.11's Unicode tables: unassigned there
        "\u0915\u093f",  # Devanagari ki: a letter and its spacing mark
        "\u06dd",  # Arabic end of ayah, a format character that is drawn
    ]
    docs = stage.process_batch(
        [make_document("dataset", f"u{i}", text=t) for i, t in enumerate(texts)]
    )
    assert [d["drop_reason"] for d in docs] == ["empty_text"] * 4 + [None] * 5


def test_the_stage_pickles_without_its_child(stage):
    import pickle

    copy = pickle.loads(pickle.dumps(stage))
    assert copy._worker is None and copy.settings == stage.settings


def test_books_lose_their_gutenberg_header(stage):
    text = (SAMPLE / "books" / "pg35_The_Time_Machine.txt").read_text(encoding="utf-8-sig")
    [doc] = stage.process_batch([make_document("book", "pg35", text=text)])
    assert "PROJECT GUTENBERG" not in doc["text"][:2000].upper()
    assert doc["meta"]["title"] == "The Time Machine"
    assert "gutenberg_markers" not in doc["meta"]


def test_text_comes_out_in_unicode_nfc(stage):
    # "é" as e + combining acute in the page, one code point in the text, as trafilatura's own
    # output is (and as the corpus's gold snippets are written).
    sentence = "Le café du quartier ouvre à sept heures et ferme tard le soir. " * 8
    html = f"<html><body><article><p>{sentence}</p></article></body></html>"
    raw = html.replace("é", "e\u0301").encode("utf-8")
    [doc] = stage.process_batch([make_document("web", "http://example.com/cafe", raw=raw)])
    assert is_kept(doc) and "café" in doc["text"] and "\u0301" not in doc["text"]


def test_a_batch_gives_what_page_by_page_gives(stage):
    # process_batch sends a batch's pages to the child together; the outcome must not differ
    # from handing them over one at a time, bad pages and books mixed in included.
    def batch():
        book = (SAMPLE / "books" / "pg35_The_Time_Machine.txt").read_text(encoding="utf-8-sig")
        return [
            _page("anarc.at.cdpath.html.gz"),
            make_document("web", "http://example.com/empty", raw=b""),
            make_document("book", "pg35", text=book),
            make_document("web", "http://example.com/nav", raw=NAV_ONLY),
            _page("flowfx.de.tmux.html.gz"),
        ]

    together = stage.process_batch(batch())
    one_by_one = [stage.process_batch([doc])[0] for doc in batch()]
    for a, b in zip(together, one_by_one, strict=True):
        assert (a["drop_reason"], a["text"], a["meta"]) == (b["drop_reason"], b["text"], b["meta"])
