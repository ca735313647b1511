"""Filter stages: document length and language.

Each drop is named: ``too_short``, ``too_long``, ``language:<code>`` (a language the job does
not want) and ``low_language_score``.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.records import Document
from pipeline.stage import Stage
from pipeline.words import word_count

__all__ = ["LanguageFilter", "LengthFilter"]


class LengthFilter(Stage):
    """Keep documents with between ``min_words`` and ``max_words`` words.

    Words are whitespace-separated tokens, and each Chinese or Japanese character counts as one
    (:func:`pipeline.words.word_count`): those scripts put no spaces between words.
    """

    name = "length"

    def __init__(self, *, min_words: int = 50, max_words: int | None = None):
        self.min_words = min_words
        self.max_words = max_words

    def process(self, doc: Document) -> str | None:
        n_words = word_count(doc["text"])
        doc["meta"]["n_words"] = str(n_words)
        if n_words < self.min_words:
            return "too_short"
        if self.max_words is not None and n_words > self.max_words:
            return "too_long"
        return None


class LanguageFilter(Stage):
    """Identify the language with langid.py (its model ships in the package, so no download).

    The score is langid's normalised probability of the top language. Only the first
    ``sample_chars`` characters are classified: a book's language is clear from its first pages,
    and langid's cost grows with text length.
    """

    name = "language"

    def __init__(
        self,
        *,
        languages: Sequence[str] | None = None,
        min_score: float = 0.5,
        sample_chars: int = 5000,
    ):
        self.languages = set(languages) if languages else None
        self.min_score = min_score
        self.sample_chars = sample_chars
        self._identifier = None

    def setup(self) -> None:
        from langid.langid import LanguageIdentifier, model

        # Loading the model takes about 2 s, hence once per worker.
        self._identifier = LanguageIdentifier.from_modelstring(model, norm_probs=True)

    def process(self, doc: Document) -> str | None:
        if self._identifier is None:
            self.setup()
        lang, score = self._identifier.classify(doc["text"][: self.sample_chars])
        doc["meta"]["language"] = lang
        doc["meta"]["language_score"] = f"{score:.4f}"
        if self.languages is not None and lang not in self.languages:
            return f"language:{lang}"
        if score < self.min_score:
            return "low_language_score"
        return None
