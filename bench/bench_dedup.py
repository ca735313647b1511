"""How fast kiln's dedup is, and how its memory grows with input.

On the same texts, in the same run:

1. MinHash signatures per second: kiln's batched signatures (pipeline/minhash.py, datasketch's
   ``MinHash.bulk``) against the plain way, one ``MinHash`` per document with one ``update``
   call per shingle. Both shingle the same way, so the ratio is the hashing alone. Target: 5x.
2. The whole dedup stage on Ray (pipeline/dedup.py: signatures, band keys through a groupby,
   union-find, marking) in documents per second.
3. Peak memory of the dedup stage at 1x and 4x input, each in a fresh process: the driver's peak
   RSS and the peak summed RSS of every process of the Ray session, next to the size of the
   signatures. Texts are read from Parquet by Ray workers, as in the data job, so the driver
   never holds them. Target: growth no more than the signatures' size.

The texts are the shared corpus's Gutenberg books cut into documents of about 4 KB.

    .venv/bin/python bench/bench_dedup.py [--corpus ../shared/corpus] [--docs 600]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.gutenberg import strip_gutenberg  # noqa: E402
from pipeline.minhash import MinHasher  # noqa: E402

DOC_CHARS = 4000
NUM_PERM = 112


def book_documents(corpus: Path, limit: int) -> list[str]:
    """The corpus's books, cut at paragraph breaks into documents of about DOC_CHARS."""
    docs: list[str] = []
    for path in sorted((corpus / "books").glob("*.txt")):
        body = strip_gutenberg(path.read_text(encoding="utf-8-sig", errors="replace")).text
        part: list[str] = []
        size = 0
        for para in body.split("\n\n"):
            part.append(para)
            size += len(para)
            if size >= DOC_CHARS:
                docs.append("\n\n".join(part))
                part, size = [], 0
                if len(docs) >= limit:
                    return docs
    return docs


def bench_signatures(texts: list[str]) -> None:
    from datasketch import MinHash

    hasher = MinHasher(num_perm=NUM_PERM)
    shingles = [list(hasher.shingles(t)) for t in texts]  # the same input for both

    t0 = time.perf_counter()
    for sh in shingles:
        m = MinHash(num_perm=NUM_PERM, seed=hasher.seed)
        for s in sh:
            m.update(s)
    plain = time.perf_counter() - t0

    t0 = time.perf_counter()
    for i in range(0, len(shingles), 256):
        MinHash.bulk(shingles[i : i + 256], num_perm=NUM_PERM, seed=hasher.seed)
    bulk = time.perf_counter() - t0

    t0 = time.perf_counter()
    for i in range(0, len(texts), 256):
        hasher.signatures(texts[i : i + 256])
    kiln = time.perf_counter() - t0

    n = len(texts)
    print(f"signatures on {n} documents ({sum(map(len, texts)) / 1e6:.1f} MB), {NUM_PERM} perms")
    print(f"  plain MinHash.update loop   {n / plain:9.0f} docs/s   (hashing only)")
    print(f"  kiln batched (bulk)         {n / bulk:9.0f} docs/s   {plain / bulk:5.1f}x the loop")
    print(f"  kiln incl. shingling        {n / kiln:9.0f} docs/s")


def _tree_rss() -> tuple[int, int, int]:
    """This process and its descendants (the Ray session it started: GCS, raylet, workers):
    summed RSS, the largest single RSS (bytes), and how many processes."""
    import psutil

    me = psutil.Process()
    sizes = [me.memory_info().rss]
    for proc in me.children(recursive=True):
        try:
            sizes.append(proc.memory_info().rss)
        except psutil.Error:
            continue
    return sum(sizes), max(sizes[1:], default=0), len(sizes)


def run_stage(parquet: str) -> dict:
    """Child process: the dedup stage on Ray over the documents in ``parquet``."""
    import resource

    import ray

    from pipeline.dedup import run_dedup

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    ds = ray.data.read_parquet(parquet)
    n_docs = ds.count()
    baseline_tree, _, _ = _tree_rss()
    baseline_driver = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    peak = [baseline_tree, 0, 0]  # summed, largest child, most processes
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            total, largest, count = _tree_rss()
            peak[:] = [max(peak[0], total), max(peak[1], largest), max(peak[2], count)]

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    result = run_dedup(ds, num_perm=NUM_PERM, bands=14, rows=8, shingle_size=5, concurrency=2)
    kept = sum(
        b["drop_reason"].null_count
        for b in result.documents.iter_batches(batch_format="pyarrow", batch_size=None)
    )
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    ray.shutdown()
    return {
        "docs": n_docs,
        "kept": kept,
        "seconds": seconds,
        "driver_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "driver_before": baseline_driver,
        "tree_peak": peak[0],
        "tree_before": baseline_tree,
        "largest_worker_peak": peak[1],
        "processes": peak[2],
        "signature_bytes": n_docs * NUM_PERM * 4,
    }


def bench_stage(texts: list[str], scales: list[int]) -> None:
    import pyarrow.parquet as pq

    from pipeline.records import make_document, to_table

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for scale in scales:
            part = texts[: len(texts) * scale // max(scales)]
            docs = [make_document("book", f"doc{i}", text=t) for i, t in enumerate(part)]
            path = os.path.join(tmp, f"docs{scale}.parquet")
            pq.write_table(to_table(docs), path)
            out = subprocess.run(
                [sys.executable, __file__, "--child", path],
                capture_output=True,
                text=True,
            )
            if out.returncode != 0:
                sys.exit(f"dedup child failed:\n{out.stderr[-4000:]}")
            results[scale] = json.loads(out.stdout.strip().splitlines()[-1])

    mb = 1 << 20
    print("dedup stage on Ray (2 CPUs), each scale in a fresh process")
    for scale, r in results.items():
        print(
            f"  {scale}x: {r['docs']:5d} docs, kept {r['kept']:5d}, {r['docs'] / r['seconds']:6.0f}"
            f" docs/s; driver peak RSS {r['driver_peak'] / mb:6.0f} MB"
            f" (+{(r['driver_peak'] - r['driver_before']) / mb:.0f} during dedup);"
            f" Ray session peak {r['tree_peak'] / mb:6.0f} MB"
            f" (+{(r['tree_peak'] - r['tree_before']) / mb:.0f}, {r['processes']} processes,"
            f" largest Ray process {r['largest_worker_peak'] / mb:.0f} MB);"
            f" signatures {r['signature_bytes'] / mb:.2f} MB"
        )
    if len(results) == 2:
        lo, hi = (results[s] for s in sorted(results))
        growth = (hi["tree_peak"] - hi["tree_before"]) - (lo["tree_peak"] - lo["tree_before"])
        text_growth = sum(map(len, texts)) * (1 - min(scales) / max(scales))
        print(
            f"  growth 1x->4x of the stage's peak: {growth / mb:+.0f} MB, against"
            f" {(hi['signature_bytes'] - lo['signature_bytes']) / mb:.2f} MB of added signatures"
            f" and {text_growth / mb:.1f} MB of added text; largest Ray process"
            f" {(hi['largest_worker_peak'] - lo['largest_worker_peak']) / mb:+.0f} MB, driver"
            f" {(hi['driver_peak'] - lo['driver_peak']) / mb:+.0f} MB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus")
    parser.add_argument("--docs", type=int, default=600, help="documents at 1x (4x is four times)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_stage(args.child)))
        return
    if not (args.corpus / "books").is_dir():
        sys.exit(f"no books under {args.corpus}: pass --corpus pointing at the shared corpus")
    texts = book_documents(args.corpus, 4 * args.docs)
    bench_signatures(texts[: args.docs])
    bench_stage(texts, [1, 4])


if __name__ == "__main__":
    main()
