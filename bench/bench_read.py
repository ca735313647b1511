"""Reader throughput on the shared corpus's archives, as a ratio to plain warcio.

Baseline: warcio's ArchiveIterator over every file of ``../shared/corpus/warc``, reading each
record's decoded content and nothing else. Then kiln's reader (pipeline/read.py) over the same
files: de-chunking and decompression checks, truncation checks, charset decoding to UTF-8 and
document rows. Both report MB/s of archive bytes on disk; the ratio is what kiln's extra work
costs. The corpus is small (1.4 MB), so each pass is repeated.

Run: ``.venv/bin/python bench/bench_read.py [--repeat 5]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.read import InputFile, read_file, sniff_kind  # noqa: E402

CORPUS = REPO.parent / "shared" / "corpus" / "warc"


def warcio_pass(files: list[Path]) -> int:
    from warcio.archiveiterator import ArchiveIterator

    records = 0
    for path in files:
        with open(path, "rb") as fh, contextlib.suppress(Exception):  # two files are broken
            for record in ArchiveIterator(fh, arc2warc=True):
                record.content_stream().read()
                records += 1
    return records


def kiln_pass(files: list[Path]) -> int:
    docs = 0
    for path in files:
        docs += len(read_file(InputFile(str(path), "warc"), Counter()))
    return docs


def timed(fn, files, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(files)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="passes; the best is reported")
    args = parser.parse_args()
    files = sorted(p for p in CORPUS.rglob("*") if sniff_kind(str(p)) == "warc")
    if not files:
        sys.exit(f"no archives under {CORPUS}: the shared corpus is needed")
    mb = sum(p.stat().st_size for p in files) / 1e6
    with contextlib.redirect_stderr(io.StringIO()):  # warcio prints warnings on broken files
        base = timed(warcio_pass, files, args.repeat)
        ours = timed(kiln_pass, files, args.repeat)
    print(f"{len(files)} archives, {mb:.2f} MB on disk, best of {args.repeat}")
    print(f"baseline warcio iteration  {base:6.3f} s  {mb / base:6.1f} MB/s")
    print(f"kiln readers               {ours:6.3f} s  {mb / ours:6.1f} MB/s  x{base / ours:.2f}")


if __name__ == "__main__":
    main()
