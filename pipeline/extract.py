"""Extract stage: main text out of web pages (trafilatura), bodies out of Gutenberg books.

Web pages go through :func:`pipeline.html_text.extract_html` in a child process with a time
limit per page (pipeline/timelimit.py), so a pathological page is given up and counted instead
of hanging a worker; a page over the size cap is not even tried. Documents that arrive with
text already (WET conversions, plain text) pass through unchanged.

Drop reasons: ``empty_page``, ``page_too_large``, ``extract_timeout``, ``extract_crashed`` (the
child died, e.g. out of memory), ``extract_error:<Exception>``, ``binary_content`` (bytes that
are not text), ``no_main_text``, and ``empty_text`` (a book or text with nothing visible left).
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Sequence

from pipeline.gutenberg import strip_gutenberg
from pipeline.records import Document, is_kept, mark_dropped
from pipeline.stage import Stage
from pipeline.timelimit import CallFailed, CallTimedOut, ChildDied, TimeLimitedWorker

__all__ = ["DEFAULT_MAX_PAGE_BYTES", "DEFAULT_TIME_LIMIT_SECONDS", "ExtractStage"]

log = logging.getLogger(__name__)

# Common Crawl truncates every payload at 1 MiB (its WARC files mark such records with
# WARC-Truncated), so real pages above that are rare; twice that leaves room for direct crawls.
DEFAULT_MAX_PAGE_BYTES = 2 * 1024 * 1024
# trafilatura's own command line gives up on a file after 30 s (EXTRACTION_TIMEOUT in its
# settings.cfg); a typical page takes 20-60 ms here.
DEFAULT_TIME_LIMIT_SECONDS = 30.0

_EXTRACT_TARGET = "pipeline.html_text:extract_html"


# Code points that show nothing on their own: control, format and surrogate ones, combining
# marks with no letter under them (variation selectors among them), separators, and the Hangul
# fillers, which are letters by category. Unassigned ones count as visible: they may be emoji or
# ideographs newer than this Python's Unicode tables.
_INVISIBLE = {"Cc", "Cf", "Cs", "Mn", "Me", "Zs", "Zl", "Zp"}
_FILLERS = {"\u115f", "\u1160", "\u3164", "\uffa0"}
# Format characters that are drawn (signs spanning numbers, as the Arabic end of ayah).
_DRAWN_FORMAT = {*"\u0600\u0601\u0602\u0603\u0604\u0605\u06dd\u070f\u08e2", "\U000110bd"}


def _has_visible_text(text: str) -> bool:
    """True when the text holds a character one can see (see _INVISIBLE)."""
    return any(
        c in _DRAWN_FORMAT
        or (not c.isspace() and unicodedata.category(c) not in _INVISIBLE and c not in _FILLERS)
        for c in text
    )


class ExtractStage(Stage):
    """Turn each document's payload into plain text.

    Web pages: main text by trafilatura with comments left out, tables kept, code blocks
    verbatim; ``meta`` gets title, date, url (the page's canonical URL), site,
    declared_language (from ``<html lang>``) and encoding. Books lose their Project Gutenberg
    header and footer; a book without the markers keeps all its text and gets
    ``meta['gutenberg_markers'] = 'missing'``.
    """

    name = "extract"

    def __init__(
        self,
        *,
        favor_precision: bool = False,
        favor_recall: bool = False,
        include_tables: bool = True,
        include_comments: bool = False,
        extensive_date_search: bool = False,
        max_page_bytes: int = DEFAULT_MAX_PAGE_BYTES,
        time_limit_seconds: float = DEFAULT_TIME_LIMIT_SECONDS,
    ):
        self.settings = {
            "favor_precision": favor_precision,
            "favor_recall": favor_recall,
            "include_tables": include_tables,
            "include_comments": include_comments,
            "extensive_date_search": extensive_date_search,
        }
        self.max_page_bytes = max_page_bytes
        self.time_limit_seconds = time_limit_seconds
        self._worker: TimeLimitedWorker | None = None

    def __getstate__(self) -> dict:
        # Ray ships the stage to its workers; the child process stays with the one that made it.
        state = dict(self.__dict__)
        state["_worker"] = None
        return state

    def setup(self) -> None:
        if self._worker is None:
            self._worker = TimeLimitedWorker(_EXTRACT_TARGET, time_limit=self.time_limit_seconds)

    def close(self) -> None:
        """Stop the extraction child process (it also stops by itself when this process ends)."""
        if self._worker is not None:
            self._worker.close()
            self._worker = None

    def process(self, doc: Document) -> str | None:
        if doc["source"] == "book":
            return self._book(doc)
        if doc.get("raw") is None:
            return None if _has_visible_text(doc["text"]) else "empty_text"
        reason, request = self._page_request(doc)
        if request is None:
            return reason
        self.setup()
        [outcome] = self._worker.map([request])
        return self._apply(doc, outcome)

    def process_batch(self, docs: Sequence[Document]) -> list[Document]:
        """Extract a batch: its web pages go to the child together, so the child goes from one
        page to the next without waiting for this process to be scheduled in between."""
        pages: list[tuple[Document, dict]] = []
        for doc in docs:
            if not is_kept(doc):
                continue
            try:
                if doc["source"] != "book" and doc.get("raw") is not None:
                    reason, request = self._page_request(doc)
                    if request is not None:
                        pages.append((doc, request))
                else:
                    reason = self.process(doc)
            except Exception as exc:  # one bad document must not fail the job
                reason = f"error:{type(exc).__name__}"
            if reason is not None:
                mark_dropped(doc, self.name, reason)
        if pages:
            self.setup()
            outcomes = self._worker.map([request for _, request in pages])
            for (doc, _), outcome in zip(pages, outcomes, strict=True):
                try:
                    reason = self._apply(doc, outcome)
                except Exception as exc:
                    reason = f"error:{type(exc).__name__}"
                if reason is not None:
                    mark_dropped(doc, self.name, reason)
        return list(docs)

    def _page_request(self, doc: Document) -> tuple[str | None, dict | None]:
        """(drop reason, None) for a page not worth trying, else (None, the child's request)."""
        raw = doc["raw"]
        doc["raw"] = None
        if not raw or not raw.strip():
            return "empty_page", None
        if len(raw) > self.max_page_bytes:
            doc["meta"]["page_bytes"] = str(len(raw))
            return "page_too_large", None
        url = doc["url"] if doc["url"].startswith(("http://", "https://")) else None
        request = {
            "raw": raw,
            "url": url,
            "content_type": doc["meta"].get("content_type"),
            "settings": self.settings,
        }
        return None, request

    def _apply(self, doc: Document, outcome) -> str | None:
        """Put the child's answer for one page into ``doc``; its drop reason or None."""
        if isinstance(outcome, CallTimedOut):
            log.warning("extract: gave up on %s after %g s", doc["url"], self.time_limit_seconds)
            return "extract_timeout"
        if isinstance(outcome, ChildDied):
            log.warning("extract: %s on %s", outcome, doc["url"])
            return "extract_crashed"
        if isinstance(outcome, CallFailed):
            return f"extract_error:{outcome.kind}"
        status, text, meta = outcome
        doc["meta"].update(meta)
        if status != "ok":
            return status
        doc["text"] = text
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
        return None if _has_visible_text(book.text) else "empty_text"
