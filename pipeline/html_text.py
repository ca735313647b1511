"""From the bytes of one web page to its main text and metadata.

This is the work the extract stage does for a page, kept free of stage and process concerns
so that it can run in the time-limited child process (pipeline/timelimit.py), in tests, and in
bench/bench_extract.py the same way:

1. decode the bytes (:func:`decode_html`: byte-order mark, then UTF-8, then the declared
   charset, then detection);
2. give up on bytes that are not text at all (:func:`looks_binary`);
3. run trafilatura with kiln's settings (chosen by measurement, see bench/bench_extract.py);
4. serialise its main-text tree to plain text, keeping code blocks verbatim (indentation and
   blank lines) and collapsing whitespace elsewhere as a browser would; the text is in Unicode
   NFC, as trafilatura's own output is.
"""

from __future__ import annotations

import codecs
import logging
import re
import unicodedata
import warnings
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "ExtractSettings",
    "decode_html",
    "declared_charset",
    "extract_html",
    "looks_binary",
    "main_text",
]

# The result of extract_html: ("ok", text, meta) or (reason, "", meta) for a page with none.
ExtractSettings = dict[str, Any]

_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)

# Labels whose real-world meaning is a superset of the registered codec: the WHATWG Encoding
# Standard (https://encoding.spec.whatwg.org/#names-and-labels) decodes all of these as the
# codec on the right, and so do browsers; strict Python codecs reject pages that rely on it.
_WHATWG_SUPERSETS = {
    "iso-8859-1": "cp1252",
    "latin-1": "cp1252",
    "latin1": "cp1252",
    "us-ascii": "cp1252",
    "ascii": "cp1252",
    "iso-8859-9": "cp1254",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "shift_jis": "cp932",
    "sjis": "cp932",
    "euc-kr": "cp949",
    "tis-620": "cp874",
}

# Share of a page's non-ASCII characters that may be invalid UTF-8 for it to count as UTF-8.
# Of the shared corpus's 20 pages that are not valid UTF-8, the three UTF-8 pages with stray
# bytes have at most 4% invalid, the pages in other encodings at least 78%; 20% sits between
# with room on both sides (tests/pipeline/test_html_text.py decodes those pages).
_MAX_INVALID_UTF8_SHARE = 0.2

_HTTP_CHARSET = re.compile(r"charset\s*=\s*[\"']?\s*([\w.:-]+)", re.I)
_META_CHARSET = re.compile(rb"<meta[^>]+charset\s*=\s*[\"']?\s*([\w.:-]+)", re.I)
# WHATWG's prescan reads 1024 bytes; real pages often put the declaration after long inline
# scripts and styles, so kiln looks further (the cost is a regex over a few KB).
_PRESCAN_BYTES = 8192

_HTML_LANG = re.compile(
    r"<html\b[^>]*?\slang\s*=\s*[\"']?\s*([A-Za-z]{2,3}(?:[-_][A-Za-z0-9]+)*)(?=[\"'\s>])", re.I
)

# Characters no text document contains in quantity: C0/C1 controls other than tab, newline,
# carriage return and form feed, and U+FFFD (what undecodable bytes became).
_NOT_TEXT = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f\ufffd]")
# Binary files (random bytes, a gzip archive, an executable) decode to 54-78% such characters
# in their first 8 KB; the 815 real pages of the shared corpus to at most 0.03%. 1% separates
# them with a wide margin.
_MAX_NOT_TEXT_FRACTION = 0.01
# Binary payloads are binary from their first bytes; 8 KB decides it for a fraction of the cost.
_BINARY_SAMPLE_CHARS = 8192

_SPACE_RUN = re.compile(r"\s+")
_COLLAPSIBLE = re.compile(r"\s\s|[^\S ]")  # two whitespace characters, or one that is not a space
# U+FFFC OBJECT REPLACEMENT marks where a code block goes back; extract_html removes any from
# the page first, so a page cannot forge one.
_CODE_PLACEHOLDER = "\ufffc{}\ufffc"
_PLACEHOLDER_RE = re.compile("\ufffc(\\d+)\ufffc")


def declared_charset(raw: bytes, content_type: str | None = None) -> str | None:
    """The charset a page declares: HTTP Content-Type first, then its <meta> tags."""
    if content_type:
        m = _HTTP_CHARSET.search(content_type)
        if m:
            return m.group(1).lower()
    m = _META_CHARSET.search(raw[:_PRESCAN_BYTES])
    if m:
        return m.group(1).decode("ascii", "replace").lower()
    return None


def decode_html(raw: bytes, content_type: str | None = None) -> tuple[str, str]:
    """Decode a page's bytes; returns the text and the encoding used.

    Order: a byte-order mark; UTF-8 if the bytes are valid UTF-8 (non-ASCII text that happens
    to be valid UTF-8 almost always is, while pages labelled Latin-1 that are really UTF-8 are
    common), or nearly so; the declared charset if the bytes decode with it; charset_normalizer's
    guess; and last UTF-8 with undecodable bytes replaced, so every page decodes to something.

    This is a stand-in for the encoding detection of pipeline/encoding.py (issue #3): the
    extract stage only calls this one function.
    """
    for bom, codec in _BOMS:
        if raw.startswith(bom):
            return raw.decode(codec, errors="replace"), codec
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    # A UTF-8 page with a few stray bytes (a Latin-1 snippet pasted in) is still UTF-8: decoding
    # all of it as Latin-1 would garble every other non-ASCII character.
    lenient = raw.decode("utf-8", errors="replace")
    invalid = lenient.count("\ufffd")
    non_ascii = len(lenient) - len(lenient.encode("ascii", errors="ignore"))
    if invalid < _MAX_INVALID_UTF8_SHARE * non_ascii:
        return lenient, "utf-8-replace"
    declared = declared_charset(raw, content_type)
    if declared:
        codec = _WHATWG_SUPERSETS.get(declared, declared)
        try:
            return raw.decode(codec), codec
        except (LookupError, UnicodeDecodeError):
            pass  # unknown label, or the declaration is wrong: detect instead
    from charset_normalizer import from_bytes

    best = from_bytes(raw[:65536]).best()
    if best is not None:
        try:
            return raw.decode(best.encoding), best.encoding
        except (LookupError, UnicodeDecodeError):
            pass  # the guess fit the sample but not the whole page
    return raw.decode("utf-8", errors="replace"), "utf-8-replace"


def looks_binary(text: str) -> bool:
    """True when the decoded text is mostly not text (an image or archive served as HTML)."""
    sample = text[:_BINARY_SAMPLE_CHARS]
    if not sample:
        return False
    return len(_NOT_TEXT.findall(sample)) > _MAX_NOT_TEXT_FRACTION * len(sample)


def _code_text(element) -> str:
    """The verbatim text of a code block: its text, children's text and line breaks."""
    parts = [element.text or ""]
    for child in element:
        parts.append("\n" if child.tag == "lb" else _code_text(child))
        parts.append(child.tail or "")
    return "".join(parts)


def main_text(body) -> str:
    """Plain text of trafilatura's main-text tree, with code blocks kept verbatim.

    trafilatura's own serialiser drops blank lines everywhere (also inside code) and keeps the
    raw source whitespace of paragraphs (newlines and tabs of the HTML source in mid-sentence).
    kiln swaps each code block for a placeholder, collapses whitespace runs in all other text to
    one space (how a browser renders it), serialises with trafilatura, and puts the code back.
    """
    from trafilatura.xml import xmltotxt

    code_blocks: list[str] = []
    for code in list(body.iter("code")):
        if any(anc.tag == "code" for anc in code.iterancestors()):
            continue  # nested: its text is part of the outer block
        code_blocks.append(_code_text(code).strip("\n"))
        tail = code.tail
        code.clear()
        code.text = _CODE_PLACEHOLDER.format(len(code_blocks) - 1)
        code.tail = tail
    for element in body.iter():
        # Most text nodes need nothing; the search is cheaper than substituting every one.
        if element.text and element.tag != "code" and _COLLAPSIBLE.search(element.text):
            element.text = _SPACE_RUN.sub(" ", element.text)
        if element.tail and _COLLAPSIBLE.search(element.tail):
            element.tail = _SPACE_RUN.sub(" ", element.tail)
    text = xmltotxt(body, include_formatting=False)
    if code_blocks:
        text = _PLACEHOLDER_RE.sub(lambda m: code_blocks[int(m.group(1))], text)
    # NFC, as trafilatura.extract() returns its text: one spelling for canonically equal
    # characters (Bengali U+09DF and U+09AF U+09BC, composed and combining accents), so a
    # search, a dedup key or the gold snippets see one form.
    return unicodedata.normalize("NFC", text.strip())


def page_metadata(tree, url: str | None, extensive_date_search: bool = False) -> dict[str, str]:
    """Title, date, canonical URL and site name of a parsed page.

    Built from trafilatura's metadata functions, leaving out what kiln does not keep (author,
    categories, tags, licence: nine tenths of the cost of ``with_metadata=True``) and JSON-LD
    (it changed no title or date on the 609 annotated pages of the shared corpus, at a quarter
    of the remaining cost). The date comes from htmldate; its extensive search (free-text date
    patterns) finds 395 instead of 374 of the corpus's 446 annotated dates for more than twice
    the time, so it is off by default.
    """
    from htmldate import find_date
    from trafilatura.metadata import examine_meta, extract_sitename, extract_title, extract_url
    from trafilatura.settings import set_date_params

    found = examine_meta(tree)
    title = found.title or extract_title(tree)
    page_url = found.url or extract_url(tree, url)
    site = found.sitename or extract_sitename(tree)
    if not site and page_url:
        site = urlsplit(page_url).hostname
    date = find_date(tree, **{**set_date_params(extensive_date_search), "url": page_url})
    meta = {"title": title, "date": date, "url": page_url, "site": site}
    return {k: str(v).strip() for k, v in meta.items() if v and str(v).strip()}


_quieted = False


def _quiet_trafilatura() -> None:
    """Once per process: trafilatura logs a warning for every page it finds nothing in and warns
    about lxml truth-testing; both are expected, and the stage counts the outcomes instead.
    (Adding a warnings filter resets Python's warning cache, so not on every call.)"""
    global _quieted
    if not _quieted:
        logging.getLogger("trafilatura").setLevel(logging.CRITICAL)
        warnings.filterwarnings("ignore", category=FutureWarning, module="trafilatura")
        _quieted = True


def extract_html(request: dict[str, Any]) -> tuple[str, str, dict[str, str]]:
    """Main text and metadata of one page.

    ``request`` holds ``raw`` (bytes), ``url`` (or None), ``content_type`` (the HTTP header, or
    None) and ``settings`` (trafilatura options: favor_precision, favor_recall, include_tables,
    include_comments). Returns ``(status, text, meta)``: status ``ok``, or the reason the page
    has no text (``binary_content``, ``no_main_text``). ``meta`` holds what was found of
    title, date, url (the page's canonical URL), site, declared_language and encoding.
    """
    import trafilatura
    from trafilatura.utils import load_html

    _quiet_trafilatura()
    settings = request.get("settings") or {}
    html, encoding = decode_html(request["raw"], request.get("content_type"))
    html = html.replace("\ufffc", "")
    meta = {"encoding": encoding}
    if looks_binary(html):
        return "binary_content", "", meta
    lang = _HTML_LANG.search(html[:_PRESCAN_BYTES])
    if lang:
        meta["declared_language"] = lang.group(1).lower().replace("_", "-")
    tree = load_html(html)
    if tree is None:
        return "no_main_text", "", meta
    # bare_extraction works on a copy of the tree, so the metadata below sees the whole page.
    result = trafilatura.bare_extraction(
        tree,
        url=request.get("url"),
        include_comments=settings.get("include_comments", False),
        include_tables=settings.get("include_tables", True),
        favor_precision=settings.get("favor_precision", False),
        favor_recall=settings.get("favor_recall", False),
        output_format="txt",  # skips trafilatura's own serialisation; main_text does it
    )
    text = main_text(result.body) if result is not None and result.body is not None else ""
    if result is not None and settings.get("include_comments") and result.commentsbody is not None:
        comments = main_text(result.commentsbody)
        text = f"{text}\n{comments}" if comments else text
    meta.update(
        page_metadata(tree, request.get("url"), settings.get("extensive_date_search", False))
    )
    if not text.strip():
        return "no_main_text", "", meta
    return "ok", text, meta
