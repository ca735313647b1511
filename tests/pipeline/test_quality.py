"""The quality filters on real text: what they keep, what they drop and why."""

from __future__ import annotations

import copy
import gzip
import json

import pytest

from pipeline.config import C4Config, FineWebConfig, GopherQualityConfig, GopherRepetitionConfig
from pipeline.filters import LanguageFilter
from pipeline.html_text import extract_html
from pipeline.quality import (
    C4Filter,
    FineWebFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
    ends_in_terminal_punct,
    word_count,
)
from pipeline.records import is_kept, make_document
from tests.helpers import SAMPLE, need_corpus

FILTERS = (GopherRepetitionFilter, GopherQualityFilter, C4Filter, FineWebFilter)
# Two sample pages repeat themselves by Gopher's measure: a game's quest list and a dance
# school's figure descriptions, both written as near-identical instructions.
REPETITIVE = {
    "archive.org.the-pain.net.silkroad.html.gz": "dup_5gram_char_fraction",
    "rueda.wikidot.com.enchufla.html.gz": "dup_9gram_char_fraction",
}


@pytest.fixture(scope="module")
def sample_pages() -> dict[str, dict]:
    """The sample's web pages as the job has them before the quality filters."""
    docs = {}
    for path in sorted((SAMPLE / "web").glob("*.html.gz")):
        status, text, _ = extract_html({"raw": gzip.decompress(path.read_bytes())})
        assert status == "ok"
        docs[path.name] = make_document("web", path.name, text=text)
    LanguageFilter().process_batch(list(docs.values()))  # sets meta['language']
    return docs


def _doc(text: str, language: str = "en", source: str = "web") -> dict:
    return make_document(source, "x", text=text, meta={"language": language})


def _run(doc: dict) -> tuple[str | None, str | None]:
    for f in FILTERS:
        [doc] = f().process_batch([doc])
    return doc["drop_stage"], doc["drop_reason"]


ARTICLE = (SAMPLE / "books" / "pg35_The_Time_Machine.txt").read_text(encoding="utf-8-sig")
# A few real paragraphs of prose, joined as a web page would be: one paragraph per line.
PROSE = "\n".join(
    " ".join(p.split()) for p in ARTICLE[20000:40000].split("\n\n") if len(p.split()) > 20
)


def test_real_pages_pass_except_the_repetitive_ones(sample_pages):
    for name, doc in sample_pages.items():
        outcome = _run(copy.deepcopy(doc))
        if name in REPETITIVE:
            assert outcome == ("gopher_repetition", REPETITIVE[name]), name
        else:
            assert outcome == (None, None), (name, outcome)


def test_real_prose_passes_and_books_are_exempt():
    assert _run(_doc(PROSE)) == (None, None)
    # A whole book is over Gopher's 100,000-word cap (Dracula) but books are exempt by default.
    book = _doc(ARTICLE * 4, source="book")
    assert word_count(book["text"]) > 100_000
    assert _run(book) == (None, None)
    strict = GopherQualityFilter(exempt_sources=[])
    assert strict.process_batch([book])[0]["drop_reason"] == "too_many_words"


@pytest.mark.parametrize(
    "text, reason",
    [
        ("\n".join([PROSE.split("\n")[0]] * 5 + PROSE.split("\n")[:3]), "dup_line_fraction"),
        (" ".join(["buy cheap watches online"] * 200), "top_2gram_char_fraction"),
        (  # one long paragraph twice among many short lines: few lines, many characters
            "\n".join([" ".join(PROSE.split("\n")[:6])] + [line[:50] for line in PROSE.split("\n")])
            + "\n"
            + " ".join(PROSE.split("\n")[:6]),
            "dup_line_char_fraction",
        ),
    ],
    ids=["lines", "top-ngram", "line-chars"],
)
def test_repetition_reasons(text, reason):
    assert GopherRepetitionFilter().process_batch([_doc(text)])[0]["drop_reason"] == reason


@pytest.mark.parametrize(
    "text, language, reason",
    [
        ("The time machine works. " * 5, "en", "too_few_words"),
        (PROSE.replace(" ", "").replace(".", ". ") * 2, "en", "mean_word_length"),
        (PROSE + " #tag" * 800, "en", "symbol_word_ratio"),
        ("\n".join("- " + line[:60] for line in PROSE.split("\n")), "en", "bullet_lines"),
        ("\n".join(line[:80] + "..." for line in PROSE.split("\n")), "en", "ellipsis_lines"),
        (PROSE + " 2019 12 31 0815 4711" * 400, "en", "alpha_words"),
        (PROSE, "de", "stop_words"),  # English prose has none of the German stop words
    ],
    ids=["short", "long-words", "hashtags", "bullets", "ellipses", "numbers", "stop-words"],
)
def test_gopher_quality_reasons(text, language, reason):
    assert GopherQualityFilter().process_batch([_doc(text, language)])[0]["drop_reason"] == reason


def test_languages_without_a_stop_word_list_and_cjk_text():
    assert GopherQualityFilter().process_batch([_doc(PROSE, "sw")])[0]["drop_reason"] is None
    chinese = "这是一个关于时间机器的故事，旅行者在未来看到了人类的命运。" * 20
    assert word_count(chinese) > 500
    assert GopherQualityFilter().process_batch([_doc(chinese, "zh")])[0]["drop_reason"] is None


def test_c4_removes_boilerplate_lines_and_drops_placeholder_code_and_thin_pages():
    page = (
        "Home\nAbout us\n"
        + PROSE
        + "\nPlease enable JavaScript to view the comments powered by Disqus."
        + "\nThis site uses cookies to give you the best experience, see our cookie policy."
        + "\n| Element | Symbol |\n|---|---|\n| He | 2 |"
    )
    [doc] = C4Filter().process_batch([_doc(page)])
    assert is_kept(doc)
    assert "Home" not in doc["text"] and "JavaScript" not in doc["text"]
    assert "cookie" not in doc["text"]
    assert "| He | 2 |" in doc["text"] and "|---|---|" in doc["text"]  # tables stay whole
    assert doc["meta"]["c4_lines_removed"] == "4"
    for text, reason in (
        (PROSE + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit.", "lorem_ipsum"),
        (PROSE + "\nfunction show() { return document.title; }", "curly_bracket"),
        ("Read more about it here.\nShare this on your wall!\nCopyright 2020 all rights", None),
    ):
        [doc] = C4Filter().process_batch([_doc(text)])
        assert doc["drop_reason"] == (reason or "too_few_sentences")


def test_c4_terminal_punctuation_rule_is_optional():
    text = PROSE + "\nA heading without a full stop"
    kept = C4Filter().process_batch([_doc(text)])[0]["text"]
    assert "A heading without a full stop" in kept
    cfg = C4Config(remove_lines_without_terminal_punct=True)
    strict = C4Filter(cfg).process_batch([_doc(text)])[0]["text"]
    assert "A heading without a full stop" not in strict


def test_fineweb_reasons():
    nav = "\n".join(f"Section {i}" for i in range(40)) + "\n" + PROSE.split("\n")[0]
    assert FineWebFilter().process_batch([_doc(nav)])[0]["drop_reason"] == "line_punct_ratio"
    short = "\n".join(["Yes it is.", "No.", "Fine then!"] * 10 + PROSE.split("\n")[:2])
    assert FineWebFilter().process_batch([_doc(short)])[0]["drop_reason"] == "short_line_ratio"
    lines = PROSE.split("\n")
    longest = max(lines, key=len)
    dup = "\n".join([longest] + lines[:6] + [longest])
    assert FineWebFilter().process_batch([_doc(dup)])[0]["drop_reason"] == "dup_line_char_ratio"


def test_thresholds_come_from_config():
    text = PROSE
    assert GopherQualityFilter(GopherQualityConfig(min_words=10**6)).process_batch([_doc(text)])[0][
        "drop_reason"
    ] == ("too_few_words")
    loose = GopherRepetitionConfig(max_dup_line_fraction=1.0, max_dup_line_char_fraction=1.0)
    repeated = "\n".join([PROSE.split("\n")[0]] * 5 + PROSE.split("\n")[:3])
    assert GopherRepetitionFilter(loose).process_batch([_doc(repeated)])[0]["drop_reason"] != (
        "dup_line_fraction"
    )
    assert FineWebFilter(FineWebConfig(min_punct_line_fraction=0.99)).process_batch(
        [_doc(PROSE + "\nno stop")]
    )[0]["drop_reason"] == ("line_punct_ratio")


def test_terminal_punctuation():
    for line in ("It ended.", 'He said "stop!"', "Fin…", "这是句子。", "| cell. |".strip("| ")):
        assert ends_in_terminal_punct(line), line
    for line in ("Section 3", "Read more »", "see: x"):
        assert not ends_in_terminal_punct(line), line


def test_raw_common_crawl_text_loses_its_navigation():
    path = need_corpus("webtext", "cc_wet_documents-000.jsonl.gz")
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        rows = [json.loads(line) for line in lines]
    docs = [_doc(r["text"]) for r in rows]
    for f in FILTERS:
        docs = f().process_batch(docs)
    kept = [d for d in docs if is_kept(d)]
    assert 0 < len(kept) < len(docs)  # some navigation-heavy pages go entirely
    assert all(int(d["meta"]["c4_lines_removed"]) > 0 for d in kept)
    assert all("PPAA Home" not in d["text"] for d in kept)
