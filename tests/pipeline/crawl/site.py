"""A small web site on a loopback HTTP server, built from the shared corpus, for crawler tests.

It has what a crawler meets on the web: a robots.txt disallowing part of the site, a sitemap
index and sitemap, an RSS feed, real pages (one in windows-1252, one gzip-encoded), a redirect
loop, a slow endpoint that drips its body, a 10 MB response, a 503-then-200 endpoint with
Retry-After, a JSON endpoint, a 404, links to private and link-local addresses, an external
link. Every request is logged with its arrival time, so tests can check what was fetched and
how requests to the host were spaced.

Endpoints that the main crawl does not link to, for tests that seed them directly: redirects to
private addresses (``/to-private/...``), redirect chains of any length (``/chain/N``) and chains
alternating between two sites (``/hop/N``, once ``other`` names the second site), 429 answers
with and without Retry-After (``/busy/...``), bodies sent chunked without a Content-Length
(``/chunked/...``), plain pages anywhere under ``/area/``, and a robots.txt that tests may
replace (``Site.robots``).
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# Real pages from the shared corpus, served under /pages/.
CORPUS_PAGES = {
    "news-1.html": "web/scrapinghub/14cc2a0ca59c62a8c9f205a171e9ccf4ef4cf69b0c642f51c8c65c051b39024f.html.gz",
    "news-2.html": "web/scrapinghub/5a822960e9a2cb1e664d334b6c936c5cb6e41fb5331877538c2c8339cb59d57e.html.gz",
    "news-3.html": "web/scrapinghub/7a457a4f71735c17b8b34fafc88835d225cf879b2d812311857a64cfc891eee9.html.gz",
    "news-4.html": "web/scrapinghub/1ace8c85aaee21b9d4505eca506d50c4721c29db62848b567a9703bfe0583892.html.gz",
    "auto.html": "web/trafilatura/auto-presse.de-minisuv.html.gz",  # windows-1252
    "tagespost.html": "web/trafilatura/die-tagespost.de.Demut.html.gz",  # served gzip-encoded
}
PRIVATE_LINKS = ["http://10.0.0.1/admin", "http://169.254.169.254/latest/meta-data/"]
EXTERNAL_LINK = "http://example.org/elsewhere.html"
BIG_BYTES = 10 * 1000 * 1000
SLOW_SECONDS = 3.0
# Where /to-private/<name> redirects; "metadata.test" is a name the tests resolve themselves.
PRIVATE_REDIRECTS = {
    "metadata": "http://169.254.169.254/latest/meta-data/iam",
    "admin": "http://10.0.0.1/internal",
    "named": "http://metadata.test/latest/meta-data/",
}
CHUNK_BYTES = 64 * 1024
# Far more than loopback socket buffers hold, so a crawler that hangs up early shows.
CHUNKED_BIG_BYTES = 32 * 1000 * 1000


class Site:
    """The site's content and its request log."""

    def __init__(self, corpus: Path):
        self.pages = {
            name: gzip.decompress((corpus / rel).read_bytes()) for name, rel in CORPUS_PAGES.items()
        }
        self.log: list[tuple[float, str, str]] = []  # (arrival, path, user agent)
        self.lock = threading.Lock()
        self.flaky_hits = 0
        self.hits: Counter[str] = Counter()  # per path, for endpoints that change on a retry
        self.chunked_sent = 0  # bytes of /chunked/big written before the client hung up
        self.chunked_done = threading.Event()
        self.base = ""
        self.other = ""  # the base URL of a second site, for /hop/N
        self.robots = "User-agent: *\nDisallow: /private/\nSitemap: {base}/sitemap.xml\n"

    def index(self) -> bytes:
        links = [
            "/pages/news-1.html",
            "/pages/news-2.html",
            "/pages/auto.html",
            "/pages/tagespost.html",
            "/private/secret.html",
            "/loop/a",
            "/slow",
            "/big",
            "/flaky",
            "/data",
            "/missing",
            "/picture.png",
            "/moved",
            *PRIVATE_LINKS,
            EXTERNAL_LINK,
        ]
        anchors = "\n".join(f'<li><a href="{href}">{href}</a></li>' for href in links)
        return (
            "<!doctype html><html><head><meta charset='utf-8'><title>Test site</title></head>"
            f"<body><h1>Index</h1><ul>{anchors}</ul></body></html>"
        ).encode()

    def sitemap_index(self) -> bytes:
        return (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
            f"<sitemap><loc>{self.base}/sitemap-pages.xml</loc></sitemap></sitemapindex>"
        ).encode()

    def sitemap(self) -> bytes:
        urls = "".join(
            f"<url><loc>{self.base}/pages/{n}</loc></url>" for n in ("news-3.html", "news-1.html")
        )
        return (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{urls}</urlset>'
        ).encode()

    def feed(self) -> bytes:
        return (
            '<?xml version="1.0"?><rss version="2.0"><channel><title>News</title>'
            f"<item><title>Four</title><link>{self.base}/pages/news-4.html</link></item>"
            f"<item><title>Two</title><link>{self.base}/pages/news-2.html?utm_source=rss</link>"
            "</item></channel></rss>"
        ).encode()


def _handler(site: Site):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output quiet
            pass

        def _send(self, status, body=b"", ctype="text/html; charset=utf-8", headers=()):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the crawler gave up on a body it will not keep

        def _send_chunked(self, chunks, headers=()) -> int:
            """A 200 with Transfer-Encoding: chunked and no Content-Length; returns the bytes
            of body written before the client hung up (or all of them)."""
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Transfer-Encoding", "chunked")
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            sent = 0
            try:
                for chunk in chunks:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    sent += len(chunk)
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            return sent

        def _extra(self, path: str):  # noqa: C901 - one branch per endpoint reads best here
            """The endpoints only tests that seed them reach; None when the path is not one."""
            with site.lock:
                site.hits[path] += 1
                hit = site.hits[path]
            page = b"<html><body><p>Arrived.</p></body></html>"
            if path.startswith("/area/"):  # a plain page anywhere below, for robots.txt rules
                return self._send(200, page)
            if path.startswith("/to-private/"):
                target = PRIVATE_REDIRECTS.get(path.removeprefix("/to-private/"))
                if target:
                    return self._send(302, b"", headers=[("Location", target)])
            if path.startswith("/chain/") and path.removeprefix("/chain/").isdigit():
                left = int(path.removeprefix("/chain/"))
                if left == 0:
                    return self._send(200, page)
                return self._send(302, b"", headers=[("Location", f"/chain/{left - 1}")])
            if path.startswith("/hop/") and path.removeprefix("/hop/").isdigit():
                left = int(path.removeprefix("/hop/"))
                if left == 0:
                    return self._send(200, page)
                return self._send(302, b"", headers=[("Location", f"{site.other}/hop/{left - 1}")])
            if path == "/busy/retry-after":  # 429 asking for a second, then the page
                if hit == 1:
                    return self._send(429, b"slow down", headers=[("Retry-After", "1")])
                return self._send(200, page)
            if path == "/busy/plain":  # 429 saying nothing about when, then the page
                if hit == 1:
                    return self._send(429, b"slow down")
                return self._send(200, page)
            if path == "/busy/an-hour":  # asks for longer than a crawl waits
                return self._send(429, b"come back later", headers=[("Retry-After", "3600")])
            if path == "/chunked/small":
                return self._send_chunked(
                    [b"<html><body>", b"<p>In pieces.</p>", b"</body></html>"]
                )
            if path == "/chunked/big":
                chunk = b"x" * CHUNK_BYTES
                sent = self._send_chunked(chunk for _ in range(CHUNKED_BIG_BYTES // CHUNK_BYTES))
                with site.lock:
                    site.chunked_sent = sent
                site.chunked_done.set()
                return None
            if path == "/chunked/gzip-bomb":  # a few KB on the wire, 8 MB once decoded
                body = gzip.compress(b"\0" * (8 * 1000 * 1000))
                chunks = [body[i : i + 1024] for i in range(0, len(body), 1024)]
                self._send_chunked(chunks, [("Content-Encoding", "gzip")])
                return None
            return self._send(404, b"not found")

        def do_GET(self):  # noqa: C901 - one branch per endpoint reads best here
            with site.lock:
                site.log.append((time.monotonic(), self.path, self.headers.get("User-Agent", "")))
            path = self.path
            if path == "/robots.txt":
                body = site.robots.format(base=site.base)
                return self._send(200, body.encode(), "text/plain")
            if path == "/":
                return self._send(200, site.index())
            if path == "/sitemap.xml":
                return self._send(200, site.sitemap_index(), "application/xml")
            if path == "/sitemap-pages.xml":
                return self._send(200, site.sitemap(), "application/xml")
            if path == "/feed.xml":
                return self._send(200, site.feed(), "application/rss+xml")
            if path.startswith("/pages/"):
                name = path.split("/")[-1].split("?")[0]
                if name not in site.pages:
                    return self._send(404, b"not found")
                body = site.pages[name]
                if name == "auto.html":
                    return self._send(200, body, "text/html; charset=windows-1252")
                if name == "tagespost.html":
                    return self._send(
                        200, gzip.compress(body), "text/html", [("Content-Encoding", "gzip")]
                    )
                return self._send(200, body)
            if path == "/private/secret.html":
                return self._send(200, b"<html><body>secret</body></html>")
            if path == "/loop/a":
                return self._send(302, b"", headers=[("Location", "/loop/b")])
            if path == "/loop/b":
                return self._send(302, b"", headers=[("Location", "/loop/a")])
            if path == "/moved":
                return self._send(301, b"", headers=[("Location", "/pages/news-3.html")])
            if path == "/slow":
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", "100")
                self.end_headers()
                try:  # a byte at a time: every read is quick, the whole body is not
                    for _ in range(int(SLOW_SECONDS / 0.25)):
                        self.wfile.write(b" ")
                        self.wfile.flush()
                        time.sleep(0.25)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True
                return None
            if path == "/big":
                return self._send(200, b"<html>" + b"x" * BIG_BYTES + b"</html>")
            if path == "/flaky":
                with site.lock:
                    site.flaky_hits += 1
                    first = site.flaky_hits == 1
                if first:
                    return self._send(503, b"busy", headers=[("Retry-After", "1")])
                return self._send(200, b"<html><body><p>Back again.</p></body></html>")
            if path == "/data":
                return self._send(200, b'{"a": 1}', "application/json")
            return self._extra(path)

    return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a crawler dropping a connection mid-response is expected here


class LoopbackSite:
    """The site served on 127.0.0.1 at a free port, in a background thread."""

    def __init__(self, corpus: Path):
        self.site = Site(corpus)
        self.server = _QuietServer(("127.0.0.1", 0), _handler(self.site))
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.site.base = self.base
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LoopbackSite:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def requests(self) -> list[tuple[float, str, str]]:
        with self.site.lock:
            return list(self.site.log)


def crawl_log(folder: Path) -> list[dict]:
    """Every record of a crawl's JSONL logs (one a URL fetched or refused), in file order."""
    return [
        json.loads(line)
        for path in sorted(folder.glob("log/*.jsonl"))
        for line in path.read_text().splitlines()
    ]
