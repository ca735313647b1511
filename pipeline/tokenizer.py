"""Training and storing the byte-level BPE tokenizer (Hugging Face ``tokenizers``).

Byte-level BPE (GPT-2's scheme) can encode any string, so no document is ever untokenizable.
The end-of-document token separates documents in the shards; more special tokens can be
configured. Instead of training, a job can name an existing ``tokenizer.json`` or a Hugging Face
tokenizer folder; it is copied into the store under a hash of its bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from pipeline.errors import InputError
from pipeline.store import atomic_write_json, atomic_write_text

__all__ = [
    "EOS_TOKEN",
    "file_tokenizer_id",
    "load_tokenizer",
    "read_given_tokenizer",
    "save_tokenizer",
    "train_bpe",
    "training_fingerprint",
]

EOS_TOKEN = "<|endoftext|>"
# Characters of one class in one pre-tokenized piece at most (see train_bpe). Above the longest
# run in the bundled sample's texts (65 dashes in The Art of War), so its tokens are unchanged.
MAX_RUN = 128
_LONG_RUN = "|".join(
    # The classes of the byte-level pre-tokenizer (GPT-2's): combining marks go with symbols.
    f"{cls}{{{MAX_RUN}}}"
    for cls in (r"\p{L}", r"\p{N}", r"[^\s\p{L}\p{N}]", r"\s")
)


def train_bpe(
    texts: Iterable[str],
    *,
    vocab_size: int,
    min_frequency: int = 2,
    eos_token: str = EOS_TOKEN,
    special_tokens: Iterable[str] = (),
):
    """Train a byte-level BPE tokenizer on an iterator of texts.

    The EOS token gets id 0 and the other special tokens the ids after it; all of them count
    towards ``vocab_size``.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    # Byte-level pre-tokenization keeps a run of one class (letters, digits, other symbols,
    # whitespace) whole, and BPE training on one piece costs about its length squared: a line
    # of Chinese without punctuation (80,000 characters) took 34 s, 320,000 digits 69 s, and a
    # 1.5M-character line did not finish in 13 minutes. Each such run is cut every MAX_RUN
    # characters first; no word of a spaced language is that long.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_LONG_RUN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[eos_token, *special_tokens],
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


def _eos_from_hf_folder(folder: Path) -> str | None:
    """The eos_token a Hugging Face tokenizer folder declares, if it declares one."""
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = folder / name
        if path.exists():
            token = json.loads(path.read_text()).get("eos_token")
            if isinstance(token, dict):  # AddedToken serialised as a mapping
                token = token.get("content")
            if token:
                return str(token)
    return None


def read_given_tokenizer(path: str | Path, eos_token: str | None) -> tuple[str, str]:
    """Read an existing tokenizer: a tokenizer.json, or a Hugging Face folder holding one.

    Returns the tokenizer's JSON text and its end-of-document token, which must be in its
    vocabulary. Raises InputError saying what was expected otherwise.
    """
    from tokenizers import Tokenizer

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise InputError(
            f"data.tokenizer.path {path}: no tokenizer.json there (kiln reads the `tokenizers` "
            "JSON format; save a Hugging Face tokenizer with save_pretrained to get one)"
        )
    text = file.read_text(encoding="utf-8")
    try:
        tokenizer = Tokenizer.from_str(text)
    except Exception as exc:  # tokenizers raises a bare Exception on malformed JSON
        raise InputError(
            f"data.tokenizer.path {file}: not a tokenizers JSON file ({exc})"
        ) from None
    eos = eos_token or (_eos_from_hf_folder(folder) if path.is_dir() else None) or EOS_TOKEN
    if tokenizer.token_to_id(eos) is None:
        raise InputError(
            f"data.tokenizer.path {file}: its vocabulary has no end-of-document token {eos!r}; "
            "name one it has with data.tokenizer.eos_token"
        )
    return text, eos


def file_tokenizer_id(tokenizer_json: str) -> str:
    """Store id of a given (not trained) tokenizer: a hash of its JSON text."""
    return "file-" + hashlib.sha256(tokenizer_json.encode("utf-8")).hexdigest()[:16]
