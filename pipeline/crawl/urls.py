"""URL handling for the crawler: one spelling per page, the host it belongs to, and scope.

Normalisation resolves a link against its page, removes dot segments and the fragment, and
lets courlan do the rest (lower-case scheme and host, default port dropped, query parameters
sorted, tracking parameters such as ``utm_*`` removed), so the frontier holds each page once.
"""

from __future__ import annotations

import posixpath
from urllib.parse import urljoin, urlsplit, urlunsplit

from courlan import normalize_url
from courlan.filters import extension_filter

__all__ = ["host_key", "in_scope", "looks_like_a_page", "normalise_url", "origin"]


def normalise_url(url: str, base: str | None = None) -> str | None:
    """The canonical spelling of ``url`` (resolved against ``base``), or None when it is not an
    http(s) URL worth queueing."""
    url = (url or "").strip()
    if not url:
        return None
    if base:
        url = urljoin(base, url)
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    path = parts.path or "/"
    if "/." in path:  # resolve ./ and ../ that urljoin left in an absolute link
        trailing = path.endswith("/")
        path = posixpath.normpath(path)
        path = "/" if path in (".", "/") else path + ("/" if trailing else "")
    url = urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
    try:
        url = normalize_url(url)
    except ValueError:
        return None
    return url.split("#", 1)[0]


def host_key(url: str) -> str:
    """What politeness is counted per: host and port (two servers on one machine are two)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    default = 443 if parts.scheme == "https" else 80
    return host if parts.port in (None, default) else f"{host}:{parts.port}"


def origin(url: str) -> str:
    """scheme://host[:port] of a URL (where its robots.txt lives)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def in_scope(url: str, allowed_domains: list[str]) -> bool:
    """True when the URL's host is one of the domains or a subdomain of one."""
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    for domain in allowed_domains:
        domain = domain.lower().strip().rstrip(".")
        if host == domain or host.endswith("." + domain):
            return True
    return False


def looks_like_a_page(url: str) -> bool:
    """False for links whose extension says they are not HTML (images, archives, PDFs...), so
    they are skipped without a request; anything else is checked by its Content-Type."""
    return extension_filter(urlsplit(url).path)
