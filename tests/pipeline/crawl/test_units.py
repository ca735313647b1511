"""The crawler's parts on their own: URL normalisation and scope, the address policy, link,
sitemap and feed discovery, the frontier, and robots.txt handling against a tiny server."""

from __future__ import annotations

import gzip
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline.config import CrawlConfig
from pipeline.crawl.addresses import AddressPolicy, AddressRefused
from pipeline.crawl.discover import links_from_html, urls_from_feed, urls_from_sitemap
from pipeline.crawl.fetch import Fetcher, _retry_after
from pipeline.crawl.frontier import Frontier
from pipeline.crawl.urls import host_key, in_scope, normalise_url


def test_normalise_url_gives_one_spelling_per_page():
    assert normalise_url("HTTP://Example.COM:80/a/./b/../c.html?utm_source=x&b=2&a=1#top") == (
        "http://example.com/a/c.html?a=1&b=2"
    )
    assert normalise_url("../up.html", "http://example.com/a/b/page.html") == (
        "http://example.com/a/up.html"
    )
    assert normalise_url("mailto:someone@example.com") is None
    assert normalise_url("javascript:void(0)", "http://example.com/") is None


def test_host_key_and_scope():
    assert host_key("http://example.com:80/x") == "example.com"
    assert host_key("http://127.0.0.1:8080/x") == "127.0.0.1:8080"
    assert in_scope("https://blog.example.com/x", ["example.com"])
    assert not in_scope("https://notexample.com/x", ["example.com"])


@pytest.mark.parametrize(
    "address, refused",
    [
        ("10.1.2.3", "private"),
        ("192.168.0.1", "private"),
        ("172.16.5.4", "private"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link_local"),
        ("fe80::1", "link_local"),
        ("::ffff:10.0.0.1", "private"),
        ("100.64.0.1", "not_global"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 - an address checked, not bound
        ("93.184.216.34", None),
    ],
)
def test_address_policy(address, refused):
    reason = AddressPolicy().refusal(address)
    assert (reason is not None) == (refused is not None)
    if refused:
        assert reason in (refused, "private", "reserved")  # some ranges are several at once


def test_allowed_networks_are_exempt_and_resolution_is_checked():
    policy = AddressPolicy(["127.0.0.0/8"])
    assert policy.refusal("127.0.0.1") is None and policy.refusal("10.0.0.1") == "private"
    assert policy.resolve("localhost", 80)  # resolves to loopback, which is allowed
    with pytest.raises(AddressRefused, match="loopback"):
        AddressPolicy().resolve("localhost", 80)


def test_links_from_html_resolve_against_base_and_skip_nofollow():
    page = (
        b"<html><head><base href='http://example.com/dir/'></head><body>"
        b"<a href='a.html'>a</a><a href='/b.html' rel='nofollow'>b</a>"
        b"<area href='http://other.org/c'><a>no href</a></body></html>"
    )
    assert links_from_html(page, "http://example.com/") == [
        "http://example.com/dir/a.html",
        "http://other.org/c",
    ]


def test_sitemap_index_sitemap_gzip_and_text():
    index = (
        b'<?xml version="1.0"?><sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
        b"<sitemap><loc> http://e.com/s1.xml </loc></sitemap></sitemapindex>"
    )
    assert urls_from_sitemap(index) == ([], ["http://e.com/s1.xml"])
    urlset = (
        b'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
        b"<url><loc>http://e.com/1</loc></url><url><loc>http://e.com/2</loc></url></urlset>"
    )
    assert urls_from_sitemap(gzip.compress(urlset)) == (["http://e.com/1", "http://e.com/2"], [])
    assert urls_from_sitemap(b"http://e.com/a\nhttp://e.com/b\n") == (
        ["http://e.com/a", "http://e.com/b"],
        [],
    )


def test_xml_entities_are_not_expanded():
    evil = (
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        b"<urlset><url><loc>&e;</loc></url></urlset>"
    )
    pages, _ = urls_from_sitemap(evil)
    assert not any("root:" in p for p in pages)


def test_rss_and_atom_feeds():
    rss = b"<rss><channel><item><link>http://e.com/r1</link></item></channel></rss>"
    atom = (
        b'<feed xmlns="http://www.w3.org/2005/Atom"><entry>'
        b'<link rel="alternate" href="http://e.com/a1"/><link rel="edit" href="http://e.com/x"/>'
        b"</entry></feed>"
    )
    assert urls_from_feed(rss) == ["http://e.com/r1"]
    assert urls_from_feed(atom) == ["http://e.com/a1"]


def test_frontier_turns_away_and_survives_json():
    frontier = Frontier(["e.com"], max_depth=1)
    assert frontier.add("http://e.com/a", "page", 0) is None
    assert frontier.add("http://e.com/a#frag", "page", 1) == "duplicate"
    assert frontier.add("http://other.org/", "page", 1) == "off_domain"
    assert frontier.add("http://e.com/pic.jpg", "page", 1) == "not_a_page"
    assert frontier.add("http://e.com/deep", "page", 2) == "beyond_depth"
    assert frontier.add("http://e.com/b", "page", 1) is None
    entry = frontier.pop("e.com")
    restored = Frontier.from_json(frontier.to_json(in_flight=[entry]))
    assert [e.url for e in restored.queues["e.com"]] == ["http://e.com/a", "http://e.com/b"]
    restored.mark_fetched("http://e.com/a")
    assert restored.pop("e.com").url == "http://e.com/b"  # fetched URLs are not handed out


def test_frontier_keeps_redirects_taken_and_reads_older_states():
    frontier = Frontier(["e.com"], max_depth=1)
    assert frontier.add("http://e.com/target", "page", 0, redirects=2) is None
    restored = Frontier.from_json(frontier.to_json())
    assert restored.pop("e.com").redirects == 2
    older = frontier.to_json()
    older["queue"] = [item[:3] for item in older["queue"]]  # saved before redirects were kept
    assert Frontier.from_json(older).pop("e.com").redirects == 0


def test_retry_after_forms():
    assert _retry_after("7") == 7.0
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert _retry_after("soon") is None


class _Robots(BaseHTTPRequestHandler):
    status = 200
    body = b"User-agent: *\nCrawl-delay: 0.3\nDisallow: /no\n"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.hits.append((time.monotonic(), self.path))
        if self.path == "/robots.txt":
            status, body = self.status, self.body
        else:
            status, body = 200, b"<html><body>ok</body></html>"
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _serve(status: int):
    handler = type("H", (_Robots,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.hits = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def _fetcher(**over) -> Fetcher:
    settings = dict(
        seeds=["http://127.0.0.1/"],
        allow_networks=["127.0.0.0/8"],
        min_delay_s=0.0,
        timeout_s=2.0,
        max_retries=0,
    )
    settings.update(over)
    return Fetcher(CrawlConfig(**settings))


def test_robots_crawl_delay_and_disallow():
    server, base = _serve(200)
    try:
        fetcher = _fetcher()
        assert fetcher.fetch(base + "/no/x")["outcome"] == "robots_disallowed"
        assert fetcher.fetch(base + "/a")["outcome"] == "fetched"
        assert fetcher.fetch(base + "/b")["outcome"] == "fetched"
        times = [t for t, _ in server.hits]
        assert [p for _, p in server.hits] == ["/robots.txt", "/a", "/b"]
        assert times[2] - times[1] >= 0.3 - 0.02  # Crawl-delay 0.3 s over min_delay_s 0
    finally:
        server.shutdown()


@pytest.mark.parametrize("status, outcome", [(404, "fetched"), (503, "robots_disallowed")])
def test_robots_txt_missing_allows_and_unavailable_disallows(status, outcome):
    server, base = _serve(status)
    try:
        assert _fetcher().fetch(base + "/page")["outcome"] == outcome
    finally:
        server.shutdown()


def test_a_private_host_gets_no_request_at_all():
    fetcher = _fetcher(allow_networks=[])
    result = fetcher.fetch("http://localhost:9/robots-or-anything")
    assert result["outcome"] == "private_address" and result["requests"] == 0
