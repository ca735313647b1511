"""Header and footer removal on every Gutenberg book of the sample and the shared corpus, and
books whose markers are missing: kept whole and flagged by the extract stage."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.extract import ExtractStage
from pipeline.gutenberg import strip_gutenberg
from pipeline.read import InputFile, read_file
from pipeline.records import is_kept
from tests.helpers import CORPUS, SAMPLE

MARKER = re.compile(r"\*\*\*\s*(START|END) OF (THE|THIS) PROJECT GUTENBERG", re.I)


def _books() -> list[Path]:
    books = sorted((SAMPLE / "books").glob("*.txt"))
    for folder in (CORPUS / "books", CORPUS / "neardup" / "books"):
        if folder.exists():
            books += sorted(folder.glob("*.txt"))
    return books


@pytest.mark.parametrize("path", _books(), ids=lambda p: p.name[:40])
def test_strip_removes_header_and_footer(path):
    raw = path.read_text(encoding="utf-8-sig")
    book = strip_gutenberg(raw)
    assert book.found_start and book.found_end, "markers of a real PG book not found"
    assert not MARKER.search(book.text)
    assert "Project Gutenberg License" not in book.text
    assert "SMALL PRINT" not in book.text.upper()
    # The body is most of the file: licence text is a few percent, never the whole book.
    assert 0.6 * len(raw) < len(book.text) < len(raw)
    assert book.title


def test_legacy_small_print_footer_without_end_line():
    path = CORPUS / "books" / "pg4657_Personal_Narrative_of_a_Pilgrimage_to_Al.txt"
    if not path.exists():
        pytest.skip(f"{path} not found (shared corpus absent)")
    book = strip_gutenberg(path.read_text(encoding="utf-8-sig"))
    assert book.text.endswith("END OF VOLUME I.")


def test_byte_order_mark_and_no_space_after_asterisks():
    text = (
        "\ufeffTitle: Tiny\n\n***START OF THE PROJECT GUTENBERG EBOOK TINY***\nBody line.\n"
        "***END OF THE PROJECT GUTENBERG EBOOK TINY***\nlicence"
    )
    book = strip_gutenberg(text)
    assert book.text == "Body line."
    assert book.title == "Tiny"


def test_book_without_markers_keeps_its_text_and_is_flagged():
    text = "Chapter 1\n\nIt was a dark and stormy night.\n"
    book = strip_gutenberg(text)
    assert book.text == text.strip()
    assert not book.found_start and not book.found_end


def test_markers_in_the_wrong_order_never_empty_a_book():
    text = (
        "*** END OF THE PROJECT GUTENBERG EBOOK X ***\nstory\n"
        "*** START OF THE PROJECT GUTENBERG EBOOK X ***\n"
    )
    assert strip_gutenberg(text).text.strip()


# The START and END lines only; the licence text around them stays, as it does in copies whose
# markers were lost or mangled.
MARKER_LINE = re.compile(
    r"^.*\*{3}\s*(START|END)\s+OF\s+(THE|THIS)\s+PROJECT\s+GUTENBERG.*\n?", re.I | re.M
)


def _corpus_books() -> list[Path]:
    folder = CORPUS / "books"
    if not folder.exists():
        pytest.skip(f"shared corpus not found at {folder} (set KILN_CORPUS)")
    return sorted(folder.glob("*.txt"))


def _read_and_extract(path: Path) -> dict:
    [doc] = read_file(InputFile(str(path), "book"))
    [doc] = ExtractStage().process_batch([doc])  # books need no extraction child
    return doc


def test_a_corpus_book_with_its_markers_cut_out_keeps_its_text_and_is_flagged(tmp_path):
    for path in _corpus_books():
        raw = path.read_text(encoding="utf-8-sig")
        body = strip_gutenberg(raw).text
        cut, removed = MARKER_LINE.subn("", raw)
        assert removed >= 1, path.name
        copy = tmp_path / path.name
        copy.write_text(cut, encoding="utf-8")
        doc = _read_and_extract(copy)
        assert is_kept(doc), (path.name, doc["drop_reason"])
        assert doc["meta"]["gutenberg_markers"] == "missing", path.name
        # Every word of the body survives; only the licence footer may still be cut, where
        # its "End of the Project Gutenberg EBook" line is there to find.
        assert body in doc["text"], path.name
        assert len(doc["text"]) >= len(body), path.name


def test_a_corpus_book_cut_down_to_its_body_comes_back_whole_and_flagged(tmp_path):
    path = next(p for p in _corpus_books() if p.name.startswith("pg1661_"))
    body = strip_gutenberg(path.read_text(encoding="utf-8-sig")).text
    copy = tmp_path / "holmes-body-only.txt"
    copy.write_text(body + "\n", encoding="utf-8")
    doc = _read_and_extract(copy)
    assert is_kept(doc) and doc["text"] == body
    assert doc["meta"]["gutenberg_markers"] == "missing"
    assert "title" not in doc["meta"]  # no header, so no Title: line to take it from


def test_a_corpus_book_with_its_markers_is_not_flagged():
    path = next(p for p in _corpus_books() if p.name.startswith("pg1661_"))
    doc = _read_and_extract(path)
    assert is_kept(doc) and "gutenberg_markers" not in doc["meta"]
    assert doc["meta"]["title"] == "The Adventures of Sherlock Holmes"
