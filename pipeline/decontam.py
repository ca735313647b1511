"""Decontamination: drop documents that share a long word n-gram with evaluation texts.

A training document containing text the model is later scored on inflates the score. As in
GPT-3 (Brown et al. 2020, appendix C), a document is contaminated when it shares one 13-word
n-gram with any evaluation text, after lower-casing and keeping only word characters (so
punctuation and spacing differences do not hide a copy). Contaminated documents are dropped
as ``contaminated``, with the first shared n-gram in ``meta['contaminated_by']``.

The evaluation texts are the job's ``eval.prompts`` by default, plus any files named in
``data.decontam.files``. A text shorter than n words has no n-gram and cannot be checked: it
is skipped with a warning (kiln's default prompts are a few words each, so by default the
stage only finds copies of texts you add).

The check is cheap for long documents: a window can only match if all its words occur in
the evaluation texts, so only windows inside such runs are hashed and looked up.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from pipeline.records import Document
from pipeline.stage import Stage

__all__ = ["DecontamStage", "EvalNgrams", "load_eval_texts", "normalized_words"]

log = logging.getLogger(__name__)

_WORD = re.compile(r"\w+")


def normalized_words(text: str) -> list[str]:
    """Lower-cased word tokens, punctuation and spacing dropped."""
    return _WORD.findall(text.lower())


def _ngram_key(words: Sequence[str]) -> int:
    # A stable hash (Python's hash() differs between processes, and Ray workers are processes).
    digest = hashlib.blake2b(" ".join(words).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def load_eval_texts(texts: Iterable[str], files: Iterable[str | Path] = ()) -> list[str]:
    """The evaluation texts: given strings, then each file (.jsonl: a 'text' per line; other
    files: the whole file is one text)."""
    out = list(texts)
    for path in map(Path, files):
        if not path.is_file():
            raise FileNotFoundError(f"decontamination file {path} does not exist")
        if path.suffix == ".jsonl":
            for i, line in enumerate(path.open(encoding="utf-8")):
                if line.strip():
                    row = json.loads(line)
                    if not isinstance(row.get("text"), str):
                        raise ValueError(f"{path}:{i + 1}: expected a 'text' string field")
                    out.append(row["text"])
        else:
            out.append(path.read_text(encoding="utf-8"))
    return out


class EvalNgrams:
    """The n-grams of the evaluation texts, and a test of whether a document shares one."""

    def __init__(self, texts: Iterable[str], n: int = 13):
        self.n = n
        self.keys: set[int] = set()
        self.vocabulary: set[str] = set()
        self.texts = self.too_short = 0
        for text in texts:
            self.texts += 1
            words = normalized_words(text)
            if len(words) < n:
                self.too_short += 1
                continue
            self.vocabulary.update(words)
            for i in range(len(words) - n + 1):
                self.keys.add(_ngram_key(words[i : i + n]))

    def first_shared(self, text: str) -> str | None:
        """The first n-gram of ``text`` that an evaluation text also has, or None."""
        if not self.keys:
            return None
        words = normalized_words(text)
        n = self.n
        if len(words) < n:
            return None
        vocab = self.vocabulary
        known = np.fromiter((w in vocab for w in words), dtype=np.int32, count=len(words))
        # Windows whose n words are all evaluation words: a running count over the window.
        run = np.concatenate(([0], np.cumsum(known)))
        candidates = np.nonzero(run[n:] - run[:-n] == n)[0]
        for i in candidates:
            window = words[i : i + n]
            if _ngram_key(window) in self.keys:
                return " ".join(window)
        return None


class DecontamStage(Stage):
    """Drop documents that share an n-gram with the evaluation texts (``contaminated``)."""

    name = "decontam"

    def __init__(self, texts: Iterable[str] = (), *, ngram_words: int = 13):
        self.index = EvalNgrams(texts, ngram_words)
        if self.index.too_short:
            log.warning(
                "decontam: %d of %d evaluation texts are shorter than %d words and cannot be "
                "checked",
                self.index.too_short,
                self.index.texts,
                ngram_words,
            )

    def process(self, doc: Document) -> str | None:
        shared = self.index.first_shared(doc["text"])
        if shared is None:
            return None
        doc["meta"]["contaminated_by"] = shared
        return "contaminated"
