"""The held-out suite and choice task builder: prompts only from validation text, honest
document ends, four-way items with one true ending, and the same files for the same seed."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import yaml
from tokenizers import Tokenizer

from model.heldout_evals import build_choice_items, build_suite, held_out_sentences, main
from model.scores import heldout_documents, load_choice_items
from model.suites import load_suite
from pipeline.shards import read_manifest
from pipeline.store import atomic_write_json
from tests.helpers import SAMPLE

NOTE = "not held out: the sample has no held-out text in this language"


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _texts(version, split: str) -> list[tuple[str, str]]:
    """(text, source) per document of a split, decoded as the builder decodes them."""
    tok = Tokenizer.from_file(str(version / "tokenizer.json"))
    return [
        (tok.decode(tokens[:-1].tolist()), record.get("url") or record["id"])
        for record, tokens in heldout_documents(version, split)
    ]


@pytest.fixture(scope="module")
def by_language(version):
    return held_out_sentences(_texts(version, "val"))


def test_sentences_come_only_from_held_out_documents(version, by_language):
    val = {source: _flat(text) for text, source in _texts(version, "val")}
    train = [_flat(text) for text, _ in _texts(version, "train")]
    sentences = [entry for pool in by_language.values() for entry in pool]
    assert len(sentences) >= 10 and set(by_language) == {"en"}
    for sentence, source, _ in sentences:
        assert source in val and sentence in val[source]
        assert not any(sentence in text for text in train)


def test_only_a_document_s_own_last_sentence_is_marked_last():
    prose = "The quiet river ran past the mill where the old miller kept his sacks of grain."
    ending = "At dusk the lamps were lit along the road and the travellers went home to rest."
    footer = "Copyright © 2024 | All rights reserved | Imprint | Contact | Privacy policy here."
    out = held_out_sentences([(f"{prose} {ending}", "a"), (f"{prose} {ending} {footer}", "b")])
    marked = [(s, src) for s, src, last in out["en"] if last]
    # Document b ends in a footer the filter drops: its last kept sentence is no document end.
    assert marked == [(ending, "a")]


def test_suite_prompts_are_held_out_and_the_file_loads(tmp_path, by_language):
    suite = build_suite(by_language, seed=3)
    sentences = {s: src for pool in by_language.values() for s, src, _ in pool}
    ends = {s for pool in by_language.values() for s, _, last in pool if last}
    assert suite["tests"]
    for test in suite["tests"]:
        assert any(
            s.startswith(test["prompt"]) and sentences[s] == test["source"] for s in sentences
        )
        if test["name"].endswith("document-end"):
            assert test["prompt"] in ends
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, allow_unicode=True, sort_keys=False))
    loaded = load_suite(path)
    assert [t.name for t in loaded.tests] == [t["name"] for t in suite["tests"]]
    assert build_suite(by_language, seed=3) == suite
    assert build_suite(by_language, seed=4) != suite


def test_a_noted_language_carries_its_note_on_every_test(by_language):
    notes = {"en": NOTE}
    suite = build_suite(by_language, notes=notes)
    assert {t["name"].split("-", 1)[1] for t in suite["tests"]} >= {"next-word", "1-greedy"}
    assert all(t["source"].endswith(f"({NOTE})") for t in suite["tests"])


def test_choice_items_have_four_endings_with_exactly_one_true(by_language):
    items = build_choice_items(by_language, per_language=10, seed=1)
    sentences = {s for pool in by_language.values() for s, _, _ in pool}
    assert len(items) == 10
    for item in items:
        assert len(item["endings"]) == 4 == len(set(item["endings"]))
        true = [e for e in item["endings"] if f"{item['context']} {e}" in sentences]
        assert true == [item["endings"][item["label"]]]
    assert build_choice_items(by_language, per_language=10, seed=1) == items
    assert build_choice_items(by_language, per_language=10, seed=2) != items


def test_main_writes_a_suite_and_task_and_strips_an_extra_book(tmp_path, version, monkeypatch):
    import model.heldout_evals as builder

    seen: list[str] = []

    def recording(texts):
        seen.extend(text for text, _ in texts)
        return held_out_sentences(texts)

    monkeypatch.setattr(builder, "held_out_sentences", recording)
    # The store layout main expects: STORE/datasets/NAME/VERSION, tokenizer path from STORE.
    store = tmp_path / "store"
    copy = shutil.copytree(version, store / "datasets" / "t" / "v0001")
    manifest = read_manifest(copy)
    manifest["tokenizer"]["path"] = "datasets/t/v0001/tokenizer.json"
    atomic_write_json(copy / "manifest.json", manifest)
    candide = SAMPLE / "books" / "pg4650_Candide.txt"
    suite_path, tasks_path = tmp_path / "s.yaml", tmp_path / "t.jsonl"
    argv = ["--dataset", str(copy), "--suite", str(suite_path), "--tasks", str(tasks_path)]
    assert main([*argv, "--extra-language", f"fr={candide}"]) == 0
    suite = load_suite(suite_path)
    french = [t for t in suite.tests if t.language == "fr"]
    assert french and all(t.source == f"pg4650_Candide.txt ({NOTE})" for t in french)
    # The book's body only: none of the Project Gutenberg header or licence reaches the pool.
    assert "Candide" in seen[-1] and not re.search(r"Gutenberg|eBook", seen[-1])
    items = load_choice_items(tasks_path)
    assert items and {i["language"] for i in items} == {"en"}  # not the extra language
    assert all(len(i["endings"]) == 4 for i in items)
    first = (suite_path.read_text(), tasks_path.read_text())
    main([*argv, "--extra-language", f"fr={candide}"])
    assert (suite_path.read_text(), tasks_path.read_text()) == first
    assert json.loads(tasks_path.read_text().splitlines()[0])["id"].startswith("en-")
