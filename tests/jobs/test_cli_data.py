"""`kiln data status`, `kiln data verify` and `kiln data refresh`'s refusals, on a small store."""

from __future__ import annotations

import json

import pytest

from jobs.cli import main
from pipeline.records import make_document, to_table
from pipeline.shards import ShardWriterFn
from pipeline.store import DatasetStore, atomic_write_json
from pipeline.tokenizer import EOS_TOKEN, save_tokenizer, train_bpe
from tests.helpers import SAMPLE


@pytest.fixture(scope="module")
def store_root(tmp_path_factory):
    """A store with two versions of dataset `d` (the second a child of the first)."""
    root = tmp_path_factory.mktemp("out")
    store = DatasetStore(root / "store")
    text = (SAMPLE / "books" / "pg35_The_Time_Machine.txt").read_text(encoding="utf-8-sig")
    tok = train_bpe([text[:20000]], vocab_size=300)
    tok_path = save_tokenizer(tok, store.tokenizer_dir("abc"), {})
    import hashlib

    for n, parent in ((1, None), (2, "v0001")):
        docs = [
            make_document("book", f"b{n}{i}", text=text[i * 3000 : (i + 1) * 3000])
            for i in range(3)
        ]
        with store.new_version("d") as (version, folder):
            writer = ShardWriterFn(
                tok.to_str(), str(folder), frozenset({docs[0]["id"]}), tok.token_to_id(EOS_TOKEN)
            )
            rows = writer(to_table(docs)).to_pylist()
            atomic_write_json(
                folder / "manifest.json",
                {
                    "version": version,
                    "parent": parent,
                    "kind": "build" if parent is None else "refresh",
                    "created_at": f"2026-12-0{n}T00:00:00+00:00",
                    "dtype": "uint16",
                    "tokenizer": {
                        "fingerprint": "abc",
                        "path": "tokenizers/abc/tokenizer.json",
                        "eos_id": 0,
                        "sha256": hashlib.sha256(tok_path.read_bytes()).hexdigest(),
                    },
                    "shards": rows,
                    "splits": {
                        s: {
                            "tokens": sum(r["tokens"] for r in rows if r["split"] == s),
                            "documents": sum(r["documents"] for r in rows if r["split"] == s),
                        }
                        for s in ("train", "val")
                    },
                    "inputs": [{"path": "x", "sha256": "0" * 64}],
                },
            )
    return root


def _args(root):
    return [f"output_dir={root}", "data.dataset_name=d"]


def test_status_lists_versions_with_counts_dates_and_parents(store_root, capsys):
    assert main(["data", "status", *_args(store_root)]) == 0
    out = capsys.readouterr().out
    assert "2 version(s), CURRENT = v0002" in out
    (line2,) = [line for line in out.splitlines() if "v0002 " in line and "refresh" in line]
    assert line2.startswith("*") and "v0001" in line2 and "2026-12-02" in line2
    assert main(["data", "status", "--json", *_args(store_root)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["version"], r["state"], r["parent"]) for r in rows] == [
        ("v0002", "current", "v0001"),
        ("v0001", "committed", None),
    ]
    assert rows[0]["train_documents"] == 2 and rows[0]["val_documents"] == 1


def test_status_of_a_dataset_with_no_versions(tmp_path, capsys):
    assert main(["data", "status", f"output_dir={tmp_path}"]) == 0
    assert "no versions yet" in capsys.readouterr().out


def test_verify_passes_then_fails_on_a_changed_byte(store_root, capsys):
    assert main(["data", "verify", "--all", *_args(store_root)]) == 0
    assert capsys.readouterr().out.count(": ok") == 2
    folder = store_root / "store/datasets/d/v0001"
    shard = next(folder.glob("*.bin"))
    data = bytearray(shard.read_bytes())
    data[3] ^= 0xFF
    shard.write_bytes(bytes(data))
    try:
        assert main(["data", "verify", *_args(store_root)]) == 0  # CURRENT is v0002
        assert main(["data", "verify", "v0001", *_args(store_root)]) == 1
        out = capsys.readouterr().out
        assert f"{shard.name}: checksum differs from the manifest" in out
        assert main(["data", "verify", str(folder), *_args(store_root)]) == 1
    finally:
        data[3] ^= 0xFF
        shard.write_bytes(bytes(data))


def test_verify_of_a_missing_version_exits_2(store_root, capsys):
    assert main(["data", "verify", "v0009", *_args(store_root)]) == 2
    assert "no manifest.json" in capsys.readouterr().err


def test_refresh_dry_run_prints_the_config_and_what_it_would_build_on(tmp_path, store_root, capsys):
    assert main(["data", "refresh", "--dry-run", f"output_dir={tmp_path}"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["data"]["dedup"]["bands"] == 14
    assert "would build the first from every input" in out.err
    assert main(["data", "refresh", "--dry-run", *_args(store_root)]) == 0
    assert "would add new inputs to v0002" in capsys.readouterr().err


def test_refresh_dry_run_refuses_what_the_refresh_would(tmp_path, capsys):
    from jobs.config import load_job_config

    store = DatasetStore(tmp_path / "store")
    stored = load_job_config(None, ["data.dedup.bands=10"]).data.model_dump()
    with store.new_version("sample") as (version, folder):
        atomic_write_json(
            folder / "manifest.json",
            {"version": version, "config": stored, "dedup_keys": {"rows": 1}, "inputs": []},
        )
    assert main(["data", "refresh", "--dry-run", f"output_dir={tmp_path}"]) == 2
    assert "set data.dedup.bands=10 and data.dedup.rows=8" in capsys.readouterr().err


def test_refresh_of_a_locked_dataset_exits_3(tmp_path, capsys):
    store = DatasetStore(tmp_path / "store")
    with store.lock("sample"):
        assert main(["data", "refresh", f"output_dir={tmp_path}"]) == 3
    assert "being written by another process" in capsys.readouterr().err
