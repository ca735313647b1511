"""The crawler's refusals, each seeded directly against the loopback site (tests/pipeline/crawl/
site.py): redirects into private networks, 429 with and without Retry-After, redirect chains
over the limit (on one host and across two), bodies over the size limit sent chunked, and
robots.txt groups written for kiln's own user agent."""

from __future__ import annotations

import ipaddress
import socket
from collections import Counter
from itertools import pairwise
from pathlib import Path

import httpcore
import pytest

from pipeline.config import CrawlConfig
from pipeline.crawl import run_crawl
from pipeline.crawl.urls import normalise_url
from tests.helpers import need_corpus
from tests.pipeline.crawl.site import (
    CHUNKED_BIG_BYTES,
    PRIVATE_REDIRECTS,
    LoopbackSite,
    crawl_log,
)

AGENT = "kiln-test-crawler/1.0"


def config(base: str, paths: list[str], **over) -> CrawlConfig:
    settings = dict(
        seeds=[base + p for p in paths],
        allowed_domains=["127.0.0.1"],
        max_depth=0,
        user_agent=AGENT,
        min_delay_s=0.05,
        timeout_s=2.0,
        max_retries=1,
        backoff_s=0.1,
        max_response_bytes=1 << 20,
        allow_networks=["127.0.0.0/8"],
    )
    settings.update(over)
    return CrawlConfig(**settings)


def records(folder: Path) -> dict[str, dict]:
    """URL -> its record in the crawl's JSONL logs."""
    return {record["url"]: record for record in crawl_log(folder)}


def hits(site: LoopbackSite) -> Counter:
    return Counter(p for _, p, _ in site.requests())


@pytest.fixture(scope="module")
def corpus():
    return need_corpus("web").parent


@pytest.fixture
def connections(monkeypatch):
    """Every address the crawler opens a connection to. Anything but loopback is refused here
    as well, so no test sends traffic off the machine even if the crawler's own guard failed;
    names resolve only to what the tests say (no DNS query leaves either)."""
    made: list[str] = []
    real_connect = httpcore.SyncBackend.connect_tcp
    real_getaddrinfo = socket.getaddrinfo

    def connect_tcp(self, host, port, *args, **kwargs):
        made.append(host)
        if not ipaddress.ip_address(host).is_loopback:
            raise httpcore.ConnectError(f"test guard: {host} is not loopback")
        return real_connect(self, host, port, *args, **kwargs)

    def getaddrinfo(host, port, *args, **kwargs):
        if host == "metadata.test":  # a name for the cloud metadata address
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", port))]
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise socket.gaierror(socket.EAI_NONAME, f"test resolver: {host} unknown") from None
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", connect_tcp)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return made


def test_a_redirect_into_a_private_network_is_refused_before_any_connection(
    corpus, tmp_path, connections
):
    with LoopbackSite(corpus) as site:
        paths = [f"/to-private/{name}" for name in PRIVATE_REDIRECTS]
        # The private hosts are in scope, so that the address check is what stops them.
        scope = ["127.0.0.1", "169.254.169.254", "10.0.0.1", "metadata.test"]
        result = run_crawl(config(site.base, paths, allowed_domains=scope), tmp_path, use_ray=False)
        sent = hits(site)
    got = records(result.folder)
    for name, target in PRIVATE_REDIRECTS.items():
        assert got[site.base + f"/to-private/{name}"]["outcome"] == "redirect_to_other_host"
        refused = got[normalise_url(target)]
        assert refused["outcome"] == "private_address", refused
        assert refused["attempts"] == 0  # refused on its resolved address, nothing sent
    assert "169.254.169.254" in got[normalise_url(PRIVATE_REDIRECTS["named"])]["detail"]
    assert result.stats["pages"]["private_address"] == len(PRIVATE_REDIRECTS)
    assert result.stats["pages_stored"] == 0
    assert set(connections) == {"127.0.0.1"}  # not even a robots.txt request left loopback
    assert sent == Counter({"/robots.txt": 1, **{p: 1 for p in paths}})


def test_429_is_retried_with_and_without_retry_after_and_too_long_a_wait_is_refused(
    corpus, tmp_path
):
    with LoopbackSite(corpus) as site:
        paths = ["/busy/retry-after", "/busy/plain", "/busy/an-hour"]
        cfg = config(site.base, paths, max_retry_after_s=10.0)
        result = run_crawl(cfg, tmp_path, use_ray=False)
        sent = hits(site)
        retry_after = [t for t, p, _ in site.requests() if p == "/busy/retry-after"]
    got = records(result.folder)
    assert got[site.base + "/busy/retry-after"]["outcome"] == "fetched"
    assert got[site.base + "/busy/plain"]["outcome"] == "fetched"
    assert sent["/busy/retry-after"] == 2 and sent["/busy/plain"] == 2
    assert retry_after[1] - retry_after[0] >= 1.0 - 0.02  # Retry-After: 1 was honoured
    hour = got[site.base + "/busy/an-hour"]
    assert hour["outcome"] == "retry_after_too_long" and hour["status"] == 429
    assert sent["/busy/an-hour"] == 1  # given up at once, not retried
    assert result.stats["pages"] == {"fetched": 2, "retry_after_too_long": 1}


def test_429_without_retries_left_is_kept_as_its_status(corpus, tmp_path):
    with LoopbackSite(corpus) as site:
        result = run_crawl(
            config(site.base, ["/busy/plain"], max_retries=0), tmp_path, use_ray=False
        )
    assert records(result.folder)[site.base + "/busy/plain"]["outcome"] == "http_429"


def test_a_redirect_chain_longer_than_the_limit_is_counted_as_too_many_redirects(corpus, tmp_path):
    with LoopbackSite(corpus) as site:
        cfg = config(site.base, ["/chain/3", "/chain/4"], max_redirects=3)
        result = run_crawl(cfg, tmp_path, use_ray=False)
        sent = hits(site)
    got = records(result.folder)
    within = got[site.base + "/chain/3"]
    assert within["outcome"] == "fetched" and within["final_url"] == site.base + "/chain/0"
    over = got[site.base + "/chain/4"]
    assert over["outcome"] == "too_many_redirects"
    assert len(over["redirects"]) == 4  # the fourth Location is noted, not requested
    assert sent["/chain/0"] == 1  # only by the chain within the limit
    assert result.stats["pages"] == {"fetched": 1, "too_many_redirects": 1}


def test_the_redirect_limit_holds_across_hosts(corpus, tmp_path):
    """A chain that hops between two hosts is handed back to the frontier at every hop; the
    redirects it took so far go with it, so the limit is the same as on one host."""
    with LoopbackSite(corpus) as a, LoopbackSite(corpus) as b:
        a.site.other, b.site.other = b.base, a.base
        over = config(a.base, ["/hop/5"], max_redirects=3, allowed_domains=["127.0.0.1"])
        result = run_crawl(over, tmp_path / "over", use_ray=False)
        got = records(result.folder)
        requested = [base + p for base, s in ((a.base, a), (b.base, b)) for p in hits(s)]
        assert got[b.base + "/hop/2"]["outcome"] == "too_many_redirects"
        assert a.base + "/hop/1" not in requested and b.base + "/hop/0" not in requested
        assert result.stats["pages"]["too_many_redirects"] == 1
        assert result.stats["pages"]["redirect_to_other_host"] == 3

        within = config(a.base, ["/hop/3"], max_redirects=3, allowed_domains=["127.0.0.1"])
        result = run_crawl(within, tmp_path / "within", use_ray=False)
    got = records(result.folder)
    assert got[b.base + "/hop/0"]["outcome"] == "fetched"
    assert result.stats["pages_stored"] == 1


def test_a_chunked_body_over_the_size_limit_is_cut_off_while_streaming(corpus, tmp_path):
    with LoopbackSite(corpus) as site:
        paths = ["/chunked/small", "/chunked/big", "/chunked/gzip-bomb"]
        result = run_crawl(config(site.base, paths), tmp_path, use_ray=False)
        done = site.site.chunked_done.wait(30)  # the server noticing the hang-up
        sent_bytes = site.site.chunked_sent
    got = records(result.folder)
    small = got[site.base + "/chunked/small"]
    assert small["outcome"] == "fetched" and small["bytes"] == len(
        b"<html><body><p>In pieces.</p></body></html>"
    )
    for path in ("/chunked/big", "/chunked/gzip-bomb"):
        record = got[site.base + path]
        assert record["outcome"] == "too_large", record
        assert record["detail"] == f"over {1 << 20} bytes"  # counted, not read from a header
    assert result.stats["pages"] == {"fetched": 1, "too_large": 2}
    assert done and sent_bytes < CHUNKED_BIG_BYTES  # the crawler hung up, not the server


ROBOTS_FOR_KILN = """\
User-agent: otherbot
Disallow: /

User-agent: *
Disallow: /area/for-nobody/

User-agent: KILN-Test-Crawler
Crawl-delay: 0.3
Disallow: /area/not-for-kiln/
Disallow: /chain/1
"""


def test_robots_txt_group_for_kiln_replaces_the_star_group(corpus, tmp_path):
    with LoopbackSite(corpus) as site:
        site.site.robots = ROBOTS_FOR_KILN
        paths = [
            "/area/not-for-kiln/page.html",  # allowed for *, not for kiln
            "/area/for-nobody/page.html",  # kiln's group has no such rule (RFC 9309 2.2.1)
            "/area/open.html",  # otherbot's "Disallow: /" is not kiln's
            "/chain/2",  # redirects to /chain/1: checked against kiln's group too
        ]
        result = run_crawl(config(site.base, paths), tmp_path, use_ray=False)
        sent = hits(site)
        times = [t for t, p, _ in site.requests() if p != "/robots.txt"]
    got = records(result.folder)
    assert got[site.base + "/area/not-for-kiln/page.html"]["outcome"] == "robots_disallowed"
    assert got[site.base + "/area/for-nobody/page.html"]["outcome"] == "fetched"
    assert got[site.base + "/area/open.html"]["outcome"] == "fetched"
    assert got[site.base + "/chain/2"]["outcome"] == "robots_disallowed"
    assert "/area/not-for-kiln/page.html" not in sent and "/chain/1" not in sent
    assert {ua for _, _, ua in site.requests()} == {AGENT}
    assert min(b - a for a, b in pairwise(times)) >= 0.3 - 0.02  # kiln's Crawl-delay
