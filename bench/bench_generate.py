"""New tokens/s of kiln's generation: batched with the KV cache, against one prompt at a time
and against re-running the whole sequence each step, in the same run.

    .venv/bin/python bench/bench_generate.py [--preset small] [--prompts 16] [--new 64]

The model is an untrained preset (speed does not depend on the weights); prompts have
different lengths, so the batch is left-padded. Rounds alternate between the ways, so a noisy
machine slows all alike, and the report takes each way's median round. Targets: the batch at
least 3x one-at-a-time, the cache at least 2x no cache, for greedy decoding.

On a machine other processes share, run it with ``OMP_NUM_THREADS=1``: torch's second thread
spin-waits for a busy core and small matmuls slow down by up to 100x, which hides what is
measured (seen on the two-core development machines at load 10-20).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from model.config import PRESETS  # noqa: E402
from model.generate import generate_batch  # noqa: E402
from model.gpt import GPT, GPTConfig  # noqa: E402

BATCH_TARGET = 3.0  # batched over one-at-a-time, new tokens/s, at least
CACHE_TARGET = 2.0  # cached over uncached, at least


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--new", type=int, default=64, help="new tokens per prompt")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    shape = {k: v for k, v in PRESETS[args.preset].items()}
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=8192, **shape)).eval()
    gen = torch.Generator().manual_seed(0)
    prompts = [
        torch.randint(1, 8192, (int(n),), generator=gen).tolist()
        for n in torch.randint(16, 96, (args.prompts,), generator=gen)
    ]
    opts = dict(max_new_tokens=args.new, eos_id=0, min_new_tokens=args.new)  # full length

    def batched():
        return generate_batch(model, prompts, **opts)

    def one_at_a_time():
        return [g for p in prompts for g in generate_batch(model, [p], **opts)]

    def uncached():
        return generate_batch(model, prompts, use_cache=False, **opts)

    ways = {
        "batched, cached": batched,
        "one at a time": one_at_a_time,
        "batched, no cache": uncached,
    }
    times: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(args.rounds):
        for name, fn in ways.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    new_tokens = args.prompts * args.new
    rate = {k: new_tokens / statistics.median(v) for k, v in times.items()}
    print(
        f"{args.preset} ({model.num_params() / 1e6:.1f}M parameters), {args.prompts} prompts of "
        f"16-95 tokens, {args.new} new tokens each, {torch.get_num_threads()} threads"
    )
    for name, r in rate.items():
        print(f"  {name:<18} {r:9.0f} new tokens/s")
    batch_ratio = rate["batched, cached"] / rate["one at a time"]
    cache_ratio = rate["batched, cached"] / rate["batched, no cache"]
    print(f"  batched / one at a time: {batch_ratio:.1f}x (target {BATCH_TARGET}x)")
    print(f"  cached / no cache:       {cache_ratio:.1f}x (target {CACHE_TARGET}x)")
    return 0 if batch_ratio >= BATCH_TARGET and cache_ratio >= CACHE_TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
