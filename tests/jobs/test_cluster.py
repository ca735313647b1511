"""`kiln submit` and `kiln jobs`: Ray Jobs on a real two-node local cluster with token auth."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs import cluster
from jobs.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_auth_token_follows_rays_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    assert cluster.auth_token() is None
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-home\n")
    assert cluster.auth_token() == "from-home"
    (tmp_path / "t").write_text("from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "t"))
    assert cluster.auth_token() == "from-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert cluster.auth_token() == "from-env"


def test_a_token_path_that_cannot_be_read_is_an_error(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(cluster.AuthError, match="RAY_AUTH_TOKEN_PATH"):
        cluster.auth_token()


def test_runtime_env_uploads_the_checkout_without_environments():
    env = cluster.build_runtime_env(pip=["rich"], env={"WANDB_MODE": "offline"})
    assert env["working_dir"] == str(REPO)
    assert {".venv", "kiln-out", ".git"} <= set(env["excludes"])
    assert env["pip"] == ["rich"]
    assert env["env_vars"]["WANDB_MODE"] == "offline"


def test_submit_and_jobs_help(capsys):
    for argv in (["submit", "--help"], ["jobs", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
    out = capsys.readouterr().out
    assert "--address" in out and "list" in out and "logs" in out


def test_submit_needs_a_kiln_command(capsys):
    with pytest.raises(SystemExit, match="name the kiln job"):
        main(["submit", "--address", "http://127.0.0.1:1", "--"])


def test_unreachable_cluster_is_a_clear_error(capsys, monkeypatch):
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["jobs", "--address", f"http://127.0.0.1:{port}", "list"]) == 2
    assert "cannot reach the Ray cluster" in capsys.readouterr().err


def _tiny_job_config(root: Path) -> Path:
    """The job config of tests/test_end_to_end.py (its slice of the sample, its tiny model) with
    absolute paths: the job runs in Ray's copy of the checkout, not in this folder."""
    from tests.helpers import SAMPLE
    from tests.test_end_to_end import JOB, SLICE

    inputs = ", ".join(f"{{path: {SAMPLE / rel}}}" for rel in SLICE)
    config = root / "job.yaml"
    config.write_text(JOB.format(out=root / "out", inputs=inputs))
    return config


@pytest.fixture
def token_cluster(tmp_path):
    """A head and a second raylet on loopback, each with one CPU and its own resource, with
    Ray's token auth on, run by tests/jobs/two_node_cluster.py. Yields (dashboard URL, token,
    the helper process)."""
    token = secrets.token_hex(16)
    env = dict(os.environ)
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=token,
        # The job's `python` must be this venv's, whatever the caller's PATH says.
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
        RAY_USAGE_STATS_ENABLED="0",
        WANDB_MODE="disabled",
        PYTHONPATH=str(REPO),
    )
    env.pop("RAY_ADDRESS", None)
    helper = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("two_node_cluster.py"))],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        line = helper.stdout.readline()
        if not line:
            pytest.fail(f"the test cluster did not start (exit status {helper.wait()})")
        yield json.loads(line)["dashboard"], token, helper
    finally:
        helper.stdin.close()  # the helper shuts its cluster down and exits
        try:
            helper.wait(timeout=60)
        except subprocess.TimeoutExpired:
            helper.kill()


def _wait_for_dashboard(address: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            cluster.job_client(address).list_jobs()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


@pytest.mark.slow
def test_submit_the_tiny_job_to_two_nodes_with_token_auth(tmp_path, token_cluster, monkeypatch):
    address, token, helper = token_cluster
    # kiln finds the token where Ray looks for it; here, RAY_AUTH_TOKEN.
    monkeypatch.setenv("RAY_AUTH_TOKEN", token)
    _wait_for_dashboard(address)

    # Without the token, or with another one, the cluster refuses kiln, and kiln says where the
    # token goes.
    monkeypatch.setenv("RAY_AUTH_TOKEN", "not-" + token)
    with pytest.raises(cluster.AuthError, match="RAY_AUTH_TOKEN"):
        cluster.submit_job(["train", "--help"], address=address)
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token to fall back on
    with pytest.raises(cluster.AuthError, match="RAY_AUTH_TOKEN"):
        cluster.submit_job(["train", "--help"], address=address)
    monkeypatch.setenv("RAY_AUTH_TOKEN", token)

    # The whole job (data, training, evaluation) as tests/test_end_to_end.py runs it on one
    # machine; here on two nodes of one CPU each, so its two training workers must split.
    config = _tiny_job_config(tmp_path)
    kiln_args = ["-v", "run", str(config), "--run-name", "two-nodes"]
    # Through the command line, as a user submits; it prints the job id.
    job_id = _run_cli(["submit", "--address", address, "--", *kiln_args]).strip()
    assert job_id.startswith("raysubmit_"), job_id
    client = cluster.job_client(address)
    status = cluster.wait_for_job(client, job_id, timeout_s=600)
    logs = client.get_job_logs(job_id)
    (tmp_path / "job.log").write_text(logs)  # kept by pytest for a look after a failure
    assert status == "SUCCEEDED", logs[-4000:]
    assert "kiln run two-nodes finished" in logs
    # Every step ran, each leaving its output where the run's state says.
    state = json.loads((tmp_path / "out" / "runs" / "two-nodes" / "state.json").read_text())
    assert state["finished"] and set(state["steps"]) == {"data", "train", "eval"}
    assert state["steps"]["data"]["ledger"]["balanced"]
    assert state["steps"]["train"]["steps"] == 30  # train.max_steps of the end-to-end job
    assert Path(state["steps"]["eval"]["eval_json"]).is_file()

    # The two training workers ran one on each node.
    helper.stdin.write("placements\n")
    helper.stdin.flush()
    workers = json.loads(helper.stdout.readline())
    assert len(workers) == 2, workers
    assert sorted(w["node"][0] for w in workers) == ["kiln_head", "kiln_second"], workers

    # `kiln jobs` sees the same job.
    capsys_out = _run_cli(["jobs", "--address", address, "status", job_id])
    assert "SUCCEEDED" in capsys_out
    assert job_id in _run_cli(["jobs", "--address", address, "list"])
    followed = _run_cli(["jobs", "--address", address, "logs", "--follow", job_id])
    assert "kiln run two-nodes finished" in followed


def _run_cli(argv: list[str]) -> str:
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(argv) == 0
    return buffer.getvalue()
