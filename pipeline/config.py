"""Typed configuration of the data side: inputs and each stage's settings.

Every field is documented where it is defined, with its unit; unknown fields and values out of
range are rejected when the config is built, before any work starts.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "CrawlConfig",
    "DataConfig",
    "DedupConfig",
    "ExtractConfig",
    "FilterConfig",
    "InputSpec",
    "ShardConfig",
    "StrictModel",
    "TokenizerConfig",
]


class StrictModel(BaseModel):
    """Base for every config object: unknown fields are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class InputSpec(StrictModel):
    path: str = Field(
        description="A file, a folder (read recursively) or a glob pattern. Relative paths are "
        "resolved against the folder of the config file."
    )
    kind: Literal["auto", "html", "warc", "book", "jsonl", "parquet", "hf", "cc_paths"] = Field(
        "auto", description="Reader to use; 'auto' picks one per file from its name."
    )
    text_field: str = Field(
        "text", description="jsonl/parquet/hf: the field holding the content (dotted for nested)."
    )
    url_field: str = Field(
        "url", description="jsonl/parquet/hf: the field holding the URL (dotted for nested)."
    )
    content: Literal["text", "html"] = Field(
        "text", description="jsonl/parquet/hf: whether text_field holds plain text or HTML."
    )
    split: str = Field("train", description="hf: the dataset split to read.")
    hf_config: str | None = Field(None, description="hf: the dataset configuration (subset).")
    base: str | None = Field(
        None,
        description="cc_paths: URL or folder the list's relative lines are joined to; null is "
        "Common Crawl's https://data.commoncrawl.org/.",
    )


class ExtractConfig(StrictModel):
    favor_precision: bool = Field(False, description="trafilatura: less boilerplate, less text.")
    favor_recall: bool = Field(False, description="trafilatura: more text, more boilerplate.")
    include_tables: bool = Field(True, description="Keep the text of HTML tables.")


class FilterConfig(StrictModel):
    min_words: int = Field(50, ge=0, description="Drop documents with fewer words (too_short).")
    max_words: int | None = Field(
        None, ge=1, description="Drop documents with more words (too_long); null for no limit."
    )
    languages: list[str] | None = Field(
        None,
        description="ISO 639-1 codes to keep (langid.py codes); null keeps every language.",
    )
    min_language_score: float = Field(
        0.5, ge=0.0, le=1.0, description="Drop documents whose language probability is lower."
    )


class DedupConfig(StrictModel):
    enabled: bool = Field(True, description="Run exact and near-duplicate removal.")
    num_perm: int = Field(112, ge=8, le=1024, description="MinHash permutations.")
    # 14 bands of 8 rows (112 permutations) is FineWeb's setting: pairs above a Jaccard
    # similarity of about 0.75 collide in at least one band with high probability.
    bands: int = Field(14, ge=1, description="LSH bands; bands x rows must equal num_perm.")
    rows: int = Field(8, ge=1, description="Rows (hash values) per LSH band.")
    shingle_size: int = Field(5, ge=1, le=32, description="Words per shingle (n-gram).")

    @model_validator(mode="after")
    def _bands_times_rows(self) -> DedupConfig:
        if self.bands * self.rows != self.num_perm:
            raise ValueError(
                f"bands x rows ({self.bands} x {self.rows} = {self.bands * self.rows}) "
                f"must equal num_perm ({self.num_perm})"
            )
        return self


class TokenizerConfig(StrictModel):
    vocab_size: int = Field(8192, ge=300, le=1_000_000, description="BPE vocabulary size, ids.")
    min_frequency: int = Field(2, ge=1, description="Minimum pair count for a BPE merge.")


class ShardConfig(StrictModel):
    val_fraction: float = Field(
        0.1,
        gt=0.0,
        lt=0.5,
        description="Share of the text (by characters) held out for validation, in whole "
        "documents chosen by a hash of their id; at least one document.",
    )


class CrawlConfig(StrictModel):
    """What to crawl and how politely; see pipeline/crawl/."""

    seeds: list[str] = Field(default_factory=list, description="Start URLs (depth 0).")
    sitemaps: list[str] = Field(
        default_factory=list, description="Sitemap or sitemap-index URLs; listed pages are depth 0."
    )
    feeds: list[str] = Field(
        default_factory=list, description="RSS or Atom feed URLs; linked pages are depth 0."
    )
    allowed_domains: list[str] | None = Field(
        None,
        description="Hosts the crawl stays within (subdomains included); null: the hosts of "
        "seeds, sitemaps and feeds.",
    )
    max_depth: int = Field(1, ge=0, le=20, description="Links followed away from depth-0 pages.")
    max_pages: int = Field(1000, ge=1, description="Pages stored at most.")
    user_agent: str = Field(
        "kiln-crawler/0.1", min_length=1, description="User-Agent sent and matched in robots.txt."
    )
    # One request a second per host is the delay most sites that set a Crawl-delay ask for.
    min_delay_s: float = Field(
        1.0, ge=0.0, description="Seconds between the starts of two requests to one host."
    )
    max_crawl_delay_s: float = Field(
        30.0, ge=0.0, description="A robots.txt Crawl-delay above this is capped to it, seconds."
    )
    max_concurrency_per_host: int = Field(
        1, ge=1, le=16, description="Requests in flight to one host at most."
    )
    timeout_s: float = Field(
        30.0, gt=0.0, description="Limit for one response, connect to last byte, seconds."
    )
    max_response_bytes: int = Field(
        5 * 1024 * 1024, ge=1024, description="Larger bodies are abandoned (too_large), bytes."
    )
    max_redirects: int = Field(5, ge=0, le=20, description="Redirects followed per URL.")
    max_retries: int = Field(
        3, ge=0, le=10, description="Retries after a timeout, 429 or 5xx, with backoff."
    )
    backoff_s: float = Field(
        1.0, ge=0.0, description="First retry delay, doubled each retry, seconds."
    )
    max_retry_after_s: float = Field(
        60.0, ge=0.0, description="A longer Retry-After makes the crawler give up the URL."
    )
    content_types: list[str] = Field(
        default_factory=lambda: ["text/html", "application/xhtml+xml"],
        description="Page media types kept; others are skipped as non_html.",
    )
    allow_networks: list[str] = Field(
        default_factory=list,
        description="Private, loopback or link-local networks (CIDR) that may be fetched; "
        "others are refused after DNS resolution and after every redirect.",
    )
    fetchers: int = Field(2, ge=1, le=256, description="Fetch actors; hosts are split among them.")
    checkpoint_pages: int = Field(
        100, ge=1, description="Pages per WARC file; the frontier is saved with each file."
    )
    name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Folder of the crawl under <store>/raw/crawl; null: a hash of what is "
        "crawled, so the same crawl is resumed or reused and a changed one starts afresh.",
    )

    @model_validator(mode="after")
    def _has_a_start(self) -> CrawlConfig:
        if not (self.seeds or self.sitemaps or self.feeds):
            raise ValueError("crawl needs at least one seed, sitemap or feed URL")
        for url in (*self.seeds, *self.sitemaps, *self.feeds):
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"crawl start {url!r} is not an http(s) URL")
        for net in self.allow_networks:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"allow_networks: {net!r} is not a CIDR network") from None
        return self


class DataConfig(StrictModel):
    dataset_name: str = Field(
        "sample", pattern=r"^[A-Za-z0-9_.-]+$", description="Name of the dataset line in the store."
    )
    inputs: list[InputSpec] = Field(
        default_factory=list, description="What to read (may be empty when crawl is set)."
    )
    crawl: CrawlConfig | None = Field(
        None, description="Pages to crawl first; their WARC files join the inputs."
    )
    batch_size: int = Field(16, ge=1, description="Documents per Ray Data batch.")
    extract: ExtractConfig = ExtractConfig()
    filter: FilterConfig = FilterConfig()
    dedup: DedupConfig = DedupConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    shards: ShardConfig = ShardConfig()

    @model_validator(mode="after")
    def _something_to_read(self) -> DataConfig:
        if not self.inputs and self.crawl is None:
            raise ValueError("data needs inputs, a crawl, or both")
        return self
