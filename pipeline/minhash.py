"""MinHash signatures and LSH banding: the fingerprints near-duplicate detection works on.

A document's signature is datasketch's MinHash over the set of its word n-grams (shingles),
after normalisation; a word is what pipeline/words.py says it is. LSH cuts the signature into
``bands`` bands of ``rows`` values; two documents whose Jaccard similarity is s share at least
one band with probability 1 - (1 - s^rows)^bands, an S-curve whose steepest point is near
(1 / bands)^(1 / rows).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

import numpy as np

from pipeline.words import split_words

__all__ = [
    "MINHASH_DTYPE",
    "MINHASH_SCHEME",
    "WORD_SPLITS",
    "MinHasher",
    "band_keys",
    "collision_probability",
    "estimated_jaccard",
    "lsh_params",
    "lsh_threshold",
    "normalize_text",
    "shingle_words",
]

_SPACE = re.compile(r"\s+")

# datasketch's permutation scheme (its default since 2.0): 32-bit values, so a signature of 112
# permutations is 448 bytes. Sketches of different schemes cannot be compared.
MINHASH_SCHEME = "affine32"
MINHASH_DTYPE = np.uint32


def normalize_text(text: str) -> str:
    """Unicode NFKC, case-folded, whitespace runs collapsed: what "the same text" means for
    exact dedup."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


# Punctuation code points map to a space; the table is built once (str.translate takes a dict).
_PUNCTUATION_TO_SPACE = {
    cp: " " for cp in range(0x110000) if unicodedata.category(chr(cp)).startswith("P")
}


# How shingles' words are cut. "cjk_characters": kiln's word rule (pipeline/words.py), each
# Chinese character and kana a word; "whitespace": whitespace alone, as kiln did before the
# rule reached dedup (dataset versions stored then have band keys computed so).
_WORD_SPLITTERS = {"cjk_characters": split_words, "whitespace": str.split}
WORD_SPLITS = tuple(_WORD_SPLITTERS)


def shingle_words(text: str, word_split: str = "cjk_characters") -> list[str]:
    """Words for near-dup shingles: normalised, with punctuation removed.

    Releases of the same text often differ only in typography (straight or curly quotes, "--"
    or an em dash); without this, "we're" and "we’re" would be different words.
    """
    return _WORD_SPLITTERS[word_split](normalize_text(text).translate(_PUNCTUATION_TO_SPACE))


class MinHasher:
    """MinHash signatures over word n-grams of normalised text, a batch at a time."""

    def __init__(
        self,
        *,
        num_perm: int = 112,
        shingle_size: int = 5,
        seed: int = 1,
        word_split: str = "cjk_characters",
    ):
        if shingle_size < 1:
            raise ValueError(f"shingle_size must be at least 1, got {shingle_size}")
        if word_split not in WORD_SPLITS:
            raise ValueError(f"word_split must be one of {WORD_SPLITS}, got {word_split!r}")
        self.num_perm = num_perm
        self.shingle_size = shingle_size
        self.seed = seed
        self.word_split = word_split

    def shingles(self, text: str) -> set[bytes]:
        words = shingle_words(text, self.word_split)
        n = self.shingle_size
        return {" ".join(words[i : i + n]).encode() for i in range(len(words) - n + 1)}

    def signatures(self, texts: list[str]) -> list[np.ndarray | None]:
        """One uint32 signature per text; None for texts shorter than one shingle."""
        from datasketch import MinHash

        out: list[np.ndarray | None] = [None] * len(texts)
        hashed: list[int] = []  # which text each signature the generator yields belongs to

        def shingle_lists():
            # One text's shingles at a time: a batch's shingle sets together take over 100 KB
            # per 4 KB document, so holding them all set a worker's peak by its batch's texts.
            for i, text in enumerate(texts):
                shingles = self.shingles(text)
                if shingles:
                    hashed.append(i)
                    yield list(shingles)

        # MinHash.generator shares one set of permutations across the batch, several times
        # faster than one MinHash with one update() call per shingle (bench/bench_dedup.py).
        signatures = MinHash.generator(
            shingle_lists(), num_perm=self.num_perm, seed=self.seed, scheme=MINHASH_SCHEME
        )
        for mh in signatures:
            out[hashed[-1]] = np.asarray(mh.hashvalues, dtype=MINHASH_DTYPE)
        return out


def band_keys(signature: np.ndarray, bands: int, rows: int) -> list[int]:
    """One int64 bucket key per band: a hash of the band's index and its ``rows`` values.

    The band index is hashed in so that equal values in different bands never collide.
    """
    keys = []
    for b in range(bands):
        digest = hashlib.blake2b(
            signature[b * rows : (b + 1) * rows].tobytes(), digest_size=8, person=b"band%04d" % b
        ).digest()
        keys.append(int.from_bytes(digest, "little", signed=True))
    return keys


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """The share of equal signature values: MinHash's estimate of Jaccard similarity."""
    return float(np.mean(a == b))


def collision_probability(similarity: float, bands: int, rows: int) -> float:
    """Probability that two documents of this Jaccard similarity share at least one band."""
    return 1.0 - (1.0 - similarity**rows) ** bands


def lsh_threshold(bands: int, rows: int) -> float:
    """Where the S-curve rises most steeply: about the similarity LSH separates at."""
    return (1.0 / bands) ** (1.0 / rows)


def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """Bands and rows (bands x rows <= num_perm) for a target Jaccard threshold.

    Chooses the pair that minimises the area of false positives (pairs below the threshold that
    collide) plus false negatives (pairs above it that do not), equally weighted, the criterion
    datasketch's MinHashLSH uses for its ``threshold`` argument.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
    grid = np.linspace(0.0, 1.0, 401)
    below, above = grid <= threshold, grid >= threshold
    best, best_err = (1, num_perm), float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            p = 1.0 - (1.0 - grid**rows) ** bands
            false_pos = np.trapezoid(p[below], grid[below])
            false_neg = np.trapezoid(1.0 - p[above], grid[above])
            if false_pos + false_neg < best_err:
                best, best_err = (bands, rows), false_pos + false_neg
    return best
