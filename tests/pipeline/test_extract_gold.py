"""Extraction quality on the shared corpus's gold pages, and the scoring itself.

The full comparison with bare trafilatura (same pages, same run, with speed) is
bench/bench_extract.py; this test holds kiln's extraction to the targets on every page.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

import pytest

from pipeline.extract_gold import GoldPage, load_gold, score_pages, snippet_counts, token_f1
from pipeline.html_text import extract_html
from tests.helpers import need_corpus

# Issue 4's targets: trafilatura 2.3.1 on these pages, as the corpus README gives it. The
# full-text figures are extract() with every default; the snippet figure is extract() without
# comments, as trafilatura's own evaluation runs it, scored as extract_gold does: 1708 of the
# 1810 "with" snippets found and 171 of the 1817 "without" ones kept, F1 0.925996 (P 0.909,
# R 0.944), which the README rounds to 0.926. bench/bench_extract.py measures all three in one
# run.
TARGETS = {
    "scrapinghub": 0.957,
    "readability": 0.952,
    "snippets": 2 * 1708 / (2 * 1708 + 171 + 102),
}


def _extract(args: tuple[bytes, str | None]) -> str | None:
    raw, url = args
    status, text, _ = extract_html({"raw": raw, "url": url})
    return text if status == "ok" else None


@pytest.mark.slow
def test_kiln_extraction_meets_the_targets_on_every_gold_page():
    pages = load_gold(need_corpus())
    assert len(pages) == 815
    with ProcessPoolExecutor(max_workers=2) as pool:  # CI has two cores
        texts = list(pool.map(_extract, [(p.raw(), p.url) for p in pages], chunksize=8))
    scores = score_pages(pages, texts)
    snippets = scores["snippets"]
    measured = {
        "scrapinghub": scores["scrapinghub"],
        "readability": scores["readability"],
        "snippets": snippets.f1,
    }
    assert all(measured[k] >= TARGETS[k] for k in TARGETS), measured
    assert snippets.boilerplate_kept < 0.1  # at most a tenth of the boilerplate snippets


def test_token_f1_is_over_word_sets():
    assert token_f1("The cat sat.", "the CAT sat") == 1.0
    assert token_f1("a a a b", "a b") == 1.0  # sets: repetition does not count
    assert token_f1(None, "a") == 0.0
    assert token_f1("a b", "a c") == pytest.approx(0.5)


def test_snippets_count_like_trafilaturas_evaluation():
    page = GoldPage(
        "trafilatura", "x", None, None, with_snippets=["keep me", "and me"], without_snippets=["ad"]
    )
    s = snippet_counts("keep me. ad", page)
    assert (s.true_positives, s.false_negatives, s.false_positives, s.true_negatives) == (
        1,
        1,
        1,
        0,
    )
    assert snippet_counts(None, page).false_negatives == 2


def test_snippets_match_across_whitespace_runs():
    # trafilatura's evaluation squeezes whitespace in both: a snippet over a line break counts.
    page = GoldPage("trafilatura", "x", None, None, with_snippets=["two  lines\n"])
    assert snippet_counts("one\ntwo\n\nlines", page).true_positives == 1
    assert snippet_counts("twolines", page).true_positives == 0
