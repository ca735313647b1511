"""kiln's extraction against bare ``trafilatura.extract`` defaults, on the same pages, same run.

For every gold page of the shared corpus (../shared/corpus/gold, see its README), three
extractions of the main text: ``trafilatura.extract`` with every default and with comments
left out (the setting of trafilatura's own evaluation, which the corpus README's snippet figure
comes from), both in this process, and kiln's extract stage as the data job runs it (its
time-limited child process, settings from ExtractConfig's defaults, fed a batch of pages at a
time as the data job's Ray workers feed it). They alternate per batch of pages, in a shuffled
order, so machine load falls on all alike.

Prints per source: mean token F1 for scrapinghub (``articleBody``) and readability (the text
of ``expected_html``), snippet precision/recall/F1 for the trafilatura eval, the share of its
boilerplate snippets that survive, pages/s of each and kiln's speed over the defaults', and
the targets (the corpus README's figures for trafilatura). Also how often kiln's title and
date match the eval's annotations.

    .venv/bin/python bench/bench_extract.py [--corpus ../shared/corpus] [--every N]
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.extract import ExtractStage  # noqa: E402
from pipeline.extract_gold import SnippetScore, load_gold, score_pages  # noqa: E402
from pipeline.records import make_document  # noqa: E402

# trafilatura 2.3.1 on these pages, from the corpus README: extract() defaults for the two
# full-text sources, extract() without comments (trafilatura's evaluation) for the snippets.
TARGETS = {"scrapinghub": 0.957, "readability": 0.952, "snippets": 0.926}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus")
    parser.add_argument("--every", type=int, default=1, help="use every N-th page (default all)")
    parser.add_argument(
        "--batch-size", type=int, default=16, help="pages per batch (data.batch_size's default)"
    )
    args = parser.parse_args()

    import trafilatura

    logging.getLogger("trafilatura").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", category=FutureWarning)

    pages = load_gold(args.corpus)[:: args.every]
    raws = [page.raw() for page in pages]
    stage = ExtractStage()
    stage.setup()

    def kiln(batch: list) -> list[tuple[str | None, dict]]:
        docs = [make_document("web", page.url or str(page.path), raw=raw) for page, raw in batch]
        stage.process_batch(docs)
        return [(None if doc["drop_reason"] else doc["text"], doc["meta"]) for doc in docs]

    def each_page(extract):
        return lambda batch: [extract(raw) for _, raw in batch]

    runners = {
        "defaults": each_page(trafilatura.extract),
        "no comments": each_page(lambda raw: trafilatura.extract(raw, include_comments=False)),
        "kiln": kiln,
    }

    # Warm all up (imports, the child process, lazily built regexes) outside the timing.
    for run in runners.values():
        run(list(zip(pages[:10], raws[:10], strict=True)))

    rng = random.Random(0)
    texts: dict[str, list] = {name: [] for name in runners}
    seconds = dict.fromkeys(runners, 0.0)
    metas = []
    pairs = list(zip(pages, raws, strict=True))
    for start in range(0, len(pairs), args.batch_size):
        batch = pairs[start : start + args.batch_size]
        order = list(runners)
        rng.shuffle(order)
        for name in order:
            t0 = time.perf_counter()
            out = runners[name](batch)
            seconds[name] += time.perf_counter() - t0
            if name == "kiln":
                metas += [meta for _, meta in out]
                out = [text for text, _ in out]
            texts[name] += out
    stage.close()

    scores = {name: score_pages(pages, texts[name]) for name in texts}
    print(f"{len(pages)} pages; token F1 over sets of lower-cased \\w+ tokens, mean per page")
    header = "".join(f"{name:>13}" for name in runners)
    print(f"{'':<26}{'trafilatura.extract()':^26}\n{'':<26}{header}{'target':>9}")
    for source in ("scrapinghub", "readability"):
        if source in scores["kiln"]:
            n = sum(p.source == source for p in pages)
            row = "".join(f"{scores[name][source]:>13.4f}" for name in runners)
            print(f"{source + f' F1 ({n})':<26}{row}{TARGETS[source]:>9.3f}")
    if "snippets" in scores["kiln"]:
        snippets: dict[str, SnippetScore] = {name: scores[name]["snippets"] for name in runners}
        n = sum(p.source == "trafilatura" for p in pages)
        for label, attr, target in (
            (f"snippets F1 ({n})", "f1", TARGETS["snippets"]),
            ("snippets precision", "precision", None),
            ("snippets recall", "recall", None),
            ("boilerplate kept", "boilerplate_kept", None),
        ):
            row = "".join(f"{getattr(snippets[name], attr):>13.4f}" for name in runners)
            shown = f"{target:>9.3f}" if target else ""
            print(f"{label:<26}{row}{shown}")
    speed = {name: len(pages) / s for name, s in seconds.items()}
    row = "".join(f"{speed[name]:>13.1f}" for name in runners)
    print(f"{'pages/s':<26}{row}")
    print(f"kiln's speed / extract() defaults' = {speed['kiln'] / speed['defaults']:.2f}")

    titled = dated = title_ok = date_ok = 0
    for page, meta in zip(pages, metas, strict=True):
        if page.title:
            titled += 1
            title_ok += meta.get("title", "").strip() == page.title.strip()
        if page.date:
            dated += 1
            date_ok += meta.get("date") == page.date
    if titled:
        print(
            f"kiln metadata vs the eval's annotations: title {title_ok}/{titled}, "
            f"date {date_ok}/{dated}"
        )


if __name__ == "__main__":
    main()
