"""Typed configuration of the data side: inputs and each stage's settings.

Every field is documented where it is defined, with its unit; unknown fields and values out of
range are rejected when the config is built, before any work starts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
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
    kind: Literal["auto", "html", "warc", "book"] = Field(
        "auto", description="Reader to use; 'auto' picks one per file from its name."
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

    @model_validator(mode="after")
    def _check_banding(self) -> DedupConfig:
        if self.threshold is not None and {"bands", "rows"} & self.model_fields_set:
            raise ValueError("set either threshold or bands and rows, not both")
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


class ShardConfig(StrictModel):
    val_fraction: float = Field(
        0.1,
        gt=0.0,
        lt=0.5,
        description="Share of the text (by characters) held out for validation, in whole "
        "documents chosen by a hash of their id; at least one document.",
    )


class DataConfig(StrictModel):
    dataset_name: str = Field(
        "sample", pattern=r"^[A-Za-z0-9_.-]+$", description="Name of the dataset line in the store."
    )
    inputs: list[InputSpec] = Field(min_length=1, description="What to read.")
    batch_size: int = Field(16, ge=1, description="Documents per Ray Data batch.")
    extract: ExtractConfig = ExtractConfig()
    filter: FilterConfig = FilterConfig()
    dedup: DedupConfig = DedupConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    shards: ShardConfig = ShardConfig()
