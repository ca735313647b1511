"""What kiln's cleaning stages drop on real text, and what they cost.

Runs the per-document stages of the data job (extract, length, language, the quality
filters, decontamination, PII) in this process, without Ray, on:

- the bundled sample with the demo's settings;
- the 815 web pages of the shared corpus (all languages kept);
- the Common Crawl texts of the corpus's webtext/ (already extracted);
- the corpus's 34 books, as configured (books exempt from the quality filters) and as if
  they were not, to show why they are exempt;

then prints each ledger, how many of the trafilatura eval's boilerplate ("without") snippets
survive extraction and then the filters, and each filter's time per MB of text.

    .venv/bin/python bench/bench_filters.py [--corpus ../shared/corpus]
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.config import DataConfig  # noqa: E402
from pipeline.extract_gold import load_gold  # noqa: E402
from pipeline.ledger import Ledger  # noqa: E402
from pipeline.read import discover_inputs, read_file  # noqa: E402
from pipeline.records import is_kept, make_document, to_table  # noqa: E402
from pipeline.runner import build_stages  # noqa: E402


def run(docs: list[dict], cfg: DataConfig) -> tuple[list[dict], dict[str, float], list]:
    stages = build_stages(cfg)
    seconds: dict[str, float] = {}
    for stage in stages:
        stage.setup()
        t0 = time.perf_counter()
        docs = stage.process_batch(docs)
        seconds[stage.name] = time.perf_counter() - t0
    stages[0].close()
    return docs, seconds, stages


def report(title: str, docs: list[dict], stages: list) -> None:
    names = ["read"] + [s.name for s in stages]
    print(f"\n== {title} ==")
    print(Ledger.from_table(to_table(docs), names).format())


def webtext_docs(corpus: Path) -> list[dict]:
    docs = []
    for path in sorted((corpus / "webtext").glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            for line in lines:
                row = json.loads(line)
                docs.append(make_document("warc", row["id"], text=row["text"]))
    return docs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus")
    args = parser.parse_args()
    corpus = args.corpus

    sample_cfg = DataConfig(
        inputs=[{"path": str(REPO / "sample" / p)} for p in ("web", "warc", "books")],
        filter={"languages": ["en", "de", "fr"]},
    )
    files = discover_inputs([(s.path, s.kind) for s in sample_cfg.inputs])
    docs, _, stages = run([d for f in files for d in read_file(f)], sample_cfg)
    report("sample/ with the demo's settings (before dedup)", docs, stages)

    # Web pages of the corpus with their gold, in gold order.
    pages = load_gold(corpus)
    page_docs = [
        make_document("web", page.url or str(page.path), raw=page.raw(), doc_id=page.id)
        for page in pages
    ]
    web_cfg = DataConfig(inputs=[{"path": str(corpus / "web")}], decontam={"texts": []})
    extracted_only = DataConfig(
        inputs=[{"path": "."}],
        filter={"min_words": 0, "min_language_score": 0.0},
        quality={
            "gopher_repetition": {"enabled": False},
            "gopher_quality": {"enabled": False},
            "c4": {"enabled": False},
            "fineweb": {"enabled": False},
        },
        decontam={"enabled": False},
        pii={"emails": False, "ip_addresses": False},
    )
    raw_copies = copy.deepcopy(page_docs)
    after_extract, _, _ = run(raw_copies, extracted_only)
    docs, seconds, stages = run(page_docs, web_cfg)
    report(f"{len(pages)} web pages of the corpus, every language kept", docs, stages)

    # Boilerplate snippets of the trafilatura eval: how many survive extraction, then filters.
    total = survive_extract = survive_all = 0
    for page, extracted, filtered in zip(pages, after_extract, docs, strict=True):
        for snippet in page.without_snippets:
            total += 1
            survive_extract += is_kept(extracted) and snippet in extracted["text"]
            survive_all += is_kept(filtered) and snippet in filtered["text"]
    print(
        f'\nboilerplate ("without") snippets of the trafilatura eval: {total}; in the extracted '
        f"text {survive_extract} ({survive_extract / total:.1%}); after the filters "
        f"{survive_all} ({survive_all / total:.1%})"
    )
    by_source = Counter((p.source, is_kept(d)) for p, d in zip(pages, docs, strict=True))
    print(
        "kept pages by gold source: "
        + ", ".join(
            f"{s} {by_source[(s, True)]}/{by_source[(s, True)] + by_source[(s, False)]}"
            for s in ("scrapinghub", "readability", "trafilatura")
        )
    )

    text_cfg = DataConfig(inputs=[{"path": "."}], decontam={"texts": []})
    docs, _, stages = run(webtext_docs(corpus), text_cfg)
    report("webtext/: Common Crawl text (CCNet head, raw WET)", docs, stages)

    book_files = discover_inputs([(str(corpus / "books"), "book")])
    books = [d for f in book_files for d in read_file(f)]
    megabytes = sum(len(d["text"].encode()) for d in books) / 1e6
    docs, _, stages = run(copy.deepcopy(books), text_cfg)
    report(f"{len(books)} corpus books, books exempt from quality filters (default)", docs, stages)
    not_exempt = DataConfig(inputs=[{"path": "."}], quality={"exempt_sources": []})
    docs, _, stages = run(copy.deepcopy(books), not_exempt)
    report(f"{len(books)} corpus books if they were not exempt", docs, stages)

    # Cost: each stage alone on every book (extracted once), so no stage sees fewer documents
    # because an earlier one dropped some.
    extracted = build_stages(not_exempt)[0].process_batch(copy.deepcopy(books))
    print(f"\neach stage alone on all {len(books)} books ({megabytes:.1f} MB), seconds per MB:")
    for stage in build_stages(not_exempt)[1:]:
        stage.setup()
        t0 = time.perf_counter()
        stage.process_batch(copy.deepcopy(extracted))
        print(f"  {stage.name:<18} {(time.perf_counter() - t0) / megabytes:8.3f}")


if __name__ == "__main__":
    main()
