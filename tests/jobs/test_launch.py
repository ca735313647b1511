"""The commands kiln builds for torchrun and the deepspeed launcher, and the worker entry."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from jobs.launch import deepspeed_command, torchrun_command

CONFIG = Path("/shared/run/train/worker.json")


def _entry(cmd):
    return cmd[-4:]


def test_torchrun_starts_num_workers_processes_of_the_entry_module():
    cmd = torchrun_command(CONFIG, num_workers=3, launcher_args=[])
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--nproc_per_node=3" in cmd
    assert any(a.startswith("--master_port=") for a in cmd)
    assert _entry(cmd) == ["-m", "jobs.train_entry", "--config", str(CONFIG)]


def test_torchrun_multi_node_arguments_are_passed_and_win_over_defaults():
    args = ["--nnodes=2", "--node_rank=1", "--master_addr=10.0.0.1", "--master_port=29500"]
    cmd = torchrun_command(CONFIG, num_workers=8, launcher_args=args)
    assert [a for a in cmd if a.startswith("--master_port")] == ["--master_port=29500"]
    assert cmd[cmd.index("--nnodes=2") : cmd.index("--nnodes=2") + 4] == args


def test_deepspeed_launcher_on_this_machine_is_told_the_process_count():
    cmd = deepspeed_command(CONFIG, num_workers=2, hostfile=None, launcher_args=[])
    assert cmd[:3] == [sys.executable, "-m", "deepspeed.launcher.runner"]
    assert "--num_gpus=2" in cmd
    assert _entry(cmd) == ["--module", "jobs.train_entry", "--config", str(CONFIG)]


def test_a_hostfile_of_this_machine_needs_no_ssh(tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("# one machine\nlocalhost slots=2\n")
    cmd = deepspeed_command(CONFIG, num_workers=2, hostfile=str(hostfile), launcher_args=[])
    assert f"--hostfile={hostfile}" in cmd and "--no_ssh_check" in cmd
    assert "--master_addr=127.0.0.1" in cmd and "--num_gpus=2" not in cmd


def test_a_hostfile_of_other_hosts_is_reached_by_ssh(tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("worker-1 slots=8\nworker-2 slots=8\n")
    cmd = deepspeed_command(CONFIG, num_workers=8, hostfile=str(hostfile), launcher_args=[])
    assert "--no_ssh_check" not in cmd
    assert not any(a.startswith("--master_addr") for a in cmd)


def test_a_missing_or_empty_hostfile_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        deepspeed_command(CONFIG, num_workers=2, hostfile=str(tmp_path / "no"), launcher_args=[])
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n")
    with pytest.raises(ValueError, match="names no host"):
        deepspeed_command(CONFIG, num_workers=2, hostfile=str(empty), launcher_args=[])


def test_the_worker_entry_names_a_missing_config():
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.train_entry", "--config", "/nonexistent/worker.json"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "does not exist" in proc.stderr
