"""Readers on real input: the bundled sample and every WARC file of the shared corpus."""

from __future__ import annotations

from collections import Counter

import pytest

from pipeline.read import InputFile, discover_inputs, read_file, sniff_kind
from pipeline.records import is_kept
from tests.helpers import CORPUS, SAMPLE, need_corpus


def test_discover_inputs_expands_folders_and_skips_readmes():
    files = discover_inputs([(str(SAMPLE), "auto")])
    kinds = Counter(f.kind for f in files)
    assert kinds == {"html": 27, "book": 11, "warc": 1}
    assert not any(f.path.endswith(".md") for f in files)
    assert files == sorted(files, key=lambda f: f.path)


def test_discover_inputs_names_a_pattern_that_matches_nothing():
    with pytest.raises(FileNotFoundError, match="no-such-folder"):
        discover_inputs([(str(SAMPLE / "no-such-folder"), "auto")])


def test_html_file_becomes_one_web_document_with_raw_bytes():
    path = SAMPLE / "web" / "flowfx.de.tmux.html.gz"
    [doc] = read_file(InputFile(str(path), "html"))
    assert doc["source"] == "web"
    assert doc["raw"].lstrip().lower().startswith(b"<!doctype html")  # gunzipped
    assert is_kept(doc)
    # The id is stable: reading the same file twice gives the same id.
    assert read_file(InputFile(str(path), "html"))[0]["id"] == doc["id"]


def test_sample_warc_yields_the_wikipedia_capture():
    [doc] = read_file(InputFile(str(SAMPLE / "warc" / "whirlwind.warc.gz"), "warc"))
    assert doc["url"] == "https://an.wikipedia.org/wiki/Escopete"
    assert doc["meta"]["content_type"].startswith("text/html")
    assert b"Escopete" in doc["raw"]


def test_book_is_read_as_text():
    [doc] = read_file(InputFile(str(SAMPLE / "books" / "pg35_The_Time_Machine.txt"), "book"))
    assert doc["source"] == "book"
    assert "Time Traveller" in doc["text"]
    assert not doc["text"].startswith("\ufeff")


def test_unreadable_file_is_a_counted_rejection_not_a_crash(tmp_path):
    missing = tmp_path / "gone.warc.gz"
    [row] = read_file(InputFile(str(missing), "warc"))
    assert row["drop_stage"] == "read"
    assert row["drop_reason"].startswith("read_error:")


# Expected (documents kept, rejected by reason) for every WARC/ARC/WET file of the corpus.
WARC_EXPECTED = {
    "commoncrawl_whirlwind/whirlwind.warc.gz": (1, {}),
    "commoncrawl_whirlwind/whirlwind.warc.wet": (1, {}),
    "commoncrawl_whirlwind/whirlwind.warc.wet.gz": (1, {}),
    "dolma/sample-0000.warc.gz": (22, {"content_type:text/plain": 2}),
    "dolma/sample-0001.warc.gz": (15, {"content_type:text/plain": 2}),
    "pywb/iana.warc.gz": (16, None),
    "warcio/example-bad-non-chunked.warc.gz": (0, {"read_error:ArchiveLoadFailed": 1}),
    "warcio/example-wrong-chunks.warc.gz": (1, {"read_error:ArchiveLoadFailed": 1}),
    "warcio/example.arc.gz": (1, {}),
    "warcio/example-trunc.warc": (1, {}),
}


@pytest.mark.parametrize("name", sorted(WARC_EXPECTED))
def test_corpus_warc_files(name):
    path = need_corpus("warc", name)
    docs = read_file(InputFile(str(path), sniff_kind(str(path))))
    kept = [d for d in docs if is_kept(d)]
    rejected = Counter(d["drop_reason"] for d in docs if not is_kept(d))
    n_kept, reasons = WARC_EXPECTED[name]
    assert len(kept) == n_kept
    if reasons is not None:
        assert dict(rejected) == reasons
    # wget writes target URIs in angle brackets; they must come out clean.
    assert all(not d["url"].startswith("<") for d in docs)


def test_every_corpus_archive_reads_without_raising():
    folder = need_corpus("warc")
    files = [p for p in sorted(folder.rglob("*")) if sniff_kind(str(p)) == "warc"]
    assert len(files) >= 20
    for path in files:
        docs = read_file(InputFile(str(path), "warc"))
        for d in docs:
            assert d["id"] and d["source"] == "warc"
    assert CORPUS.exists()
