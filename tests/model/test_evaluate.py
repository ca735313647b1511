"""Evaluation scoring: cloze items from held-out text, and how an item counts as right."""

from __future__ import annotations

import torch

from model.evaluate import cloze_items, cloze_score
from model.gpt import GPT, GPTConfig


def test_cloze_items_are_sentence_final_words_of_the_val_text(version):  # noqa: F811
    from tokenizers import Tokenizer

    from pipeline.shards import read_manifest

    tok = Tokenizer.from_str((version / "tokenizer.json").read_text())
    items = cloze_items(tok, version, n_items=20, context_tokens=32)
    assert 0 < len(items) <= 20
    manifest = read_manifest(version)
    assert manifest["splits"]["val"]["documents"] == 1
    for item in items:
        assert tok.decode(item["target_ids"]) == " " + item["target"]
        assert item["target"].isalpha() and len(item["context_ids"]) <= 32


def test_an_item_counts_only_when_every_target_token_is_the_argmax():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=1, n_head=2, d_model=16)).eval()
    # An untied output layer that ignores its input and always prefers token 7.
    model.lm_head = torch.nn.Linear(16, 50)
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.lm_head.bias.zero_()
        model.lm_head.bias[7] = 10.0
    items = [
        {"context_ids": [1, 2, 3], "target_ids": [7], "target": "seven"},
        {"context_ids": [1, 2, 3], "target_ids": [7, 7], "target": "sevenseven"},
        {"context_ids": [1, 2, 3], "target_ids": [7, 8], "target": "other"},
    ]

    class Decoder:
        def decode(self, ids):
            return " ".join(map(str, ids))

    result = cloze_score(model, Decoder(), items)
    assert result["items"] == 3
    assert result["accuracy"] == 2 / 3
    assert [e["correct"] for e in result["examples"]] == [True, True, False]
