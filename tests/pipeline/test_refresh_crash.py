"""A refresh killed with SIGKILL at several points, then rerun, commits the same version as an
unbroken refresh: same shards, same checksums, nothing left over.

Every run is a real ``python -m jobs.cli data refresh`` process with its own local Ray; the
kills come from ``KILN_CRASH_AT`` (pipeline/crashpoints.py) and from a timer.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.shards import read_manifest
from pipeline.store import DatasetStore
from tests.helpers import REPO, SAMPLE

pytestmark = pytest.mark.slow

WEB = sorted((SAMPLE / "web").glob("*.html.gz"))
BOOK = "pg41_The_Legend_of_Sleepy_Hollow.txt"
FIRST = [WEB[0], WEB[1], SAMPLE / "books" / BOOK]
SECOND = [WEB[2], WEB[3], SAMPLE / "books" / "pg2542_A_Doll_s_House.txt"]
TIMINGS: list[tuple] = []  # (kill, seconds, exit status) per run, printed at the end


def _config(root: Path) -> Path:
    path = root / "job.yaml"
    path.write_text(
        json.dumps(
            {
                "name": "crash",
                "output_dir": str(root / "out"),
                "data": {
                    "dataset_name": "news",
                    "inputs": [{"path": str(root / "incoming")}],
                    "filter": {"languages": ["en", "de", "fr"]},
                    "tokenizer": {"vocab_size": 512},
                },
                "ray": {"num_cpus": 2},
                "wandb": {"mode": "disabled"},
            }
        )
    )
    return path


def _kill_leftovers(ray_tmp: str) -> None:
    """SIGKILL of the driver can orphan its local Ray processes; end those this test started."""
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit() or int(pid_dir.name) == os.getpid():
            continue
        try:
            cmdline = (pid_dir / "cmdline").read_bytes()
            environ = (pid_dir / "environ").read_bytes()
        except OSError:
            continue
        if ray_tmp.encode() in cmdline or f"RAY_TMPDIR={ray_tmp}".encode() in environ:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_dir.name), signal.SIGKILL)


class Runner:
    """Runs `kiln data refresh` on one config in fresh processes, each in its own session."""

    def __init__(self, config: Path, ray_tmp: str):
        self.config = config
        self.ray_tmp = ray_tmp

    def __call__(self, crash_at: str | None = None, kill_after_s: float | None = None) -> int:
        env = {**os.environ, "RAY_TMPDIR": self.ray_tmp, "WANDB_MODE": "disabled"}
        env.pop("KILN_CRASH_AT", None)
        if crash_at:
            env["KILN_CRASH_AT"] = crash_at
        t0 = time.time()
        proc = subprocess.Popen(
            [sys.executable, "-m", "jobs.cli", "data", "refresh", str(self.config)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=kill_after_s or 300)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            out, _ = proc.communicate()
        finally:
            _kill_leftovers(self.ray_tmp)
        self.last_output = out.decode(errors="replace")
        TIMINGS.append((crash_at or kill_after_s, round(time.time() - t0, 1), proc.returncode))
        return proc.returncode


def _version_fingerprint(version_dir: Path) -> dict:
    """Everything that defines a version's content (not its date or run name)."""
    m = read_manifest(version_dir)
    files = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(version_dir.iterdir())
        if p.is_file() and p.name != "manifest.json"
    }
    keys = pq.read_table(version_dir / m["dedup_keys"]["folder"]).sort_by(
        [("key", "ascending"), ("id", "ascending")]
    )
    return {
        "version": m["version"],
        "parent": m["parent"],
        "shards": m["shards"],
        "splits": m["splits"],
        "added": m["added"],
        "inputs": m["inputs"],
        "tokenizer": m["tokenizer"],
        "dedup_rows": m["dedup_keys"]["rows"],
        "dedup_keys": keys.to_pylist(),
        "files": files,
    }


def _arrive(root: Path, files: list[Path]) -> None:
    for f in files:
        shutil.copy(f, root / "incoming" / f.name)


def test_killed_refreshes_rerun_to_the_same_version(tmp_path):
    # A short temp dir: Ray puts unix sockets under it, and their paths are limited to 107 bytes.
    ray_tmp = tempfile.mkdtemp(prefix="kc", dir="/tmp")
    try:
        # Paths are part of a version (inputs, document URLs), so every store below lives at
        # the same path: the first arrival is refreshed there once and saved, then restored
        # before the second arrival is refreshed in one go, and again before it is killed.
        work, saved = tmp_path / "work", tmp_path / "saved"
        (work / "incoming").mkdir(parents=True)
        _arrive(work, FIRST)
        first = Runner(_config(work), ray_tmp)
        assert first() == 0, first.last_output  # no version yet: builds v0001
        shutil.copytree(work, saved, symlinks=True)

        def second_arrival() -> Runner:
            shutil.rmtree(work)
            shutil.copytree(saved, work, symlinks=True)
            _arrive(work, SECOND)
            return Runner(_config(work), ray_tmp)

        unbroken = second_arrival()
        assert unbroken() == 0, unbroken.last_output
        expected = _version_fingerprint(work / "out/store/datasets/news/v0002")
        assert expected["added"]["inputs"] == len(SECOND)

        killed = second_arrival()
        store = DatasetStore(work / "out/store")
        # A timed kill, somewhere in start-up or the stages; then one with the new shards
        # written into the staging folder. (Each killed run costs a whole refresh, so the
        # point `refresh:processed`, between the two, is left out to keep the test short.)
        t0 = time.time()
        assert killed(kill_after_s=8.0) != 0 or time.time() - t0 < 8.0
        assert killed(crash_at="refresh:shards_written") == -signal.SIGKILL, killed.last_output
        assert store.current_version("news").name == "v0001"  # nothing committed yet
        assert any(p.name.startswith(".v0002.tmp-") for p in store.uncommitted("news"))
        # Killed between renaming v0002 into place and moving CURRENT: v0002 is complete.
        assert killed(crash_at="refresh:version_renamed") == -signal.SIGKILL
        assert store.current_version("news").name == "v0001"
        assert [p.name for p in store.uncommitted("news")][-1] == "v0002"

        assert killed() == 0, killed.last_output
        assert "interrupted refresh" in killed.last_output
        assert store.current_version("news").name == "v0002"
        assert store.uncommitted("news") == []
        assert _version_fingerprint(store.dataset_dir("news") / "v0002") == expected

        # And once more: nothing new, nothing committed.
        assert killed() == 0 and "nothing new" in killed.last_output
        assert store.versions("news") == ["v0001", "v0002"]
        print("runs (kill, seconds, status):", TIMINGS)
    finally:
        _kill_leftovers(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
