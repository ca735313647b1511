"""The data job: read, extract, filter, dedup, tokenize and shard, as Ray Data stages.

:func:`run_data` takes a validated :class:`~pipeline.config.DataConfig` and a store, runs every
stage on the Ray instance the caller connected to (local or a cluster; stage code does not
change), and commits a new dataset version. It returns where things are and the ledger.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.config import DataConfig
from pipeline.decontam import DecontamStage, load_eval_texts
from pipeline.dedup import DedupIndex, run_dedup
from pipeline.errors import InputError
from pipeline.extract import ExtractStage
from pipeline.filters import LanguageFilter, LengthFilter
from pipeline.read import READ_STAGE, ReadStats, discover_inputs, input_identity, read_batch
from pipeline.ledger import (
    COUNTER_KEYS,
    Ledger,
    count_outcomes,
    merge_reject_samples,
    sample_rejects,
    sum_counters,
)
from pipeline.pii import PIIStage
from pipeline.quality import C4Filter, FineWebFilter, GopherQualityFilter, GopherRepetitionFilter
from pipeline.shards import FORMAT_VERSION, ShardWriterFn, dtype_for_vocab
from pipeline.stage import Stage, apply_stages
from pipeline.store import DatasetStore, atomic_write_json, atomic_write_text, staging_dir
from pipeline.tokenizer import (
    EOS_TOKEN,
    load_tokenizer,
    save_tokenizer,
    train_bpe,
    training_fingerprint,
)

__all__ = ["DataResult", "build_stages", "choose_validation", "run_data"]

log = logging.getLogger(__name__)


@dataclass
class DataResult:
    """What a data run produced."""

    version: str
    version_dir: Path
    tokenizer_path: Path
    ledger: Ledger
    run_dir: Path
    stats: dict = field(default_factory=dict)
    reject_samples: list[dict] = field(default_factory=list)


def build_stages(cfg: DataConfig) -> list[Stage]:
    """The per-document stages of the job, in order (the quality filters in FineWeb's order)."""
    stages: list[Stage] = [
        ExtractStage(**cfg.extract.model_dump()),
        LengthFilter(min_words=cfg.filter.min_words, max_words=cfg.filter.max_words),
        LanguageFilter(languages=cfg.filter.languages, min_score=cfg.filter.min_language_score),
    ]
    quality = cfg.quality
    for enabled, stage_class, stage_cfg in (
        (quality.gopher_repetition.enabled, GopherRepetitionFilter, quality.gopher_repetition),
        (quality.gopher_quality.enabled, GopherQualityFilter, quality.gopher_quality),
        (quality.c4.enabled, C4Filter, quality.c4),
        (quality.fineweb.enabled, FineWebFilter, quality.fineweb),
    ):
        if enabled:
            stages.append(stage_class(stage_cfg, exempt_sources=quality.exempt_sources))
    if cfg.decontam.enabled:
        texts = load_eval_texts(cfg.decontam.texts or [], cfg.decontam.files)
        stages.append(DecontamStage(texts, ngram_words=cfg.decontam.ngram_words))
    if cfg.pii.emails or cfg.pii.ip_addresses:
        stages.append(PIIStage(emails=cfg.pii.emails, ip_addresses=cfg.pii.ip_addresses))
    return stages


def choose_validation(doc_chars: dict[str, int], fraction: float) -> frozenset[str]:
    """Hold out at most ``fraction`` of the text (by characters) for validation.

    Documents are considered in the order of a hash of their id, so the choice does not depend
    on input order, and a whole document always lands on one side. A document that would take
    the held-out text past the budget is skipped, so one long book cannot swallow the split.
    At least one document is held out (the shortest, if none fits the budget), and at least one
    is left for training.
    """
    if len(doc_chars) < 2:
        raise InputError(
            f"only {len(doc_chars)} document(s) survived the filters; at least 2 are needed to "
            "hold one out for validation (add inputs or relax data.filter)"
        )
    ranked = sorted(doc_chars, key=lambda d: hashlib.sha1(d.encode()).hexdigest())
    budget = fraction * sum(doc_chars.values())
    val, held = [], 0
    for doc_id in ranked:
        if held + doc_chars[doc_id] <= budget and len(val) < len(ranked) - 1:
            val.append(doc_id)
            held += doc_chars[doc_id]
    if not val:
        val = [min(ranked, key=lambda d: (doc_chars[d], ranked.index(d)))]
    return frozenset(val)


def _counter_sums(batch: pa.Table) -> pa.Table:
    from pipeline.ledger import counter_sums

    return counter_sums(batch, COUNTER_KEYS)


def _id_and_length(batch: pa.Table) -> pa.Table:
    return pa.table({"id": batch["id"], "n_chars": pc.utf8_length(batch["text"])})


def _kept_only(batch: pa.Table) -> pa.Table:
    return batch.filter(pc.is_null(batch["drop_reason"])).drop_columns(["raw"])


def _dropped_only(batch: pa.Table) -> pa.Table:
    return batch.filter(pc.is_valid(batch["drop_reason"])).drop_columns(["raw"])


def run_data(
    cfg: DataConfig,
    store: DatasetStore,
    run: str,
    *,
    concurrency: int = 2,
) -> DataResult:
    """Run the whole data side for one run name and commit a dataset version."""
    import ray

    t0 = time.time()
    run_dir = store.run_dir(run)
    run_dir.mkdir(parents=True, exist_ok=True)

    specs: list = list(cfg.inputs)
    crawl_stats = None
    if cfg.crawl is not None:
        from pipeline.crawl import run_crawl

        # Crawled pages land as WARC files in the store and are read like any other archive.
        crawl = run_crawl(cfg.crawl, store.root / "raw" / "crawl")
        crawl_stats = crawl.stats
        specs += [(str(path), "warc") for path in crawl.warc_files]
    files = discover_inputs(specs)
    if not files:
        raise FileNotFoundError(
            f"nothing to read: the crawl stored no pages ({crawl_stats}) and no inputs are set"
        )
    log.info("data: %d inputs", len(files))
    inputs = [f.to_row() for f in files]

    # Read and the per-document stages stream through Ray Data; materialise once before dedup
    # so extraction is not recomputed by dedup's passes.
    read_stats = ray.remote(ReadStats).options(num_cpus=0).remote()
    ds = ray.data.from_items(inputs, override_num_blocks=max(1, min(len(inputs), 64)))
    ds = ds.map_batches(
        read_batch, batch_size=1, batch_format="pyarrow", fn_kwargs={"stats_actor": read_stats}
    )
    stages = build_stages(cfg)
    # No more actors than blocks: Ray warns about idle ones otherwise.
    ds = apply_stages(
        ds, stages, concurrency=min(concurrency, len(inputs)), batch_size=cfg.batch_size
    ).materialize()
    reader_stats = ray.get(read_stats.totals.remote())
    ray.kill(read_stats)
    t_stages = time.time()

    stage_names = [READ_STAGE] + [s.name for s in stages]
    dedup_stats: dict = {}
    dedup_keys = None
    if cfg.dedup.enabled:
        bands, rows = cfg.dedup.lsh()
        dedup = run_dedup(
            ds,
            num_perm=cfg.dedup.num_perm,
            bands=bands,
            rows=rows,
            shingle_size=cfg.dedup.shingle_size,
            verify_threshold=cfg.dedup.verify_threshold(),
            concurrency=concurrency,
        )
        ds, dedup_keys, dedup_stats = dedup.documents, dedup.keys, dedup.stats
        stage_names.append("dedup")
    t_dedup = time.time()

    counts = ds.map_batches(count_outcomes, batch_format="pyarrow").take_all()
    ledger = Ledger.from_counts(counts, stage_names)
    # Written before anything can fail for lack of documents, so a user can see why.
    atomic_write_json(run_dir / "ledger.json", ledger.to_dict())
    counters = sum_counters(ds.map_batches(_counter_sums, batch_format="pyarrow").take_all())
    reject_samples = merge_reject_samples(
        ds.map_batches(sample_rejects, batch_format="pyarrow").take_all()
    )

    # Stage outputs: kept documents and rejects as Parquet, each renamed into place whole.
    kept = ds.map_batches(_kept_only, batch_format="pyarrow").materialize()
    for name, part in (
        ("documents", kept),
        ("rejects", ds.map_batches(_dropped_only, batch_format="pyarrow")),
    ):
        with staging_dir(run_dir / name) as tmp:
            part.write_parquet(str(tmp))

    doc_chars = {
        r["id"]: r["n_chars"]
        for r in kept.map_batches(_id_and_length, batch_format="pyarrow").take_all()
    }
    kept_ids = list(doc_chars)
    try:
        val_ids = choose_validation(doc_chars, cfg.shards.val_fraction)
    except InputError as exc:
        raise InputError(f"{exc}. Ledger of this run:\n{ledger.format()}") from None

    # Tokenizer: reuse the stored one when the same documents and settings trained it before.
    tok_settings = cfg.tokenizer.model_dump()
    fingerprint = training_fingerprint(kept_ids, tok_settings)
    tok_dir = store.tokenizer_dir(fingerprint)
    tokenizer_path = tok_dir / "tokenizer.json"
    if tokenizer_path.exists():
        tokenizer = load_tokenizer(tokenizer_path)
        log.info("tokenizer: reusing %s", tok_dir)
    else:
        texts = (row["text"] for row in kept.select_columns(["text"]).iter_rows())
        tokenizer = train_bpe(
            texts, vocab_size=cfg.tokenizer.vocab_size, min_frequency=cfg.tokenizer.min_frequency
        )
        save_tokenizer(
            tokenizer,
            tok_dir,
            {"fingerprint": fingerprint, "settings": tok_settings, "documents": len(kept_ids)},
        )
    t_tok = time.time()
    eos_id = tokenizer.token_to_id(EOS_TOKEN)
    vocab_size = tokenizer.get_vocab_size()

    parent = store.current_version(cfg.dataset_name)
    with store.new_version(cfg.dataset_name) as (version, tmp):
        shard_rows = kept.map_batches(
            ShardWriterFn,
            fn_constructor_args=(tokenizer.to_str(), str(tmp), val_ids, eos_id),
            batch_format="pyarrow",
            batch_size=cfg.batch_size,
            compute=ray.data.ActorPoolStrategy(size=max(1, min(concurrency, kept.num_blocks()))),
        ).take_all()
        shard_rows.sort(key=lambda r: (r["split"], r["name"]))
        splits = {
            split: {
                "tokens": sum(r["tokens"] for r in shard_rows if r["split"] == split),
                "documents": sum(r["documents"] for r in shard_rows if r["split"] == split),
                "shards": sum(1 for r in shard_rows if r["split"] == split),
            }
            for split in ("train", "val")
        }
        manifest = {
            "format_version": FORMAT_VERSION,
            "dataset": cfg.dataset_name,
            "version": version,
            "parent": parent.name if parent else None,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "run": run,
            "dtype": dtype_for_vocab(vocab_size).name,
            "tokenizer": {
                "fingerprint": fingerprint,
                "path": os.path.relpath(tokenizer_path, store.root),
                "vocab_size": vocab_size,
                "eos_token": EOS_TOKEN,
                "eos_id": eos_id,
            },
            "splits": splits,
            "shards": shard_rows,
            "inputs": [input_identity(f) for f in files],
            "config": cfg.model_dump(),
            "ledger": ledger.to_dict(),
        }
        if dedup_keys is not None:
            # The bucket keys of this version's documents, so a later refresh dedupes against
            # them without recomputing their signatures (pipeline/dedup.py, DedupIndex).
            dedup_keys.write_parquet(str(tmp / DedupIndex.FOLDER))
            manifest["dedup_keys"] = {
                "folder": DedupIndex.FOLDER,
                "rows": sum(pq.read_metadata(p).num_rows for p in (tmp / DedupIndex.FOLDER).glob("*.parquet")),
            }
        atomic_write_json(tmp / "manifest.json", manifest)
    version_dir = store.dataset_dir(cfg.dataset_name) / version
    t_end = time.time()

    stats = {
        "input_files": len(files),
        "read": reader_stats,
        **({"crawl": crawl_stats} if crawl_stats is not None else {}),
        "counters": counters,
        "dedup": dedup_stats,
        "splits": splits,
        "seconds": {
            "read_extract_filter": round(t_stages - t0, 2),
            "dedup": round(t_dedup - t_stages, 2),
            "tokenizer": round(t_tok - t_dedup, 2),
            "total": round(t_end - t0, 2),
        },
        "dataset_version": str(version_dir),
    }
    atomic_write_text(
        run_dir / "rejects_sample.jsonl",
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in reject_samples),
    )
    atomic_write_json(run_dir / "stats.json", stats)
    return DataResult(version, version_dir, tokenizer_path, ledger, run_dir, stats, reject_samples)
