"""Extract stage: main text out of web pages (trafilatura), bodies out of Gutenberg books.

Documents that arrive with text already (WET conversions, plain text) pass through unchanged.
"""

from __future__ import annotations

import warnings

from pipeline.gutenberg import strip_gutenberg
from pipeline.records import Document
from pipeline.stage import Stage

__all__ = ["ExtractStage"]


class ExtractStage(Stage):
    """Turn each document's payload into plain text.

    Web pages go through ``trafilatura.bare_extraction`` with tables kept and comments dropped;
    its title, date and site name land in ``meta``. A page with no main text is dropped as
    ``no_main_text``. Books lose their Project Gutenberg header and footer; a book without the
    markers keeps all its text and gets ``meta['gutenberg_markers'] = 'missing'``.
    """

    name = "extract"

    def __init__(
        self, *, favor_precision: bool = False, favor_recall: bool = False, include_tables=True
    ):
        self.favor_precision = favor_precision
        self.favor_recall = favor_recall
        self.include_tables = include_tables

    def setup(self) -> None:
        # trafilatura warns about lxml element truth-testing on every page; it is harmless.
        warnings.filterwarnings("ignore", category=FutureWarning, module="trafilatura")

    def process(self, doc: Document) -> str | None:
        if doc["source"] == "book":
            return self._book(doc)
        if doc.get("raw") is not None:
            return self._html(doc)
        return None if doc["text"].strip() else "empty_text"

    def _html(self, doc: Document) -> str | None:
        import trafilatura

        raw = doc["raw"]
        doc["raw"] = None
        if not raw or not raw.strip():
            return "empty_page"
        url = doc["url"] if doc["url"].startswith(("http://", "https://")) else None
        result = trafilatura.bare_extraction(
            raw,
            url=url,
            with_metadata=True,
            include_comments=False,
            include_tables=self.include_tables,
            favor_precision=self.favor_precision,
            favor_recall=self.favor_recall,
        )
        text = (result.text if result is not None else "") or ""
        if not text.strip():
            return "no_main_text"
        doc["text"] = text
        for key, value in (
            ("title", result.title),
            ("date", result.date),
            ("site", result.sitename or result.hostname),
            ("page_url", result.url),
        ):
            if value:
                doc["meta"][key] = str(value)
        return None

    def _book(self, doc: Document) -> str | None:
        book = strip_gutenberg(doc["text"])
        doc["text"] = book.text
        if book.title:
            doc["meta"]["title"] = book.title
        if book.language:
            doc["meta"]["declared_language"] = book.language
        if not (book.found_start and book.found_end):
            doc["meta"]["gutenberg_markers"] = "missing"
        return None if book.text.strip() else "empty_text"
