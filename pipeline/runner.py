"""The data job: read, extract, filter, dedup, tokenize and shard, as Ray Data stages.

:func:`run_data` takes a validated :class:`~pipeline.config.DataConfig` and a store, runs every
stage on the Ray instance the caller connected to (local or a cluster; stage code does not
change), and commits a new dataset version. It returns where things are and the ledger.
"""

from __future__ import annotations

import contextlib
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
from pipeline.read import READ_STAGE, ReadStats, discover_inputs, input_identity, read_batch
from pipeline.shards import (
    FORMAT_VERSION,
    DocumentEncoderFn,
    assign_shards,
    dtype_for_vocab,
    id_space,
    plan_shards,
    write_shard_group,
)
from pipeline.stage import Stage, apply_stages
from pipeline.store import DatasetStore, atomic_write_json, atomic_write_text, staging_dir
from pipeline.tokenizer import (
    EOS_TOKEN,
    file_tokenizer_id,
    load_tokenizer,
    read_given_tokenizer,
    save_tokenizer,
    train_bpe,
    training_fingerprint,
)

__all__ = [
    "DataResult",
    "Processed",
    "build_stages",
    "choose_validation",
    "prepare_tokenizer",
    "process_inputs",
    "resolve_inputs",
    "run_data",
    "split_totals",
    "write_dedup_keys",
    "write_shards",
]

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


@dataclass
class Processed:
    """The documents of one set of inputs after every stage, dedup included, and their counts."""

    kept: object  # ray.data.Dataset of kept documents (no raw bytes)
    ledger: Ledger
    doc_chars: dict[str, int]  # kept document id -> characters, in dataset order
    counters: dict
    reject_samples: list[dict]
    dedup_keys: object | None  # ray.data.Dataset of KEY_SCHEMA rows for the kept documents
    stats: dict


def process_inputs(
    cfg: DataConfig,
    files: list,
    run_dir: Path,
    *,
    concurrency: int,
    index: DedupIndex | None = None,
) -> Processed:
    """Read, extract, filter and dedup ``files``; write the run's stage outputs.

    ``index`` holds the dedup keys of earlier versions (a refresh): documents duplicating one of
    them are dropped. Writes ledger.json, documents/ and rejects/ under ``run_dir``.
    """
    import ray

    t0 = time.time()
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
            word_split=cfg.dedup.word_split,
            verify_threshold=cfg.dedup.verify_threshold(),
            index=index,
            concurrency=concurrency,
            partition_rows=cfg.dedup.partition_rows,
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
    stats = {
        "input_files": len(files),
        "read": reader_stats,
        "counters": counters,
        "dedup": dedup_stats,
        "seconds": {
            "read_extract_filter": round(t_stages - t0, 2),
            "dedup": round(t_dedup - t_stages, 2),
        },
    }
    return Processed(kept, ledger, doc_chars, counters, reject_samples, dedup_keys, stats)


def prepare_tokenizer(cfg: DataConfig, store: DatasetStore, processed: Processed):
    """The run's tokenizer: the one named by ``cfg.tokenizer.path``, or a trained BPE.

    A trained tokenizer is reused from the store when the same documents and settings trained
    it before. Returns the tokenizer, its tokenizer.json path in the store, and the manifest's
    description of it.
    """
    from tokenizers import Tokenizer

    tcfg = cfg.tokenizer
    if tcfg.path is not None:
        text, eos_token = read_given_tokenizer(tcfg.path, tcfg.eos_token)
        fingerprint = file_tokenizer_id(text)
        tok_dir = store.tokenizer_dir(fingerprint)
        tokenizer_path = tok_dir / "tokenizer.json"
        if not tokenizer_path.exists():
            atomic_write_text(tokenizer_path, text)
            atomic_write_json(
                tok_dir / "meta.json",
                {"fingerprint": fingerprint, "source": str(tcfg.path), "eos_token": eos_token},
            )
        tokenizer = Tokenizer.from_str(text)
    else:
        eos_token = tcfg.eos_token or EOS_TOKEN
        fingerprint = training_fingerprint(processed.doc_chars, tcfg.model_dump())
        tok_dir = store.tokenizer_dir(fingerprint)
        tokenizer_path = tok_dir / "tokenizer.json"
        if tokenizer_path.exists():
            tokenizer = load_tokenizer(tokenizer_path)
            log.info("tokenizer: reusing %s", tok_dir)
        else:
            texts = (row["text"] for row in processed.kept.select_columns(["text"]).iter_rows())
            tokenizer = train_bpe(
                texts,
                vocab_size=tcfg.vocab_size,
                min_frequency=tcfg.min_frequency,
                eos_token=eos_token,
                special_tokens=[t for t in tcfg.special_tokens if t != eos_token],
            )
            save_tokenizer(
                tokenizer,
                tok_dir,
                {
                    "fingerprint": fingerprint,
                    "settings": tcfg.model_dump(),
                    "documents": len(processed.doc_chars),
                },
            )
    vocab_size = id_space(tokenizer)
    info = {
        "fingerprint": fingerprint,
        "path": os.path.relpath(tokenizer_path, store.root),
        "vocab_size": vocab_size,
        "eos_token": eos_token,
        "eos_id": tokenizer.token_to_id(eos_token),
        # Checked by `kiln data verify`: the file the shards were encoded with.
        "sha256": hashlib.sha256(tokenizer_path.read_bytes()).hexdigest(),
        "special_tokens": sorted(
            t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special
        ),
    }
    return tokenizer, tokenizer_path, info


def write_shards(
    kept,
    tokenizer_json: str,
    folder: Path,
    val_ids: frozenset[str],
    eos_id: int,
    *,
    target_tokens: int,
    batch_size: int,
    concurrency: int,
) -> list[dict]:
    """Tokenize the kept documents into shards of about ``target_tokens`` in ``folder``.

    Ray workers tokenize and Ray workers write (pipeline/shards.py says how): every shard but
    the last of a split reaches the target, and the bytes depend only on the documents, not on
    the number of workers or blocks. One manifest row a shard, sorted by split and name.
    """
    import ray
    from ray.data.context import ShuffleStrategy

    encoded = kept.map_batches(
        DocumentEncoderFn,
        fn_constructor_args=(tokenizer_json, val_ids, eos_id),
        batch_format="pyarrow",
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=max(1, min(concurrency, kept.num_blocks()))),
    ).materialize()  # tokenized once; the plan and the writers read the same rows
    sizes = [
        b
        for b in encoded.select_columns(["split", "id", "n_tokens"]).iter_batches(
            batch_format="pyarrow", batch_size=None
        )
        if b.num_rows
    ]
    if not sizes:
        return []
    starts = plan_shards(pa.concat_tables(sizes), target_tokens)
    log.info("shards: %d of about %d tokens", len(starts), target_tokens)
    planned = encoded.map_batches(
        assign_shards, fn_kwargs={"starts": starts}, batch_format="pyarrow"
    )
    # A sort brings each shard's rows together. Ray's default hash shuffle starts a pool of
    # aggregator actors first, which costs more than it saves for a few large groups; the
    # setting is this dataset's own copy of the context, nothing else changes.
    planned.context.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    rows = (
        planned.groupby("shard")
        .map_groups(write_shard_group, fn_kwargs={"folder": str(folder)}, batch_format="pyarrow")
        .take_all()
    )
    rows.sort(key=lambda r: (r["split"], r["name"]))
    return rows


def split_totals(shard_rows: list[dict]) -> dict:
    return {
        split: {
            "tokens": sum(r["tokens"] for r in shard_rows if r["split"] == split),
            "documents": sum(r["documents"] for r in shard_rows if r["split"] == split),
            "shards": sum(1 for r in shard_rows if r["split"] == split),
        }
        for split in ("train", "val")
    }


def resolve_inputs(cfg: DataConfig, store: DatasetStore) -> tuple[list, dict | None]:
    """Crawl first if the config says so, then expand every input; (files, crawl stats)."""
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
        if cfg.crawl is not None and not cfg.inputs:
            why = f"the crawl stored no pages ({crawl_stats}) and no inputs are set"
        else:
            listed = ", ".join(str(spec.path) for spec in cfg.inputs) or "none"
            why = f"no readable file in the inputs ({listed})"
            if cfg.crawl is not None:
                why += f" and the crawl stored no pages ({crawl_stats})"
        raise FileNotFoundError(f"nothing to read: {why}; check data.inputs and their kind")
    return files, crawl_stats


def write_dedup_keys(dedup_keys, folder: Path) -> dict:
    """Store the bucket keys of a version's new documents in its folder; the manifest entry."""
    # The bucket keys of this version's documents, so a later refresh dedupes against them
    # without recomputing their signatures (pipeline/dedup.py, DedupIndex).
    dedup_keys.write_parquet(str(folder / DedupIndex.FOLDER))
    return {
        "folder": DedupIndex.FOLDER,
        "rows": sum(
            pq.read_metadata(p).num_rows for p in (folder / DedupIndex.FOLDER).glob("*.parquet")
        ),
    }


def run_data(
    cfg: DataConfig,
    store: DatasetStore,
    run: str,
    *,
    concurrency: int = 2,
    hold_lock: bool = True,
) -> DataResult:
    """Run the whole data side for one run name and commit a dataset version.

    The commit takes the dataset's lock (:meth:`DatasetStore.lock`) unless ``hold_lock`` is
    False, for a caller that holds it already (a refresh building a first version).
    """
    t0 = time.time()
    run_dir = store.run_dir(run)
    run_dir.mkdir(parents=True, exist_ok=True)

    files, crawl_stats = resolve_inputs(cfg, store)
    log.info("data: %d inputs", len(files))
    processed = process_inputs(cfg, files, run_dir, concurrency=concurrency)
    ledger = processed.ledger
    t_dedup = time.time()
    try:
        val_ids = choose_validation(processed.doc_chars, cfg.shards.val_fraction)
    except InputError as exc:
        raise InputError(f"{exc}. Ledger of this run:\n{ledger.format()}") from None

    tokenizer, tokenizer_path, tok_info = prepare_tokenizer(cfg, store, processed)
    t_tok = time.time()

    with store.lock(cfg.dataset_name) if hold_lock else contextlib.nullcontext():
        store.discard_uncommitted(cfg.dataset_name)
        parent = store.current_version(cfg.dataset_name)
        version, splits = _commit_build(
            cfg, store, run, files, processed, tokenizer, tok_info, val_ids, parent, concurrency
        )
    version_dir = store.dataset_dir(cfg.dataset_name) / version
    t_end = time.time()

    stats = {
        **processed.stats,
        **({"crawl": crawl_stats} if crawl_stats is not None else {}),
        "splits": splits,
        "dataset_version": str(version_dir),
    }
    stats["seconds"].update(tokenizer=round(t_tok - t_dedup, 2), total=round(t_end - t0, 2))
    atomic_write_text(
        run_dir / "rejects_sample.jsonl",
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in processed.reject_samples),
    )
    atomic_write_json(run_dir / "stats.json", stats)
    return DataResult(
        version, version_dir, tokenizer_path, ledger, run_dir, stats, processed.reject_samples
    )


def _commit_build(
    cfg: DataConfig,
    store: DatasetStore,
    run: str,
    files: list,
    processed: Processed,
    tokenizer,
    tok_info: dict,
    val_ids: frozenset[str],
    parent: Path | None,
    concurrency: int,
) -> tuple[str, dict]:
    """Write a fresh version (all shards from this run's documents) and make it current."""
    with store.new_version(cfg.dataset_name) as (version, tmp):
        shard_rows = write_shards(
            processed.kept,
            tokenizer.to_str(),
            tmp,
            val_ids,
            tok_info["eos_id"],
            target_tokens=cfg.shards.target_tokens,
            batch_size=cfg.batch_size,
            concurrency=concurrency,
        )
        splits = split_totals(shard_rows)
        manifest = {
            "format_version": FORMAT_VERSION,
            "dataset": cfg.dataset_name,
            "version": version,
            "parent": parent.name if parent else None,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "run": run,
            "kind": "build",
            "dtype": dtype_for_vocab(tok_info["vocab_size"]).name,
            "tokenizer": tok_info,
            "splits": splits,
            "shards": shard_rows,
            "inputs": [input_identity(f) for f in files],
            "config": cfg.model_dump(),
            "ledger": processed.ledger.to_dict(),
        }
        if processed.dedup_keys is not None:
            manifest["dedup_keys"] = {
                **write_dedup_keys(processed.dedup_keys, tmp),
                "settings": cfg.dedup.key_settings(),  # what a refresh's keys must match
            }
        atomic_write_json(tmp / "manifest.json", manifest)
    return version, splits
