"""Crawler throughput against loopback servers, as ratios to baselines run in the same script.

Serves real pages from the shared corpus (``../shared/corpus/web``) from several loopback
servers (each a host of its own) and measures pages stored per second:

1. baseline: the same URLs fetched one after another with urllib, no robots, no WARC;
2. the crawler with no politeness delay, fetchers as threads, then as Ray actors;
3. politeness: with a per-host delay, 1 host against 4 hosts of the same pages, which shows
   that hosts are served side by side (the ratio should approach 4).

Run: ``.venv/bin/python bench/bench_crawl.py [--pages 120]``. Timings on a shared 2-core machine are
noisy; read the ratios.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.config import CrawlConfig  # noqa: E402
from pipeline.crawl import run_crawl  # noqa: E402

CORPUS = REPO.parent / "shared" / "corpus" / "web" / "scrapinghub"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    pages: list[bytes] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/robots.txt":
            body, ctype = b"User-agent: *\nAllow: /\n", "text/plain"
        elif self.path == "/":
            links = "".join(f'<a href="/p/{i}.html">{i}</a> ' for i in range(len(self.pages)))
            body, ctype = f"<html><body>{links}</body></html>".encode(), "text/html"
        elif self.path.startswith("/p/"):
            body, ctype = self.pages[int(self.path[3:].split(".")[0])], "text/html"
        else:
            body, ctype = b"", "text/plain"
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve(pages: list[bytes]) -> tuple[ThreadingHTTPServer, str]:
    handler = type("Handler", (_Handler,), {"pages": pages})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def crawl(bases: list[str], delay: float, use_ray: bool) -> tuple[int, float]:
    cfg = CrawlConfig(
        seeds=[b + "/" for b in bases],
        allowed_domains=["127.0.0.1"],
        max_depth=1,
        max_pages=100_000,
        min_delay_s=delay,
        max_concurrency_per_host=1,
        allow_networks=["127.0.0.0/8"],
        fetchers=2,
        checkpoint_pages=100,
    )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = run_crawl(cfg, tmp, use_ray=use_ray)
        return result.stats["pages_stored"], time.perf_counter() - t0


def baseline(bases: list[str], n: int) -> tuple[int, float]:
    t0 = time.perf_counter()
    count = 0
    for base in bases:
        for url in [base + "/"] + [f"{base}/p/{i}.html" for i in range(n)]:
            with urllib.request.urlopen(url) as resp:
                resp.read()
            count += 1
    return count, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=120, help="pages per host")
    parser.add_argument("--delay", type=float, default=0.05, help="politeness delay, s")
    args = parser.parse_args()
    files = sorted(CORPUS.glob("*.html.gz"))
    if not files:
        sys.exit(f"no pages under {CORPUS}: the shared corpus is needed")
    pages = [gzip.decompress(files[i % len(files)].read_bytes()) for i in range(args.pages)]
    mb = sum(map(len, pages)) / 1e6
    servers = [serve(pages) for _ in range(4)]
    bases = [base for _, base in servers]
    print(f"{args.pages} pages per host ({mb:.1f} MB), 4 loopback hosts")

    n, s = baseline(bases[:2], args.pages)
    base_rate = n / s
    print(
        f"baseline urllib, sequential, 2 hosts   {n:5d} pages {s:6.2f} s {base_rate:7.1f} pages/s"
    )
    n, s = crawl(bases[:2], 0.0, use_ray=False)
    print(
        f"crawler, threads, no delay, 2 hosts    {n:5d} pages {s:6.2f} s {n / s:7.1f} pages/s"
        f"  x{n / s / base_rate:.2f} of baseline"
    )
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    n, s = crawl(bases[:2], 0.0, use_ray=True)
    print(
        f"crawler, Ray actors, no delay, 2 hosts {n:5d} pages {s:6.2f} s {n / s:7.1f} pages/s"
        f"  x{n / s / base_rate:.2f} of baseline"
    )
    few = max(10, args.pages // 4)
    small = [serve(pages[:few]) for _ in range(4)]
    n1, s1 = crawl([small[0][1]], args.delay, use_ray=True)
    n4, s4 = crawl([b for _, b in small], args.delay, use_ray=True)
    print(
        f"politeness {args.delay} s/host: 1 host {n1 / s1:6.1f} pages/s, 4 hosts "
        f"{n4 / s4:6.1f} pages/s: x{(n4 / s4) / (n1 / s1):.2f} (ideal x4, floor {1 / args.delay:.0f}"
        " pages/s per host)"
    )
    ray.shutdown()
    for server, _ in servers + small:
        server.shutdown()


if __name__ == "__main__":
    main()
