"""The crawl: a frontier in the driver, fetch actors on Ray, WARC files and a saved frontier.

:func:`run_crawl` keeps the frontier (pipeline/crawl/frontier.py) and hands URLs to
``fetchers`` Ray actors (:class:`~pipeline.crawl.fetch.Fetcher`, threaded). Work is partitioned
by host: every host is served by one actor, chosen by a hash of its name, which holds that
host's politeness state (delay, concurrency cap, robots.txt). The driver keeps at most
``max_concurrency_per_host`` URLs of a host in flight and takes results as they come, so a slow
host only ever occupies its own slots.

Pages fetched go into WARC files in ``<store>/raw/crawl/<name>/warc/``, every
``checkpoint_pages`` pages a new file, with a JSONL log of every URL's outcome beside it
(``log/``). A checkpoint commits in this order: the WARC and log are closed under temporary
names; ``state.json`` (the frontier, counters, and the files to rename) is replaced atomically;
the files are renamed into place. A crawl killed at any point resumes from ``state.json``: what
a committed file holds is never fetched again, and URLs that were in flight are fetched again.
A finished crawl with the same name is not repeated: its WARC files are read again as they are.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import zlib
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from pipeline.config import CrawlConfig
from pipeline.crawl.discover import links_from_html, urls_from_feed, urls_from_sitemap
from pipeline.crawl.fetch import Fetcher, Outcome
from pipeline.crawl.frontier import Entry, Frontier
from pipeline.crawl.urls import host_key
from pipeline.crawl.warc_out import WarcSegment
from pipeline.store import atomic_write_json

__all__ = ["CrawlResult", "crawl_name", "run_crawl"]

log = logging.getLogger(__name__)

STATE_VERSION = 1
# Threads per fetch actor: requests waiting on their host's turn sleep in a thread, so this is
# how many hosts (times their cap) one actor serves at once.
THREADS_PER_FETCHER = 32
SOFTWARE = "kiln-crawler/0.1 (warcio)"


@dataclass
class CrawlResult:
    """What a crawl left in the store and what happened to every URL."""

    name: str
    folder: Path
    warc_files: list[Path]
    stats: dict = field(default_factory=dict)


def crawl_name(cfg: CrawlConfig) -> str:
    """The crawl's folder name: ``cfg.name``, or a hash of what decides which pages are
    fetched (starts, scope, depth, page limit), so politeness settings can change between
    attempts and the same crawl is still resumed."""
    if cfg.name:
        return cfg.name
    what = {
        k: getattr(cfg, k)
        for k in ("seeds", "sitemaps", "feeds", "allowed_domains", "max_depth", "max_pages")
    }
    what["content_types"] = sorted(cfg.content_types)
    digest = hashlib.sha1(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]
    return f"crawl-{digest}"


def _allowed_domains(cfg: CrawlConfig) -> list[str]:
    if cfg.allowed_domains is not None:
        return list(cfg.allowed_domains)
    hosts = {urlsplit(u).hostname for u in (*cfg.seeds, *cfg.sitemaps, *cfg.feeds)}
    return sorted(h for h in hosts if h)


# --- where fetches run ------------------------------------------------------------------------


class _RayFetchers:
    """Fetcher actors on Ray; each host goes to one of them."""

    def __init__(self, cfg: CrawlConfig):
        import ray

        actor = ray.remote(Fetcher).options(
            max_concurrency=THREADS_PER_FETCHER,
            num_cpus=0,  # threads waiting on the network, not on a core
        )
        self.ray = ray
        self.actors = [actor.remote(cfg.model_dump()) for _ in range(cfg.fetchers)]

    def submit(self, entry: Entry):
        index = zlib.crc32(host_key(entry.url).encode()) % len(self.actors)
        return self.actors[index].fetch.remote(entry.url, entry.kind, entry.depth, entry.redirects)

    def wait(self, pending: list, timeout: float) -> list:
        ready, _ = self.ray.wait(pending, num_returns=1, timeout=timeout)
        return ready

    def result(self, ref) -> dict:
        return self.ray.get(ref)

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)


class _ThreadFetchers:
    """The same work in this process's threads (a crawl without Ray, e.g. a quick test)."""

    def __init__(self, cfg: CrawlConfig):
        self.fetcher = Fetcher(cfg)
        self.pool = ThreadPoolExecutor(THREADS_PER_FETCHER * cfg.fetchers)

    def submit(self, entry: Entry) -> Future:
        return self.pool.submit(
            self.fetcher.fetch, entry.url, entry.kind, entry.depth, entry.redirects
        )

    def wait(self, pending: list, timeout: float) -> list:
        done, _ = wait_futures(pending, timeout=timeout, return_when=FIRST_COMPLETED)
        return list(done)

    def result(self, future: Future) -> dict:
        return future.result()

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.fetcher.close()


# --- the crawl's state on disk ----------------------------------------------------------------


class _CrawlState:
    """state.json: frontier, counters, committed files; renames left half-done are finished
    on load."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.path = folder / "state.json"

    def load(self) -> dict | None:
        if not self.path.exists():
            return None
        state = json.loads(self.path.read_text())
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"{self.path}: crawl state version {state.get('version')} unknown")
        for tmp, final in state.get("renames", []):
            if (self.folder / tmp).exists():
                os.replace(self.folder / tmp, self.folder / final)
        state["renames"] = []
        # Files of a checkpoint that never happened: their pages are still in the queue.
        for sub in ("warc", "log"):
            for stray in (self.folder / sub).glob(".*.tmp"):
                stray.unlink()
        return state

    def save(self, state: dict) -> None:
        atomic_write_json(self.path, state)


class _Crawl:
    def __init__(self, cfg: CrawlConfig, folder: Path, state: dict | None):
        self.cfg = cfg
        self.folder = folder
        self.store = _CrawlState(folder)
        self.resumed = state is not None
        if state is None:
            self.frontier = Frontier(_allowed_domains(cfg), cfg.max_depth)
            for url in cfg.seeds:
                self.frontier.add(url, "page", 0)
            for url in cfg.sitemaps:
                self.frontier.add(url, "sitemap", 0)
            for url in cfg.feeds:
                self.frontier.add(url, "feed", 0)
            state = {
                "version": STATE_VERSION,
                "name": folder.name,
                "counts": {},
                "warc_files": [],
                "log_files": [],
                "pages_stored": 0,
                "finished": False,
                "seconds": 0.0,
            }
        else:
            self.frontier = Frontier.from_json(state["frontier"])
        self.state = state
        self.counts: Counter[str] = Counter(state["counts"])
        self.segment: WarcSegment | None = None
        self.log_lines: list[str] = []
        self.in_flight: dict = {}  # handle -> Entry
        self.host_in_flight: Counter[str] = Counter()
        self.unhandled_pages = 0  # fetched pages not yet counted in pages_stored

    # --- checkpoints ------------------------------------------------------------------------

    def _next_file_number(self) -> int:
        return len(self.state["log_files"]) + 1

    def _segment(self) -> WarcSegment:
        if self.segment is None:
            n = self._next_file_number()
            self.segment = WarcSegment(
                self.folder / "warc" / f"{self.folder.name}-{n:05d}.warc.gz", SOFTWARE
            )
        return self.segment

    def checkpoint(self, finished: bool = False) -> None:
        n = self._next_file_number()
        renames: list[tuple[str, str]] = []
        if self.segment is not None:
            self.segment.close()
            renames.append(
                (
                    str(self.segment.tmp_path.relative_to(self.folder)),
                    str(self.segment.final_path.relative_to(self.folder)),
                )
            )
            self.state["warc_files"].append(renames[-1][1])
        if self.log_lines or self.segment is not None:
            log_final = self.folder / "log" / f"{n:05d}.jsonl"
            log_tmp = log_final.with_name(f".{log_final.name}.tmp")
            log_final.parent.mkdir(parents=True, exist_ok=True)
            with open(log_tmp, "w") as fh:
                fh.write("".join(self.log_lines))
                fh.flush()
                os.fsync(fh.fileno())
            renames.append(
                (str(log_tmp.relative_to(self.folder)), str(log_final.relative_to(self.folder)))
            )
            self.state["log_files"].append(renames[-1][1])
        self.state.update(
            counts=dict(self.counts),
            frontier=self.frontier.to_json(self.in_flight.values()),
            finished=finished,
            renames=renames,
        )
        self.store.save(self.state)
        for tmp, final in renames:
            os.replace(self.folder / tmp, self.folder / final)
        self.segment, self.log_lines = None, []

    # --- results ----------------------------------------------------------------------------

    def _log(self, record: dict) -> None:
        self.log_lines.append(json.dumps(record, sort_keys=True) + "\n")

    def _discovered(
        self, urls: list[str], kind: str, depth: int, via: str, redirects: int = 0
    ) -> None:
        for url in urls:
            reason = self.frontier.add(url, kind, depth, redirects=redirects)
            self.counts[f"discovered:{kind}"] += 1
            if reason and reason != "duplicate":
                self.counts[f"skipped:{reason}"] += 1
                self._log({"url": url, "kind": kind, "depth": depth, "outcome": reason, "via": via})

    def handle(self, r: dict) -> None:
        outcome, kind = r["outcome"], r["kind"]
        self.counts["requests"] += r["requests"]
        self.counts[f"{kind}:{outcome}"] += 1
        record = {
            k: r[k]
            for k in ("url", "kind", "depth", "outcome", "status", "final_url", "detail")
            if r.get(k) is not None
        }
        record.update(attempts=r["attempts"], redirects=r["redirects"])
        if r.get("body") is not None:
            record["bytes"] = len(r["body"])
        self._log(record)
        if outcome == Outcome.FETCHED:
            self.frontier.mark_fetched(r["url"])
            self.frontier.mark_fetched(r["final_url"])
        if outcome == Outcome.REDIRECT_ELSEWHERE:
            # The redirects taken so far travel with the target, so the limit spans hosts.
            taken = r["redirects_before"] + len(r["redirects"])
            self._discovered([r["redirect_to"]], kind, r["depth"], r["url"], taken)
            return
        if outcome != Outcome.FETCHED:
            return
        body, base = r["body"], r["final_url"] or r["url"]
        if kind == "page":
            self._segment().write_page(r, self.cfg.user_agent)
            self.state["pages_stored"] += 1
            if r["depth"] < self.cfg.max_depth:
                self._discovered(links_from_html(body, base), "page", r["depth"] + 1, base)
        elif kind == "sitemap":
            pages, children = urls_from_sitemap(body)
            self._discovered(children, "sitemap", 0, base)
            self._discovered(pages, "page", 0, base)
        elif kind == "feed":
            self._discovered(urls_from_feed(body), "page", 0, base)

    # --- the loop ---------------------------------------------------------------------------

    def _may_start(self, entry_kind: str) -> bool:
        if entry_kind != "page":
            return True
        pages_in_flight = sum(1 for e in self.in_flight.values() if e.kind == "page")
        pending = self.state["pages_stored"] + pages_in_flight + self.unhandled_pages
        return pending < self.cfg.max_pages

    def _dispatch(self, fetchers) -> None:
        cap = self.cfg.max_concurrency_per_host
        for host in self.frontier.hosts():
            queue = self.frontier.queues[host]
            while queue and self.host_in_flight[host] < cap and self._may_start(queue[0].kind):
                entry = self.frontier.pop(host)
                if entry is None:
                    break
                self.in_flight[fetchers.submit(entry)] = entry
                self.host_in_flight[host] += 1

    def run(self, fetchers, on_result: Callable[[dict], None] | None = None) -> None:
        t0 = time.monotonic()
        since_checkpoint = 0
        while True:
            self._dispatch(fetchers)
            if not self.in_flight:
                break
            done = fetchers.wait(list(self.in_flight), timeout=1.0)
            entries = [self.in_flight.pop(handle) for handle in done]
            for entry in entries:
                self.host_in_flight[host_key(entry.url)] -= 1
            # Hosts get their next URL before results are processed (parsing, WARC writing),
            # so a host's fetches do not wait on the driver's work.
            self.unhandled_pages = sum(1 for e in entries if e.kind == "page")
            self._dispatch(fetchers)
            self.unhandled_pages = 0
            for handle, entry in zip(done, entries, strict=True):
                result = fetchers.result(handle)
                self.handle(result)
                if on_result is not None:
                    on_result(result)
                if result["outcome"] == Outcome.FETCHED and entry.kind == "page":
                    since_checkpoint += 1
            if since_checkpoint >= self.cfg.checkpoint_pages:
                self.state["seconds"] += time.monotonic() - t0
                t0 = time.monotonic()
                self.checkpoint()
                since_checkpoint = 0
        self.state["seconds"] += time.monotonic() - t0
        self.checkpoint(finished=True)


def _stats(crawl_state: dict, folder: Path, resumed: bool, reused: bool) -> dict:
    counts = crawl_state["counts"]
    pages = {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("page:")}
    seconds = crawl_state.get("seconds", 0.0)
    return {
        "name": crawl_state["name"],
        "folder": str(folder),
        "pages_stored": crawl_state["pages_stored"],
        "requests": counts.get("requests", 0),
        "pages": dict(sorted(pages.items())),
        "sitemaps": {k[8:]: v for k, v in counts.items() if k.startswith("sitemap:")},
        "feeds": {k[5:]: v for k, v in counts.items() if k.startswith("feed:")},
        "skipped": {k[8:]: v for k, v in counts.items() if k.startswith("skipped:")},
        "discovered": {k[11:]: v for k, v in counts.items() if k.startswith("discovered:")},
        "left_in_queue": len(crawl_state.get("frontier", {}).get("queue", [])),
        "warc_files": len(crawl_state["warc_files"]),
        "seconds": round(seconds, 2),
        "pages_per_second": round(crawl_state["pages_stored"] / seconds, 2) if seconds else None,
        "resumed": resumed,
        "reused": reused,
    }


def run_crawl(
    cfg: CrawlConfig,
    root: str | os.PathLike,
    *,
    use_ray: bool = True,
    on_result: Callable[[dict], None] | None = None,
) -> CrawlResult:
    """Crawl (or resume, or reuse) into ``<root>/<name>``; returns its WARC files and stats.

    ``use_ray=False`` runs the fetchers as threads of this process instead of Ray actors.
    ``on_result`` sees every fetch result as it is handled (tests use it to stop a crawl).
    """
    name = crawl_name(cfg)
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    state = _CrawlState(folder).load()
    if state is not None and state.get("finished"):
        log.info(
            "crawl %s: finished earlier, reading its %d WARC files", name, len(state["warc_files"])
        )
        files = [folder / f for f in state["warc_files"]]
        return CrawlResult(name, folder, files, _stats(state, folder, False, True))
    crawl = _Crawl(cfg, folder, state)
    if crawl.resumed:
        log.info(
            "crawl %s: resuming, %d pages stored, %d URLs waiting",
            name,
            crawl.state["pages_stored"],
            crawl.frontier.waiting(),
        )
    fetchers = _RayFetchers(cfg) if use_ray else _ThreadFetchers(cfg)
    try:
        crawl.run(fetchers, on_result)
    finally:
        fetchers.close()
        if crawl.segment is not None:  # interrupted: its pages are still in the saved queue
            crawl.segment.discard()
    files = [folder / f for f in crawl.state["warc_files"]]
    stats = _stats(crawl.state, folder, crawl.resumed, False)
    log.info(
        "crawl %s: %d pages stored, %d requests, %s",
        name,
        stats["pages_stored"],
        stats["requests"],
        stats["pages"],
    )
    return CrawlResult(name, folder, files, stats)
