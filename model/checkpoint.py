"""Loading the consolidated weights a training run exports into ``<run>/train/final``.

Evaluation and export read this folder only (``model.pt``, ``config.json``, ``tokenizer.json``,
``meta.json``); they never need DeepSpeed or the number of training processes.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from model.gpt import GPT, GPTConfig

__all__ = ["CheckpointError", "load_final"]


class CheckpointError(RuntimeError):
    """A checkpoint folder is missing a file or does not match its config."""


def load_final(final_dir: str | Path, device: str | torch.device = "cpu"):
    """Return (model in eval mode, tokenizer, meta) from an exported ``final`` folder."""
    from tokenizers import Tokenizer

    final_dir = Path(final_dir)
    if (final_dir / "final").is_dir() and not (final_dir / "model.pt").exists():
        final_dir = final_dir / "final"  # accept the training output folder too
    needed = ["model.pt", "config.json", "tokenizer.json"]
    missing = [n for n in needed if not (final_dir / n).exists()]
    if missing:
        raise CheckpointError(
            f"{final_dir} is not an exported checkpoint: missing {', '.join(missing)} "
            "(expected the 'final' folder a training run writes)"
        )
    config = GPTConfig(**json.loads((final_dir / "config.json").read_text()))
    model = GPT(config)
    state = torch.load(final_dir / "model.pt", map_location="cpu", weights_only=True)
    if config.tie_embeddings and "lm_head.weight" not in state:
        state["lm_head.weight"] = state["tok_emb.weight"]  # ZeRO-3 exports a shared tensor once
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{final_dir}/model.pt does not match config.json: {exc}") from exc
    model.to(device).eval()
    tokenizer = Tokenizer.from_file(str(final_dir / "tokenizer.json"))
    meta_path = final_dir / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    return model, tokenizer, meta


def checkpoint_eos_token(meta: dict) -> str:
    """The end-of-document token of the data a checkpoint was trained on: recorded in its
    meta.json at export, else read from its dataset version, else kiln's default."""
    from pipeline.shards import eos_token_of

    return meta.get("eos_token") or eos_token_of(meta.get("dataset_dir"))
