"""The extract stage on real pages and on bad input."""

from __future__ import annotations

import gzip

import pytest

from pipeline.extract import ExtractStage
from pipeline.filters import LengthFilter
from pipeline.records import is_kept, make_document
from tests.helpers import SAMPLE


@pytest.fixture(scope="module")
def stage():
    s = ExtractStage()
    s.setup()
    return s


def _page(name: str) -> dict:
    raw = gzip.decompress((SAMPLE / "web" / name).read_bytes())
    return make_document("web", f"sample/web/{name}", raw=raw)


def test_every_sample_page_gives_text_and_a_title(stage):
    pages = sorted(p.name for p in (SAMPLE / "web").glob("*.html.gz"))
    docs = stage.process_batch([_page(n) for n in pages])
    assert all(is_kept(d) for d in docs), [
        (d["url"], d["drop_reason"]) for d in docs if not is_kept(d)
    ]
    for d in docs:
        assert len(d["text"].split()) > 50
        assert d["raw"] is None  # payload freed once extracted
        assert d["meta"].get("title")


def test_main_text_without_boilerplate(stage):
    [doc] = stage.process_batch([_page("flowfx.de.tmux.html.gz")])
    assert "tmux" in doc["text"]
    assert doc["meta"]["title"] == "Copy & paste from tmux to system clipboard"
    assert doc["meta"]["date"] == "2020-01-16"


NAV_ONLY = b"<html><body><nav><a href='/'>Home</a> <a href='/x'>About</a></nav></body></html>"


@pytest.mark.parametrize(
    "raw, outcome",
    [
        (b"", ("extract", "empty_page")),
        (b"   \n ", ("extract", "empty_page")),
        (NAV_ONLY, ("length", "too_short")),  # trafilatura keeps "Home About"; too short
        (bytes(range(256)) * 64, ("extract", "no_main_text")),  # binary bytes labelled HTML
    ],
)
def test_bad_pages_are_counted_rejections(stage, raw, outcome):
    docs = [make_document("web", "http://example.com/x", raw=raw)]
    for s in (stage, LengthFilter(min_words=50)):
        docs = s.process_batch(docs)
    assert (docs[0]["drop_stage"], docs[0]["drop_reason"]) == outcome


def test_an_exception_on_one_document_is_counted_and_the_batch_goes_on(stage):
    broken = make_document("web", "http://example.com/broken", raw=b"<html>")
    broken["raw"] = 12345  # not bytes: trafilatura raises
    good = _page("anarc.at.cdpath.html.gz")
    docs = stage.process_batch([broken, good])
    assert docs[0]["drop_reason"].startswith("error:")
    assert is_kept(docs[1])


def test_books_lose_their_gutenberg_header(stage):
    text = (SAMPLE / "books" / "pg35_The_Time_Machine.txt").read_text(encoding="utf-8-sig")
    [doc] = stage.process_batch([make_document("book", "pg35", text=text)])
    assert "PROJECT GUTENBERG" not in doc["text"][:2000].upper()
    assert doc["meta"]["title"] == "The Time Machine"
    assert "gutenberg_markers" not in doc["meta"]
