"""Launching training: the same ``model.train.train`` function on Ray Train workers.

Ray Train's TorchTrainer starts ``num_workers`` processes (one GPU each when ``use_gpu``; on
CPUs, one core each), sets up their process group (gloo on CPUs, NCCL on GPUs) and calls
:func:`ray_train_loop` in each; DeepSpeed reuses that process group. Rank 0 also owns the wandb
run, so metrics are logged once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["launch_ray_train", "ray_train_loop"]


def ray_train_loop(config: dict) -> None:
    """Entry point run by every Ray Train worker."""
    if not config["train"]["use_gpu"]:
        # Chosen before DeepSpeed is first imported in this process.
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import ray.train

    from jobs.tracking import start_run
    from model.train import train

    tracker = None
    if ray.train.get_context().get_world_rank() == 0 and config.get("wandb"):
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
        )
    try:
        summary = train(
            config, on_log=(lambda m: tracker.log(m, step=m["step"])) if tracker else None
        )
        if tracker is not None:
            tracker.summary({"final_loss": summary["final_loss"]})
    finally:
        if tracker is not None:
            tracker.finish()


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
    return json.loads((Path(config["out_dir"]) / "summary.json").read_text())
