"""How fast kiln's dedup is, and how its memory grows with input.

On the same texts, in the same run:

1. MinHash signatures per second: kiln's batched signatures (pipeline/minhash.py, datasketch's
   ``MinHash.bulk``) against the plain way, one ``MinHash`` per document with one ``update``
   call per shingle. Both shingle the same way, so the ratio is the hashing alone. Target: 5x.
2. The whole dedup stage on Ray (pipeline/dedup.py: signatures, band keys through a groupby,
   union-find, marking) in documents per second.
3. Memory of the dedup stage at 1x and 4x input, each in a fresh process, next to the growth of
   the signatures and of the texts: the bytes that go through the groupby (the shuffle) per
   document, the object store's peak and spilled bytes, and the heap (RSS less shared pages,
   so the object store's shared memory is not counted once per process mapping it) of the
   driver and of Ray's worker processes, apart; and, per dedup step (fingerprint, keys,
   bucket/link, mark), the peak heap of its tasks as Ray Data records it (``max_uss_bytes``:
   the worker's RSS less shared while it ran the task). Texts are read from Parquet by Ray
   workers, as in the data job, so the driver never holds them, and cut into Ray Data blocks
   of FILE_DOCS documents, as a data job's stages hand dedup many blocks. Target:
   growth no more than the signatures' size, for what the stage itself holds (the shuffle, the
   driver, one worker); the object store also holds the stage's output, the documents.

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
WORKERS = 2  # dedup workers, one per CPU of the bench's Ray
FILE_DOCS = 300  # documents per input Parquet file, so per Ray Data block


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


def _heap(proc) -> int:
    """RSS less shared pages: the object store is shared memory, mapped by every Ray process."""
    info = proc.memory_info()
    return info.rss - info.shared


def _ray_workers(me) -> list:
    """Ray's worker processes under this driver (their titles start with ``ray::``); the rest
    of the session (GCS, raylet, agents) does not run kiln's code."""
    workers = []
    for proc in me.children(recursive=True):
        try:
            cmd = proc.cmdline()
        except Exception:  # exited between listing and reading
            continue
        if cmd and cmd[0].startswith("ray::"):
            workers.append(proc)
    return workers


class MemorySampler:
    """Samples, every 0.2 s, the heaps of the driver and of each Ray worker, and the bytes in
    the object store; keeps the peaks."""

    def __init__(self):
        import psutil
        import ray
        from ray._private import internal_api  # `ray memory --stats-only` reads the same reply

        self.me = psutil.Process()
        self.state = internal_api.get_state_from_address(ray.get_runtime_context().gcs_address)
        self.memory_reply = internal_api.get_memory_info_reply
        self.driver_before = _heap(self.me)
        self.store_before = self.store_stats().object_store_bytes_used
        self.driver_peak = self.driver_before
        self.worker_peak = 0  # the largest single worker
        self.worker_peak_task = ""  # what it was running then
        self.workers_peak = 0  # all workers at one moment
        self.store_peak = self.store_before
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def store_stats(self):
        return self.memory_reply(self.state).store_stats

    def sample(self) -> None:
        self.driver_peak = max(self.driver_peak, _heap(self.me))
        heaps = []
        for proc in _ray_workers(self.me):
            try:
                heap, task = _heap(proc), proc.cmdline()[0]
            except Exception:
                continue
            heaps.append(heap)
            if heap > self.worker_peak:
                self.worker_peak, self.worker_peak_task = heap, task
        self.workers_peak = max(self.workers_peak, sum(heaps))
        self.store_peak = max(self.store_peak, self.store_stats().object_store_bytes_used)

    def _run(self) -> None:
        while not self.done.wait(0.2):
            self.sample()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()
        self.sample()


# The dedup steps, by the function each one's Ray Data operator maps (its name holds it).
STEPS = {
    "fingerprint": "fingerprint_batch",
    "keys": "keys_batch",
    "bucket/link": "link_bucket",
    "mark": "mark_batch",
}


def step_task_peaks(summaries) -> dict:
    """Per dedup step, Ray Data's own record of its tasks' peak heap: the operator metric
    ``max_uss_bytes`` (per task: the worker's RSS less shared while it ran the task), read from
    the summaries that ``ray.data.list_stats_summaries()`` (a DeveloperAPI meant for benchmarks)
    returns, one per execution, each with its operators' metrics as ``extra_metrics`` and the
    earlier operators as ``parents``. ``max_uss_bytes`` is the worker process's, and Ray reuses
    a worker for task after task, so it also holds what earlier tasks left in that process."""
    ops: dict[str, dict] = {}
    todo = list(summaries)
    while todo:
        summary = todo.pop()
        todo.extend(summary.parents)
        if summary.base_name:
            ops[summary.base_name] = summary.extra_metrics.get("max_uss_bytes") or {}
    peaks = {}
    for step, fn in STEPS.items():
        found = [(name, uss) for name, uss in ops.items() if f"({fn})" in name]
        name, uss = found[0] if found else ("", {})
        peaks[step] = {
            "op": name,
            "tasks": uss.get("num_samples", 0),
            "mean": uss.get("mean") if uss.get("num_samples") else None,
            "max": uss.get("max"),
        }
    return peaks


def run_stage(parquet: str) -> dict:
    """Child process: the dedup stage on Ray over the documents in the Parquet folder."""
    import pyarrow.compute as pc
    import ray

    from pipeline.dedup import run_dedup

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    # Keep each execution's stats summary, with its operators' metrics, for step_task_peaks.
    context.enable_stats_summary_collection = True
    # Blocks of FILE_DOCS documents: Ray Data (2.60) reads small Parquet files together into one
    # block, which made every dedup step one task over the whole input at either scale.
    ds = ray.data.read_parquet(parquet).repartition(target_num_rows_per_block=FILE_DOCS)
    n_docs = ds.count()
    with MemorySampler() as memory:
        t0 = time.perf_counter()
        result = run_dedup(
            ds, num_perm=NUM_PERM, bands=14, rows=8, shingle_size=5, concurrency=WORKERS
        )
        kept = sum(
            b["drop_reason"].null_count
            for b in result.documents.iter_batches(batch_format="pyarrow", batch_size=None)
        )
        seconds = time.perf_counter() - t0
    spilled = memory.store_stats().spilled_bytes_total
    text_bytes = sum(
        pc.sum(pc.binary_length(pc.cast(b["text"], "binary"))).as_py() or 0
        for b in result.documents.iter_batches(batch_format="pyarrow", batch_size=None)
    )
    out = {
        "docs": n_docs,
        "kept": kept,
        "seconds": seconds,
        "text_bytes": text_bytes,
        "signature_bytes": n_docs * NUM_PERM * 4,
        "fingerprint_bytes": result.stats["fingerprint_bytes"],
        "shuffle_bytes": result.stats["shuffle_bytes"],
        "documents_bytes": result.documents.size_bytes(),
        "store_peak": memory.store_peak - memory.store_before,
        "spilled": spilled,
        "driver_growth": memory.driver_peak - memory.driver_before,
        "worker_peak": memory.worker_peak,
        "worker_peak_task": memory.worker_peak_task,
        "workers_peak": memory.workers_peak,
        "steps": step_task_peaks(ray.data.list_stats_summaries()),
    }
    ray.shutdown()
    return out


def bench_stage(texts: list[str], scales: list[int]) -> None:
    import pyarrow.parquet as pq

    from pipeline.records import make_document, to_table

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for scale in scales:
            part = texts[: len(texts) * scale // max(scales)]
            docs = [make_document("book", f"doc{i}", text=t) for i, t in enumerate(part)]
            # Files of FILE_DOCS documents, as a data job's stages hand dedup many blocks: a
            # worker holds its whole block, so one file of everything would make that grow too.
            path = os.path.join(tmp, f"docs{scale}")
            os.mkdir(path)
            for i in range(0, len(docs), FILE_DOCS):
                pq.write_table(to_table(docs[i : i + FILE_DOCS]), f"{path}/{i:06d}.parquet")
            out = subprocess.run(
                [sys.executable, __file__, "--child", path],
                capture_output=True,
                text=True,
            )
            if out.returncode != 0:
                sys.exit(f"dedup child failed:\n{out.stderr[-4000:]}")
            results[scale] = json.loads(out.stdout.strip().splitlines()[-1])

    mb = 1 << 20
    print(f"dedup stage on Ray (2 CPUs, {WORKERS} workers), each scale in a fresh process")
    for scale, r in results.items():
        n = r["docs"]
        print(
            f"  {scale}x: {n} docs, kept {r['kept']}, {n / r['seconds']:.0f} docs/s\n"
            f"      per document: text {r['text_bytes'] / n:.0f} B, signature"
            f" {r['signature_bytes'] / n:.0f} B, fingerprint row {r['fingerprint_bytes'] / n:.0f}"
            f" B, shuffled rows {r['shuffle_bytes'] / n:.0f} B\n"
            f"      object store peak +{r['store_peak'] / mb:.1f} MB (the marked documents alone"
            f" {r['documents_bytes'] / mb:.1f} MB), spilled {r['spilled'] / mb:.1f} MB\n"
            f"      heap (RSS less shared): driver +{r['driver_growth'] / mb:.1f} MB, largest"
            f" Ray worker {r['worker_peak'] / mb:.1f} MB ({r['worker_peak_task']}), all Ray"
            f" workers {r['workers_peak'] / mb:.1f} MB"
        )
        print("      per step, its tasks' peak heap (Ray Data's max_uss_bytes): mean / max")
        for step, t in r["steps"].items():
            if t["tasks"]:
                fig = f"{t['mean'] / mb:.1f} / {t['max'] / mb:.1f} MB over {t['tasks']} tasks"
            else:
                fig = "not recorded"
            print(f"        {step:<12} {fig}   [{t['op']}]")
    if len(results) == 2:
        lo, hi = (results[s] for s in sorted(results))

        def grew(key: str) -> str:
            return f"{(hi[key] - lo[key]) / mb:+.1f} MB"

        print(
            f"  growth 1x->4x: signatures {grew('signature_bytes')}, texts {grew('text_bytes')};"
            f" shuffled rows {grew('shuffle_bytes')}, driver heap {grew('driver_growth')},"
            f" largest worker heap {grew('worker_peak')}, all workers' heap"
            f" {grew('workers_peak')}, object store peak {grew('store_peak')}"
            f" (marked documents {grew('documents_bytes')})"
        )
        steps = []
        for step in STEPS:
            a, b = lo["steps"][step], hi["steps"][step]
            if a["tasks"] and b["tasks"]:
                steps.append(f"{step} {(b['max'] - a['max']) / mb:+.1f} MB")
            else:
                steps.append(f"{step} not recorded")
        print(f"  growth 1x->4x of the tasks' peak heap per step (max): {', '.join(steps)}")


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
