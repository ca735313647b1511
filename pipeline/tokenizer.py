"""Training and storing the byte-level BPE tokenizer (Hugging Face ``tokenizers``).

Byte-level BPE (GPT-2's scheme) can encode any string, so no document is ever untokenizable.
The end-of-document token is the only special token; it separates documents in the shards.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from pipeline.store import atomic_write_json, atomic_write_text

__all__ = ["EOS_TOKEN", "load_tokenizer", "save_tokenizer", "train_bpe", "training_fingerprint"]

EOS_TOKEN = "<|endoftext|>"


def train_bpe(texts: Iterable[str], *, vocab_size: int, min_frequency: int = 2):
    """Train a byte-level BPE tokenizer on an iterator of texts."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS_TOKEN],
        # All 256 byte symbols up front, so unseen characters still encode.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def training_fingerprint(doc_ids: Iterable[str], settings: dict) -> str:
    """Hash of what a tokenizer was trained on (sorted document ids) and how."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for doc_id in sorted(doc_ids):
        h.update(doc_id.encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def save_tokenizer(tokenizer, folder: Path, meta: dict) -> Path:
    """Write tokenizer.json and meta.json atomically; return the tokenizer.json path."""
    path = folder / "tokenizer.json"
    atomic_write_text(path, tokenizer.to_str())
    atomic_write_json(folder / "meta.json", meta)
    return path


def load_tokenizer(path: str | Path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))
