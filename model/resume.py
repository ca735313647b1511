"""Training checkpoints: saved every N steps and at the end, the last K kept, resumed exactly.

Layout under ``<out_dir>/checkpoints``::

    step_000040/                DeepSpeed's files: weights, ZeRO-partitioned optimizer state,
                                learning-rate scheduler
    step_000040/kiln_state.json step, tokens consumed, world size, ZeRO stage, dataset, wandb id
    step_000040/rng_rank00000.pt  each rank's random-number generator states
    universal_step_000040/      the same checkpoint in DeepSpeed's universal format, made when a
                                run resumes with a different number of processes
    latest                      tag of the newest complete checkpoint

A checkpoint counts only once ``latest`` names it, and kiln writes ``latest`` (atomically,
after every rank has written its files), so a run killed while saving resumes from the
checkpoint before.

Resuming with the same number of processes loads the checkpoint as DeepSpeed wrote it. With a
different number, ZeRO's optimizer partitions no longer line up with the ranks, so rank 0 first
converts the checkpoint with DeepSpeed's ``ds_to_universal`` (one file per parameter and
optimizer state) and every rank loads its new partition from that. The data position is kept
in tokens (model/data.py), so it carries over whatever the number of processes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from model.checkpoint import CheckpointError
from pipeline.shards import read_manifest
from pipeline.store import atomic_write_json, atomic_write_text

__all__ = [
    "ResumeError",
    "ResumePlan",
    "consolidated_state_dict",
    "dataset_fingerprint",
    "enable_universal",
    "latest_state",
    "plan_resume",
    "prepare_universal",
    "restore_rng",
    "save_checkpoint",
]

log = logging.getLogger("kiln.train")

STATE_FILE = "kiln_state.json"
LATEST = "latest"


class ResumeError(CheckpointError):
    """A checkpoint that this run cannot continue from; the message says why and what to do."""


@dataclass
class ResumePlan:
    """Where a resumed run starts and how its checkpoint is to be loaded."""

    tag: str  # the step checkpoint, e.g. step_000040
    state: dict  # its kiln_state.json
    universal: bool  # load through DeepSpeed's universal format (world size or stage changed)

    @property
    def load_tag(self) -> str:
        return f"universal_{self.tag}" if self.universal else self.tag


def enable_universal(model: torch.nn.Module) -> None:
    """Mark the model so DeepSpeed records what ds_to_universal needs in each checkpoint."""
    from deepspeed.checkpoint.constants import (
        UNIVERSAL_CHECKPOINT_INFO,
        UNIVERSAL_CHECKPOINT_VERSION_KEY,
        UNIVERSAL_CHECKPOINT_VERSION_VALUE,
    )

    setattr(
        model,
        UNIVERSAL_CHECKPOINT_INFO,
        {UNIVERSAL_CHECKPOINT_VERSION_KEY: UNIVERSAL_CHECKPOINT_VERSION_VALUE},
    )


def step_tag(step: int) -> str:
    return f"step_{step:06d}"


def dataset_fingerprint(version_dir: str | Path) -> str:
    """Hash of the training shards' checksums: same tokens in the same order, same hash."""
    manifest = read_manifest(version_dir)
    h = hashlib.sha256()
    for shard in manifest["shards"]:
        if shard["split"] == "train":
            h.update(shard["bin_sha256"].encode())
    return h.hexdigest()[:16]


def latest_state(out_dir: str | Path) -> dict | None:
    """kiln_state.json of the newest complete checkpoint under ``out_dir``, or None.

    Needs neither torch.distributed nor DeepSpeed, so a launcher can read it (for the wandb run
    id) before any worker starts.
    """
    ckpt_dir = Path(out_dir) / "checkpoints"
    latest = ckpt_dir / LATEST
    if not latest.exists():
        return None
    tag = latest.read_text().strip()
    path = ckpt_dir / tag / STATE_FILE
    if not path.exists():
        raise ResumeError(
            f"{latest} names {tag!r}, which has no {STATE_FILE}: not a checkpoint kiln wrote "
            f"(delete {ckpt_dir} to start over)"
        )
    return {"tag": tag, **json.loads(path.read_text())}


def plan_resume(
    out_dir: str | Path, *, world_size: int, zero_stage: int, expect: dict
) -> ResumePlan | None:
    """How to resume from ``out_dir``'s latest checkpoint, or None for a fresh start.

    ``expect`` holds what must match for the data position to mean the same tokens:
    block_size, seed and dataset fingerprint.
    """
    state = latest_state(out_dir)
    if state is None:
        return None
    tag = state.pop("tag")
    for key, value in expect.items():
        if state.get(key) != value:
            raise ResumeError(
                f"checkpoint {tag} was trained with {key}={state.get(key)!r}, this run has "
                f"{value!r}; its data position would not mean the same tokens. Resume with the "
                f"same setting, or train into a new output folder"
            )
    saved_world, saved_stage = state["world_size"], state["zero_stage"]
    if saved_stage == zero_stage and (saved_world == world_size or zero_stage == 0):
        # ZeRO-0 keeps whole optimizer state in one file, whatever the number of ranks.
        return ResumePlan(tag, state, universal=False)
    if saved_stage == 0 or zero_stage == 0:
        raise ResumeError(
            f"checkpoint {tag} was saved with ZeRO stage {saved_stage} on {saved_world} "
            f"process(es); it can be resumed at ZeRO stage {zero_stage} only on "
            f"{saved_world} process(es) with the same stage (DeepSpeed's universal checkpoints "
            "cover stages 1-3)"
        )
    return ResumePlan(tag, state, universal=True)


def prepare_universal(ckpt_dir: Path, plan: ResumePlan, rank: int) -> None:
    """Rank 0 converts the checkpoint to DeepSpeed's universal format; every rank waits."""
    target = ckpt_dir / plan.load_tag
    if rank == 0 and not target.exists():
        log.info(
            "converting %s (saved on %d process(es)) to a universal checkpoint",
            plan.tag,
            plan.state["world_size"],
        )
        tmp = ckpt_dir / f".{plan.load_tag}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        workers = str(max(1, min(4, os.cpu_count() or 1)))
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "deepspeed.checkpoint.ds_to_universal",
                "--input_folder",
                str(ckpt_dir / plan.tag),
                "--output_folder",
                str(tmp),
                "--num_extract_workers",
                workers,
                "--num_merge_workers",
                workers,
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ResumeError(
                f"converting {ckpt_dir / plan.tag} to a universal checkpoint failed "
                f"(exit {proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}"
            )
        os.replace(tmp, target)
    dist.barrier()


def _rng_state() -> dict:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(ckpt_dir: Path, plan: ResumePlan, rank: int, *, seed: int) -> None:
    """Each rank's generators as saved; new ranks (a larger world) get a seed of their own."""
    path = ckpt_dir / plan.tag / f"rng_rank{rank:05d}.pt"
    if plan.state["world_size"] != dist.get_world_size() or not path.exists():
        # The saved streams belonged to other ranks' data; reseed from (seed, step, rank).
        derived = int(np.random.SeedSequence([seed, plan.state["step"], rank]).generate_state(1)[0])
        random.seed(derived)
        np.random.seed(derived)
        torch.manual_seed(derived)
        return
    # Our own file, written by save_checkpoint: it holds numpy and Python objects, so it is
    # not loadable with weights_only.
    state = torch.load(path, weights_only=False)
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(engine, ckpt_dir: Path, state: dict, *, keep: int, rank: int) -> str:
    """Save step ``state['step']`` on every rank, then name it in ``latest``; return its tag."""
    tag = step_tag(state["step"])
    if rank == 0 and (ckpt_dir / tag).exists():
        # Left by a run killed after this step: its files may be partial or from other ranks.
        shutil.rmtree(ckpt_dir / tag)
    dist.barrier()
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state={"kiln": state}, save_latest=False)
    rng_path = ckpt_dir / tag / f"rng_rank{rank:05d}.pt"
    torch.save(_rng_state(), rng_path.with_suffix(".tmp"))
    os.replace(rng_path.with_suffix(".tmp"), rng_path)
    dist.barrier()  # every rank's shard is on disk before the checkpoint counts
    if rank == 0:
        atomic_write_json(ckpt_dir / tag / STATE_FILE, state)
        atomic_write_text(ckpt_dir / LATEST, tag)
        _prune(ckpt_dir, keep)
    dist.barrier()
    return tag


def _prune(ckpt_dir: Path, keep: int) -> None:
    steps = sorted(p.name for p in ckpt_dir.iterdir() if p.is_dir() and p.name.startswith("step_"))
    kept = set(steps[-keep:])
    for p in ckpt_dir.iterdir():
        name = p.name.removeprefix("universal_")
        if p.is_dir() and name.startswith("step_") and name not in kept:
            shutil.rmtree(p, ignore_errors=True)


def consolidated_state_dict(ckpt_dir: Path, tag: str, zero_stage: int) -> dict[str, torch.Tensor]:
    """fp32 weights of a saved checkpoint, whole, on the CPU (ZeRO partitions gathered)."""
    if zero_stage == 0:
        files = sorted((ckpt_dir / tag).glob("mp_rank_*_model_states.pt"))
        if not files:
            raise CheckpointError(f"{ckpt_dir / tag} holds no model states file")
        state = torch.load(files[0], map_location="cpu", weights_only=False)["module"]
    else:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir), tag=tag)
    return {k: v.detach().float().cpu().contiguous() for k, v in state.items()}
