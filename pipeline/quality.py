"""Quality filters: the published heuristics of Gopher, C4 and FineWeb, one stage each.

Each filter drops a document under a named reason (the threshold it failed) and takes its
thresholds from its config (pipeline/config.py), whose defaults are the published values:

- ``gopher_repetition``: Rae et al. 2021, "Scaling Language Models: Methods, Analysis &
  Insights from Training Gopher", Appendix A, Table A1 (repeated lines, paragraphs, n-grams);
- ``gopher_quality``: the same appendix (word count, word length, symbols, bullets, ellipses,
  alphabetic words, stop words);
- ``c4``: Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified
  Text-to-Text Transformer", section 2.2 (line clean-up, lorem ipsum, curly brackets, too few
  sentences), with the cookie/policy lines of its released code, run as FineWeb ran it;
- ``fineweb``: Penedo et al. 2024, "The FineWeb Datasets", section 3.3 (lines ending in
  punctuation, short lines, characters in repeated lines).

They run in that order (FineWeb's). ``c4`` is the only one that edits text: it removes lines,
and records how many in ``meta['c4_lines_removed']``. Sources listed in ``exempt_sources`` (books
by default) pass untouched: the filters were tuned on web text, and the hard-wrapped lines of
a book read as a page of short, unpunctuated lines.

Counting is done with regexes and numpy over the whole text, not a Python step per word, so a
100,000-word document costs milliseconds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

from pipeline.config import C4Config, FineWebConfig, GopherQualityConfig, GopherRepetitionConfig
from pipeline.ngrams import covered_positions, ngram_hashes, repeated_starts, word_ids
from pipeline.records import Document
from pipeline.stage import Stage
from pipeline.words import CJK, word_count

__all__ = [
    "STOP_WORDS",
    "C4Filter",
    "FineWebFilter",
    "GopherQualityFilter",
    "GopherRepetitionFilter",
    "QualityFilter",
    "ends_in_terminal_punct",
    "word_count",
]

# Gopher's stop words are eight English words ("the", "be", "to", "of", "and", "that", "have",
# "with"; at least two must appear). For other languages kiln uses its own translations of the
# same eight words, with their commonest inflected forms; a language not listed skips the check.
_STOP_WORD_LISTS = {
    "en": "the be to of and that have with",
    "de": "der die das sein ist zu von und dass haben hat mit",
    "fr": "le la les être est à de et que avoir a avec",
    "es": "el la los las ser es a de y que haber tener con",
    "it": "il lo la le essere è a di e che avere ha con",
    "pt": "o a os as ser é para de e que ter tem com",
    "nl": "de het zijn is te naar van en dat hebben heeft met",
    "pl": "być jest do i że mieć ma z",
}
STOP_WORDS: dict[str, frozenset[str]] = {
    lang: frozenset(words.split()) for lang, words in _STOP_WORD_LISTS.items()
}

_BULLETS = ("•", "‣", "◦", "⁃", "▪", "▫", "●", "○", "■", "□", "∙", "·", "-", "*", "–")
_ELLIPSES = ("...", "…")
_WORD_WITH_LETTER = re.compile(r"\S*[^\W\d_]\S*")
_WORD_WITH_ALNUM = re.compile(r"\S*[^\W_]\S*")
_WORD = re.compile(r"\w+")
_HAS_ALNUM = re.compile(r"[^\W_]")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")

# A sentence ends in one of these, optionally followed by closing quotes or brackets. C4 also
# counts a line ending in a quotation mark as terminated.
_TERMINATORS = ".!?…‼‽⁇⁈⁉。！？｡．।॥؟۔።။"
_CLOSERS = "\"'”’»)]"
# Full-width stops end a sentence even with no space after them (Chinese, Japanese).
_FULL_WIDTH_STOPS = "。！？｡"
_SENTENCE_END = re.compile(
    f"[{re.escape(_TERMINATORS)}]+[{re.escape(_CLOSERS)}]*(?=\\s|$)"
    f"|[{_FULL_WIDTH_STOPS}][{re.escape(_CLOSERS)}」』]*"
)
_LINE_END = re.compile(f'(?:[{re.escape(_TERMINATORS)}][{re.escape(_CLOSERS)}]*|["”])\\s*$')

# Lines C4's released code (TensorFlow Datasets, c4_utils.py) removes as policy boilerplate.
_POLICY_SUBSTRINGS = (
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
)


def ends_in_terminal_punct(line: str) -> bool:
    """True when a line ends a sentence: '.', '!', '?', an ellipsis, CJK/Indic/Arabic stops..."""
    return _LINE_END.search(line) is not None


def _content_lines(text: str) -> list[str]:
    """Lines that hold text, stripped, with the outer pipes of table rows taken off.

    kiln's text renders tables as ``| cell | cell |`` rows with ``|---|`` separator lines; the
    published line rules were tuned on text without such markup, so separator and empty-cell
    lines are not lines here, and a row ending in ``|`` ends where its last cell does.
    """
    out = []
    for line in text.split("\n"):
        line = line.strip()
        if line.startswith("|"):
            line = line.strip("| ")
        if line and _HAS_ALNUM.search(line):
            out.append(line)
    return out


def _repeated(items: Iterable[str]) -> tuple[int, int]:
    """How many items repeat an earlier one, and their characters."""
    seen: set[str] = set()
    count = chars = 0
    for item in items:
        if item in seen:
            count += 1
            chars += len(item)
        else:
            seen.add(item)
    return count, chars


class QualityFilter(Stage):
    """Base of the quality filters: documents from exempt sources pass without a look."""

    def __init__(self, *, exempt_sources: Iterable[str] = ("book",)):
        self.exempt_sources = frozenset(exempt_sources)

    def process(self, doc: Document) -> str | None:
        if doc["source"] in self.exempt_sources or not doc["text"]:
            return None
        return self.check(doc)

    def check(self, doc: Document) -> str | None:
        raise NotImplementedError


class GopherRepetitionFilter(QualityFilter):
    """Drop documents that repeat themselves: lines, paragraphs, or word n-grams."""

    name = "gopher_repetition"

    def __init__(self, cfg: GopherRepetitionConfig | None = None, **kwargs):
        super().__init__(**kwargs)
        self.cfg = cfg or GopherRepetitionConfig()

    def check(self, doc: Document) -> str | None:
        cfg, text = self.cfg, doc["text"]
        lines = _content_lines(text)
        paragraphs = [p for p in _PARAGRAPH_BREAK.split(text) if p.strip()]
        total_chars = max(1, len(text))
        n_lines, line_chars = _repeated(lines)
        n_paras, para_chars = _repeated(paragraphs)
        if lines and n_lines / len(lines) > cfg.max_dup_line_fraction:
            return "dup_line_fraction"
        if paragraphs and n_paras / len(paragraphs) > cfg.max_dup_paragraph_fraction:
            return "dup_paragraph_fraction"
        if line_chars / total_chars > cfg.max_dup_line_char_fraction:
            return "dup_line_char_fraction"
        if para_chars / total_chars > cfg.max_dup_paragraph_char_fraction:
            return "dup_paragraph_char_fraction"

        words = text.split()
        if not words:
            return None
        ids = word_ids(words)
        lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
        word_chars = int(lengths.sum())
        # Characters of the n-gram starting at each position: a windowed sum of word lengths.
        cum = np.concatenate(([0], np.cumsum(lengths)))
        for n, limit in sorted(cfg.max_top_ngram_char_fraction.items()):
            hashes = ngram_hashes(ids, n)
            if len(hashes) == 0:
                continue
            uniq, first, counts = np.unique(hashes, return_index=True, return_counts=True)
            top = int(np.argmax(counts))
            if counts[top] < 2:
                continue  # no n-gram repeats at all
            start = int(first[top])
            top_chars = int(cum[start + n] - cum[start]) * int(counts[top])
            if top_chars / word_chars > limit:
                return f"top_{n}gram_char_fraction"
        for n, limit in sorted(cfg.max_dup_ngram_char_fraction.items()):
            hashes = ngram_hashes(ids, n)
            if len(hashes) == 0:
                continue
            covered = covered_positions(repeated_starts(hashes), n, len(words))
            if int(lengths[covered].sum()) / word_chars > limit:
                return f"dup_{n}gram_char_fraction"
        return None


class GopherQualityFilter(QualityFilter):
    """Drop documents that do not read like prose: too short or long, odd words, lists, no
    stop words."""

    name = "gopher_quality"

    def __init__(self, cfg: GopherQualityConfig | None = None, **kwargs):
        super().__init__(**kwargs)
        self.cfg = cfg or GopherQualityConfig()

    def check(self, doc: Document) -> str | None:
        cfg, text = self.cfg, doc["text"]
        n_words = word_count(text)
        if n_words < cfg.min_words:
            return "too_few_words"
        if n_words > cfg.max_words:
            return "too_many_words"
        words = _WORD_WITH_ALNUM.findall(text)  # tokens that are not just punctuation
        if not words:
            return "alpha_words"
        cjk_chars = len(CJK.findall(text))
        # Word length means nothing for scripts without spaces; mostly-CJK text skips the check.
        if cjk_chars < n_words / 2:
            mean_length = sum(map(len, words)) / len(words)
            if not cfg.min_mean_word_length <= mean_length <= cfg.max_mean_word_length:
                return "mean_word_length"
        symbols = text.count("#") + sum(text.count(e) for e in _ELLIPSES)
        if symbols / n_words > cfg.max_symbol_word_ratio:
            return "symbol_word_ratio"
        lines = _content_lines(text)
        if lines:
            bullets = sum(1 for line in lines if line.startswith(_BULLETS))
            if bullets / len(lines) > cfg.max_bullet_lines_fraction:
                return "bullet_lines"
            ellipses = sum(1 for line in lines if line.endswith(_ELLIPSES))
            if ellipses / len(lines) > cfg.max_ellipsis_lines_fraction:
                return "ellipsis_lines"
        # Out of words, not of all tokens: kiln's text renders tables and lists with tokens such
        # as "|" and "-" that Gopher's extraction did not produce, and a table of words is fine.
        if len(_WORD_WITH_LETTER.findall(text)) / len(words) < cfg.min_alpha_words_fraction:
            return "alpha_words"
        stop_words = STOP_WORDS.get(doc["meta"].get("language", ""))
        if stop_words is not None and cfg.min_stop_words > 0:
            present = stop_words.intersection(_WORD.findall(text.lower()))
            if len(present) < cfg.min_stop_words:
                return "stop_words"
        return None


class C4Filter(QualityFilter):
    """C4's clean-up: remove boilerplate lines, drop pages with placeholder text, code or too
    few sentences left."""

    name = "c4"

    def __init__(self, cfg: C4Config | None = None, **kwargs):
        super().__init__(**kwargs)
        self.cfg = cfg or C4Config()

    def check(self, doc: Document) -> str | None:
        cfg = self.cfg
        kept, removed = [], 0
        for line in doc["text"].split("\n"):
            stripped = line.strip()
            if not stripped:
                continue
            words = stripped.split()
            if max(map(len, words)) > cfg.max_word_length:
                removed += 1
                continue
            # Table rows (kiln renders cells as "| a | b |") are not prose lines: C4's rules on
            # line shape would cut tables apart, so only its content rules apply to them.
            if not stripped.startswith("|"):
                if cfg.remove_lines_without_terminal_punct and not ends_in_terminal_punct(stripped):
                    removed += 1
                    continue
                if word_count(stripped) < cfg.min_words_per_line:
                    removed += 1
                    continue
            lower = stripped.lower()
            if cfg.drop_lorem_ipsum and "lorem ipsum" in lower:
                return "lorem_ipsum"
            if cfg.remove_javascript_lines and "javascript" in lower:
                removed += 1
                continue
            if cfg.drop_curly_bracket and "{" in stripped:
                return "curly_bracket"
            if cfg.remove_policy_lines and any(p in lower for p in _POLICY_SUBSTRINGS):
                removed += 1
                continue
            kept.append(line.rstrip())
        text = "\n".join(kept)
        if len(_SENTENCE_END.findall(text)) < cfg.min_sentences:
            return "too_few_sentences"
        doc["text"] = text
        doc["meta"]["c4_lines_removed"] = str(removed)
        return None


class FineWebFilter(QualityFilter):
    """FineWeb's filters: too few lines ending in punctuation, too many short lines, too many
    characters in repeated lines."""

    name = "fineweb"

    def __init__(self, cfg: FineWebConfig | None = None, **kwargs):
        super().__init__(**kwargs)
        self.cfg = cfg or FineWebConfig()

    def check(self, doc: Document) -> str | None:
        cfg = self.cfg
        lines = _content_lines(doc["text"])
        if not lines:
            return None
        punct = sum(1 for line in lines if ends_in_terminal_punct(line))
        if punct / len(lines) <= cfg.min_punct_line_fraction:
            return "line_punct_ratio"
        short = sum(1 for line in lines if len(line) <= cfg.short_line_chars)
        if short / len(lines) >= cfg.max_short_line_fraction:
            return "short_line_ratio"
        _, dup_chars = _repeated(lines)
        if dup_chars / max(1, sum(map(len, lines))) >= cfg.max_dup_line_char_fraction:
            return "dup_line_char_ratio"
        return None
