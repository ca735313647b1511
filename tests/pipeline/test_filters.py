"""Length and language filters on real text."""

from __future__ import annotations

import gzip

import trafilatura

from pipeline.filters import LanguageFilter, LengthFilter
from pipeline.records import make_document
from tests.helpers import SAMPLE


def _book(name: str) -> dict:
    return make_document(
        "book", name, text=(SAMPLE / "books" / name).read_text(encoding="utf-8-sig")
    )


def test_length_filter_counts_words():
    f = LengthFilter(min_words=5, max_words=10)
    docs = f.process_batch(
        [
            make_document("web", "a", text="one two"),
            make_document("web", "b", text="w " * 7),
            make_document("web", "c", text="w " * 20),
        ]
    )
    assert [d["drop_reason"] for d in docs] == ["too_short", None, "too_long"]


def test_language_filter_identifies_real_text():
    german = trafilatura.extract(
        gzip.decompress((SAMPLE / "web" / "rete-mirabile.net.15jahre.html.gz").read_bytes())
    )
    f = LanguageFilter(languages=["en", "fr"], min_score=0.5)
    docs = f.process_batch(
        [
            _book("pg35_The_Time_Machine.txt"),
            _book("pg4650_Candide.txt"),
            make_document("web", "de", text=german),
        ]
    )
    assert [d["meta"]["language"] for d in docs] == ["en", "fr", "de"]
    assert [d["drop_reason"] for d in docs] == [None, None, "language:de"]
    assert float(docs[0]["meta"]["language_score"]) > 0.9


def test_low_score_is_its_own_reason():
    f = LanguageFilter(languages=None, min_score=0.99)
    [doc] = f.process_batch([make_document("web", "x", text="ok 123 !! ?? xyz")])
    assert doc["drop_reason"] == "low_language_score"


def test_configured_languages_are_checked_against_the_model():
    import pytest
    from langid.langid import LanguageIdentifier, model

    from pipeline.config import LANGID_LANGUAGES, FilterConfig

    identifier = LanguageIdentifier.from_modelstring(model, norm_probs=True)
    assert set(identifier.nb_classes) == LANGID_LANGUAGES
    assert FilterConfig(languages=["en", "de"]).languages == ["en", "de"]
    with pytest.raises(ValueError, match=r"\['eng', 'english'\]"):
        FilterConfig(languages=["en", "eng", "english"])
