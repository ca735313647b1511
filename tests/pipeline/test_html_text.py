"""From page bytes to text: decoding, binary detection, code and tables, metadata."""

from __future__ import annotations

import gzip

import pytest

from pipeline.extract_gold import load_gold
from pipeline.html_text import declared_charset, decode_html, extract_html, looks_binary
from tests.helpers import SAMPLE, need_corpus

PROSE = "<p>" + "Plain sentences of the article go on for a while here, as articles do. " * 8


def _sample(name: str) -> bytes:
    return gzip.decompress((SAMPLE / "web" / name).read_bytes())


def _page(body: str, head: str = "") -> bytes:
    return (
        f"<html><head>{head}</head><body><article>{PROSE}</p>{body}{PROSE}</p>"
        "</article></body></html>"
    ).encode()


def test_utf8_and_byte_order_marks():
    assert decode_html("Grüße".encode()) == ("Grüße", "utf-8")
    assert decode_html(b"\xef\xbb\xbfGr\xc3\xbc\xc3\x9fe")[0] == "Grüße"
    assert decode_html("Grüße".encode("utf-16"))[0] == "Grüße"


def test_the_declared_charset_decides_when_the_bytes_are_not_utf8():
    raw = '<meta charset="iso-8859-1"><p>Grüße aus Köln – 5 €</p>'.encode("cp1252")
    text, encoding = decode_html(raw)
    assert "Grüße aus Köln – 5 €" in text  # the en dash and euro sign: read as windows-1252
    assert encoding == "cp1252"
    assert declared_charset(b"<p>x</p>", "text/html; charset=Shift_JIS") == "shift_jis"


def test_a_page_declared_utf8_but_written_in_latin1_is_detected():
    german = _sample("rete-mirabile.net.15jahre.html.gz").decode("utf-8")
    raw = german.encode("cp1252", errors="replace")  # still says charset=utf-8 inside
    assert b"utf-8" in raw[:5000].lower()
    text, encoding = decode_html(raw)
    assert encoding != "utf-8" and "\ufffd" not in text
    status, extracted, _ = extract_html({"raw": raw})
    assert status == "ok" and "für" in extracted


def test_wrongly_declared_pages_of_the_corpus_decode_at_least_as_well_as_trafilatura():
    """The 20 real pages that are not valid UTF-8: declared Latin-1, GB2312 or windows-125x,
    and three declared UTF-8 that carry a few stray Latin-1 bytes. kiln finds at least the
    'with' snippets that trafilatura's own decoding finds, and garbles nothing."""
    import trafilatura

    checked = 0
    for page in load_gold(need_corpus(), ["trafilatura"]):
        raw = page.raw()
        try:
            raw.decode("utf-8")
            continue
        except UnicodeDecodeError:
            checked += 1
        status, text, meta = extract_html({"raw": raw})
        baseline = trafilatura.extract(raw, include_comments=False) or ""
        assert status == "ok", page.id
        found = sum(s in text for s in page.with_snippets)
        assert found >= sum(s in baseline for s in page.with_snippets), (page.id, meta)
        assert text.count("\ufffd") <= 4, page.id
    assert checked == 20


@pytest.mark.parametrize(
    "payload",
    [
        (SAMPLE / "warc" / "whirlwind.warc.gz").read_bytes(),  # a gzip archive served as HTML
        bytes(range(256)) * 64,
    ],
)
def test_binary_bytes_are_not_text(payload):
    status, text, _ = extract_html({"raw": payload})
    assert (status, text) == ("binary_content", "")
    assert not looks_binary(decode_html(_sample("flowfx.de.tmux.html.gz"))[0])


def test_code_blocks_keep_indentation_and_blank_lines():
    code = "def f(x):\n    if x:\n\n        return   x  # two spaces\n\treturn None"
    status, text, _ = extract_html({"raw": _page(f"<pre><code>{code}</code></pre>")})
    assert status == "ok"
    assert code in text
    status, text, _ = extract_html({"raw": _page("<pre>top\n    indented\n\n  two</pre>")})
    assert "top\n    indented\n\n  two" in text


def test_source_whitespace_inside_paragraphs_is_collapsed():
    raw = _page("<p>A sentence that the source\n\t\twrapped   across lines.</p>")
    _, text, _ = extract_html({"raw": raw})
    assert "A sentence that the source wrapped across lines." in text


def test_table_cells_keep_their_text():
    table = (
        "<table><tr><th>Element</th><th>Symbol</th></tr>"
        "<tr><td>Helium</td><td>He</td></tr><tr><td>Iron <b>(metal)</b></td><td>Fe</td></tr>"
        "</table>"
    )
    _, text, _ = extract_html({"raw": _page(table)})
    for cell in ("Element", "Symbol", "Helium", "He", "Iron (metal)", "Fe"):
        assert cell in text
    assert "| Helium | He |" in text


def test_metadata_of_a_real_page():
    status, text, meta = extract_html(
        {"raw": _sample("flowfx.de.tmux.html.gz"), "url": "https://flowfx.de/x"}
    )
    assert status == "ok" and "tmux" in text
    assert meta["title"] == "Copy & paste from tmux to system clipboard"
    assert meta["date"] == "2020-01-16"
    assert meta["url"] == "https://flowfx.de/blog/copy-paste-from-tmux-to-system-clipboard/"
    assert meta["site"] == "FlowFX"
    assert meta["declared_language"] == "en"
    assert meta["encoding"] == "utf-8"


def test_comments_are_left_out_unless_asked_for():
    page = _page("").replace(
        b"</article>",
        b"</article><section id='comments'><div class='comment'><p>"
        + b"I disagree with this article entirely, says a reader in a long comment. " * 3
        + b"</p></div></section>",
    )
    _, text, _ = extract_html({"raw": page})
    assert "I disagree" not in text
    _, with_comments, _ = extract_html({"raw": page, "settings": {"include_comments": True}})
    assert "I disagree" in with_comments
