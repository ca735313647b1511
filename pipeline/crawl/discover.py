"""Where the crawler finds URLs: links in pages, sitemaps (and sitemap indexes), RSS/Atom feeds.

Every function takes a fetched body and returns absolute URLs as written (the frontier
normalises and filters them). XML is parsed with entity resolution and network access off, so
a hostile sitemap cannot make the parser read local files or fetch anything.
"""

from __future__ import annotations

import gzip
import io
import logging
import zlib
from urllib.parse import urljoin

from lxml import etree, html

from pipeline.encoding import decode_text

__all__ = ["links_from_html", "urls_from_feed", "urls_from_sitemap"]

log = logging.getLogger(__name__)

# A sitemap holds at most 50,000 URLs and 50 MB uncompressed (sitemaps.org protocol).
SITEMAP_MAX_BYTES = 50 * 1000 * 1000


def _xml_root(body: bytes):
    if body[:2] == b"\x1f\x8b":
        try:
            body = gzip.GzipFile(fileobj=io.BytesIO(body)).read(SITEMAP_MAX_BYTES)
        except (OSError, EOFError, zlib.error):
            return None
    parser = etree.XMLParser(resolve_entities=False, no_network=True, recover=True, huge_tree=False)
    try:
        return etree.fromstring(body.lstrip(), parser)
    except etree.XMLSyntaxError:
        return None


def _local(tag) -> str:
    return etree.QName(tag).localname.lower() if isinstance(tag, str) else ""


def urls_from_sitemap(body: bytes) -> tuple[list[str], list[str]]:
    """(page URLs, child sitemap URLs) of a sitemap or sitemap index; a plain-text sitemap
    (one URL a line) is read too."""
    root = _xml_root(body)
    if root is None:
        text = decode_text(body).text
        return [line.strip() for line in text.splitlines() if line.strip().startswith("http")], []
    pages, children = [], []
    for loc in root.iter():
        if _local(loc.tag) != "loc" or not (loc.text or "").strip():
            continue
        parent = _local(loc.getparent().tag) if loc.getparent() is not None else ""
        (children if parent == "sitemap" else pages).append(loc.text.strip())
    return pages, children


def urls_from_feed(body: bytes) -> list[str]:
    """Item links of an RSS 2.0 / RSS 1.0 (RDF) feed or entry links of an Atom feed."""
    root = _xml_root(body)
    if root is None:
        return []
    urls = []
    for node in root.iter():
        name = _local(node.tag)
        if name not in ("item", "entry"):
            continue
        for child in node:
            if _local(child.tag) != "link":
                continue
            href = child.get("href")  # Atom: <link rel="alternate" href="..."/>
            if href and child.get("rel", "alternate") == "alternate":
                urls.append(href.strip())
            elif not href and (child.text or "").strip():  # RSS: <link>...</link>
                urls.append(child.text.strip())
    return urls


def links_from_html(body: bytes, base_url: str) -> list[str]:
    """The href of every <a> and <area> of a page, resolved against the page's URL or its
    <base>; links marked rel=nofollow are left out, as their authors asked."""
    try:
        doc = html.fromstring(decode_text(body).text)
    except (etree.ParserError, ValueError):
        return []
    base = doc.find(".//base[@href]")
    if base is not None:
        base_url = urljoin(base_url, base.get("href"))
    out = []
    for a in doc.iter("a", "area"):
        href = a.get("href")
        if href and "nofollow" not in (a.get("rel") or "").lower():
            out.append(urljoin(base_url, href.strip()))
    return out
