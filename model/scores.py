"""Likelihood scores of a checkpoint: loss per source, cloze and multiple choice.

All three rest on one primitive, :func:`loglikelihoods`: the summed log-probability of a
continuation's tokens given a context, and whether greedy decoding would have written exactly
those tokens. Requests are batched with right padding, which a causal model never attends to,
and every score is a sum over items divided at the end, so the batch size changes nothing but
speed (tests/model/test_scores.py checks it).

- Loss per source: next-token cross-entropy over each held-out document (its end-of-document
  token included), summed per source (book, html, warc, ...), with perplexity.
- Cloze: LAMBADA-style (Paperno et al., 2016) last-word prediction on held-out book passages;
  an item is right when greedy decoding writes exactly the missing word. Chance is the share
  of the most frequent target word (always guessing it).
- Multiple choice: HellaSwag-style (Zellers et al., 2019) endings ranked by summed
  log-likelihood (``accuracy``) and by log-likelihood per byte of the ending
  (``accuracy_norm``, which stops long endings losing for their length, as lm-evaluation-
  harness's acc_norm does); chance is the mean of 1 / number of choices (25% for four).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.shards import read_manifest

__all__ = [
    "choice_accuracy",
    "cloze_accuracy",
    "heldout_documents",
    "load_choice_items",
    "loglikelihoods",
    "loss_by_source",
]


def heldout_documents(version_dir: str | Path, split: str = "val") -> list[tuple[dict, np.ndarray]]:
    """(record, tokens) for each document of a split, in shard order; the record holds the
    document's id, source and URL from the shard's ``.docs.jsonl``; tokens end with the
    end-of-document token."""
    version_dir = Path(version_dir)
    manifest = read_manifest(version_dir)
    dtype = np.dtype(manifest["dtype"]).newbyteorder("<")
    out = []
    for shard in manifest["shards"]:
        if shard["split"] != split:
            continue
        tokens = np.memmap(version_dir / f"{shard['name']}.bin", dtype=dtype, mode="r")
        idx = np.fromfile(version_dir / f"{shard['name']}.idx", dtype="<i8")
        lines = (version_dir / f"{shard['name']}.docs.jsonl").read_text().splitlines()
        if len(lines) != len(idx) - 1:
            raise ValueError(
                f"{shard['name']}.docs.jsonl lists {len(lines)} documents, its .idx {len(idx) - 1}"
            )
        for line, start, end in zip(lines, idx[:-1], idx[1:], strict=True):
            out.append((json.loads(line), np.asarray(tokens[start:end], dtype=np.int64)))
    return out


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def loglikelihoods(
    model, requests: Sequence[tuple[Sequence[int], Sequence[int]]], *, batch_size: int = 16
) -> list[tuple[float, bool]]:
    """For each (context, continuation) token pair: (sum of log p(continuation | context),
    whether every continuation token is the argmax). A context too long for the model keeps
    its end; a continuation longer than the context is an error."""
    block = model.config.block_size
    device = _device(model)
    rows = []
    for i, (context, continuation) in enumerate(requests):
        if not continuation:
            raise ValueError(f"request {i} has an empty continuation")
        if len(continuation) > block:
            raise ValueError(
                f"request {i}: continuation of {len(continuation)} tokens is longer than the "
                f"model's context of {block} tokens"
            )
        if not context:
            raise ValueError(f"request {i} has an empty context (give at least one token)")
        ids = (list(context) + list(continuation))[-(block + 1) :]
        rows.append((ids[:-1], ids[1:], len(continuation)))
    results: list[tuple[float, bool] | None] = [None] * len(rows)
    # Longest first, so rows of a batch have similar lengths and little padding.
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        width = max(len(rows[i][0]) for i in chunk)
        inputs = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, i in enumerate(chunk):
            inputs[r, : len(rows[i][0])] = torch.tensor(rows[i][0])
        logits, _ = model(inputs.to(device))  # (b, width, V)
        logprobs = logits.float().log_softmax(-1)
        for r, i in enumerate(chunk):
            x, y, n = rows[i]
            span = slice(len(x) - n, len(x))
            target = torch.tensor(y[-n:], device=device)
            lp = logprobs[r, span].gather(-1, target[:, None]).sum().item()
            greedy = bool((logprobs[r, span].argmax(-1) == target).all())
            results[i] = (lp, greedy)
    return results  # type: ignore[return-value]


@torch.no_grad()
def loss_by_source(
    model, version_dir: str | Path, *, batch_size: int = 8, max_tokens: int | None = None
) -> dict:
    """Mean next-token loss and perplexity of the held-out split, overall and per source.

    Each document is cut into windows of at most block_size + 1 tokens (the first token of a
    document is never predicted, having no context); ``max_tokens`` caps the tokens scored per
    source, taken in document order.
    """
    block = model.config.block_size
    windows: list[tuple[str, np.ndarray]] = []
    budget: dict[str, int] = defaultdict(int)
    for record, tokens in heldout_documents(version_dir):
        source = record.get("source") or "?"
        for start in range(0, len(tokens) - 1, block):
            if max_tokens is not None and budget[source] >= max_tokens:
                break
            window = tokens[start : start + block + 1]
            windows.append((source, window))
            budget[source] += len(window) - 1
    if not windows:
        raise ValueError(f"validation split of {version_dir} has no tokens to score")
    device = _device(model)
    loss_sum: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    order = sorted(range(len(windows)), key=lambda i: -len(windows[i][1]))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        width = max(len(windows[i][1]) for i in chunk) - 1
        x = torch.zeros((len(chunk), width), dtype=torch.long)
        y = torch.full((len(chunk), width), -100, dtype=torch.long)  # -100: padding, not scored
        for r, i in enumerate(chunk):
            w = torch.from_numpy(windows[i][1])
            x[r, : len(w) - 1], y[r, : len(w) - 1] = w[:-1], w[1:]
        logits, _ = model(x.to(device))
        per_token = F.cross_entropy(
            logits.float().transpose(1, 2), y.to(device), reduction="none", ignore_index=-100
        )  # (b, width)
        for r, i in enumerate(chunk):
            source, w = windows[i]
            loss_sum[source] += per_token[r, : len(w) - 1].double().sum().item()
            count[source] += len(w) - 1

    def entry(total: float, n: int) -> dict:
        return {"loss": total / n, "perplexity": math.exp(min(total / n, 50)), "tokens": n}

    return {
        **entry(sum(loss_sum.values()), sum(count.values())),
        "by_source": {s: entry(loss_sum[s], count[s]) for s in sorted(loss_sum)},
    }


_SENTENCE_END_WORD = re.compile(r"(?<=\s)([^\W\d_]{3,})[.!?]")


def cloze_passages(
    tokenizer,
    version_dir: str | Path,
    *,
    n_items: int,
    context_tokens: int,
    sources: Sequence[str] = ("book",),
) -> tuple[list[dict], str]:
    """Cloze items from the held-out documents of the given sources: a passage ending just
    before a sentence-final word, and that word. Falls back to every held-out document when
    none is of those sources; the second value says which text was used."""
    docs = heldout_documents(version_dir)
    chosen = [(r, t) for r, t in docs if r.get("source") in sources]
    used = f"held-out documents of source {', '.join(sources)}"
    if not chosen:
        chosen = docs
        used = f"all held-out documents (none of source {', '.join(sources)})"
    candidates = []
    for record, tokens in chosen:
        text = tokenizer.decode(tokens[:-1].tolist())
        for m in _SENTENCE_END_WORD.finditer(text):
            context = text[: m.start(1)].rstrip()
            if len(context) >= 40:
                candidates.append((record, context, m.group(1)))
    # Spread the items over all the text rather than the start of its first document.
    stride = max(1, len(candidates) // max(1, n_items))
    items = []
    for record, context, word in candidates[::stride][:n_items]:
        items.append(
            {
                "context_ids": tokenizer.encode(context).ids[-context_tokens:],
                # The byte-level pre-tokenizer splits before each space, so the word's tokens
                # are the same whether encoded alone (with its space) or after the context.
                "target_ids": tokenizer.encode(" " + word).ids,
                "target": word,
                "document": record.get("id"),
            }
        )
    return items, used


def cloze_accuracy(model, tokenizer, items: list[dict], *, batch_size: int = 16) -> dict:
    """Share of items whose missing word greedy decoding writes exactly, against always
    guessing the most frequent target word."""
    if not items:
        return {"items": 0, "accuracy": None, "note": "no sentence-final words in the text"}
    scored = loglikelihoods(
        model, [(i["context_ids"], i["target_ids"]) for i in items], batch_size=batch_size
    )
    correct = sum(hit for _, hit in scored)
    targets = Counter(i["target"].casefold() for i in items)
    examples = []
    for item, (lp, hit) in list(zip(items, scored, strict=True))[:5]:
        examples.append({"target": item["target"], "log_likelihood": lp, "correct": hit})
    return {
        "items": len(items),
        "accuracy": correct / len(items),
        "chance": targets.most_common(1)[0][1] / len(items),
        "chance_rule": "always the most frequent target word",
        "mean_target_log_likelihood": sum(lp for lp, _ in scored) / len(items),
        "examples": examples,
    }


def load_choice_items(path: str | Path) -> list[dict]:
    """A multiple-choice task file: JSON lines with ``context``, ``endings`` (two or more) and
    ``label`` (the index of the right ending); ``id``, ``language`` and ``source`` optional."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no multiple-choice task file at {path}")
    items = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{n}: not JSON: {exc}") from exc
        endings, label = item.get("endings"), item.get("label")
        if not isinstance(item.get("context"), str) or not item["context"]:
            raise ValueError(f"{path}:{n}: 'context' must be a non-empty string")
        if not isinstance(endings, list) or len(endings) < 2:
            raise ValueError(f"{path}:{n}: 'endings' must list at least two endings")
        if not isinstance(label, int) or not 0 <= label < len(endings):
            raise ValueError(f"{path}:{n}: 'label' must index 'endings' (got {label!r})")
        items.append(item)
    if not items:
        raise ValueError(f"{path} holds no items")
    return items


def choice_accuracy(model, tokenizer, items: list[dict], *, batch_size: int = 16) -> dict:
    """Rank each item's endings by summed and by per-byte log-likelihood. An item with an
    ending longer than the model's context cannot be scored; it is skipped and counted."""
    block = model.config.block_size
    requests, spans, scored_items = [], [], []
    skipped = 0
    for item in items:
        # Endings start with their space, so they tokenize as they would after the context.
        endings = [tokenizer.encode(" " + e.lstrip()).ids for e in item["endings"]]
        if max(len(e) for e in endings) >= block:
            skipped += 1
            continue
        context = tokenizer.encode(item["context"]).ids
        spans.append((len(requests), len(endings)))
        requests.extend((context, e) for e in endings)
        scored_items.append(item)
    result: dict = {"items": len(scored_items), "skipped_too_long": skipped}
    result["chance"] = (
        sum(1 / len(i["endings"]) for i in scored_items) / len(scored_items)
        if scored_items
        else None
    )
    if not scored_items:
        return {**result, "accuracy": None, "accuracy_norm": None, "accuracy_by_language": {}}
    scored = loglikelihoods(model, requests, batch_size=batch_size)
    hits = hits_norm = 0
    by_language: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for item, (first, n) in zip(scored_items, spans, strict=True):
        lls = [scored[first + k][0] for k in range(n)]
        per_byte = [
            ll / len((" " + e.lstrip()).encode())
            for ll, e in zip(lls, item["endings"], strict=True)
        ]
        hit = int(np.argmax(lls)) == item["label"]
        hits += hit
        hits_norm += int(np.argmax(per_byte)) == item["label"]
        lang = item.get("language") or "?"
        by_language[lang][0] += hit
        by_language[lang][1] += 1
    return {
        **result,
        "accuracy": hits / len(scored_items),
        "accuracy_norm": hits_norm / len(scored_items),
        "accuracy_by_language": {k: h / t for k, (h, t) in sorted(by_language.items())},
    }
