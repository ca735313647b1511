"""Removing the Project Gutenberg header and footer from a plain-text eBook.

PG files wrap the book in a licence header and footer whose wording changed over the years, so
the markers are matched loosely:

- ``*** START OF THIS PROJECT GUTENBERG EBOOK ... ***`` (2008-2019) and ``*** START OF THE
  PROJECT GUTENBERG EBOOK ... ***`` (2021 on), sometimes with no space after the asterisks;
- the matching ``*** END OF ...`` lines, and the ``End of (the) Project Gutenberg('s) ...``
  line that usually precedes them;
- 1990s "ETEXT" files, which end with a repeat of the title line and a ``***START**THE SMALL
  PRINT!**`` licence block instead of an END line.

A book whose markers are missing keeps all of its text and is flagged: stripping must never
empty a book.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["StrippedBook", "strip_gutenberg"]

_START = re.compile(
    r"^[ \t]*\*{3}\s*START\s+OF\s+(THE|THIS)\s+PROJECT\s+GUTENBERG\s+E(BOOK|TEXT)\b.*$",
    re.IGNORECASE | re.MULTILINE,
)
# Lines that begin the trailing licence text; the earliest one after the start marker wins.
_END = re.compile(
    r"^[ \t]*("
    r"\*{3}\s*END\s+OF\s+(THE|THIS)\s+PROJECT\s+GUTENBERG\s+E(BOOK|TEXT)"
    r"|End\s+of\s+(the\s+)?Project\s+Gutenberg('s)?\b"
    r"|\*{3}START\*{2}THE\s+SMALL\s+PRINT"
    r").*$",
    re.IGNORECASE | re.MULTILINE,
)
# 1990s files repeat their title line where the footer begins. The same words also open some
# newer bodies, so this only counts in the last part of the file.
_LEGACY_END = re.compile(r"^[ \t]*The\s+Project\s+Gutenberg\s+E(book|text)\s+of\b.*$", re.I | re.M)
_LEGACY_END_TAIL = 0.2
_TITLE = re.compile(r"^Title:\s*(.+)$", re.MULTILINE)
_LANGUAGE = re.compile(r"^Language:\s*(.+)$", re.MULTILINE)


@dataclass
class StrippedBook:
    """The body of a book and what was found around it."""

    text: str
    title: str | None
    language: str | None
    found_start: bool
    found_end: bool


def strip_gutenberg(text: str) -> StrippedBook:
    """Cut a PG eBook down to its body; keep the whole text when no markers are found."""
    text = text.lstrip("\ufeff").replace("\r\n", "\n")
    header_end = 0
    start = _START.search(text)
    if start:
        header_end = start.end()
    header = text[:header_end] if start else text[:5000]
    end_at = len(text)
    end = _END.search(text, header_end)
    if end:
        end_at = end.start()
    legacy = _LEGACY_END.search(text, max(header_end, int(len(text) * (1 - _LEGACY_END_TAIL))))
    if legacy and legacy.start() < end_at:
        end, end_at = legacy, legacy.start()
    body = text[header_end:end_at].strip()
    title = _TITLE.search(header)
    language = _LANGUAGE.search(header)
    if not body:
        # Markers in an unexpected order would empty the book: keep everything instead.
        body, start, end = text.strip(), None, None
    return StrippedBook(
        text=body,
        title=title.group(1).strip() if title else None,
        language=language.group(1).strip() if language else None,
        found_start=start is not None,
        found_end=end is not None,
    )
