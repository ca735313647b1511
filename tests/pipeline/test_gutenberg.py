"""Header and footer removal on every Gutenberg book of the sample and the shared corpus."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.gutenberg import strip_gutenberg
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
