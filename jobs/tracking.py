"""Weights & Biases runs for data jobs, training and evaluation.

Without an API key wandb would stop the job with a UsageError, so ``mode: auto`` (the default)
logs offline into ``<output_dir>/wandb`` when ``WANDB_API_KEY`` is unset; ``wandb sync`` uploads
those runs later. ``mode: disabled`` turns tracking off.

The runs of one kiln run share its name as their wandb ``group`` (``<run>-data``,
``<run>-train``), and each run's id is derived from its name, so a resumed kiln run resumes the
same wandb runs. The data run logs the dataset version as a ``dataset`` artifact (its manifest,
which holds every shard's checksum); the training run declares that artifact as its input
(``use_artifact``), online. wandb cannot declare inputs offline, so there the training run's
config carries the dataset name, version and manifest checksum instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

__all__ = ["Tracker", "dataset_identity", "resolve_mode", "start_run"]

log = logging.getLogger(__name__)


def resolve_mode(mode: str) -> str:
    if mode == "auto":
        return "online" if os.environ.get("WANDB_API_KEY") else "offline"
    return mode


class Tracker:
    """A wandb run, or nothing when tracking is disabled (same methods either way)."""

    def __init__(self, run=None):
        self.run = run

    @property
    def dir(self) -> str | None:
        return self.run.dir if self.run is not None else None

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.run is not None else None

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if self.run is not None:
            self.run.log({k: v for k, v in metrics.items() if v is not None}, step=step)

    def summary(self, values: dict[str, Any]) -> None:
        if self.run is not None:
            for key, value in values.items():
                self.run.summary[key] = value

    def table(self, key: str, columns: list[str], rows: list[list]) -> None:
        if self.run is not None:
            import wandb

            self.run.log({key: wandb.Table(columns=columns, data=rows)})

    def bar_chart(self, key: str, label: str, value: str, rows: list[list], title: str) -> None:
        """A bar chart (one bar per row of ``[label, value]``) that the wandb UI draws."""
        if self.run is not None and rows:
            import wandb

            table = wandb.Table(columns=[label, value], data=rows)
            self.run.log({key: wandb.plot.bar(table, label, value, title=title)})

    def log_dataset(self, version_dir: str | Path) -> None:
        """Log a dataset version as a ``dataset`` artifact named after the dataset."""
        if self.run is None:
            return
        artifact = _dataset_artifact(version_dir)
        self.run.log_artifact(artifact, aliases=[artifact.metadata["version"], "latest"])

    def use_dataset(self, version_dir: str | Path) -> None:
        """Declare the dataset version this run reads (lineage in the wandb UI)."""
        if self.run is None:
            return
        identity = dataset_identity(version_dir)
        self.run.config.update({"dataset_version": identity}, allow_val_change=True)
        if self.run.settings.mode == "offline":
            log.info("wandb offline: the dataset version is in the run's config, not its inputs")
            return
        self.run.use_artifact(_dataset_artifact(version_dir))

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def dataset_identity(version_dir: str | Path) -> dict:
    """Dataset name, version and the sha256 of its manifest (which checksums every shard)."""
    path = Path(version_dir) / "manifest.json"
    raw = path.read_bytes()
    manifest = json.loads(raw)
    return {
        "dataset": manifest.get("dataset") or Path(version_dir).parent.name,
        "version": manifest.get("version") or Path(version_dir).name,
        "manifest_sha256": hashlib.sha256(raw).hexdigest(),
        "path": str(Path(version_dir).resolve()),
    }


def _dataset_artifact(version_dir: str | Path):
    import wandb

    identity = dataset_identity(version_dir)
    manifest = json.loads((Path(version_dir) / "manifest.json").read_text())
    # Artifact names allow letters, digits, '-', '_' and '.'.
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", identity["dataset"])
    artifact = wandb.Artifact(
        name,
        type="dataset",
        description=f"kiln token dataset {identity['dataset']} {identity['version']}",
        metadata={
            **identity,
            "parent": manifest.get("parent"),
            "splits": manifest.get("splits"),
            "tokenizer": manifest.get("tokenizer"),
        },
    )
    # The manifest, not the shards: it holds their sha256 sums, so the artifact's digest changes
    # exactly when the data does, and logging it costs nothing for a terabyte of tokens.
    artifact.add_file(str(Path(version_dir) / "manifest.json"))
    return artifact


def start_run(
    settings: dict,
    *,
    name: str,
    job_type: str,
    directory: str | Path,
    config: dict | None = None,
    run_id: str | None = None,
    group: str | None = None,
) -> Tracker:
    """Start (or resume, by its id) a wandb run; ``settings`` is a WandbConfig as a dict.

    The id defaults to one derived from ``name``; a resumed training run passes the id its
    checkpoint recorded.
    """
    mode = resolve_mode(settings.get("mode", "auto"))
    if mode == "disabled":
        return Tracker(None)
    import wandb

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=settings.get("project", "kiln"),
        entity=settings.get("entity"),
        name=name,
        id=run_id or re.sub(r"[^A-Za-z0-9_-]", "-", name)[:120],  # same name, same run
        resume="allow",
        job_type=job_type,
        group=group,  # the kiln run: its data, training and evaluation runs side by side
        dir=str(directory),
        config=config or {},
        mode=mode,
        # kiln prints its own progress; wandb's stdout capture would duplicate it.
        settings=wandb.Settings(console="off", silent=True),
    )
    return Tracker(run)
