"""Fetching one URL politely and safely: the work a fetch actor does for its hosts.

:class:`Fetcher` owns the politeness state of the hosts routed to it (pipeline/crawl/crawler.py
routes each host to one fetcher): before every request to a host it waits until
``min_delay_s`` (or the host's robots.txt Crawl-delay, capped) has passed since the previous
request to that host started, and lets at most ``max_concurrency_per_host`` requests to it run
at once. Requests to different hosts run side by side in the caller's threads, so a slow host
never holds up the others.

The delay is also counted from each answer's arrival, so the spacing holds at the server
whatever the sender's scheduling jitter.

For each URL it: refuses hosts that resolve to private addresses (pipeline/crawl/addresses.py);
reads and obeys robots.txt (protego; RFC 9309: 4xx means no rules, 5xx or unreachable means
disallow everything); follows same-host redirects up to ``max_redirects``, noting loops, and
hands redirects to other hosts back to the frontier; retries timeouts, 429 and 5xx with
exponential backoff, honouring Retry-After; refuses non-HTML content types from the headers and
bodies over ``max_response_bytes`` or slower than ``timeout_s`` while streaming.

The result of a fetch is a plain dict (:class:`FetchResult` fields) so it crosses Ray cleanly.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import threading
import time
import zlib
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

import httpcore
from protego import Protego

from pipeline.config import CrawlConfig
from pipeline.crawl.addresses import AddressPolicy, AddressRefused, GuardedBackend
from pipeline.crawl.urls import host_key, normalise_url, origin

__all__ = ["FetchResult", "Fetcher", "Outcome"]

log = logging.getLogger(__name__)

# RFC 9309 section 2.5: crawlers must parse at least the first 500 KiB of a robots.txt.
ROBOTS_MAX_BYTES = 500 * 1024
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


class Outcome:
    """What became of a URL; the names the crawl's stats and log use."""

    FETCHED = "fetched"
    REDIRECT_ELSEWHERE = "redirect_to_other_host"
    ROBOTS_DISALLOWED = "robots_disallowed"
    NON_HTML = "non_html"
    TOO_LARGE = "too_large"
    TIMEOUT = "timeout"
    PRIVATE_ADDRESS = "private_address"
    REDIRECT_LOOP = "redirect_loop"
    TOO_MANY_REDIRECTS = "too_many_redirects"
    RETRY_AFTER_TOO_LONG = "retry_after_too_long"
    NETWORK_ERROR = "network_error"


@dataclass
class FetchResult:
    """One URL's fetch: the outcome and, when fetched, the response as received."""

    url: str
    kind: str
    depth: int
    outcome: str
    status: int | None = None
    final_url: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | None = None
    address: str | None = None
    fetched_at: str | None = None
    attempts: int = 0
    requests: int = 0
    redirects: list[str] = field(default_factory=list)
    redirects_before: int = 0  # taken on other hosts before this URL was queued
    redirect_to: str | None = None
    detail: str | None = None


@dataclass
class _Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    address: str | None
    url: str

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


class _Refused(Exception):
    """A response the crawl will not keep, with the outcome to record."""

    def __init__(self, outcome: str, detail: str = "", status: int | None = None):
        super().__init__(detail or outcome)
        self.outcome, self.detail, self.status = outcome, detail, status


class _HostState:
    def __init__(self, cap: int):
        self.slots = threading.Semaphore(cap)
        self.gate = threading.Lock()
        self.next_start = 0.0
        self.robots: Protego | None = None
        self.robots_lock = threading.Lock()
        self.robots_checked = False
        self.robots_unavailable = False
        self.delay: float | None = None
        self.refused: str | None = None
        self.resolved = False


def _retry_after(value: str | None) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return max(0.0, (when - dt.datetime.now(dt.timezone.utc)).total_seconds())


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


class Fetcher:
    """Fetches URLs for the hosts routed to it; safe to call from many threads at once."""

    def __init__(self, cfg: CrawlConfig | dict):
        self.cfg = cfg if isinstance(cfg, CrawlConfig) else CrawlConfig.model_validate(cfg)
        self.policy = AddressPolicy(self.cfg.allow_networks)
        self.pool = httpcore.ConnectionPool(
            network_backend=GuardedBackend(self.policy),
            max_connections=256,
            max_keepalive_connections=64,
            keepalive_expiry=5.0,
        )
        self.hosts: dict[str, _HostState] = {}
        self.hosts_lock = threading.Lock()
        self.agent = self.cfg.user_agent

    # --- politeness -----------------------------------------------------------------------

    def _host(self, url: str) -> _HostState:
        key = host_key(url)
        with self.hosts_lock:
            if key not in self.hosts:
                self.hosts[key] = _HostState(self.cfg.max_concurrency_per_host)
            return self.hosts[key]

    def _delay(self, host: _HostState) -> float:
        return self.cfg.min_delay_s if host.delay is None else host.delay

    def _wait_turn(self, host: _HostState) -> None:
        """Block until this host may receive its next request, and book that start."""
        with host.gate:
            now = time.monotonic()
            start = max(now, host.next_start)
            host.next_start = start + self._delay(host)
        if start > now:
            time.sleep(start - now)

    def _answered(self, host: _HostState) -> None:
        """The host answered: its next request waits the delay from now. The answer proves the
        request arrived, so the spacing holds at the server even when sending was late."""
        with host.gate:
            host.next_start = max(host.next_start, time.monotonic() + self._delay(host))

    # --- one HTTP exchange ----------------------------------------------------------------

    def _request(self, host: _HostState, url: str, accept: list[str] | None, limit: int):
        """One GET, after waiting for the host's turn. ``accept`` lists the media types kept
        (None keeps any); raises _Refused for a type or size the crawl does not keep."""
        self._wait_turn(host)
        t = self.cfg.timeout_s
        deadline = time.monotonic() + t
        headers = [
            (b"User-Agent", self.agent.encode()),
            (b"Accept", b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
            (b"Accept-Encoding", b"gzip, deflate"),
        ]
        extensions = {"timeout": {"connect": t, "read": t, "write": t, "pool": t}}
        with self.pool.stream("GET", url, headers=headers, extensions=extensions) as resp:
            self._answered(host)
            status = resp.status
            pairs = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in resp.headers]
            response = _Response(status, pairs, b"", None, url)
            stream = resp.extensions.get("network_stream")
            if stream is not None:
                peer = stream.get_extra_info("server_addr")
                response.address = peer[0] if peer else None
            if status in REDIRECT_STATUSES or status in RETRY_STATUSES or status >= 400:
                return response  # the body is not kept; closing the stream discards it
            media = _media_type(response.header("Content-Type"))
            if accept is not None and media and media not in accept:
                raise _Refused(Outcome.NON_HTML, media, status)
            length = response.header("Content-Length")
            if length and length.strip().isdigit() and int(length) > limit:
                raise _Refused(Outcome.TOO_LARGE, f"Content-Length {length}", status)
            encoding = (response.header("Content-Encoding") or "").strip().lower()
            decoder = None
            if encoding in ("gzip", "x-gzip"):
                decoder = zlib.decompressobj(47)
            elif encoding == "deflate":
                decoder = zlib.decompressobj(15)
            body = bytearray()
            for chunk in resp.iter_stream():
                if decoder is not None:
                    # max_length keeps a compressed bomb from inflating past the limit at once
                    chunk = decoder.decompress(chunk, limit + 1 - len(body))
                body += chunk
                if len(body) > limit:
                    raise _Refused(Outcome.TOO_LARGE, f"over {limit} bytes", status)
                if time.monotonic() > deadline:
                    raise httpcore.ReadTimeout(f"body not complete within {t} s")
            response.body = bytes(body)
            if decoder is not None:
                # The body is stored decoded, so the header must no longer claim an encoding.
                response.headers = [
                    (k, v)
                    for k, v in pairs
                    if k.lower() not in ("content-encoding", "content-length")
                ] + [("X-Kiln-Decoded-Content-Encoding", encoding)]
            return response

    def _get_with_retries(self, host: _HostState, url: str, accept, limit, result: FetchResult):
        """GET with retries on timeouts, 429 and 5xx; returns the last response."""
        attempt = 0
        while True:
            attempt += 1
            result.attempts += 1
            result.requests += 1
            try:
                response = self._request(host, url, accept, limit)
            except (httpcore.TimeoutException, httpcore.ReadError) as exc:
                if attempt > self.cfg.max_retries:
                    raise _Refused(Outcome.TIMEOUT, f"{type(exc).__name__}: {exc}") from None
                wait = self.cfg.backoff_s * 2 ** (attempt - 1)
            else:
                if response.status not in RETRY_STATUSES or attempt > self.cfg.max_retries:
                    return response
                wait = self.cfg.backoff_s * 2 ** (attempt - 1)
                asked = _retry_after(response.header("Retry-After"))
                if asked is not None:
                    if asked > self.cfg.max_retry_after_s:
                        raise _Refused(
                            Outcome.RETRY_AFTER_TOO_LONG,
                            f"Retry-After {asked:.0f} s",
                            response.status,
                        )
                    wait = max(wait, asked)
            log.debug("retrying %s in %.1f s", url, wait)
            # Holding the host's slot while waiting keeps the whole host backed off.
            time.sleep(wait)

    # --- robots.txt -----------------------------------------------------------------------

    def _robots(self, host: _HostState, url: str) -> None:
        with host.robots_lock:
            if host.robots_checked:
                return
            robots_url = origin(url) + "/robots.txt"
            scratch = FetchResult(robots_url, "robots", 0, "")
            try:
                response = self._follow(host, robots_url, None, ROBOTS_MAX_BYTES, scratch)
            except _Refused as exc:
                # A robots.txt too large or too slow counts as unreachable (RFC 9309 2.3.1.4).
                response = None
                log.info("robots.txt of %s: %s", origin(url), exc.outcome)
            status = response.status if response is not None else None
            if response is None and scratch.redirect_to:
                # robots.txt moved to another host: so, almost always, have the pages, which
                # will redirect there and be checked against that host's robots.txt.
                status = 404
            if status is not None and 200 <= status < 300:
                text = response.body.decode("utf-8", errors="replace")
                host.robots = Protego.parse(text)
                delay = host.robots.crawl_delay(self.agent)
                if delay is not None:
                    host.delay = min(
                        max(float(delay), self.cfg.min_delay_s), self.cfg.max_crawl_delay_s
                    )
            elif status is not None and 400 <= status < 500:
                host.robots = None  # RFC 9309 2.3.1.3: "unavailable", no restrictions
            else:
                host.robots_unavailable = True  # 5xx or unreachable: disallow everything
            host.robots_checked = True

    # --- redirects ------------------------------------------------------------------------

    def _follow(self, host: _HostState, url: str, accept, limit, result: FetchResult):
        """GET ``url`` following same-host redirects; raises _Refused for loops, too many
        redirects, and (via result.redirect_to) hands a redirect to another host back."""
        seen = {url}
        current = url
        while True:
            response = self._get_with_retries(host, current, accept, limit, result)
            if response.status not in REDIRECT_STATUSES:
                response.url = current
                return response
            location = response.header("Location")
            target = normalise_url(location, current) if location else None
            if target is None:
                return response  # a redirect without a usable Location: keep the 3xx
            result.redirects.append(target)
            if target in seen:
                raise _Refused(Outcome.REDIRECT_LOOP, " -> ".join([*seen, target]))
            if result.redirects_before + len(result.redirects) > self.cfg.max_redirects:
                raise _Refused(Outcome.TOO_MANY_REDIRECTS, f"more than {self.cfg.max_redirects}")
            if host_key(target) != host_key(current):
                # Another host has its own politeness, robots.txt and fetcher: queue it there.
                result.redirect_to = target
                return None
            if host.robots is not None and not host.robots.can_fetch(target, self.agent):
                raise _Refused(Outcome.ROBOTS_DISALLOWED, target)
            seen.add(target)
            current = target

    # --- the public call ------------------------------------------------------------------

    def fetch(self, url: str, kind: str = "page", depth: int = 0, redirects: int = 0) -> dict:
        """Fetch one URL; returns a FetchResult as a dict.

        ``kind`` is ``page`` (HTML kept for the dataset), ``sitemap`` or ``feed`` (any type,
        read for the URLs they list); ``redirects`` were already taken on the way to ``url``
        (from other hosts) and count toward ``max_redirects``.
        """
        result = FetchResult(url, kind, depth, "", redirects_before=redirects)
        host = self._host(url)
        accept = [t.lower() for t in self.cfg.content_types] if kind == "page" else None
        with host.slots:
            try:
                self._check_address(host, url)
                self._robots(host, url)
                if host.robots_unavailable:
                    raise _Refused(Outcome.ROBOTS_DISALLOWED, "robots.txt unreachable")
                if host.robots is not None and not host.robots.can_fetch(url, self.agent):
                    raise _Refused(Outcome.ROBOTS_DISALLOWED, "robots.txt")
                result.fetched_at = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                response = self._follow(host, url, accept, self.cfg.max_response_bytes, result)
            except _Refused as exc:
                result.outcome, result.detail, result.status = exc.outcome, exc.detail, exc.status
                return asdict(result)
            except AddressRefused as exc:
                host.refused = str(exc)
                result.outcome, result.detail = Outcome.PRIVATE_ADDRESS, str(exc)
                return asdict(result)
            except (httpcore.ConnectError, httpcore.NetworkError, httpcore.ProtocolError) as exc:
                result.outcome = Outcome.NETWORK_ERROR
                result.detail = f"{type(exc).__name__}: {exc}"
                return asdict(result)
        if response is None:
            result.outcome = Outcome.REDIRECT_ELSEWHERE
            return asdict(result)
        result.status = response.status
        result.final_url = response.url
        result.address = response.address
        if not 200 <= response.status < 300:
            result.outcome = f"http_{response.status}"
            return asdict(result)
        result.outcome = Outcome.FETCHED
        result.headers = response.headers
        result.body = response.body
        return asdict(result)

    def _check_address(self, host: _HostState, url: str) -> None:
        """Resolve a host once before anything is sent to it, so a private host gets not even
        its robots.txt requested; the network backend checks again at every connect."""
        if not host.resolved:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            try:
                self.policy.resolve(parts.hostname or "", port)
            except AddressRefused as exc:
                host.refused = str(exc)
            except httpcore.ConnectError:
                pass  # unresolvable now; the request will say so
            host.resolved = True
        if host.refused:
            raise AddressRefused(host.refused)

    def close(self) -> None:
        self.pool.close()
