"""Paths and helpers shared by the tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample"
# CI places the shared corpus beside the clone; tests that need it skip where it is absent.
CORPUS = Path(os.environ.get("KILN_CORPUS", REPO.parent / "shared" / "corpus"))


def need_corpus(*parts: str) -> Path:
    """Path inside the shared corpus, or skip the test saying why."""
    path = CORPUS.joinpath(*parts)
    if not path.exists():
        pytest.skip(
            f"shared corpus not found at {path} (set KILN_CORPUS or place it beside the clone)"
        )
    return path
