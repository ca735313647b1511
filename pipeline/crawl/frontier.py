"""The crawl frontier: URLs waiting per host, every URL ever seen, and what became of them.

URLs enter through :meth:`Frontier.add`, which normalises them (pipeline/crawl/urls.py) and
turns away duplicates, off-domain hosts, links past the depth limit and links whose extension
says they are not pages, returning the reason. Waiting URLs are kept per host so the crawler
can serve many hosts side by side. The whole frontier is a JSON document saved atomically with
each WARC file (pipeline/crawl/crawler.py), which is what a killed crawl resumes from.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass

from pipeline.crawl.urls import host_key, in_scope, looks_like_a_page, normalise_url

__all__ = ["Entry", "Frontier"]


@dataclass(frozen=True)
class Entry:
    """A URL to fetch: ``kind`` is page, sitemap or feed; ``depth`` counts links followed;
    ``redirects`` counts the redirects that led here from other hosts, so a chain hopping
    between hosts meets the same ``max_redirects`` as one on a single host."""

    url: str
    kind: str
    depth: int
    redirects: int = 0


class Frontier:
    """Queues per host plus the set of URLs already queued or fetched."""

    def __init__(self, allowed_domains: list[str], max_depth: int):
        self.allowed_domains = list(allowed_domains)
        self.max_depth = max_depth
        self.queues: dict[str, deque[Entry]] = {}
        self.seen: set[str] = set()
        self.fetched: set[str] = set()
        self.turned_away: Counter[str] = Counter()

    def add(
        self, url: str, kind: str, depth: int, base: str | None = None, redirects: int = 0
    ) -> str | None:
        """Queue a URL; returns why it was not queued (or None when it was)."""
        canonical = normalise_url(url, base)
        if canonical is None:
            return self._turn_away("bad_url")
        if canonical in self.seen:
            return self._turn_away("duplicate")
        self.seen.add(canonical)
        if depth > self.max_depth:
            return self._turn_away("beyond_depth")
        if not in_scope(canonical, self.allowed_domains):
            return self._turn_away("off_domain")
        if kind == "page" and not looks_like_a_page(canonical):
            return self._turn_away("not_a_page")
        self.queues.setdefault(host_key(canonical), deque()).append(
            Entry(canonical, kind, depth, redirects)
        )
        return None

    def _turn_away(self, reason: str) -> str:
        self.turned_away[reason] += 1
        return reason

    def mark_fetched(self, url: str) -> None:
        """Record a URL whose content was fetched (a redirect's target too), so that neither a
        later link nor an entry queued before the redirect fetches it again."""
        canonical = normalise_url(url)
        if canonical:
            self.seen.add(canonical)
            self.fetched.add(canonical)

    def hosts(self) -> list[str]:
        """Hosts with URLs waiting."""
        return [h for h, q in self.queues.items() if q]

    def pop(self, host: str) -> Entry | None:
        """The host's next URL not fetched yet (None when only fetched ones were left)."""
        queue = self.queues[host]
        while queue:
            entry = queue.popleft()
            if entry.url not in self.fetched:
                return entry
            self.turned_away["duplicate"] += 1
        return None

    def waiting(self) -> int:
        return sum(len(q) for q in self.queues.values())

    def to_json(self, in_flight: Iterable[Entry] = ()) -> dict:
        """The frontier as JSON; URLs being fetched right now are saved as still waiting."""
        queue = [e for q in self.queues.values() for e in q]
        queue = list(in_flight) + queue
        return {
            "allowed_domains": self.allowed_domains,
            "max_depth": self.max_depth,
            "queue": [[e.url, e.kind, e.depth, e.redirects] for e in queue],
            "seen": sorted(self.seen),
            "fetched": sorted(self.fetched),
            "turned_away": dict(self.turned_away),
        }

    @classmethod
    def from_json(cls, data: dict) -> Frontier:
        frontier = cls(data["allowed_domains"], data["max_depth"])
        frontier.seen = set(data["seen"])
        frontier.fetched = set(data["fetched"])
        frontier.turned_away = Counter(data["turned_away"])
        for item in data["queue"]:  # [url, kind, depth] in states saved before redirects
            frontier.queues.setdefault(host_key(item[0]), deque()).append(Entry(*item))
        return frontier
