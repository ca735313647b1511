"""The crawler against a loopback web site built from the shared corpus (tests/pipeline/crawl/
site.py): what it fetched, what it skipped and why, how it spaced its requests, the WARC files
it wrote, and resuming after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pytest

from pipeline.config import CrawlConfig
from pipeline.crawl import run_crawl
from pipeline.read import InputFile, read_file
from pipeline.records import is_kept
from tests.helpers import REPO, need_corpus
from tests.pipeline.crawl.site import EXTERNAL_LINK, PRIVATE_LINKS, LoopbackSite, crawl_log

DELAY = 0.2
STORED = {
    "/",
    "/pages/news-1.html",
    "/pages/news-2.html",
    "/pages/news-3.html",  # from the sitemap, and the target of /moved
    "/pages/news-4.html",  # from the feed
    "/pages/auto.html",
    "/pages/tagespost.html",
    "/flaky",
}


def crawl_config(base: str, **over) -> CrawlConfig:
    settings = dict(
        seeds=[base + "/"],
        sitemaps=[base + "/sitemap.xml"],
        feeds=[base + "/feed.xml"],
        # The private hosts are in scope so that the address guard is what stops them.
        allowed_domains=["127.0.0.1", "10.0.0.1", "169.254.169.254"],
        max_depth=1,
        user_agent="kiln-test-crawler/1.0",
        min_delay_s=DELAY,
        timeout_s=1.0,
        max_retries=1,
        backoff_s=0.1,
        max_response_bytes=1 << 20,
        allow_networks=["127.0.0.0/8"],
        checkpoint_pages=3,
    )
    settings.update(over)
    return CrawlConfig(**settings)


def outcomes(folder: Path) -> dict[str, str]:
    """URL -> outcome from the crawl's JSONL logs (a redirect's target under its own URL)."""
    out = {}
    for record in crawl_log(folder):
        out[record["url"]] = record["outcome"]
        if record.get("final_url"):
            out[record["final_url"]] = record["outcome"]
    return out


def paths(site: LoopbackSite) -> Counter:
    return Counter(p for _, p, _ in site.requests())


@pytest.fixture(scope="module")
def corpus():
    return need_corpus("web")


@pytest.fixture(scope="module")
def crawled(corpus, tmp_path_factory):
    with LoopbackSite(corpus.parent) as site:
        result = run_crawl(crawl_config(site.base), tmp_path_factory.mktemp("crawl"), use_ray=False)
        yield site, result


def test_fetches_the_site_and_says_why_it_skipped_the_rest(crawled):
    site, result = crawled
    base = site.base
    got = outcomes(result.folder)
    assert {u.removeprefix(base) for u, o in got.items() if o == "fetched"} >= STORED
    assert result.stats["pages_stored"] == len(STORED)
    assert got[base + "/private/secret.html"] == "robots_disallowed"
    assert got[base + "/loop/a"] == "redirect_loop"
    assert got[base + "/slow"] == "timeout"
    assert got[base + "/big"] == "too_large"
    assert got[base + "/data"] == "non_html"
    assert got[base + "/missing"] == "http_404"
    assert got[base + "/picture.png"] == "not_a_page"
    assert got[EXTERNAL_LINK] == "off_domain"
    for url in PRIVATE_LINKS:
        assert got[url] == "private_address"
    pages = result.stats["pages"]
    assert pages["fetched"] == len(STORED) and pages["private_address"] == 2
    assert result.stats["skipped"]["off_domain"] >= 1
    assert result.stats["sitemaps"] == {"fetched": 2}  # the index and the sitemap it names


def test_requests_sent_and_not_sent(crawled):
    site, _ = crawled
    sent = paths(site)
    assert not any(p.startswith("/private/") for p in sent)  # robots.txt obeyed
    assert sent["/robots.txt"] == 1  # read once per host, before anything else
    assert site.requests()[0][1] == "/robots.txt"
    for page in STORED - {"/flaky", "/pages/news-3.html"}:
        assert sent[page] == 1, page  # the frontier de-duplicates (news-2 came with utm_source)
    assert sent["/pages/news-3.html"] == 1  # listed in the sitemap and reached by /moved
    assert sent["/slow"] == 2  # one retry after the timeout
    assert sent["/flaky"] == 2  # 503, then 200
    assert sent["/big"] == 1  # refused from its Content-Length, not downloaded
    assert {ua for _, _, ua in site.requests()} == {"kiln-test-crawler/1.0"}


def test_requests_to_one_host_are_spaced_and_retry_after_is_honoured(crawled):
    site, _ = crawled
    times = [t for t, _, _ in site.requests()]
    gaps = [b - a for a, b in pairwise(times)]
    assert min(gaps) >= DELAY - 0.02, gaps  # loopback jitter is a few ms
    flaky = [t for t, p, _ in site.requests() if p == "/flaky"]
    assert flaky[1] - flaky[0] >= 1.0 - 0.02  # Retry-After: 1


def test_warc_files_reread_to_the_pages_served(crawled, corpus):
    site, result = crawled
    assert len(result.warc_files) == 3  # 8 pages, a file every 3
    docs = [d for f in result.warc_files for d in read_file(InputFile(str(f), "warc"))]
    assert all(is_kept(d) for d in docs)
    by_path = {d["url"].removeprefix(site.base): d for d in docs}
    assert set(by_path) == STORED
    served = site.site.pages
    assert by_path["/pages/news-1.html"]["raw"] == served["news-1.html"]
    # windows-1252 and gzip-encoded pages come back decoded and as UTF-8
    auto = by_path["/pages/auto.html"]
    assert auto["meta"]["charset"] == "cp1252"
    assert auto["raw"] == served["auto.html"].decode("cp1252").encode("utf-8")
    tagespost = by_path["/pages/tagespost.html"]  # sent gzip-encoded, declared in a <meta>
    assert tagespost["meta"]["charset"] == "cp1252"
    assert tagespost["raw"] == served["tagespost.html"].decode("cp1252").encode("utf-8")
    # every file is a complete gzip WARC: warcinfo first, then response/request pairs
    from warcio.archiveiterator import ArchiveIterator

    with open(result.warc_files[0], "rb") as fh:
        types = [r.rec_type for r in ArchiveIterator(fh)]
    assert types == ["warcinfo"] + ["response", "request"] * 3


def test_a_finished_crawl_is_reused_not_repeated(crawled):
    site, result = crawled
    before = len(site.requests())
    again = run_crawl(crawl_config(site.base), result.folder.parent, use_ray=False)
    assert again.stats["reused"] and again.warc_files == result.warc_files
    assert len(site.requests()) == before


def test_a_slow_host_does_not_hold_up_another(corpus, tmp_path):
    with LoopbackSite(corpus.parent) as slow, LoopbackSite(corpus.parent) as fast:
        cfg = crawl_config(
            slow.base,
            seeds=[slow.base + "/slow", fast.base + "/"],
            sitemaps=[],
            feeds=[],
            allowed_domains=["127.0.0.1"],
            max_depth=1,
            max_pages=4,
        )
        run_crawl(cfg, tmp_path, use_ray=False)
        slow_times = [t for t, p, _ in slow.requests() if p == "/slow"]
        fast_pages = [t for t, p, _ in fast.requests() if p.startswith("/pages/")]
    assert len(slow_times) == 2 and len(fast_pages) >= 2
    # while the slow host was being waited on (two attempts, 1 s each), the other went on
    assert sum(1 for t in fast_pages if t < slow_times[1]) >= 2


@pytest.mark.slow
def test_crawl_on_ray_fetch_actors(ray_local, corpus, tmp_path):
    with LoopbackSite(corpus.parent) as site:
        result = run_crawl(crawl_config(site.base, fetchers=2), tmp_path, use_ray=True)
        sent = paths(site)
        times = [t for t, _, _ in site.requests()]
    assert result.stats["pages_stored"] == len(STORED)
    assert min(b - a for a, b in pairwise(times)) >= DELAY - 0.02
    assert sent["/robots.txt"] == 1 and not any(p.startswith("/private/") for p in sent)
    docs = [d for f in result.warc_files for d in read_file(InputFile(str(f), "warc"))]
    assert {d["url"].removeprefix(site.base) for d in docs} == STORED


CHILD = """
import json, sys
from pipeline.config import CrawlConfig
from pipeline.crawl import run_crawl
run_crawl(CrawlConfig(**json.loads(sys.argv[1])), sys.argv[2], use_ray=False)
"""


def test_a_killed_crawl_resumes_without_fetching_what_it_stored(corpus, tmp_path):
    with LoopbackSite(corpus.parent) as site:
        cfg = crawl_config(site.base, checkpoint_pages=2)
        folder = tmp_path / "crawl"
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, cfg.model_dump_json(), str(folder)],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        try:
            deadline = time.monotonic() + 60
            state = None
            while time.monotonic() < deadline:
                states = list(folder.glob("*/state.json"))
                if states:
                    state = json.loads(states[0].read_text())
                    if state["warc_files"]:
                        break
                time.sleep(0.05)
            child.send_signal(signal.SIGKILL)
        finally:
            child.wait()
        assert state and state["warc_files"] and not state["finished"]
        first = [p for _, p, _ in site.requests()]
        stored_first = set()
        for name in state["warc_files"]:
            path = folder / state["name"] / name
            stored_first |= {
                d["url"].removeprefix(site.base) for d in read_file(InputFile(str(path), "warc"))
            }
        assert stored_first and stored_first < STORED

        result = run_crawl(cfg, folder, use_ray=False)
        second = [p for _, p, _ in site.requests()][len(first) :]
    assert result.stats["resumed"]
    assert not stored_first & set(second)  # nothing stored before the kill is fetched again
    docs = [d for f in result.warc_files for d in read_file(InputFile(str(f), "warc"))]
    urls = [d["url"].removeprefix(site.base) for d in docs]
    assert sorted(urls) == sorted(STORED)  # every page once, across both attempts


def test_max_pages_stops_the_crawl_and_leaves_the_rest_queued(corpus, tmp_path):
    with LoopbackSite(corpus.parent) as site:
        cfg = crawl_config(site.base, sitemaps=[], feeds=[], max_pages=3, min_delay_s=0.05)
        result = run_crawl(cfg, tmp_path, use_ray=False)
    assert result.stats["pages_stored"] == 3
    assert result.stats["left_in_queue"] > 0
