"""The training loop: one GPT trained with DeepSpeed ZeRO, the same code on every worker.

:func:`train` runs inside each worker process once ``torch.distributed`` can be initialised
(Ray Train sets up the process group; torchrun and the deepspeed launcher set the environment).
It reads only a dataset version's shards and manifest, and writes into ``out_dir``::

    checkpoints/step_000300/   DeepSpeed checkpoints (model, optimizer, scheduler, step)
    checkpoints/latest         the tag of the newest one (written by DeepSpeed)
    final/                     consolidated weights (model.pt), config.json, tokenizer.json
    train_log.jsonl            one line of metrics per logged step (rank 0)
    summary.json               first and last loss, steps, throughput (rank 0)

A run started again with the same ``out_dir`` resumes from ``checkpoints/latest``; batches are
a pure function of the step (model/data.py), so it continues exactly where it stopped.
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist

from model.data import TrainWindows
from model.gpt import GPT, GPTConfig
from model.mfu import peak_flops_per_second
from pipeline.shards import read_manifest
from pipeline.store import atomic_write_json

__all__ = ["deepspeed_config", "lr_at", "train"]

log = logging.getLogger("kiln.train")


def lr_at(step: int, *, lr: float, min_lr: float, warmup_steps: int, max_steps: int) -> float:
    """Linear warmup to ``lr``, then cosine decay to ``min_lr`` at ``max_steps``."""
    if warmup_steps and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def deepspeed_config(train_cfg: dict, *, bf16: bool) -> dict:
    """The DeepSpeed config for a TrainConfig (as a dict)."""
    cfg = {
        "train_micro_batch_size_per_gpu": train_cfg["micro_batch_size"],
        "gradient_accumulation_steps": train_cfg["grad_accum_steps"],
        "zero_optimization": {"stage": train_cfg["zero_stage"]},
        "bf16": {"enabled": bf16},
        # kiln passes torch's AdamW, which ZeRO shards like its own optimizers; DeepSpeed asks
        # for this flag with any optimizer it did not build itself.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,  # kiln prints its own step line
        "wall_clock_breakdown": False,
    }
    if train_cfg["grad_clip"] > 0:
        cfg["gradient_clipping"] = train_cfg["grad_clip"]
    return cfg


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    # Decay matrices (linear and embedding weights), not gains or biases.
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    # Peak resident set size of this process (Linux reports KiB).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _setup_logging() -> None:
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def train(cfg: dict, on_log: Callable[[dict], None] | None = None) -> dict:
    """Train on one worker; returns the run summary (on every rank).

    ``cfg`` holds ``model`` (GPTConfig fields without vocab_size), ``train`` (TrainConfig
    fields), ``dataset_dir``, ``tokenizer_path`` and ``out_dir``. ``on_log`` receives each
    logged step's metrics on rank 0 (the job sends them to wandb).
    """
    import deepspeed

    _setup_logging()
    # DeepSpeed's ZeRO calls a torch.distributed function that torch marks deprecated; the
    # warning repeats every step and says nothing about this run.
    warnings.filterwarnings("ignore", message=".*all_gather_into_tensor.*", category=FutureWarning)
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    tc = cfg["train"]
    out_dir = Path(cfg["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and tc["use_gpu"] else "gloo"
        deepspeed.init_distributed(dist_backend=backend)
    rank, world = dist.get_rank(), dist.get_world_size()

    if tc["use_gpu"]:
        if not torch.cuda.is_available():
            raise RuntimeError("train.use_gpu is set but this worker sees no CUDA device")
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    bf16 = tc["precision"] == "bf16" or (
        tc["precision"] == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()
    )

    manifest = read_manifest(cfg["dataset_dir"])
    gpt_config = GPTConfig(vocab_size=manifest["tokenizer"]["vocab_size"], **cfg["model"])
    torch.manual_seed(tc["seed"])  # identical init on every rank
    model = GPT(gpt_config).to(device)
    optimizer = torch.optim.AdamW(
        _param_groups(model, tc["weight_decay"]),
        lr=tc["lr"],
        betas=(tc["beta1"], tc["beta2"]),
        fused=device.type == "cuda",
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: (
            lr_at(
                step,
                lr=tc["lr"],
                min_lr=tc["min_lr"],
                warmup_steps=tc["warmup_steps"],
                max_steps=tc["max_steps"],
            )
            / tc["lr"]
        ),
    )
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=schedule,
        config=deepspeed_config(tc, bf16=bf16),
    )

    windows = TrainWindows(cfg["dataset_dir"], gpt_config.block_size, tc["seed"])
    block = gpt_config.block_size
    tokens_per_step = tc["micro_batch_size"] * tc["grad_accum_steps"] * world * block
    flops_per_token = model.flops_per_token(block)
    peak = peak_flops_per_second(device, bf16=bf16)

    ckpt_dir = out_dir / "checkpoints"
    start_step = 0
    if (ckpt_dir / "latest").exists():
        path, client_state = engine.load_checkpoint(str(ckpt_dir))
        if path is None:
            raise RuntimeError(f"could not load the checkpoint named by {ckpt_dir / 'latest'}")
        start_step = int(client_state["step"])
        if rank == 0:
            log.info("resumed from %s at step %d", path, start_step)

    if rank == 0:
        log.info(
            "model: %.2fM parameters (%.2fM without embeddings), %.3g FLOPs/token | "
            "ZeRO-%d on %d %s worker(s), %s | %d tokens/step, %d train tokens (%.1f steps/epoch)",
            model.num_params() / 1e6,
            model.num_params(non_embedding=True) / 1e6,
            flops_per_token,
            tc["zero_stage"],
            world,
            device.type,
            "bf16" if bf16 else "fp32",
            tokens_per_step,
            windows.num_tokens,
            windows.num_tokens / tokens_per_step,
        )

    log_path = out_dir / "train_log.jsonl"
    first_loss = None
    last_metrics: dict = {}
    t_last, steps_since = time.time(), 0
    engine.train()
    for step in range(start_step, tc["max_steps"]):
        loss_sum = torch.zeros((), device=device)
        for micro in range(tc["grad_accum_steps"]):
            x, y = windows.batch(tc["micro_batch_size"], step=step, rank=rank, micro=micro)
            _, loss = engine(x.to(device), y.to(device))
            engine.backward(loss)
            engine.step()
            loss_sum += loss.detach().float()
        steps_since += 1
        step_loss = loss_sum / tc["grad_accum_steps"]
        if not torch.isfinite(step_loss):
            raise FloatingPointError(f"loss is {step_loss.item()} at step {step + 1}; stopping")

        done = step + 1
        if done % tc["log_every"] == 0 or done == tc["max_steps"] or done == start_step + 1:
            dist.all_reduce(step_loss, op=dist.ReduceOp.SUM)
            mean_loss = step_loss.item() / world
            elapsed = time.time() - t_last
            tokens_per_s = tokens_per_step * steps_since / max(elapsed, 1e-9)
            grad_norm = engine.get_global_grad_norm()
            metrics = {
                "step": done,
                "loss": mean_loss,
                "lr": schedule.get_last_lr()[0],
                "grad_norm": float(grad_norm) if grad_norm is not None else None,
                "tokens_per_s": tokens_per_s,
                "mfu": (flops_per_token * tokens_per_s / (peak * world)) if peak else None,
                "memory_gib": _memory_gib(device),
                "s_per_step": elapsed / steps_since,
                "tokens_seen": done * tokens_per_step,
            }
            if first_loss is None:
                first_loss = mean_loss
            last_metrics = metrics
            if rank == 0:
                log.info(
                    "step %5d/%d | loss %.4f | lr %.2e | grad norm %s | %.0f tok/s | MFU %s | "
                    "mem %.2f GiB | %.3f s/step",
                    done,
                    tc["max_steps"],
                    mean_loss,
                    metrics["lr"],
                    f"{metrics['grad_norm']:.3f}" if metrics["grad_norm"] is not None else "n/a",
                    tokens_per_s,
                    f"{metrics['mfu']:.1%}" if metrics["mfu"] is not None else "n/a (CPU)",
                    metrics["memory_gib"],
                    metrics["s_per_step"],
                )
                with open(log_path, "a") as fh:
                    fh.write(json.dumps(metrics) + "\n")
                if on_log is not None:
                    on_log(metrics)
            t_last, steps_since = time.time(), 0

        every = tc["checkpoint_every"]
        if (every and done % every == 0) or done == tc["max_steps"]:
            _save_checkpoint(engine, ckpt_dir, done, tc["keep_checkpoints"], rank)

    _export_final(engine, model, gpt_config, cfg, out_dir, rank)
    summary = {
        "first_logged_loss": first_loss,
        "final_loss": last_metrics.get("loss"),
        "steps": tc["max_steps"],
        "resumed_from_step": start_step,
        "world_size": world,
        "tokens_per_step": tokens_per_step,
        "last_metrics": last_metrics,
        "final_dir": str(out_dir / "final"),
    }
    if rank == 0:
        atomic_write_json(out_dir / "summary.json", summary)
    dist.barrier()
    return summary


def _save_checkpoint(engine, ckpt_dir: Path, step: int, keep: int, rank: int) -> None:
    # Every rank writes its own shard of the ZeRO state; DeepSpeed then updates `latest`.
    engine.save_checkpoint(str(ckpt_dir), tag=f"step_{step:06d}", client_state={"step": step})
    dist.barrier()
    if rank == 0:
        tags = sorted(
            p.name for p in ckpt_dir.iterdir() if p.is_dir() and p.name.startswith("step_")
        )
        for old in tags[:-keep]:
            shutil.rmtree(ckpt_dir / old, ignore_errors=True)


def _export_final(engine, model: GPT, gpt_config: GPTConfig, cfg: dict, out_dir: Path, rank: int):
    """Consolidated fp32 weights that evaluation and export load without DeepSpeed."""
    if cfg["train"]["zero_stage"] == 3:
        # Parameters are partitioned across ranks; every rank must take part in gathering.
        state = engine._zero3_consolidated_16bit_state_dict()
    else:
        state = engine.module.state_dict() if rank == 0 else None
    if rank == 0:
        final = out_dir / "final"
        final.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().float().cpu() for k, v in state.items()}
        tmp = final / ".model.pt.tmp"
        torch.save(state, tmp)
        os.replace(tmp, final / "model.pt")
        atomic_write_json(final / "config.json", gpt_config.to_dict())
        shutil.copyfile(cfg["tokenizer_path"], final / "tokenizer.json")
        atomic_write_json(
            final / "meta.json",
            {
                "dataset_dir": str(cfg["dataset_dir"]),
                "dataset_version": read_manifest(cfg["dataset_dir"])["version"],
                "steps": cfg["train"]["max_steps"],
                "run": cfg.get("run"),
                "train_config": cfg["train"],
            },
        )
    dist.barrier()
