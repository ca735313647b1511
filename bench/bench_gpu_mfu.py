"""MFU of kiln's training on GPUs: the ~350M preset in bf16 at sequence length 2048.

    .venv/bin/python bench/bench_gpu_mfu.py [--gpus N] [--micro-batch 16] [--steps 40]

This runs kiln's own training function (model.train.train, started by jobs/launch.py under
torchrun) on a synthetic dataset version of random tokens: ZeRO-1, bf16, torch.compile, fused
AdamW, and scaled_dot_product_attention, which takes the flash-attention kernel for causal
bf16 attention on these GPUs (the script checks that it can). Tokens/s and MFU are kiln's own
step metrics (6N plus PaLM's attention term over the peak dense bf16 FLOP/s of model/mfu.py's
table), averaged over the logged intervals after the first ``--skip`` steps, which hold the
compilation. Target on an H200: MFU of at least 50% (issue #7).

``--smoke`` runs the same path on two CPU processes with the tiny preset and a short context,
to check the script where there is no GPU; its MFU is n/a.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
TARGET_MFU = 0.50  # on an H200 (issue #7)
VOCAB = 50304  # GPT-2's 50,257 ids rounded up to a multiple of 128 for tensor-core shapes


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gpus", type=int, default=None, help="processes (default: every GPU)")
    p.add_argument("--preset", default="350m", help="model preset (default 350m)")
    p.add_argument("--block-size", type=int, default=2048, help="sequence length, tokens")
    p.add_argument("--micro-batch", type=int, default=16, help="sequences per GPU per step")
    p.add_argument("--zero-stage", type=int, default=1, help="DeepSpeed ZeRO stage (default 1)")
    p.add_argument("--steps", type=int, default=40, help="optimizer steps")
    p.add_argument("--skip", type=int, default=10, help="first steps left out of the average")
    p.add_argument("--no-compile", action="store_true", help="leave torch.compile off")
    p.add_argument("--activation-checkpointing", action="store_true")
    p.add_argument("--out", default=None, help="folder for the run (default: a temporary one)")
    p.add_argument("--smoke", action="store_true", help="tiny model on 2 CPU processes")
    return p.parse_args(argv)


def synthetic_version(folder: Path, *, tokens: int, vocab_size: int) -> Path:
    """A dataset version of uniformly random tokens, in the layout pipeline/shards.py writes."""
    from pipeline.shards import sha256_file
    from pipeline.store import atomic_write_json

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    shards = []
    for split, count in (("train", tokens), ("val", 4096)):
        name = f"{split}-synthetic"
        rng.integers(0, vocab_size, count, dtype=np.uint16).tofile(folder / f"{name}.bin")
        np.array([0, count], dtype="<i8").tofile(folder / f"{name}.idx")
        (folder / f"{name}.docs.jsonl").write_text('{"id": "synthetic"}\n')
        shards.append(
            {
                "split": split,
                "name": name,
                "tokens": count,
                "documents": 1,
                "bin_sha256": sha256_file(folder / f"{name}.bin"),
                "idx_sha256": sha256_file(folder / f"{name}.idx"),
                "docs_sha256": sha256_file(folder / f"{name}.docs.jsonl"),
            }
        )
    atomic_write_json(
        folder / "manifest.json",
        {
            "version": "synthetic",
            "dtype": "uint16",
            "shards": shards,
            "tokenizer": {"eos_id": 0, "vocab_size": vocab_size},
        },
    )
    return folder


def check_flash_attention(block_size: int, head_dim: int) -> str:
    """Whether the flash kernel runs for this model's attention shape (a short probe)."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(1, 4, block_size, head_dim, device="cuda", dtype=torch.bfloat16)
    try:
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            F.scaled_dot_product_attention(q, q, q, is_causal=True)
    except RuntimeError as exc:
        return f"NOT available ({exc.__class__.__name__}: {str(exc)[:120]})"
    return "available"


def main() -> int:
    args = parse_args()
    from jobs.launch import launch_torchrun
    from model.config import ModelConfig, TrainConfig

    if args.smoke:
        args.preset, args.block_size, args.micro_batch = "tiny", 128, 2
        args.steps, args.skip, args.no_compile = min(args.steps, 6), 2, True
        workers, use_gpu, vocab = 2, False, 8192
    else:
        import torch

        if not torch.cuda.is_available():
            print("bench_gpu_mfu: no CUDA GPU here; --smoke checks the script on the CPU")
            return 2
        workers, use_gpu, vocab = args.gpus or torch.cuda.device_count(), True, VOCAB

    model = ModelConfig(preset=args.preset, block_size=args.block_size).resolved()
    train = TrainConfig(
        zero_stage=args.zero_stage,
        num_workers=workers,
        use_gpu=use_gpu,
        precision="bf16" if use_gpu else "fp32",
        micro_batch_size=args.micro_batch,
        max_steps=args.steps,
        warmup_steps=min(10, args.steps),
        log_every=min(10, max(1, args.steps // 4)),
        checkpoint_every=0,
        compile=not args.no_compile,
        activation_checkpointing=args.activation_checkpointing,
        launcher="torchrun",
    )
    root = Path(args.out or tempfile.mkdtemp(prefix="kiln-mfu-"))
    tokens = 2 * args.micro_batch * (args.block_size + 1) * workers * args.steps
    version = synthetic_version(root / "data", tokens=min(tokens, 50_000_000), vocab_size=vocab)
    if use_gpu:
        head_dim = model["d_model"] // model["n_head"]
        print(f"flash attention for head_dim {head_dim}: {check_flash_attention(2048, head_dim)}")
    config = {
        "model": model,
        "train": train.model_dump(),
        "dataset_dir": str(version),
        "tokenizer_path": "",
        "out_dir": str(root / "train"),
        "run": "bench-gpu-mfu",
        "export_final": False,
    }
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    summary = launch_torchrun(config, num_workers=workers, launcher_args=[])

    lines = (root / "train" / "train_log.jsonl").read_text().splitlines()
    logged = [json.loads(line) for line in lines]
    after = [m for m in logged if m["step"] > args.skip] or logged[-1:]
    tokens_per_s = sum(m["tokens_per_s"] for m in after) / len(after)
    mfus = [m["mfu"] for m in after if m["mfu"] is not None]
    mfu = sum(mfus) / len(mfus) if mfus else None
    memory = max(m["memory_gib"] for m in logged)
    print(
        f"\n{args.preset} preset, {workers} {'GPU' if use_gpu else 'CPU process'}(es), "
        f"ZeRO-{args.zero_stage}, {'bf16' if use_gpu else 'fp32'}, micro-batch "
        f"{args.micro_batch} x {args.block_size} tokens, compile {'off' if args.no_compile else 'on'}"
        f"; steps {args.skip + 1}-{args.steps}:"
    )
    print(f"  {tokens_per_s:,.0f} tokens/s ({tokens_per_s / workers:,.0f} per device)")
    print(f"  peak memory {memory:.1f} GiB per device")
    if mfu is None:
        print("  MFU n/a (no peak FLOP/s known for this device)")
    else:
        verdict = "meets" if mfu >= TARGET_MFU else "BELOW"
        print(f"  MFU {mfu:.1%} ({verdict} the {TARGET_MFU:.0%} target for an H200)")
    print(f"  final loss {summary['final_loss']:.3f} (random tokens: ln V = {np.log(vocab):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
