"""wandb runs (offline, as in CI): groups, the dataset artifact and the run's dataset version."""

from __future__ import annotations

import json

from jobs.run import interactive_terminal
from jobs.tracking import dataset_identity, start_run


def _version(tmp_path):
    version = tmp_path / "store" / "datasets" / "sample" / "v0003"
    version.mkdir(parents=True)
    (version / "manifest.json").write_text(
        json.dumps({"dataset": "sample", "version": "v0003", "parent": "v0002", "splits": {}})
    )
    return version


def test_dataset_identity_names_version_and_manifest_checksum(tmp_path):
    identity = dataset_identity(_version(tmp_path))
    assert identity["dataset"] == "sample" and identity["version"] == "v0003"
    assert len(identity["manifest_sha256"]) == 64


def test_data_and_train_runs_share_a_group_and_the_dataset_version(tmp_path):
    version = _version(tmp_path)
    settings = {"mode": "offline", "project": "kiln-test"}
    data = start_run(settings, name="r1-data", job_type="data", directory=tmp_path, group="r1")
    assert data.run.group == "r1" and data.run.id == "r1-data"
    data.bar_chart("drops_by_reason", "reason", "documents", [["len: short", 3]], title="drops")
    data.log_dataset(version)  # an artifact, offline too: `wandb sync` uploads it
    data.finish()
    train = start_run(settings, name="r1-train", job_type="train", directory=tmp_path, group="r1")
    train.use_dataset(version)
    assert train.run.config["dataset_version"]["version"] == "v0003"
    train.finish()
    # Resuming by id reopens the same run (what a resumed kiln run does).
    again = start_run(settings, name="r1-train", job_type="train", directory=tmp_path, group="r1")
    assert again.run.id == "r1-train"
    again.finish()


def test_no_progress_bars_without_a_terminal(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert interactive_terminal() is False
