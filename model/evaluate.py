"""Evaluation of an exported checkpoint: validation loss, generation tests, a cloze score.

- Validation loss: mean next-token cross-entropy over the held-out split's tokens (summed over
  tokens, then divided, so the batch size does not change it), and its perplexity.
- Generation tests: each prompt is continued greedily and by seeded sampling; each continuation
  must end either with the end-of-document token or after exactly ``max_new_tokens`` tokens.
- Cloze: LAMBADA-style last-word prediction (Paperno et al., 2016) on sentences of the held-out
  text: an item is right when greedy decoding would produce exactly the missing word. The most
  frequent target word gives a floor to compare with.

Results are a JSON-ready dict that names the checkpoint and dataset version it scored.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F

from model.checkpoint import load_final
from model.data import validation_windows
from model.generate import generate
from pipeline.shards import TokenShards, read_manifest
from pipeline.tokenizer import EOS_TOKEN

__all__ = ["cloze_items", "cloze_score", "evaluate", "generation_tests", "validation_loss"]

_SENTENCE_END_WORD = re.compile(r"(?<=\s)([^\W\d_]{3,})[.!?]")


@torch.no_grad()
def validation_loss(
    model, version_dir: str | Path, *, batch_size: int = 8, max_windows: int = 64
) -> dict:
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
) -> dict:
    eos_id = tokenizer.token_to_id(EOS_TOKEN)
    cases = []
    for i, prompt in enumerate(prompts):
        ids = tokenizer.encode(prompt).ids
        for mode, temp in (("greedy", 0.0), ("sampled", temperature)):
            gen = generate(
                model,
                ids,
                max_new_tokens=max_new_tokens,
                eos_id=eos_id,
                temperature=temp,
                top_k=top_k if temp > 0 else None,
                seed=seed + i,
            )
            ended_right = (gen.stop_reason == "eos" and gen.tokens[-1] == eos_id) or (
                gen.stop_reason == "max_new_tokens" and len(gen.tokens) == max_new_tokens
            )
            no_eos_inside = eos_id not in gen.tokens[:-1]
            cases.append(
                {
                    "prompt": prompt,
                    "mode": mode,
                    "continuation": tokenizer.decode([t for t in gen.tokens if t != eos_id]),
                    "new_tokens": len(gen.tokens),
                    "stop_reason": gen.stop_reason,
                    "passed": bool(ended_right and no_eos_inside),
                }
            )
    passed = sum(c["passed"] for c in cases)
    return {"cases": cases, "passed": passed, "total": len(cases), "pass_rate": passed / len(cases)}


def cloze_items(
    tokenizer, version_dir: str | Path, *, n_items: int, context_tokens: int
) -> list[dict]:
    """Sentence-final words of the held-out text with the tokens before them as context."""
    shards = TokenShards(version_dir, "val")
    candidates = []
    for doc_tokens in shards.documents():
        text = tokenizer.decode(doc_tokens.tolist())
        for m in _SENTENCE_END_WORD.finditer(text):
            context = text[: m.start(1)].rstrip()
            if len(context) < 40:
                continue
            candidates.append((context, m.group(1)))
    if not candidates:
        return []
    # Spread the items over the whole split rather than the start of its first document.
    stride = max(1, len(candidates) // n_items)
    items = []
    for context, word in candidates[::stride][:n_items]:
        items.append(
            {
                "context_ids": tokenizer.encode(context).ids[-context_tokens:],
                # The byte-level pre-tokenizer splits before each space, so the word's tokens
                # are the same whether it is encoded alone (with its space) or after the context.
                "target_ids": tokenizer.encode(" " + word).ids,
                "target": word,
            }
        )
    return items


@torch.no_grad()
def cloze_score(model, tokenizer, items: list[dict]) -> dict:
    """An item is right when greedy decoding would produce every token of the target word
    (teacher-forced argmax, as LAMBADA is usually scored), so a model that continues the
    previous word instead of starting a new one is wrong."""
    if not items:
        return {"items": 0, "accuracy": None, "note": "no sentence-final words in the val split"}
    device = next(model.parameters()).device
    correct, log_likelihood, examples = 0, 0.0, []
    for item in items:
        ids = item["context_ids"] + item["target_ids"]
        inputs = torch.tensor([ids[:-1]], device=device)
        logits, _ = model(inputs)  # (1, T, V)
        n = len(item["target_ids"])
        target_logits = logits[0, -n:].float()  # predictions for the target's tokens
        target = torch.tensor(item["target_ids"], device=device)
        hit = bool((target_logits.argmax(-1) == target).all())
        correct += hit
        log_likelihood += target_logits.log_softmax(-1).gather(1, target[:, None]).sum().item()
        if len(examples) < 5:
            guess = tokenizer.decode(target_logits.argmax(-1).tolist()).strip()
            examples.append({"target": item["target"], "greedy": guess, "correct": hit})
    targets = Counter(i["target"].casefold() for i in items)
    return {
        "items": len(items),
        "accuracy": correct / len(items),
        "mean_target_log_likelihood": log_likelihood / len(items),
        "most_frequent_word_baseline": targets.most_common(1)[0][1] / len(items),
        "examples": examples,
    }


def evaluate(final_dir: str | Path, version_dir: str | Path | None, eval_cfg: dict) -> dict:
    """Score an exported checkpoint on a dataset version (default: the one it trained on)."""
    model, tokenizer, meta = load_final(final_dir)
    version_dir = Path(version_dir or meta["dataset_dir"])
    manifest = read_manifest(version_dir)
    items = cloze_items(
        tokenizer,
        version_dir,
        n_items=eval_cfg["cloze_items"],
        context_tokens=min(eval_cfg["cloze_context_tokens"], model.config.block_size - 8),
    )
    return {
        "checkpoint": str(Path(final_dir).resolve()),
        "training_run": meta.get("run"),
        "dataset": {"dir": str(version_dir.resolve()), "version": manifest["version"]},
        "validation": validation_loss(model, version_dir, max_windows=eval_cfg["val_max_windows"]),
        "generation": generation_tests(
            model,
            tokenizer,
            eval_cfg["prompts"],
            max_new_tokens=min(eval_cfg["max_new_tokens"], model.config.block_size - 16),
            temperature=eval_cfg["temperature"],
            top_k=eval_cfg["top_k"],
            seed=eval_cfg["seed"],
        ),
        "cloze": cloze_score(model, tokenizer, items),
    }
