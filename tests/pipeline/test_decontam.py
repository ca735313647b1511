"""Decontamination: documents sharing a 13-word n-gram with evaluation texts are dropped."""

from __future__ import annotations

import json
import logging

import pytest

from pipeline.decontam import DecontamStage, EvalNgrams, load_eval_texts, normalized_words
from pipeline.records import is_kept, make_document
from tests.helpers import SAMPLE

BOOK = (SAMPLE / "books" / "pg35_The_Time_Machine.txt").read_text(encoding="utf-8-sig")
# A passage of the book, as an evaluation set might quote it.
PASSAGE = " ".join(BOOK[60000:61200].split())


def test_a_document_containing_an_eval_passage_is_dropped():
    stage = DecontamStage([PASSAGE])
    book = make_document("book", "pg35", text=BOOK)
    other = make_document(
        "book", "pg41", text=(SAMPLE / "books" / "pg41_The_Legend_of_Sleepy_Hollow.txt").read_text()
    )
    docs = stage.process_batch([book, other])
    assert docs[0]["drop_reason"] == "contaminated"
    assert docs[0]["meta"]["contaminated_by"] in " ".join(normalized_words(PASSAGE))
    assert is_kept(docs[1])


def test_case_punctuation_and_line_breaks_do_not_hide_a_copy():
    words = PASSAGE.split()[:13]
    quoted = "\n".join(w.upper() + ("," if i % 3 == 0 else "") for i, w in enumerate(words))
    index = EvalNgrams([PASSAGE], 13)
    assert index.first_shared(f"Intro text. {quoted} More text.") is not None
    assert index.first_shared(" ".join(words[:12])) is None  # 12 words are not enough


def test_texts_shorter_than_n_words_are_skipped_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        stage = DecontamStage(["The Time Traveller", "Candide"], ngram_words=13)
    assert "2 of 2 evaluation texts are shorter than 13 words" in caplog.text
    [doc] = stage.process_batch([make_document("book", "pg35", text=BOOK)])
    assert is_kept(doc)  # the book contains "The Time Traveller" but shares no 13-gram


def test_eval_texts_from_files(tmp_path):
    (tmp_path / "a.txt").write_text(PASSAGE)
    (tmp_path / "b.jsonl").write_text(
        json.dumps({"text": "one"}) + "\n\n" + json.dumps({"text": "two"})
    )
    assert load_eval_texts(["x"], [tmp_path / "a.txt", tmp_path / "b.jsonl"]) == [
        "x",
        PASSAGE,
        "one",
        "two",
    ]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"question": "no text field"}))
    with pytest.raises(ValueError, match="bad.jsonl:1: expected a 'text'"):
        load_eval_texts([], [tmp_path / "bad.jsonl"])
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        load_eval_texts([], [tmp_path / "missing.txt"])
