"""How fast kiln's dedup is, and how its memory grows with input.

On the same texts, in the same run:

1. MinHash signatures per second: kiln's batched signatures (pipeline/minhash.py: datasketch's
   ``MinHash.generator``, one set of permutations shared by a batch) against the plain way, one ``MinHash`` per document with one ``update``
   call per shingle. Both shingle the same way, so the ratio is the hashing alone. Target: 5x.
2. The whole dedup stage on Ray (pipeline/dedup.py: fingerprints, bucket keys through a
   groupby, union-find, marking) in documents per second.
3. Memory of the dedup stage at 1x (twice, for the noise) and 4x input, each run in a fresh
   process. Target: from 1x to 4x, what the stage itself holds grows by no more than the
   signatures do. Judged, each against that growth:
   - the bytes of the rows through the shuffle and of the fingerprints in the object store,
     and the object store's peak less the stage's output (the marked documents, which hold
     the texts and grow with them whatever dedup does);
   - the driver's Python objects at their peak (tracemalloc: exact, where the driver's RSS
     moves by several MB from run to run with Ray's threads and buffers);
   - per dedup step, the largest peak heap of its tasks as Ray Data records it
     (``max_uss_bytes``: RSS less shared, so the object store's shared memory is not counted;
     every task of these steps runs in a fresh worker process, max_calls=1, since a reused
     worker also holds what earlier tasks left), and the largest heap sampled in the shuffle's
     own processes, which Ray Data does not record.
   Texts are read by Ray workers into blocks of FILE_DOCS documents, as a data job hands dedup
   materialised blocks, so the driver never holds them, and the shuffle is cut into partitions
   of PARTITION_ROWS rows, as data.dedup.partition_rows does on a large input.

The texts are the shared corpus's Gutenberg books cut into documents of about 2 KB.

    .venv/bin/python bench/bench_dedup.py [--corpus ../shared/corpus] [--docs 1600]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.gutenberg import strip_gutenberg  # noqa: E402
from pipeline.minhash import MinHasher  # noqa: E402

DOC_CHARS = 2000
NUM_PERM = 112
WORKERS = 2  # dedup workers, one per CPU of the bench's Ray
FILE_DOCS = 300  # documents per input Parquet file, so per Ray Data block
# Bucket rows per shuffle partition (data.dedup.partition_rows), scaled down with the bench's
# input as the default of 4 million is to a real one: 1x then has 2 partitions, 4x has 8.
PARTITION_ROWS = 12_000


def _pieces(paragraphs: list[str]) -> list[str]:
    """Paragraphs, the longer than DOC_CHARS cut at spaces: the documents at 4x are then no
    longer than those at 1x (one book's 30 KB paragraph would otherwise set the 4x task peak)."""
    out = []
    for para in paragraphs:
        while len(para) > DOC_CHARS:
            cut = para.rfind(" ", 0, DOC_CHARS)
            cut = cut if cut > 0 else DOC_CHARS
            out.append(para[:cut])
            para = para[cut:].lstrip()
        out.append(para)
    return out


def book_documents(corpus: Path, limit: int) -> list[str]:
    """The corpus's books, cut at paragraph breaks into documents of about DOC_CHARS."""
    docs: list[str] = []
    for path in sorted((corpus / "books").glob("*.txt")):
        body = strip_gutenberg(path.read_text(encoding="utf-8-sig", errors="replace")).text
        part: list[str] = []
        size = 0
        for para in _pieces(body.split("\n\n")):
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
        list(MinHash.generator(shingles[i : i + 256], num_perm=NUM_PERM, seed=hasher.seed))
    bulk = time.perf_counter() - t0

    t0 = time.perf_counter()
    for i in range(0, len(texts), 256):
        hasher.signatures(texts[i : i + 256])
    kiln = time.perf_counter() - t0

    n = len(texts)
    print(f"signatures on {n} documents ({sum(map(len, texts)) / 1e6:.1f} MB), {NUM_PERM} perms")
    print(f"  plain MinHash.update loop   {n / plain:9.0f} docs/s   (hashing only)")
    print(f"  kiln batched (shared state) {n / bulk:9.0f} docs/s   {plain / bulk:5.1f}x the loop")
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
    """Samples, every 0.2 s, the heap of the driver and of each Ray worker, and the bytes in the
    object store; keeps the peaks, the workers' by what they were running (the process title)."""

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
        self.worker_peaks: dict[str, int] = {}  # process title -> largest heap seen
        self.store_peak = self.store_before
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def store_stats(self):
        return self.memory_reply(self.state).store_stats

    def sample(self) -> None:
        self.driver_peak = max(self.driver_peak, _heap(self.me))
        for proc in _ray_workers(self.me):
            try:
                heap, title = _heap(proc), proc.cmdline()[0]
            except Exception:
                continue
            self.worker_peaks[title] = max(self.worker_peaks.get(title, 0), heap)
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
    "fingerprint": "(fingerprint_batch)",
    "bucket rows": "(bucket_rows)",
    "shuffle map": "HashShuffleMap",
    "shuffle reduce": "HashShuffleReduce",
    "candidates": "(bucket_candidates)",
    "mark": "(mark_batch)",
}


def step_task_peaks(summaries) -> dict:
    """Per dedup step, Ray Data's own record of its tasks' peak heap: the operator metric
    ``max_uss_bytes`` (per task: the worker's RSS less shared while it ran the task), read from
    the summaries that ``ray.data.list_stats_summaries()`` (a DeveloperAPI meant for benchmarks)
    returns, one per execution, each with its operators' metrics as ``extra_metrics`` and the
    earlier operators as ``parents``. ``max_uss_bytes`` is the worker process's (run_stage gives
    every task its own). Also each step's mean input bytes a task: for the step after the
    shuffle, one partition."""
    ops: dict[str, dict] = {}
    todo = list(summaries)
    while todo:
        summary = todo.pop()
        todo.extend(summary.parents)
        if summary.base_name:
            ops[summary.base_name] = summary.extra_metrics
    peaks = {}
    for step, fn in STEPS.items():
        found = [(name, metrics) for name, metrics in ops.items() if fn in name]
        name, metrics = found[0] if found else ("", {})
        uss = metrics.get("max_uss_bytes") or {}
        peaks[step] = {
            "op": name,
            "tasks": uss.get("num_samples", 0),
            "mean": uss.get("mean") if uss.get("num_samples") else None,
            "max": uss.get("max"),
            "input_per_task": metrics.get("average_bytes_inputs_per_task"),
        }
    return peaks


def fresh_shuffle_workers() -> None:
    """Run the tasks of Ray Data's shuffle, too, each in a fresh worker process.

    Ray Data gives no option for it, so this swaps the shuffle's map and reduce task functions
    (Ray 2.60's internals) for the same functions with max_calls=1. Where they have moved, the
    shuffle's processes are reused and its sampled heap also holds what earlier tasks left.
    """
    import ray

    try:
        from ray.data._internal.execution.operators.shuffle_operators import (
            shuffle_map_operator,
            shuffle_reduce_operator,
        )

        pairs = [
            (shuffle_map_operator, "_shuffle_map_task"),
            (shuffle_reduce_operator, "_shuffle_reduce_task"),
        ]
        for module, name in pairs:
            task = getattr(module, name)
            setattr(module, name, ray.remote(max_calls=1)(task._function))
    except (ImportError, AttributeError) as exc:
        print(f"shuffle workers are reused: {exc}", file=sys.stderr)


def run_stage(parquet: str) -> dict:
    """Child process: the dedup stage on Ray over the documents in the Parquet folder."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    import ray

    import pipeline.dedup
    from pipeline.dedup import run_dedup

    # A fresh worker process for every task of the dedup steps (Ray's max_calls=1): Ray reuses
    # a worker for task after task, so its heap would also hold what earlier tasks left behind,
    # and a bigger input, with more tasks per worker, would look like a bigger task.
    plain_worker_args = pipeline.dedup.worker_args
    pipeline.dedup.worker_args = lambda n: {**plain_worker_args(n), "max_calls": 1}
    fresh_shuffle_workers()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    # Keep each execution's stats summary, with its operators' metrics, for step_task_peaks.
    context.enable_stats_summary_collection = True
    # The data job hands dedup materialised documents (pipeline/runner.py), so the bench does
    # too: one block per Parquet file of FILE_DOCS documents, each read by a Ray task in a
    # worker that then exits. Ray Data's own reader (2.60) reads small files together into one
    # block, and a worker left over from reading would carry its heap into a dedup task.
    read_block = ray.remote(max_calls=1)(pq.read_table)
    files = sorted(str(p) for p in Path(parquet).glob("*.parquet"))
    ds = ray.data.from_arrow_refs([read_block.remote(f) for f in files])
    n_docs = ds.count()
    gc.collect()
    with MemorySampler() as memory:
        tracemalloc.start()
        t0 = time.perf_counter()
        result = run_dedup(
            ds,
            num_perm=NUM_PERM,
            bands=14,
            rows=8,
            shingle_size=5,
            concurrency=WORKERS,
            partition_rows=PARTITION_ROWS,
        )
        kept = sum(
            b["drop_reason"].null_count
            for b in result.documents.iter_batches(batch_format="pyarrow", batch_size=None)
        )
        seconds = time.perf_counter() - t0
        _, driver_python_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
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
        "driver_python_peak": driver_python_peak,
        "partitions": result.stats["shuffle_partitions"],
        "worker_peaks": memory.worker_peaks,
        "steps": step_task_peaks(ray.data.list_stats_summaries()),
    }
    ray.shutdown()
    return out


def _shuffle_peak(r: dict) -> int | None:
    """The largest heap sampled in a process running Ray Data's shuffle (its map or reduce),
    which Ray Data's own per-task figures leave out."""
    peaks = [heap for title, heap in r["worker_peaks"].items() if "Shuffle" in title]
    return max(peaks, default=None)


def _step_peak(step: str):
    return lambda r: r["steps"][step]["max"] if r["steps"][step]["tasks"] else None


# What the memory target is judged on: what the stage itself holds, each as a function of one
# scale's results. The object store also holds the stage's output (the marked documents, texts
# and all), which grows with the texts whatever dedup does, so that part is taken out.
JUDGED = {
    "rows through the shuffle": lambda r: r["shuffle_bytes"],
    "fingerprints in the object store": lambda r: r["fingerprint_bytes"],
    "object store's peak beyond the output": lambda r: r["store_peak"] - r["documents_bytes"],
    "driver: Python objects at peak": lambda r: r["driver_python_peak"],
    **{f"largest task's heap: {step}": _step_peak(step) for step in STEPS if "shuffle" not in step},
    # A reduce task of the shuffle sorts one partition (Ray Data does not record its heap).
    "shuffle partition, bytes (mean)": lambda r: r["steps"]["candidates"]["input_per_task"],
}


def bench_stage(texts: list[str], docs: int) -> None:
    import pyarrow.parquet as pq

    from pipeline.records import make_document, to_table

    # 1x twice, so that the growth from 1x to 4x can be read against run-to-run noise.
    runs = {"1x": docs, "1x again": docs, "4x": 4 * docs}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, n in runs.items():
            part = texts[:n]
            batch = [make_document("book", f"doc{i}", text=t) for i, t in enumerate(part)]
            # Files of FILE_DOCS documents, as a data job's stages hand dedup many blocks: a
            # worker holds its whole block, so one file of everything would make that grow too.
            path = os.path.join(tmp, name.replace(" ", "_"))
            os.mkdir(path)
            for i in range(0, len(batch), FILE_DOCS):
                pq.write_table(to_table(batch[i : i + FILE_DOCS]), f"{path}/{i:06d}.parquet")
            out = subprocess.run(
                [sys.executable, __file__, "--child", path], capture_output=True, text=True
            )
            if out.returncode != 0:
                sys.exit(f"dedup child failed:\n{out.stderr[-4000:]}")
            results[name] = json.loads(out.stdout.strip().splitlines()[-1])

    mb = 1 << 20
    print(f"dedup stage on Ray (2 CPUs, {WORKERS} workers), each run in a fresh process")
    for name, r in results.items():
        n = r["docs"]
        print(
            f"  {name}: {n} docs, kept {r['kept']}, {n / r['seconds']:.0f} docs/s,"
            f" {r['partitions']} shuffle partitions\n"
            f"      per document: text {r['text_bytes'] / n:.0f} B, signature"
            f" {r['signature_bytes'] / n:.0f} B, fingerprint row {r['fingerprint_bytes'] / n:.0f}"
            f" B, rows through the shuffle {r['shuffle_bytes'] / n:.0f} B\n"
            f"      object store peak +{r['store_peak'] / mb:.1f} MB (the marked documents alone"
            f" {r['documents_bytes'] / mb:.1f} MB), spilled {r['spilled'] / mb:.1f} MB\n"
            f"      driver: Python objects at peak {r['driver_python_peak'] / mb:.2f} MB"
            f" (tracemalloc), heap (RSS less shared) +{r['driver_growth'] / mb:.1f} MB"
        )
        print("      per step, its tasks' peak heap (Ray Data's max_uss_bytes): mean / max")
        for step, t in r["steps"].items():
            if t["tasks"]:
                fig = f"{t['mean'] / mb:.1f} / {t['max'] / mb:.1f} MB over {t['tasks']} tasks"
            else:
                fig = "not recorded (sampled below)"
            print(f"        {step:<15} {fig}   [{t['op']}]")
        shuffle = _shuffle_peak(r)
        if shuffle is not None:
            print(f"        shuffle processes, sampled every 0.2 s: {shuffle / mb:.1f} MB")

    one, again, four = results["1x"], results["1x again"], results["4x"]
    limit = four["signature_bytes"] - one["signature_bytes"]
    print(
        f"  target: from 1x to 4x, what the stage holds grows by no more than the signatures"
        f" ({limit / mb:+.2f} MB; the texts grow by"
        f" {(four['text_bytes'] - one['text_bytes']) / mb:+.1f} MB)"
    )
    print(f"    {'':<42} {'1x':>9} {'4x':>9} {'growth':>9} {'noise':>8}")
    verdicts = []
    for label, figure in JUDGED.items():
        a, b, c = figure(one), figure(four), figure(again)
        if a is None or b is None or c is None:
            print(f"    {label:<42} not recorded")
            verdicts.append(None)
            continue
        verdicts.append(b - a <= limit)
        print(
            f"    {label:<42} {a / mb:7.2f}MB {b / mb:7.2f}MB {(b - a) / mb:+8.2f}MB"
            f" {abs(c - a) / mb:7.2f}MB  {'ok' if verdicts[-1] else 'OVER'}"
        )
    if None in verdicts:
        print("    target not shown: a figure was not recorded")
    else:
        print(f"    target {'met' if all(verdicts) else 'NOT met'}")
    shuffle = [_shuffle_peak(r) for r in (one, again, four)]
    driver = [r["driver_growth"] for r in (one, again, four)]
    print(
        "    (noise: the same figure's difference between the two 1x runs.)\n"
        "  not judged: the driver's RSS less shared moved by"
        f" {(driver[2] - driver[0]) / mb:+.1f} MB from 1x to 4x"
        f" ({(driver[1] - driver[0]) / mb:+.1f} MB between the 1x runs): Ray's own bookkeeping"
        " of its tasks, which follows their number, not the data (4x in blocks four times"
        " larger grows it less than 1x does; README, Dedup)"
    )
    if None not in shuffle:
        print(
            "  not judged: the shuffle processes' heap, sampled every 0.2 s, moved by"
            f" {(shuffle[2] - shuffle[0]) / mb:+.1f} MB from 1x to 4x"
            f" ({(shuffle[1] - shuffle[0]) / mb:+.1f} MB between the 1x runs)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus")
    parser.add_argument("--docs", type=int, default=1600, help="documents at 1x (4x is four times)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_stage(args.child)))
        return
    if not (args.corpus / "books").is_dir():
        sys.exit(f"no books under {args.corpus}: pass --corpus pointing at the shared corpus")
    texts = book_documents(args.corpus, 4 * args.docs)
    bench_signatures(texts[: args.docs])
    bench_stage(texts, args.docs)


if __name__ == "__main__":
    main()
