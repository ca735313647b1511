"""What a word is, for every stage that counts or shingles words.

Words are whitespace-separated tokens, except that each Chinese character and each kana is a
word of its own: Chinese and Japanese put no spaces between words, so their whitespace tokens
are whole sentences or paragraphs. One character per word is the usual stand-in where no
segmenter is at hand (Gopher's and FineWeb's word counts need one too); Korean writes spaces
and needs no such rule.
"""

from __future__ import annotations

import re

__all__ = ["CJK", "split_words", "word_count"]

# Han ideographs (the unified block, extensions A to H, compatibility forms), the iteration
# marks and ideographic zero (々〆〇), hiragana, katakana with its phonetic extensions, and
# halfwidth kana.
_CJK_RANGES = (
    "\u3005-\u3007\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
    "\uff66-\uff9f\U00020000-\U0003ffff"
)
CJK = re.compile(f"[{_CJK_RANGES}]")
_NON_CJK_TOKEN = re.compile(f"[^\\s{_CJK_RANGES}]+")
_WORD = re.compile(f"[{_CJK_RANGES}]|[^\\s{_CJK_RANGES}]+")


def split_words(text: str) -> list[str]:
    """The words of a text, in order (see the module's docstring for what a word is)."""
    if not CJK.search(text):
        return text.split()
    return _WORD.findall(text)


def word_count(text: str) -> int:
    """How many words :func:`split_words` would give, without building the list."""
    if not CJK.search(text):
        return len(text.split())
    return len(_NON_CJK_TOKEN.findall(text)) + len(CJK.findall(text))
