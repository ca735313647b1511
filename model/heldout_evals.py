"""Build a generation suite and a multiple-choice task from a dataset version's held-out text.

Evaluation texts taken from the validation split are text the model never trained on, so a
score on them measures generalisation, not recall. This module picks sentences from the held-out
documents, groups them by language (langid.py, as the data job's language filter does) and
writes:

- a suite (model/suites.py format): per language, greedy and sampled continuations of sentence
  beginnings, checked for length, repetition (distinct-n), producing words, one exact-recall
  test (the rest of the sentence), and a document's last sentence that should be followed by
  the end-of-document token;
- a HellaSwag-style task: a sentence's beginning, its true ending and three endings of other
  held-out sentences of the same language and similar length, in a seeded random order.

    python -m model.heldout_evals --dataset kiln-out/store/datasets/sample/v0001 \\
        --suite jobs/suites/sample_heldout.yaml --tasks jobs/tasks/sample_choice.jsonl

kiln ships the files this wrote for the bundled sample's first dataset version; rerun it for
your own data. ``--extra-language fr=PATH`` adds tests for a language the held-out split lacks,
from a text file (a Project Gutenberg book is cut to its body first, as the data job does), each
marked as such in its ``source`` (they measure recall when the model trained on that file).
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections import defaultdict
from pathlib import Path

import yaml

from model.scores import heldout_documents
from pipeline.gutenberg import strip_gutenberg
from pipeline.shards import read_manifest

__all__ = ["build_choice_items", "build_suite", "held_out_sentences", "main"]

_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-ZÄÖÜÀÂÉÈÊÎÔÇ])")
# Sentences kept for prompts: plain prose of 10 to 40 words, no markup or table remnants.
_PLAIN = re.compile(r"^[\w\s,;:'’\-.!?()«»„“”\"]+$")


def _sentences(text: str) -> list[tuple[str, bool]]:
    """(sentence, is the text's last sentence) for the plain sentences of ``text``."""
    pieces = _SENTENCE_SPLIT.split(re.sub(r"\s+", " ", text).strip())
    return [
        (s, i == len(pieces) - 1)
        for i, s in enumerate(pieces)
        if 10 <= len(s.split()) <= 40 and _PLAIN.match(s)
    ]


def held_out_sentences(texts: list[tuple[str, str]]) -> dict[str, list[tuple[str, str, bool]]]:
    """language -> (sentence, source, is last sentence of its document) for (text, source).

    Only a document's own last sentence counts as last: the document-end test expects the
    end-of-document token right after it. When that sentence is not plain prose (a footer, a
    reference list), no sentence of the document is marked.
    """
    import langid

    out: dict[str, list[tuple[str, str, bool]]] = defaultdict(list)
    for text, source in texts:
        language, _ = langid.classify(text[:5000])
        for sentence, last in _sentences(text):
            out[language].append((sentence, source, last))
    return out


def _source(source: str, language: str, notes: dict[str, str] | None) -> str:
    return source + (f" ({notes[language]})" if notes and language in notes else "")


def _split(sentence: str, share: float = 0.6) -> tuple[str, str]:
    words = sentence.split()
    cut = max(4, int(len(words) * share))
    return " ".join(words[:cut]), " ".join(words[cut:])


def build_suite(
    by_language: dict[str, list[tuple[str, str, bool]]],
    *,
    per_language: int = 4,
    seed: int = 0,
    notes: dict[str, str] | None = None,
) -> dict:
    rng = random.Random(seed)
    tests = []
    for language in sorted(by_language):
        pool = by_language[language]
        if len(pool) < per_language + 1:
            continue
        picks = rng.sample(pool, per_language)
        for k, (sentence, source, _) in enumerate(picks):
            prompt, rest = _split(sentence)
            sampled = k % 2 == 1
            test = {
                "name": f"{language}-{k + 1}-{'sampled' if sampled else 'greedy'}",
                "language": language,
                "source": _source(source, language, notes),
                "prompt": prompt,
                "decoding": (
                    {"temperature": 0.8, "top_k": 50, "top_p": 0.95, "seed": k}
                    if sampled
                    else {"repetition_penalty": 1.1}
                ),
                "checks": [
                    {"type": "length", "min_tokens": 4, "max_tokens": 32},
                    {"type": "regex", "pattern": r"\w{2,}"},
                    {"type": "max_repetition", "n": 2, "min_distinct": 0.6},
                ],
            }
            tests.append(test)
        # Recall of the sentence's own ending: a high bar, met only by text seen in training.
        sentence, source, _ = picks[0]
        prompt, rest = _split(sentence)
        first = rest.split()[0].strip(",;:.!?")
        tests.append(
            {
                "name": f"{language}-next-word",
                "language": language,
                "source": _source(source, language, notes),
                "prompt": prompt,
                "decoding": {"max_new_tokens": 8},
                "checks": [{"type": "contains", "value": first, "case_sensitive": False}],
            }
        )
        ends = [p for p in pool if p[2]]
        if ends:
            sentence, source, _ = ends[0]
            tests.append(
                {
                    "name": f"{language}-document-end",
                    "language": language,
                    "source": _source(source, language, notes),
                    "prompt": sentence,
                    "decoding": {"max_new_tokens": 16},
                    "checks": [{"type": "stops_at_eos"}],
                }
            )
    return {
        "name": "sample-heldout",
        "description": "Sentence beginnings from held-out documents of the bundled sample's "
        "dataset, per language; built by model/heldout_evals.py.",
        "defaults": {"max_new_tokens": 24},
        "tests": tests,
    }


def build_choice_items(
    by_language: dict[str, list[tuple[str, str, bool]]], *, per_language: int = 20, seed: int = 0
) -> list[dict]:
    rng = random.Random(seed)
    items = []
    for language in sorted(by_language):
        pool = [s for s, _, _ in by_language[language]]
        if len(pool) < 8:
            continue
        rng.shuffle(pool)
        split = [_split(s) for s in pool]
        for k, (context, ending) in enumerate(split[:per_language]):
            # Distractors: endings of other sentences of this language, closest in length, so
            # that length alone gives nothing away.
            others = sorted(
                (e for j, (_, e) in enumerate(split) if j != k and e != ending),
                key=lambda e: (abs(len(e) - len(ending)), e),
            )[:3]
            if len(others) < 3:
                continue
            endings = [ending, *others]
            rng.shuffle(endings)
            items.append(
                {
                    "id": f"{language}-{k}",
                    "language": language,
                    "context": context,
                    "endings": endings,
                    "label": endings.index(ending),
                }
            )
    return items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="dataset version folder")
    parser.add_argument("--suite", required=True, help="suite YAML to write")
    parser.add_argument("--tasks", required=True, help="multiple-choice JSON lines to write")
    parser.add_argument("--extra-language", action="append", default=[], metavar="LANG=PATH")
    args = parser.parse_args(argv)
    from tokenizers import Tokenizer

    version = Path(args.dataset)
    manifest = read_manifest(version)
    store_root = version.parent.parent.parent
    tokenizer = Tokenizer.from_file(str(store_root / manifest["tokenizer"]["path"]))
    texts = [
        (tokenizer.decode(tokens[:-1].tolist()), record.get("url") or record["id"])
        for record, tokens in heldout_documents(version)
    ]
    by_language = held_out_sentences(texts)
    notes = {}
    for spec in args.extra_language:
        language, path = spec.split("=", 1)
        # The book's body, as the data job keeps it: a licence is no part of the text.
        text = strip_gutenberg(Path(path).read_text(encoding="utf-8-sig")).text
        extra = held_out_sentences([(text[len(text) // 3 :], Path(path).name)])
        by_language[language] = extra.get(language, [])
        notes[language] = "not held out: the sample has no held-out text in this language"
    # Record where prompts came from without this machine's absolute paths.
    for entries in by_language.values():
        entries[:] = [(s, Path(src).name, last) for s, src, last in entries]
    suite = build_suite(by_language, notes=notes)
    Path(args.suite).write_text(
        "# Written by model/heldout_evals.py from dataset version "
        f"{manifest['version']}; prompts are held-out text.\n"
        + yaml.safe_dump(suite, allow_unicode=True, sort_keys=False, width=100)
    )
    held_out_only = {k: v for k, v in by_language.items() if k not in notes}
    items = build_choice_items(held_out_only)
    Path(args.tasks).write_text(
        "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items), encoding="utf-8"
    )
    counts = {k: len(v) for k, v in sorted(by_language.items())}
    print(
        f"{len(suite['tests'])} tests, {len(items)} choice items; sentences per language {counts}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
