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
    "C4Config",
    "DataConfig",
    "DecontamConfig",
    "DedupConfig",
    "ExtractConfig",
    "FilterConfig",
    "FineWebConfig",
    "GopherQualityConfig",
    "GopherRepetitionConfig",
    "InputSpec",
    "PIIConfig",
    "QualityConfig",
    "ShardConfig",
    "StrictModel",
    "TokenizerConfig",
]


# A name that becomes one folder in the store or the output directory: letters, digits, "_",
# "." and "-", not starting with "." (so never "." or "..", which would climb out of it), and
# short enough to leave room for the suffixes kiln adds within a file name's 255 bytes.
NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"


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
    # Defaults chosen by bench/bench_extract.py on the shared corpus's gold pages; the sweep
    # (each setting's F1 per source) is in README.md, "Cleaning: what is dropped and why".
    favor_precision: bool = Field(False, description="trafilatura: less boilerplate, less text.")
    favor_recall: bool = Field(False, description="trafilatura: more text, more boilerplate.")
    include_tables: bool = Field(True, description="Keep the text of HTML tables.")
    include_comments: bool = Field(
        False, description="Append readers' comments to the main text (trafilatura's default)."
    )
    extensive_date_search: bool = Field(
        False,
        description="htmldate: also search free text for dates (a few more dates, twice the "
        "metadata time).",
    )
    max_page_bytes: int = Field(
        2 * 1024 * 1024, ge=1, description="Drop pages larger than this (page_too_large), bytes."
    )
    time_limit_seconds: float = Field(
        30.0, gt=0, description="Give up on a page after this long (extract_timeout), seconds."
    )


# The 97 languages of the model that ships with langid.py 1.1.6 (Lui & Baldwin, 2012), listed
# here so a config can be checked without loading the model (about 2 s);
# tests/pipeline/test_filters.py checks the list against the model.
LANGID_LANGUAGES = frozenset(
    [
        "af",
        "am",
        "an",
        "ar",
        "as",
        "az",
        "be",
        "bg",
        "bn",
        "br",
        "bs",
        "ca",
        "cs",
        "cy",
        "da",
        "de",
        "dz",
        "el",
        "en",
        "eo",
        "es",
        "et",
        "eu",
        "fa",
        "fi",
        "fo",
        "fr",
        "ga",
        "gl",
        "gu",
        "he",
        "hi",
        "hr",
        "ht",
        "hu",
        "hy",
        "id",
        "is",
        "it",
        "ja",
        "jv",
        "ka",
        "kk",
        "km",
        "kn",
        "ko",
        "ku",
        "ky",
        "la",
        "lb",
        "lo",
        "lt",
        "lv",
        "mg",
        "mk",
        "ml",
        "mn",
        "mr",
        "ms",
        "mt",
        "nb",
        "ne",
        "nl",
        "nn",
        "no",
        "oc",
        "or",
        "pa",
        "pl",
        "ps",
        "pt",
        "qu",
        "ro",
        "ru",
        "rw",
        "se",
        "si",
        "sk",
        "sl",
        "sq",
        "sr",
        "sv",
        "sw",
        "ta",
        "te",
        "th",
        "tl",
        "tr",
        "ug",
        "uk",
        "ur",
        "vi",
        "vo",
        "wa",
        "xh",
        "zh",
        "zu",
    ]
)


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

    @model_validator(mode="after")
    def _check_languages(self) -> FilterConfig:
        unknown = sorted(set(self.languages or ()) - LANGID_LANGUAGES)
        if unknown:
            raise ValueError(
                f"languages {unknown} are not among the 97 that langid.py identifies (ISO 639-1 "
                "codes such as en, de, fr, zh); a document never gets one of these, so none would "
                "be kept"
            )
        return self


class GopherRepetitionConfig(StrictModel):
    """Gopher repetition filter; thresholds from Rae et al. 2021 (MassiveText), Table A1."""

    enabled: bool = Field(True, description="Run the filter.")
    max_dup_line_fraction: float = Field(
        0.30, ge=0, le=1, description="Lines that repeat an earlier line, share of lines."
    )
    max_dup_paragraph_fraction: float = Field(
        0.30, ge=0, le=1, description="Paragraphs that repeat an earlier one, share of paragraphs."
    )
    max_dup_line_char_fraction: float = Field(
        0.20, ge=0, le=1, description="Characters in repeated lines, share of characters."
    )
    max_dup_paragraph_char_fraction: float = Field(
        0.20, ge=0, le=1, description="Characters in repeated paragraphs, share of characters."
    )
    max_top_ngram_char_fraction: dict[int, float] = Field(
        default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16},
        description="n -> the most frequent word n-gram's characters, share of word characters.",
    )
    max_dup_ngram_char_fraction: dict[int, float] = Field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10},
        description="n -> characters in repeated word n-grams, share of word characters.",
    )


class GopherQualityConfig(StrictModel):
    """Gopher quality filter; thresholds from Rae et al. 2021 (MassiveText), Appendix A."""

    enabled: bool = Field(True, description="Run the filter.")
    min_words: int = Field(50, ge=0, description="Fewest words (too_few_words).")
    max_words: int = Field(100_000, ge=1, description="Most words (too_many_words).")
    min_mean_word_length: float = Field(3.0, ge=0, description="Characters per word, lowest.")
    max_mean_word_length: float = Field(10.0, ge=0, description="Characters per word, highest.")
    max_symbol_word_ratio: float = Field(
        0.1, ge=0, description="('#' + ellipses) per word, highest (symbol_word_ratio)."
    )
    max_bullet_lines_fraction: float = Field(
        0.9, ge=0, le=1, description="Lines starting with a bullet, share of lines."
    )
    max_ellipsis_lines_fraction: float = Field(
        0.3, ge=0, le=1, description="Lines ending with an ellipsis, share of lines."
    )
    min_alpha_words_fraction: float = Field(
        0.8, ge=0, le=1, description="Words with a letter, share of words, lowest."
    )
    min_stop_words: int = Field(
        2,
        ge=0,
        description="Distinct stop words of the document's language, fewest; languages without a "
        "list skip the check.",
    )


class C4Config(StrictModel):
    """C4's clean-up (Raffel et al. 2020, section 2.2) as FineWeb ran it (Penedo et al. 2024)."""

    enabled: bool = Field(True, description="Run the filter.")
    min_sentences: int = Field(5, ge=0, description="Fewest sentences left (too_few_sentences).")
    min_words_per_line: int = Field(3, ge=0, description="Remove lines with fewer words.")
    max_word_length: int = Field(
        1000, ge=1, description="Remove lines with a longer word, characters."
    )
    remove_lines_without_terminal_punct: bool = Field(
        False,
        description="Remove lines not ending in terminal punctuation; C4 did, FineWeb found it "
        "removed too much text and did not.",
    )
    drop_lorem_ipsum: bool = Field(True, description="Drop documents with 'lorem ipsum'.")
    drop_curly_bracket: bool = Field(True, description="Drop documents with a '{' (code).")
    remove_javascript_lines: bool = Field(True, description="Remove lines naming javascript.")
    remove_policy_lines: bool = Field(
        True, description="Remove cookie, privacy-policy and terms-of-use lines."
    )


class FineWebConfig(StrictModel):
    """FineWeb's own filters; thresholds from Penedo et al. 2024, section 3.3."""

    enabled: bool = Field(True, description="Run the filter.")
    min_punct_line_fraction: float = Field(
        0.12, ge=0, le=1, description="Lines ending in punctuation, share of lines, lowest."
    )
    max_short_line_fraction: float = Field(
        0.67, ge=0, le=1, description="Short lines, share of lines, highest."
    )
    short_line_chars: int = Field(30, ge=1, description="A line this long or shorter is short.")
    max_dup_line_char_fraction: float = Field(
        0.1, ge=0, le=1, description="Characters in repeated lines, share of characters."
    )


class QualityConfig(StrictModel):
    exempt_sources: list[str] = Field(
        default_factory=lambda: ["book"],
        description="Sources the quality filters pass untouched: the published filters were "
        "tuned on web text, and hard-wrapped books trip their line rules.",
    )
    gopher_repetition: GopherRepetitionConfig = GopherRepetitionConfig()
    gopher_quality: GopherQualityConfig = GopherQualityConfig()
    c4: C4Config = C4Config()
    fineweb: FineWebConfig = FineWebConfig()


class PIIConfig(StrictModel):
    emails: bool = Field(True, description="Replace email addresses with email@example.com.")
    ip_addresses: bool = Field(
        True, description="Replace IP addresses with 192.0.2.1 (IPv4) or 2001:db8::1 (IPv6)."
    )


class DecontamConfig(StrictModel):
    enabled: bool = Field(True, description="Drop documents sharing an n-gram with eval texts.")
    ngram_words: int = Field(13, ge=1, description="Words per n-gram (13 as in GPT-3).")
    texts: list[str] | None = Field(
        None, description="Evaluation texts; null means the job's eval.prompts."
    )
    files: list[str] = Field(
        default_factory=list,
        description="More evaluation texts: .txt files (one text each) or .jsonl files (a "
        "'text' field per line). Relative paths are resolved against the config file's folder.",
    )


class DedupConfig(StrictModel):
    enabled: bool = Field(True, description="Run exact and near-duplicate removal.")
    num_perm: int = Field(112, ge=8, le=1024, description="MinHash permutations.")
    # 14 bands of 8 rows (112 permutations) is FineWeb's setting (Penedo et al., 2024): pairs
    # above a Jaccard similarity of about 0.75 collide in at least one band with high
    # probability.
    bands: int = Field(14, ge=1, description="LSH bands; bands x rows at most num_perm.")
    rows: int = Field(8, ge=1, description="Rows (hash values) per LSH band.")
    threshold: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="Target Jaccard similarity: derive bands and rows from it instead (do not "
        "set bands or rows with it). Also the bar for verify.",
    )
    verify: bool = Field(
        False,
        description="Keep a candidate pair only if its estimated Jaccard similarity reaches "
        "the threshold (or the bands/rows curve's midpoint).",
    )
    shingle_size: int = Field(5, ge=1, le=32, description="Words per shingle (n-gram).")
    word_split: Literal["cjk_characters", "whitespace"] = Field(
        "cjk_characters",
        description="How shingles' words are cut: at whitespace, with each Chinese character "
        "and kana a word of its own (cjk_characters, as the length filter counts words), or at "
        "whitespace alone (whitespace: how dataset versions stored before this setting computed "
        "their keys; a refresh of such a dataset needs it).",
    )
    partition_rows: int = Field(
        4_000_000,
        ge=1000,
        description="Most bucket rows (one per band and document, 25 bytes each) in one "
        "partition of dedup's shuffle; a larger input gets more partitions. Lower it if the "
        "workers grouping buckets run out of memory.",
    )

    @model_validator(mode="after")
    def _check_banding(self) -> DedupConfig:
        if self.threshold is not None and {"bands", "rows"} & self.model_fields_set:
            raise ValueError(
                "set either threshold or bands and rows, not both: bands and rows are derived "
                "from threshold, so remove them (from the config file too) to use a threshold"
            )
        bands, rows = self.lsh()
        if bands * rows > self.num_perm:
            raise ValueError(
                f"bands x rows ({bands} x {rows} = {bands * rows}) exceeds num_perm "
                f"({self.num_perm})"
            )
        return self

    def lsh(self) -> tuple[int, int]:
        """Bands and rows in use: derived from threshold when it is set."""
        if self.threshold is not None:
            from pipeline.minhash import lsh_params

            return lsh_params(self.threshold, self.num_perm)
        return self.bands, self.rows

    def key_settings(self) -> dict:
        """What stored bucket keys depend on: a later run's keys can match them only when all
        of these are the same. Stored with the keys (pipeline/refresh.py checks them)."""
        bands, rows = self.lsh()
        return {
            "num_perm": self.num_perm,
            "bands": bands,
            "rows": rows,
            "shingle_size": self.shingle_size,
            "word_split": self.word_split,
        }

    def verify_threshold(self) -> float | None:
        if not self.verify:
            return None
        if self.threshold is not None:
            return self.threshold
        from pipeline.minhash import lsh_threshold

        return lsh_threshold(*self.lsh())


class TokenizerConfig(StrictModel):
    vocab_size: int = Field(8192, ge=300, le=1_000_000, description="BPE vocabulary size, ids.")
    min_frequency: int = Field(2, ge=1, description="Minimum pair count for a BPE merge.")
    eos_token: str | None = Field(
        None,
        min_length=1,
        description="End-of-document token written after every document; null: <|endoftext|> "
        "for a trained tokenizer, tokenizer_config.json's eos_token for one given by `path`.",
    )
    special_tokens: list[str] = Field(
        default_factory=list,
        description="More special tokens for a trained tokenizer (ids after the EOS token); "
        "never produced from document text.",
    )
    path: str | None = Field(
        None,
        description="An existing tokenizer instead of training one: a tokenizer.json file or a "
        "Hugging Face tokenizer folder holding one; relative to the config file.",
    )

    @model_validator(mode="after")
    def _distinct_special_tokens(self) -> TokenizerConfig:
        if self.eos_token is not None and self.eos_token in self.special_tokens:
            raise ValueError(f"special_tokens repeats the eos_token {self.eos_token!r}")
        if len(set(self.special_tokens)) != len(self.special_tokens):
            raise ValueError("special_tokens lists a token twice")
        return self


class ShardConfig(StrictModel):
    val_fraction: float = Field(
        0.1,
        gt=0.0,
        lt=0.5,
        description="Share of the text (by characters) held out for validation, in whole "
        "documents chosen by a hash of their id; at least one document.",
    )
    # Counted in tokens, as training budgets are, and as datatrove's tokenizer caps its files;
    # 1e8 tokens is 200 MB of uint16, the shard size of build-nanogpt's fineweb.py.
    target_tokens: int = Field(
        100_000_000,
        ge=1,
        description="Tokens per shard (end-of-document tokens included). A shard is closed at "
        "the first document that brings it to this many, so every shard of a split but the "
        "last reaches it; documents are never split across shards. A refresh packs only its "
        "new documents.",
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
        pattern=NAME_PATTERN,
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
        "sample", pattern=NAME_PATTERN, description="Name of the dataset line in the store."
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
    quality: QualityConfig = QualityConfig()
    decontam: DecontamConfig = DecontamConfig()
    pii: PIIConfig = PIIConfig()
    dedup: DedupConfig = DedupConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    shards: ShardConfig = ShardConfig()

    @model_validator(mode="after")
    def _something_to_read(self) -> DataConfig:
        if not self.inputs and self.crawl is None:
            raise ValueError("data needs inputs, a crawl, or both")
        return self
