"""Word n-grams of one document as arrays, for the repetition filter and decontamination.

Long documents (a book is 100,000 words) must not cost a Python loop per n-gram per size, so
words become integer ids once and every n-gram a 64-bit polynomial hash of its ids, computed
for all positions at once with numpy. Hashes of different n-grams can collide; at 64 bits the
chance within one document is negligible (about n^2 / 2^64 for n n-grams).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["covered_positions", "ngram_hashes", "repeated_starts", "word_ids"]

# An odd 64-bit multiplier (the golden-ratio constant): the polynomial hash spreads ids well.
_BASE = np.uint64(0x9E3779B97F4A7C15)


def word_ids(words: Sequence[str]) -> np.ndarray:
    """Each word's id (equal words, equal ids), as int64, in document order."""
    vocab: dict[str, int] = {}
    return np.fromiter(
        (vocab.setdefault(w, len(vocab)) for w in words), dtype=np.int64, count=len(words)
    )


def ngram_hashes(ids: np.ndarray, n: int) -> np.ndarray:
    """Hash of the n-gram starting at each position (``len(ids) - n + 1`` values, uint64)."""
    count = len(ids) - n + 1
    if count <= 0:
        return np.empty(0, dtype=np.uint64)
    values = ids.astype(np.uint64) + np.uint64(1)  # +1 so that id 0 still moves the hash
    hashes = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):  # wrap-around is the point: arithmetic modulo 2^64
        for k in range(n):
            hashes = hashes * _BASE + values[k : k + count]
    return hashes


def repeated_starts(hashes: np.ndarray) -> np.ndarray:
    """Boolean mask: True where the n-gram starting here already occurred earlier."""
    if len(hashes) == 0:
        return np.zeros(0, dtype=bool)
    _, first = np.unique(hashes, return_index=True)
    repeated = np.ones(len(hashes), dtype=bool)
    repeated[first] = False
    return repeated


def covered_positions(starts: np.ndarray, n: int, length: int) -> np.ndarray:
    """Boolean mask of the ``length`` words covered by n-grams starting where ``starts`` is True.

    Overlapping n-grams cover each word once, so characters are not counted twice.
    """
    delta = np.zeros(length + 1, dtype=np.int64)
    idx = np.nonzero(starts)[0]
    # Start positions are distinct, and so are their ends: plain fancy-indexed updates suffice.
    delta[idx] += 1
    delta[np.minimum(idx + n, length)] -= 1
    return np.cumsum(delta[:length]) > 0
