"""The training loop: one GPT trained with DeepSpeed ZeRO, the same code on every worker.

:func:`train` runs inside each worker process, however it was started: Ray Train sets up the
process group itself; torchrun and the deepspeed launcher set the environment that
``deepspeed.init_distributed`` reads (jobs/launch.py starts all three). It reads only a dataset
version's shards and manifest, and writes into ``out_dir``::

    checkpoints/step_000300/   DeepSpeed checkpoints plus kiln's state (model/resume.py)
    checkpoints/latest         the tag of the newest complete one
    final/                     consolidated fp32 weights (model.pt), config.json, tokenizer.json
    train_log.jsonl            one line of metrics per logged step (rank 0)
    summary.json               first and last loss, steps, throughput (rank 0)

A run started again with the same ``out_dir`` resumes from ``checkpoints/latest``: weights,
optimizer, scheduler, data position (in tokens, model/data.py) and random-number generators,
so it continues as the unbroken run would have, on the same or a different number of workers.
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
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.distributed as dist

from model.data import TrainWindows
from model.gpt import GPT, GPTConfig
from model.mfu import peak_flops_per_second
from model.resume import (
    ResumeError,
    consolidated_state_dict,
    dataset_fingerprint,
    enable_universal,
    latest_state,
    plan_resume,
    prepare_universal,
    restore_rng,
    save_checkpoint,
)
from pipeline.shards import eos_token_of, read_manifest
from pipeline.store import atomic_write_json, atomic_write_text, staging_dir

__all__ = [
    "NonFiniteLossError",
    "deepspeed_config",
    "lr_at",
    "param_groups",
    "train",
    "train_step",
]

log = logging.getLogger("kiln.train")


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the step."""


def lr_at(step: int, *, lr: float, min_lr: float, warmup_steps: int, max_steps: int) -> float:
    """Linear warmup to ``lr``, then cosine decay to ``min_lr`` at ``max_steps``."""
    if warmup_steps and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def deepspeed_config(
    train_cfg: dict, *, bf16: bool, on_gpu: bool = False, load_universal: bool = False
) -> dict:
    """The DeepSpeed config for a TrainConfig (as a dict)."""
    zero: dict = {"stage": train_cfg["zero_stage"]}
    if train_cfg.get("offload_optimizer"):
        # Pinned host memory speeds up the copies to and from a GPU; on CPUs there is none.
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": on_gpu}
    cfg = {
        "train_micro_batch_size_per_gpu": train_cfg["micro_batch_size"],
        "gradient_accumulation_steps": train_cfg["grad_accum_steps"],
        "zero_optimization": zero,
        # With "skip", ZeRO drops an update whose gradient norm is not finite; DeepSpeed checks
        # that for bf16 only when asked (fp32 ZeRO 1-3 always checks).
        "bf16": {
            "enabled": bf16,
            "check_grad_overflow": train_cfg.get("nonfinite_loss") == "skip",
        },
        # kiln passes torch's AdamW, which ZeRO shards like its own optimizers; DeepSpeed asks
        # for this flag with any optimizer it did not build itself.
        "zero_allow_untested_optimizer": True,
        # On CPU workers the optimizer state already lives in CPU memory, so an offloaded
        # torch AdamW is fine there; GPU workers get DeepSpeedCPUAdam (see _build_optimizer).
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 10**9,  # kiln prints its own step line
        "wall_clock_breakdown": False,
    }
    if train_cfg["grad_clip"] > 0:
        cfg["gradient_clipping"] = train_cfg["grad_clip"]
    if load_universal:
        cfg["checkpoint"] = {"load_universal": True}
    return cfg


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay matrices (linear and embedding weights), not gains or biases."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _build_optimizer(model: GPT, tc: dict, device: torch.device) -> torch.optim.Optimizer:
    groups = param_groups(model, tc["weight_decay"])
    betas = (tc["beta1"], tc["beta2"])
    if tc["offload_optimizer"] and device.type == "cuda":
        # ZeRO-Offload steps the optimizer on the host; DeepSpeed's vectorised CPU Adam is
        # several times faster there than torch's (Ren et al., 2021, "ZeRO-Offload").
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(groups, lr=tc["lr"], betas=betas, adamw_mode=True)
    return torch.optim.AdamW(groups, lr=tc["lr"], betas=betas, fused=device.type == "cuda")


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


def _truncate_log(path: Path, last_step: int) -> None:
    """Drop lines a killed run logged after its last checkpoint; the resumed run redoes them."""
    if not path.exists():
        return
    kept = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line)["step"] <= last_step
    ]
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def train(cfg: dict, on_log: Callable[[dict], None] | None = None) -> dict:
    """Train on one worker; returns the run summary (on every rank).

    ``cfg`` holds ``model`` (GPTConfig fields without vocab_size), ``train`` (TrainConfig
    fields), ``dataset_dir``, ``tokenizer_path`` and ``out_dir``; optionally ``run`` (its name),
    ``wandb_run_id`` (kept in checkpoints so a resume logs to the same wandb run) and
    ``export_final`` (default true). ``on_log`` receives each logged step's metrics on rank 0.
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
    ckpt_dir = out_dir / "checkpoints"
    log_path = out_dir / "train_log.jsonl"
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
    block = gpt_config.block_size
    windows = TrainWindows(cfg["dataset_dir"], block, tc["seed"])
    data_identity = {
        "block_size": block,
        "seed": tc["seed"],
        "dataset": dataset_fingerprint(cfg["dataset_dir"]),
    }
    plan = plan_resume(out_dir, world_size=world, zero_stage=tc["zero_stage"], expect=data_identity)
    if plan is not None and plan.universal:
        prepare_universal(ckpt_dir, plan, rank)

    torch.manual_seed(tc["seed"])  # identical init on every rank
    model = GPT(gpt_config).to(device)
    model.activation_checkpointing = tc["activation_checkpointing"]
    enable_universal(model)
    optimizer = _build_optimizer(model, tc, device)
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
        config=deepspeed_config(
            tc,
            bf16=bf16,
            on_gpu=device.type == "cuda",
            load_universal=plan is not None and plan.universal,
        ),
    )
    if tc["compile"]:
        engine.compile()  # compiles the wrapped module in place; checkpoint keys stay the same

    start_step, tokens_consumed = 0, 0
    wandb_run_id = cfg.get("wandb_run_id")
    if plan is not None:
        wandb_run_id = wandb_run_id or plan.state.get("wandb_run_id")
        path, _ = engine.load_checkpoint(str(ckpt_dir), tag=plan.load_tag)
        if path is None:
            raise ResumeError(f"DeepSpeed could not load checkpoint {ckpt_dir / plan.load_tag}")
        start_step, tokens_consumed = plan.state["step"], plan.state["tokens_consumed"]
        restore_rng(ckpt_dir, plan, rank, seed=tc["seed"])
        if rank == 0:
            _truncate_log(log_path, start_step)
            _truncate_log(out_dir / "eval_log.jsonl", start_step)
            log.info(
                "resumed from %s at step %d (%d tokens consumed; saved on %d process(es), "
                "now %d%s)",
                plan.tag,
                start_step,
                tokens_consumed,
                plan.state["world_size"],
                world,
                ", through a universal checkpoint" if plan.universal else "",
            )

    tokens_per_step = tc["micro_batch_size"] * tc["grad_accum_steps"] * world * block
    flops_per_token = model.flops_per_token(block)
    peak = peak_flops_per_second(device, bf16=bf16)
    if rank == 0:
        log.info(
            "model: %.2fM parameters (%.2fM without embeddings), %.3g FLOPs/token | "
            "ZeRO-%d on %d %s worker(s), %s%s | %d tokens/step, %d train tokens "
            "(%.1f steps/epoch)",
            model.num_params() / 1e6,
            model.num_params(non_embedding=True) / 1e6,
            flops_per_token,
            tc["zero_stage"],
            world,
            device.type,
            "bf16" if bf16 else "fp32",
            ", optimizer offloaded to CPU" if tc["offload_optimizer"] else "",
            tokens_per_step,
            windows.tokens_per_epoch,
            windows.tokens_per_epoch / tokens_per_step,
        )

    eval_every = (cfg.get("eval") or {}).get("every_steps", 0)
    first_loss = _first_logged_loss(log_path, start_step) if rank == 0 else None
    last_metrics: dict = {}
    skipped = 0
    busy_s, steps_since = 0.0, 0  # time spent in steps since the last log line
    engine.train()
    for step in range(start_step, tc["max_steps"]):
        t0 = time.perf_counter()
        micro_batches = (
            windows.micro_batch(
                tokens_consumed,
                micro_batch_size=tc["micro_batch_size"],
                micro=micro,
                rank=rank,
                world_size=world,
            )
            for micro in range(tc["grad_accum_steps"])
        )
        mean_loss, was_skipped = train_step(
            engine,
            micro_batches,
            grad_accum_steps=tc["grad_accum_steps"],
            nonfinite_loss=tc["nonfinite_loss"],
            step=step + 1,
            device=device,
        )
        tokens_consumed += tokens_per_step
        busy_s += time.perf_counter() - t0  # train_step's .item() waited for the step to end
        steps_since += 1
        done = step + 1
        if was_skipped:
            skipped += 1
            if rank == 0:
                log.warning("step %d: loss is %s; update skipped", done, mean_loss)

        if done % tc["log_every"] == 0 or done == tc["max_steps"] or done == start_step + 1:
            tokens_per_s = tokens_per_step * steps_since / max(busy_s, 1e-9)
            grad_norm = engine.get_global_grad_norm()
            metrics = {
                "step": done,
                "loss": mean_loss,
                "lr": schedule.get_last_lr()[0],
                "grad_norm": float(grad_norm) if grad_norm is not None else None,
                "tokens_per_s": tokens_per_s,
                "mfu": (flops_per_token * tokens_per_s / (peak * world)) if peak else None,
                "memory_gib": _memory_gib(device),
                "s_per_step": busy_s / steps_since,
                "tokens_seen": tokens_consumed,
                "skipped_steps": skipped,
            }
            if first_loss is None:
                first_loss = mean_loss
            last_metrics = metrics
            if rank == 0:
                _log_step(metrics, tc["max_steps"])
                with open(log_path, "a") as fh:
                    fh.write(json.dumps(metrics) + "\n")
                if on_log is not None:
                    on_log(metrics)
            busy_s, steps_since = 0.0, 0

        if eval_every and done % eval_every == 0:
            _in_loop_eval(engine.module, cfg, done, out_dir / "eval_log.jsonl", rank, on_log)

        every = tc["checkpoint_every"]
        if (every and done % every == 0) or done == tc["max_steps"]:
            state = {
                "step": done,
                "tokens_consumed": tokens_consumed,
                "world_size": world,
                "zero_stage": tc["zero_stage"],
                "wandb_run_id": wandb_run_id,
                "dataset_dir": str(cfg["dataset_dir"]),
                **data_identity,
            }
            save_checkpoint(engine, ckpt_dir, state, keep=tc["keep_checkpoints"], rank=rank)

    if cfg.get("export_final", True):
        _export_final(ckpt_dir, gpt_config, cfg, out_dir, rank)
    summary = {
        "first_logged_loss": first_loss,
        "final_loss": last_metrics.get("loss"),
        "steps": tc["max_steps"],
        "resumed_from_step": start_step,
        "world_size": world,
        "tokens_per_step": tokens_per_step,
        "tokens_consumed": tokens_consumed,
        "skipped_steps": skipped,
        "last_metrics": last_metrics,
        "final_dir": str(out_dir / "final"),
    }
    if rank == 0:
        atomic_write_json(out_dir / "summary.json", summary)
    dist.barrier()
    return summary


def _first_logged_loss(log_path: Path, start_step: int) -> float | None:
    """The run's first logged loss, so a resumed run's summary starts where the run started,
    not where the resumed segment did. A fresh run in a reused folder starts a fresh log."""
    _truncate_log(log_path, start_step)  # a no-op when resuming: done above
    if not log_path.exists():
        return None
    for line in log_path.read_text().splitlines():
        if line.strip():
            return json.loads(line)["loss"]
    return None


def _in_loop_eval(
    model: GPT, cfg: dict, step: int, log_path: Path, rank: int, on_log: Callable | None
) -> None:
    """Validation loss and a few greedy continuations every ``eval.every_steps`` steps. Every
    rank runs it (ZeRO-3 forwards are collective); rank 0 writes ``eval_log.jsonl`` and passes
    the numbers, and the continuations as a table, to ``on_log``."""
    from tokenizers import Tokenizer

    from model.evaluate import in_loop_eval

    tokenizer = Tokenizer.from_file(str(cfg["tokenizer_path"]))
    t0 = time.perf_counter()
    result = in_loop_eval(model, tokenizer, cfg["dataset_dir"], cfg["eval"])
    if rank != 0:
        return
    val, gen = result["validation"], result["generation"]
    metrics = {
        "step": step,
        "eval/val_loss": val["loss"],
        "eval/val_perplexity": val["perplexity"],
        "eval/generation_pass_rate": gen["pass_rate"] if gen else None,
        "eval/seconds": time.perf_counter() - t0,
    }
    log.info(
        "step %5d | eval: val loss %.4f (perplexity %.1f)%s",
        step,
        val["loss"],
        val["perplexity"],
        f" | {gen['passed']}/{gen['total']} generations ended properly" if gen else "",
    )
    rows = (
        [[step, c["prompt"], c["continuation"], c["stop_reason"]] for c in gen["cases"]]
        if gen
        else []
    )
    with open(log_path, "a") as fh:
        fh.write(json.dumps({**metrics, "continuations": rows}) + "\n")
    if on_log is not None:
        # A table travels as {"columns", "rows"}; jobs/launch.py turns it into a wandb.Table.
        table = {"columns": ["step", "prompt", "continuation", "stop_reason"], "rows": rows}
        on_log({**metrics, "eval/continuations": table})


def _nonfinite_on_any_rank(loss: torch.Tensor) -> bool:
    bad = (~torch.isfinite(loss.detach())).float()
    dist.all_reduce(bad, op=dist.ReduceOp.MAX)
    return bool(bad.item())


def train_step(
    engine,
    micro_batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    grad_accum_steps: int,
    nonfinite_loss: str,
    step: int,
    device: torch.device,
) -> tuple[float, bool]:
    """One optimizer step over this rank's micro-batches; returns (loss, skipped).

    The loss is the mean over every rank's micro-batches. It is summed across ranks every step,
    so all ranks see the same value and take the same decision on a non-finite one (a rank that
    stopped alone would leave the others waiting in a collective).

    With ``nonfinite_loss="skip"`` each micro-batch's loss is checked on every rank before its
    backward pass. A non-finite one never reaches the optimizer: without accumulation the step
    makes neither backward pass nor update, and the learning-rate schedule does not advance;
    within an accumulation the micro-batch contributes a zero gradient (DeepSpeed counts
    micro-steps to find the end of a step, so it must still take its turn), and if even that
    is not finite, ZeRO's gradient-norm check drops the whole update. ``"stop"`` raises
    :class:`NonFiniteLossError` naming the step; the last checkpoint stays as it was.
    """
    loss_sum = torch.zeros((), device=device)
    skipped = False
    for x, y in micro_batches:
        logits, loss = engine(x.to(device, non_blocking=True), y.to(device, non_blocking=True))
        loss_sum += loss.detach().float()
        if nonfinite_loss == "skip" and _nonfinite_on_any_rank(loss):
            skipped = True
            if grad_accum_steps == 1:
                break
            loss = logits.float().nan_to_num(0.0, 0.0, 0.0).sum() * 0.0
        engine.backward(loss)
        engine.step()
    dist.all_reduce(loss_sum, op=dist.ReduceOp.SUM)
    mean = loss_sum.item() / (dist.get_world_size() * grad_accum_steps)
    if not math.isfinite(mean) and nonfinite_loss == "stop":
        raise NonFiniteLossError(
            f"loss is {mean} at step {step}; stopping. The last checkpoint is untouched. Lower "
            "train.lr, raise train.warmup_steps, or set train.nonfinite_loss=skip to drop such "
            "updates"
        )
    return mean, skipped


def _log_step(metrics: dict, max_steps: int) -> None:
    """The fixed-format line a person reads: one per logged step, from rank 0."""
    grad_norm = metrics["grad_norm"]
    log.info(
        "step %5d/%d | loss %.4f | lr %.2e | grad norm %s | %.0f tok/s | MFU %s | "
        "mem %.2f GiB | %.3f s/step",
        metrics["step"],
        max_steps,
        metrics["loss"],
        metrics["lr"],
        f"{grad_norm:.3f}" if grad_norm is not None else "n/a",
        metrics["tokens_per_s"],
        f"{metrics['mfu']:.1%}" if metrics["mfu"] is not None else "n/a (no peak known)",
        metrics["memory_gib"],
        metrics["s_per_step"],
    )


def _export_final(ckpt_dir: Path, gpt_config: GPTConfig, cfg: dict, out_dir: Path, rank: int):
    """Consolidated fp32 weights that evaluation and export load without DeepSpeed.

    They are read back from the last checkpoint, whose optimizer holds the fp32 master
    weights even when the model trained in bf16; rank 0 does it alone, with no collective.
    """
    if rank == 0:
        state = latest_state(out_dir)
        if state is None:
            raise ResumeError(f"no checkpoint under {ckpt_dir} to export")
        weights = consolidated_state_dict(ckpt_dir, state["tag"], state["zero_stage"])
        with staging_dir(out_dir / "final") as final:
            torch.save(weights, final / "model.pt")
            atomic_write_json(final / "config.json", gpt_config.to_dict())
            shutil.copyfile(cfg["tokenizer_path"], final / "tokenizer.json")
            atomic_write_json(
                final / "meta.json",
                {
                    "dataset_dir": str(cfg["dataset_dir"]),
                    "dataset_version": read_manifest(cfg["dataset_dir"])["version"],
                    "eos_token": eos_token_of(cfg["dataset_dir"]),
                    "steps": state["step"],
                    "tokens_consumed": state["tokens_consumed"],
                    "run": cfg.get("run"),
                    "train_config": cfg["train"],
                },
            )
    dist.barrier()
