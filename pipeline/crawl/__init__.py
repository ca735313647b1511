"""The crawler: from seed URLs, sitemaps and feeds to WARC files in the dataset store.

- urls.py: normalisation, host keys, scope (courlan);
- addresses.py: refusing private, loopback and link-local addresses after DNS resolution;
- fetch.py: one URL fetched politely (robots.txt, per-host delay and cap, retries, limits);
- discover.py: links from pages, sitemaps and feeds;
- frontier.py: what waits per host and what was seen;
- warc_out.py: fetched pages as WARC records (warcio);
- crawler.py: the loop over Ray fetch actors, checkpoints and resume.
"""

from pipeline.crawl.crawler import CrawlResult, crawl_name, run_crawl

__all__ = ["CrawlResult", "crawl_name", "run_crawl"]
