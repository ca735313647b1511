"""Launching training: the same ``model.train.train`` function under three launchers.

- **Ray Train** (``train.launcher: ray``, the default): TorchTrainer starts ``num_workers``
  processes across the Ray cluster's nodes (one GPU each when ``use_gpu``; on CPUs, one core
  each), sets up their process group (gloo on CPUs, NCCL on GPUs) and calls
  :func:`ray_train_loop` in each; DeepSpeed reuses that process group.
- **torchrun** (``train.launcher: torchrun``): ``num_workers`` processes on this machine, or
  per machine with ``--nnodes``/``--node_rank``/``--master_addr`` in ``train.launcher_args``.
- **deepspeed** (``train.launcher: deepspeed``): the deepspeed launcher, on this machine
  (``--num_gpus num_workers``) or on the hosts of ``train.hostfile``, which it reaches by ssh.

torchrun and deepspeed run ``python -m jobs.train_entry --config <out_dir>/worker.json`` in each
process. Whatever the launcher, rank 0 owns the wandb run, so metrics are logged once, and it
reopens the run id kept in the latest checkpoint when it resumes.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections import deque
from pathlib import Path

from pipeline.store import atomic_write_json

__all__ = [
    "TrainingFailedError",
    "deepspeed_command",
    "launch_deepspeed",
    "launch_ray_train",
    "launch_torchrun",
    "ray_train_loop",
    "run_worker",
    "torchrun_command",
    "write_worker_config",
]


_EXCEPTION_LINE = re.compile(r"\b\w+(Error|Exception): ")


class TrainingFailedError(RuntimeError):
    """The training processes exited with an error; the message holds the end of their output."""


def run_worker(config: dict, rank: int) -> dict:
    """One worker's whole job: rank 0 opens the wandb run, every rank trains."""
    from jobs.tracking import start_run
    from model.resume import latest_state
    from model.train import train

    tracker = None
    if rank == 0 and config.get("wandb"):
        saved = latest_state(config["out_dir"])
        tracker = start_run(
            config["wandb"],
            name=config["wandb_run_name"],
            job_type="train",
            directory=config["wandb_dir"],
            config={
                "train": config["train"],
                "model": config["model"],
                "dataset_dir": config["dataset_dir"],
            },
            run_id=(saved or {}).get("wandb_run_id"),
            group=config.get("run"),
        )
        tracker.use_dataset(config["dataset_dir"])
        config = {**config, "wandb_run_id": tracker.run_id}
    try:
        summary = train(config, on_log=(lambda m: _log_metrics(tracker, m)) if tracker else None)
        if tracker is not None:
            tracker.summary({"final_loss": summary["final_loss"]})
        return summary
    finally:
        if tracker is not None:
            tracker.finish()


def _log_metrics(tracker, metrics: dict) -> None:
    """Send one step's metrics; a value {"columns": [...], "rows": [...]} (in-loop evaluation's
    continuations) becomes a wandb table."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, dict) and set(value) == {"columns", "rows"}:
            import wandb

            value = wandb.Table(columns=value["columns"], data=value["rows"])
        out[key] = value
    tracker.log(out, step=metrics["step"])


def ray_train_loop(config: dict) -> None:
    """Entry point run by every Ray Train worker."""
    if not config["train"]["use_gpu"]:
        # Chosen before DeepSpeed is first imported in this process.
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import ray.train

    run_worker(config, ray.train.get_context().get_world_rank())


def launch_ray_train(
    config: dict, *, num_workers: int, use_gpu: bool, storage_dir: str | Path
) -> dict:
    """Run training on the connected Ray cluster and return rank 0's summary."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        ray_train_loop,
        train_loop_config=config,
        scaling_config=ScalingConfig(
            num_workers=num_workers,
            use_gpu=use_gpu,
            resources_per_worker=None if use_gpu else {"CPU": 1},
        ),
        run_config=RunConfig(
            name=Path(config["out_dir"]).parent.name + "-train",
            storage_path=str(Path(storage_dir).resolve()),
        ),
    )
    trainer.fit()
    return _read_summary(config)


def write_worker_config(config: dict) -> Path:
    """Write the worker config beside the run's outputs, where every process (on every node
    sharing the output folder) reads it."""
    path = Path(config["out_dir"]) / "worker.json"
    atomic_write_json(path, config)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _has_flag(args: list[str], *names: str) -> bool:
    return any(a == n or a.startswith(n + "=") for a in args for n in names)


def torchrun_command(config_path: Path, *, num_workers: int, launcher_args: list[str]) -> list[str]:
    """torchrun with ``num_workers`` processes per machine running jobs.train_entry."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={num_workers}"]
    if not _has_flag(launcher_args, "--master_port", "--rdzv_endpoint", "--rdzv-endpoint"):
        cmd.append(f"--master_port={_free_port()}")
    return [*cmd, *launcher_args, "-m", "jobs.train_entry", "--config", str(config_path)]


def _hostfile_hosts(hostfile: str) -> list[str]:
    path = Path(hostfile)
    if not path.exists():
        raise FileNotFoundError(f"train.hostfile {hostfile} does not exist")
    hosts = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            hosts.append(line.split()[0])
    if not hosts:
        raise ValueError(f"train.hostfile {hostfile} names no host ('hostname slots=N' lines)")
    return hosts


def deepspeed_command(
    config_path: Path, *, num_workers: int, hostfile: str | None, launcher_args: list[str]
) -> list[str]:
    """The deepspeed launcher running jobs.train_entry on this machine or a hostfile's hosts."""
    cmd = [sys.executable, "-m", "deepspeed.launcher.runner"]
    if hostfile is None:
        # Without it the launcher counts accelerators, and on a CPU-only machine starts one.
        cmd.append(f"--num_gpus={num_workers}")
    else:
        cmd.append(f"--hostfile={hostfile}")
        if set(_hostfile_hosts(hostfile)) <= {"localhost", "127.0.0.1"}:
            # This machine only: no ssh needed to reach it or to find its address.
            cmd += ["--no_ssh_check", "--master_addr=127.0.0.1"]
    if not _has_flag(launcher_args, "--master_port"):
        cmd.append(f"--master_port={_free_port()}")
    return [*cmd, *launcher_args, "--module", "jobs.train_entry", "--config", str(config_path)]


def _child_env(config: dict) -> dict:
    env = dict(os.environ)
    # The workers start their own wandb service rather than join this process's (wandb keeps
    # its address in WANDB_SERVICE): a run killed with its workers then leaves no service
    # behind that still holds its run id when it resumes.
    env.pop("WANDB_SERVICE", None)
    if not config["train"]["use_gpu"]:
        env.setdefault("DS_ACCELERATOR", "cpu")
    return env


def _run_streaming(cmd: list[str], env: dict, what: str) -> None:
    """Run ``cmd``, echoing its output to stderr; raise with its last lines if it fails."""
    tail: deque[str] = deque(maxlen=400)
    with subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as proc:
        for line in proc.stdout or ():
            sys.stderr.write(line)
            tail.append(line)
        rc = proc.wait()
    if rc != 0:
        # The first exception a worker raised, not the launcher's report that a child failed.
        errors = [
            line.strip()
            for line in tail
            if _EXCEPTION_LINE.search(line) and "ChildFailedError" not in line
        ]
        reason = errors[0] if errors else f"exit status {rc}"
        last = "".join(list(tail)[-40:])
        raise TrainingFailedError(
            f"{what} failed: {reason}\n--- last lines of its output ---\n{last}"
        )


def _read_summary(config: dict) -> dict:
    return json.loads((Path(config["out_dir"]) / "summary.json").read_text())


def launch_torchrun(config: dict, *, num_workers: int, launcher_args: list[str]) -> dict:
    """Run training under torchrun and return rank 0's summary."""
    path = write_worker_config(config)
    cmd = torchrun_command(path, num_workers=num_workers, launcher_args=launcher_args)
    _run_streaming(cmd, _child_env(config), "training under torchrun")
    return _read_summary(config)


def launch_deepspeed(
    config: dict, *, num_workers: int, hostfile: str | None, launcher_args: list[str]
) -> dict:
    """Run training under the deepspeed launcher and return rank 0's summary."""
    path = write_worker_config(config)
    cmd = deepspeed_command(
        path, num_workers=num_workers, hostfile=hostfile, launcher_args=launcher_args
    )
    _run_streaming(cmd, _child_env(config), "training under the deepspeed launcher")
    return _read_summary(config)
