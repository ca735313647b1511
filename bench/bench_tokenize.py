"""Tokenize-and-shard throughput against bare `tokenizers` encode_batch, on the same text.

kiln's shard writer (pipeline/shards.py, ShardWriterFn: the two steps Ray workers run,
DocumentEncoderFn on a batch of documents and write_shard on a packed shard, in one call) turns
Arrow rows into documents, encodes them (encode_batch_fast: offsets are never used), lays the ids
out with one end-of-document token after each, and writes the .bin, .idx and .docs.jsonl files
with their checksums. The baseline is `Tokenizer.encode_batch` alone on the same batches of the same
texts, with the same tokenizer, in the same process. The issue's target is a ratio of at least
0.9.

    .venv/bin/python bench/bench_tokenize.py              # the bundled sample's books
    .venv/bin/python bench/bench_tokenize.py --corpus ../shared/corpus/books --repeat 5
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.gutenberg import strip_gutenberg  # noqa: E402
from pipeline.records import make_document, to_table  # noqa: E402
from pipeline.shards import ShardWriterFn  # noqa: E402
from pipeline.tokenizer import EOS_TOKEN, train_bpe  # noqa: E402


def load_documents(folder: Path, doc_chars: int) -> list[dict]:
    """Books cut into documents of about ``doc_chars`` characters (web-page sized)."""
    docs = []
    for path in sorted(folder.glob("*.txt")):
        text = strip_gutenberg(path.read_text(encoding="utf-8-sig", errors="replace")).text
        for i in range(0, len(text), doc_chars):
            docs.append(make_document("book", f"{path.name}#{i}", text=text[i : i + doc_chars]))
    return docs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=REPO / "sample" / "books")
    parser.add_argument("--doc-chars", type=int, default=8000, help="characters per document")
    parser.add_argument("--batch-size", type=int, default=64, help="documents per shard/batch")
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--repeat", type=int, default=3, help="best of N timings of each")
    args = parser.parse_args()

    docs = load_documents(args.corpus, args.doc_chars)
    texts = [d["text"] for d in docs]
    total_chars = sum(map(len, texts))
    tokenizer = train_bpe(texts, vocab_size=args.vocab_size)
    eos = tokenizer.token_to_id(EOS_TOKEN)
    batches = [docs[i : i + args.batch_size] for i in range(0, len(docs), args.batch_size)]
    tables = [to_table(b) for b in batches]
    text_batches = [[d["text"] for d in b] for b in batches]
    print(
        f"{len(docs)} documents, {total_chars / 1e6:.1f} M characters, {len(batches)} batches "
        f"of up to {args.batch_size}; vocabulary {tokenizer.get_vocab_size()}"
    )

    def bare() -> int:
        return sum(len(e.ids) for b in text_batches for e in tokenizer.encode_batch(b))

    with tempfile.TemporaryDirectory() as tmp:
        writer = ShardWriterFn(tokenizer.to_str(), tmp, frozenset(), eos)

        def kiln() -> int:
            return sum(sum(writer(t)["tokens"].to_pylist()) for t in tables)

        best = {}
        tokens = {}
        for _ in range(args.repeat):
            # Alternate, so drift in machine load hits both alike.
            for name, fn in (("bare encode_batch", bare), ("kiln tokenize+shard", kiln)):
                t0 = time.perf_counter()
                tokens[name] = fn()
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - t0)

    base, ours = best["bare encode_batch"], best["kiln tokenize+shard"]
    for name, seconds in best.items():
        print(
            f"  {name:<22} {seconds:7.3f} s  {tokens[name] / seconds / 1e6:6.2f} M tokens/s  "
            f"{total_chars / seconds / 1e6:6.2f} M chars/s"
        )
    # The shards hold one EOS token per document more than the bare encodings.
    assert tokens["kiln tokenize+shard"] == tokens["bare encode_batch"] + len(docs)
    print(f"throughput ratio kiln / bare = {base / ours:.3f}  (target >= 0.9)")


if __name__ == "__main__":
    main()
