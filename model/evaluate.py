"""Evaluation of an exported checkpoint: losses, generation tests and suites, cloze, choice.

- Validation loss: mean next-token cross-entropy over the held-out split's token stream (as
  training logs it), and per source over whole held-out documents (model/scores.py).
- Generation tests: each of ``eval.prompts`` continued greedily and by seeded sampling; each
  continuation must end with the end-of-document token or after exactly ``max_new_tokens``.
- Suites: YAML generation suites (model/suites.py), per-test results and a pass rate.
- Cloze: LAMBADA-style last-word prediction on held-out book passages, against chance.
- Multiple choice: HellaSwag-style local task files, accuracy (summed and per-byte
  log-likelihood) against chance.

Every result carries its lineage: the checkpoint, the training run, the dataset version and
the manifest that leads back to the input files and, through each shard's ``.docs.jsonl``, to
every document's URL. :func:`format_report` renders the same results as Markdown.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from model.checkpoint import load_final
from model.data import validation_windows
from model.generate import generate_batch
from model.scores import (
    choice_accuracy,
    cloze_accuracy,
    cloze_passages,
    load_choice_items,
    loss_by_source,
)
from model.suites import load_suite, run_suite
from pipeline.shards import eos_token_of, read_manifest
from pipeline.tokenizer import EOS_TOKEN

__all__ = [
    "evaluate",
    "format_report",
    "generation_tests",
    "in_loop_eval",
    "lineage",
    "resolve_eval_file",
    "validation_loss",
]

_JOBS = Path(__file__).resolve().parent.parent / "jobs"


def resolve_eval_file(name: str, kind: str) -> Path:
    """A suite or task named by path, or by the name of one kiln ships (``sample_heldout``
    for jobs/suites/sample_heldout.yaml, ``sample_choice`` for jobs/tasks/sample_choice.jsonl)."""
    path = Path(name)
    if path.exists():
        return path
    folder, suffix = {"suite": ("suites", ".yaml"), "task": ("tasks", ".jsonl")}[kind]
    shipped = _JOBS / folder / (name if name.endswith(suffix) else name + suffix)
    if shipped.exists():
        return shipped
    raise FileNotFoundError(f"no {kind} file {name!r} (looked for {path} and {shipped})")


@torch.no_grad()
def validation_loss(
    model, version_dir: str | Path, *, batch_size: int = 8, max_windows: int = 64
) -> dict:
    """Mean loss over non-overlapping windows of the held-out token stream (summed over tokens,
    then divided, so the batch size does not change it)."""
    device = next(model.parameters()).device
    total_loss, total_tokens = 0.0, 0
    for x, y in validation_windows(version_dir, model.config.block_size, batch_size, max_windows):
        logits, _ = model(x.to(device))
        loss = F.cross_entropy(
            logits.float().reshape(-1, logits.size(-1)), y.to(device).reshape(-1), reduction="sum"
        )
        total_loss += loss.item()
        total_tokens += y.numel()
    if total_tokens == 0:
        raise ValueError(f"validation split of {version_dir} has no tokens to score")
    mean = total_loss / total_tokens
    return {"loss": mean, "perplexity": math.exp(min(mean, 50)), "tokens": total_tokens}


def generation_tests(
    model,
    tokenizer,
    prompts: list[str],
    *,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    seed: int,
    modes: tuple[str, ...] = ("greedy", "sampled"),
    eos_token: str = EOS_TOKEN,
) -> dict:
    """Each prompt continued in each mode, as one batch per mode."""
    eos_id = tokenizer.token_to_id(eos_token)
    context = model.config.block_size
    ids = [tokenizer.encode(p).ids[-(context - max_new_tokens) :] for p in prompts]
    cases = []
    for mode in modes:
        sampled = mode == "sampled"
        gens = generate_batch(
            model,
            ids,
            max_new_tokens=max_new_tokens,
            eos_id=eos_id,
            temperature=temperature if sampled else 0.0,
            top_k=top_k if sampled else None,
            seed=seed if sampled else None,
            decode=tokenizer.decode,
        )
        for prompt, gen in zip(prompts, gens, strict=True):
            ended_right = (gen.stop_reason == "eos" and gen.tokens[-1] == eos_id) or (
                gen.stop_reason == "max_new_tokens" and len(gen.tokens) == max_new_tokens
            )
            cases.append(
                {
                    "prompt": prompt,
                    "mode": mode,
                    "continuation": gen.text,
                    "new_tokens": len(gen.tokens),
                    "stop_reason": gen.stop_reason,
                    "passed": bool(ended_right and eos_id not in gen.tokens[:-1]),
                }
            )
    passed = sum(c["passed"] for c in cases)
    return {"cases": cases, "passed": passed, "total": len(cases), "pass_rate": passed / len(cases)}


@torch.no_grad()
def in_loop_eval(model, tokenizer, version_dir: str | Path, eval_cfg: dict) -> dict:
    """The cheap part of evaluation, for use between training steps: validation loss and greedy
    continuations of the first ``in_loop_prompts`` prompts. Under ZeRO-3 every rank must call
    it (each forward gathers the partitioned weights); it uses no random numbers, so training
    continues exactly as it would have without it."""
    was_training = model.training
    model.eval()
    try:
        val = validation_loss(
            model,
            version_dir,
            batch_size=eval_cfg.get("batch_size", 16),
            max_windows=eval_cfg["val_max_windows"],
        )
        prompts = eval_cfg["prompts"][: eval_cfg.get("in_loop_prompts", 4)]
        gen = None
        if prompts:
            gen = generation_tests(
                model,
                tokenizer,
                prompts,
                max_new_tokens=min(eval_cfg["max_new_tokens"], model.config.block_size - 16),
                temperature=0.0,
                top_k=None,
                seed=0,
                modes=("greedy",),
                eos_token=eos_token_of(version_dir),
            )
    finally:
        model.train(was_training)
    return {"validation": val, "generation": gen}


def lineage(final_dir: str | Path, meta: dict, version_dir: str | Path) -> dict:
    """Where a result comes from: checkpoint, training run, dataset version, and the way back
    to the pages (the manifest lists the inputs; each shard's .docs.jsonl each document's URL)."""
    version_dir = Path(version_dir).resolve()
    manifest = read_manifest(version_dir)
    return {
        "checkpoint": str(Path(final_dir).resolve()),
        "checkpoint_steps": meta.get("steps"),
        "training_run": meta.get("run"),
        "trained_on": meta.get("dataset_dir"),
        "dataset": {
            "dir": str(version_dir),
            "version": manifest["version"],
            "data_run": manifest.get("run"),
            "parent": manifest.get("parent"),
            "manifest": str(version_dir / "manifest.json"),
            "tokenizer": manifest["tokenizer"].get("fingerprint"),
            "inputs": len(manifest.get("inputs", [])),
            "documents_listing": sorted(
                f"{s['name']}.docs.jsonl" for s in manifest["shards"] if s["split"] == "val"
            ),
        },
    }


def evaluate(final_dir: str | Path, version_dir: str | Path | None, eval_cfg: dict) -> dict:
    """Score an exported checkpoint on a dataset version (default: the one it trained on)."""
    started = time.perf_counter()
    model, tokenizer, meta = load_final(final_dir)
    version_dir = Path(version_dir or meta["dataset_dir"])
    block = model.config.block_size
    batch = eval_cfg.get("batch_size", 16)
    eos_token = eos_token_of(version_dir)
    eos_id = tokenizer.token_to_id(eos_token)
    where = lineage(final_dir, meta, version_dir)
    results: dict = {
        **where,
        "validation": validation_loss(
            model, version_dir, batch_size=batch, max_windows=eval_cfg["val_max_windows"]
        ),
        "validation_by_source": loss_by_source(
            model, version_dir, batch_size=batch, max_tokens=eval_cfg["val_max_windows"] * block
        ),
        "generation": generation_tests(
            model,
            tokenizer,
            eval_cfg["prompts"],
            max_new_tokens=min(eval_cfg["max_new_tokens"], block - 16),
            temperature=eval_cfg["temperature"],
            top_k=eval_cfg["top_k"],
            seed=eval_cfg["seed"],
            eos_token=eos_token,
        ),
    }
    results["suites"] = {}
    for name in eval_cfg.get("suites", []):
        suite = load_suite(resolve_eval_file(name, "suite"))
        results["suites"][suite.name] = run_suite(
            model, tokenizer, suite, eos_id=eos_id, batch_size=batch
        )
    items, used = cloze_passages(
        tokenizer,
        version_dir,
        n_items=eval_cfg["cloze_items"],
        context_tokens=min(eval_cfg["cloze_context_tokens"], block - 8),
        sources=eval_cfg.get("cloze_sources", ["book"]),
    )
    results["cloze"] = {**cloze_accuracy(model, tokenizer, items, batch_size=batch), "text": used}
    results["multiple_choice"] = {}
    for name in eval_cfg.get("choice_tasks", []):
        path = resolve_eval_file(name, "task")
        results["multiple_choice"][path.stem] = choice_accuracy(
            model, tokenizer, load_choice_items(path), batch_size=batch
        )
    results["config"] = eval_cfg
    results["seconds"] = round(time.perf_counter() - started, 1)
    return results


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def format_report(results: dict) -> str:
    """The results as a Markdown page a person reads: lineage, then each score with chance."""
    d = results["dataset"]
    lines = [
        f"# Evaluation of `{results['checkpoint']}`",
        "",
        f"- training run: `{results.get('training_run')}`, step {results.get('checkpoint_steps')}",
        f"- dataset: version `{d['version']}` at `{d['dir']}` (data run `{d.get('data_run')}`, "
        f"tokenizer `{d.get('tokenizer')}`, {d.get('inputs')} inputs in `manifest.json`; "
        f"held-out documents and their URLs in {', '.join(f'`{n}`' for n in d['documents_listing'])})",
        "",
        "## Validation loss",
        "",
        "| text | tokens | loss | perplexity |",
        "|---|---:|---:|---:|",
    ]
    v = results["validation"]
    lines.append(f"| held-out stream | {v['tokens']:,} | {v['loss']:.4f} | {v['perplexity']:.1f} |")
    for source, s in results["validation_by_source"]["by_source"].items():
        lines.append(
            f"| source `{source}` | {s['tokens']:,} | {s['loss']:.4f} | {s['perplexity']:.1f} |"
        )
    c = results["cloze"]
    lines += ["", "## Scores against chance", "", "| score | items | accuracy | chance |"]
    lines.append("|---|---:|---:|---:|")
    lines.append(
        f"| cloze (last word, {c.get('text', '')}) | {c['items']} | {_pct(c.get('accuracy'))} "
        f"| {_pct(c.get('chance'))} |"
    )
    for name, m in results.get("multiple_choice", {}).items():
        if m.get("skipped_too_long"):
            lines.append(
                f"| {name}: items skipped, an ending longer than the context "
                f"| {m['skipped_too_long']} | | |"
            )
        lines.append(
            f"| {name}: summed log-likelihood | {m['items']} | {_pct(m['accuracy'])} "
            f"| {_pct(m['chance'])} |"
        )
        lines.append(
            f"| {name}: per-byte log-likelihood | {m['items']} | {_pct(m['accuracy_norm'])} "
            f"| {_pct(m['chance'])} |"
        )
    g = results["generation"]
    lines += [
        "",
        "## Generation",
        "",
        f"Fixed prompts: {g['passed']}/{g['total']} ended properly (end-of-document or "
        "exactly max_new_tokens).",
        "",
    ]
    for name, s in results.get("suites", {}).items():
        by_lang = ", ".join(f"{k} {_pct(v)}" for k, v in s["pass_rate_by_language"].items())
        lines += [
            f"### Suite `{name}`: {s['passed']}/{s['total']} passed ({_pct(s['pass_rate'])}; "
            f"{by_lang})",
            "",
            "| test | passed | continuation | failed checks |",
            "|---|---|---|---|",
        ]
        for t in s["tests"]:
            failed = "; ".join(
                f"{c['type']}: {c['detail']}" for c in t["checks"] if not c["passed"]
            )
            text = (t["continuation"] or "").replace("|", "\\|").replace("\n", " ")[:80]
            lines.append(f"| {t['name']} | {'yes' if t['passed'] else 'no'} | {text} | {failed} |")
        lines.append("")
    lines.append(f"_{results.get('seconds', '?')} s_")
    return "\n".join(lines) + "\n"
