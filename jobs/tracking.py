"""Weights & Biases runs for data jobs, training and evaluation.

Without an API key wandb would stop the job with a UsageError, so ``mode: auto`` (the default)
logs offline into ``<output_dir>/wandb`` when ``WANDB_API_KEY`` is unset; ``wandb sync`` uploads
those runs later. ``mode: disabled`` turns tracking off.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

__all__ = ["Tracker", "resolve_mode", "start_run"]

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

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def start_run(
    settings: dict,
    *,
    name: str,
    job_type: str,
    directory: str | Path,
    config: dict | None = None,
    run_id: str | None = None,
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
        dir=str(directory),
        config=config or {},
        mode=mode,
        # kiln prints its own progress; wandb's stdout capture would duplicate it.
        settings=wandb.Settings(console="off", silent=True),
    )
    return Tracker(run)
