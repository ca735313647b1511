"""Tokens/s of kiln's DeepSpeed training step against a plain PyTorch loop, same run.

    .venv/bin/python bench/bench_train.py [--workers 2] [--stages 0,1,2,3] [--steps 20]

Both loops train the same GPT on the same batches with the same number of processes: the
plain loop is torch's AdamW under DistributedDataParallel (no wrapper at all on one process)
with gradient clipping; the DeepSpeed loop is ``model.train.train_step`` on an engine built from
``model.train.deepspeed_config``, for each ZeRO stage asked for. Rounds alternate between the
loops, so a noisy machine slows both alike, and the report takes each loop's median round.
Target: DeepSpeed at least 0.9x the plain loop's tokens/s.

Run without arguments, the script starts itself under torchrun with ``--workers`` processes
(gloo on CPUs; ``--gpu`` for one GPU per process with NCCL and bf16).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
TARGET = 0.9  # DeepSpeed tokens/s over the plain loop's, at least (issue #7)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    p.add_argument("--stages", default="2", help="ZeRO stages to measure, e.g. 0,1,2,3")
    p.add_argument("--preset", default="tiny", help="model preset (default tiny)")
    p.add_argument("--block-size", type=int, default=256, help="sequence length, tokens")
    p.add_argument("--vocab-size", type=int, default=8192, help="vocabulary (kiln's demo size)")
    p.add_argument("--micro-batch", type=int, default=8, help="sequences per process per step")
    p.add_argument("--steps", type=int, default=10, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per loop")
    p.add_argument("--gpu", action="store_true", help="one GPU per process, bf16, NCCL")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: argparse.Namespace) -> int:
    """Start this script under torchrun; rank 0 prints the report."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={args.workers}",
        f"--master_port={_free_port()}",
        __file__,
        "--worker",
        *sys.argv[1:],
    ]
    env = dict(os.environ)
    if not args.gpu:
        env.setdefault("DS_ACCELERATOR", "cpu")
    return subprocess.call(cmd, env=env, cwd=REPO)


def _model(args, device):
    import torch

    from model.config import ModelConfig
    from model.gpt import GPT, GPTConfig

    shape = ModelConfig(preset=args.preset, block_size=args.block_size).resolved()
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=args.vocab_size, **shape)).to(device)


def _batches(args, rank, device, count):
    import torch

    g = torch.Generator().manual_seed(1000 + rank)
    data = torch.randint(
        0, args.vocab_size, (count, args.micro_batch, args.block_size + 1), generator=g
    )
    return [(d[:, :-1].to(device), d[:, 1:].to(device)) for d in data]


def _time_plain(model, optimizer, batches, bf16, clip):
    """Seconds for the plain loop over ``batches``."""
    import torch
    import torch.distributed as dist

    start = time.perf_counter()
    for x, y in batches:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        # The same per-step loss reduction kiln's loop makes (it logs the global mean).
        reduced = loss.detach().float()
        dist.all_reduce(reduced)
        reduced.item()
    return time.perf_counter() - start


def _time_deepspeed(engine, batches, device):
    from model.train import train_step

    start = time.perf_counter()
    for step, batch in enumerate(batches):
        train_step(
            engine, [batch], grad_accum_steps=1, nonfinite_loss="stop", step=step, device=device
        )
    return time.perf_counter() - start


def worker(args: argparse.Namespace) -> None:
    import deepspeed
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from model.config import TrainConfig
    from model.train import deepspeed_config, param_groups

    deepspeed.init_distributed(dist_backend="nccl" if args.gpu else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.gpu:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    bf16 = args.gpu
    tokens_per_step = args.micro_batch * args.block_size * world
    batches = _batches(args, rank, device, args.steps)
    warmup = batches[:2]

    plain_model = _model(args, device)
    plain_ddp = DistributedDataParallel(plain_model) if world > 1 else plain_model
    plain_opt = torch.optim.AdamW(param_groups(plain_model, 0.1), lr=1e-4, fused=args.gpu)
    _time_plain(plain_ddp, plain_opt, warmup, bf16, 1.0)

    engines = {}
    for stage in [int(s) for s in args.stages.split(",")]:
        tc = TrainConfig(zero_stage=stage, micro_batch_size=args.micro_batch).model_dump()
        model = _model(args, device)
        optimizer = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-4, fused=args.gpu)
        engine, *_ = deepspeed.initialize(
            model=model,
            optimizer=optimizer,
            config=deepspeed_config(tc, bf16=bf16, on_gpu=args.gpu),
        )
        _time_deepspeed(engine, warmup, device)
        engines[stage] = engine

    times = {"plain": []} | {stage: [] for stage in engines}
    for _ in range(args.rounds):
        times["plain"].append(_time_plain(plain_ddp, plain_opt, batches, bf16, 1.0))
        for stage, engine in engines.items():
            times[stage].append(_time_deepspeed(engine, batches, device))

    if rank == 0:
        rate = {k: tokens_per_step * args.steps / statistics.median(v) for k, v in times.items()}
        params = plain_model.num_params() / 1e6
        print(
            f"\n{args.preset} preset ({params:.1f}M parameters), {world} {device.type} "
            f"process(es), micro-batch {args.micro_batch} x {args.block_size} tokens, "
            f"{'bf16' if bf16 else 'fp32'}; median of {args.rounds} rounds of {args.steps} steps"
        )
        print(
            f"  plain PyTorch loop ({'DDP' if world > 1 else 'no wrapper'}): "
            f"{rate['plain']:,.0f} tokens/s"
        )
        for stage in engines:
            ratio = rate[stage] / rate["plain"]
            verdict = "meets" if ratio >= TARGET else "BELOW"
            print(
                f"  DeepSpeed ZeRO-{stage}: {rate[stage]:,.0f} tokens/s = {ratio:.2f}x the plain "
                f"loop ({verdict} the {TARGET}x target)"
            )
    dist.barrier()


def main() -> int:
    args = parse_args()
    if args.worker:
        worker(args)
        return 0
    return launch(args)


if __name__ == "__main__":
    sys.exit(main())
