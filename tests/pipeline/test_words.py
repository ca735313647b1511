"""What a word is: whitespace tokens, and each Chinese character or kana on its own."""

from __future__ import annotations

from pipeline.words import split_words, word_count


def test_words_split_at_whitespace_and_at_each_cjk_character():
    assert split_words("a  b\tc\n") == ["a", "b", "c"]
    assert split_words("kiln 处理 web 数据") == ["kiln", "处", "理", "web", "数", "据"]
    assert split_words("トレンドマイクロは3月9日") == [*"トレンドマイクロは", "3", "月", "9", "日"]
    assert split_words("한국어는 띄어 쓴다") == ["한국어는", "띄어", "쓴다"]  # Korean has spaces
    # Iteration marks, ideographic zero, small katakana extensions, extension B: all letters.
    assert split_words("人々〇〇年ㇰㇱ𠀀𠀁") == [*"人々〇〇年ㇰㇱ", "\U00020000", "\U00020001"]


def test_word_count_agrees_with_split_words():
    for text in ["", "plain English words", "混合 mixed 文本。", "欲張りなイヌ　＜福娘童話集＞"]:
        assert word_count(text) == len(split_words(text))
