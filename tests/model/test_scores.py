"""Likelihood scores: loss per source and on the held-out stream, cloze and multiple choice,
whatever the batch size."""

from __future__ import annotations

import json

import pytest
import torch
from tokenizers import Tokenizer

from model.evaluate import validation_loss
from model.gpt import GPT, GPTConfig
from model.scores import (
    choice_accuracy,
    cloze_accuracy,
    cloze_passages,
    heldout_documents,
    load_choice_items,
    loglikelihoods,
    loss_by_source,
)
from tests.helpers import REPO

pytestmark = pytest.mark.usefixtures("one_thread")


def small_model(vocab: int = 500, block_size: int = 64) -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=vocab, block_size=block_size, n_layer=2, n_head=2, d_model=32)
    return GPT(config).eval()


def test_loglikelihood_matches_a_plain_forward_pass():
    model = small_model(97)
    context, continuation = [5, 6, 7, 8], [9, 10]
    ((lp, greedy),) = loglikelihoods(model, [(context, continuation)])
    logits, _ = model(torch.tensor([context + continuation[:-1]]))
    logprobs = logits[0].log_softmax(-1)
    expected = logprobs[3, 9] + logprobs[4, 10]
    assert lp == pytest.approx(expected.item(), rel=1e-5)
    assert greedy == bool(logprobs[3].argmax() == 9 and logprobs[4].argmax() == 10)


def test_a_long_context_keeps_its_end_and_a_long_continuation_is_an_error():
    model = small_model(97)
    ((lp_long, _),) = loglikelihoods(model, [(list(range(90)), [3])])
    ((lp_end, _),) = loglikelihoods(model, [(list(range(90))[-64:], [3])])
    assert lp_long == pytest.approx(lp_end, rel=1e-5)
    loglikelihoods(model, [([1], [2] * 64)])  # one token of context is enough
    with pytest.raises(ValueError, match="continuation of 65 tokens"):
        loglikelihoods(model, [([1], [2] * 65)])


def test_scores_are_the_same_whatever_the_batch_size(version):
    tok = Tokenizer.from_file(str(version / "tokenizer.json"))
    model = small_model()
    losses = [loss_by_source(model, version, batch_size=b, max_tokens=600) for b in (1, 3, 16)]
    for other in losses[1:]:
        assert other["tokens"] == losses[0]["tokens"]
        assert other["loss"] == pytest.approx(losses[0]["loss"], rel=1e-6)
    # The held-out stream in windows of block_size, the last one shorter: every window counts.
    streams = [
        validation_loss(model, version, batch_size=b, max_windows=10_000) for b in (1, 7, 64)
    ]
    assert streams[0]["tokens"] == sum(len(t) for _, t in heldout_documents(version)) - 1
    for other in streams[1:]:
        assert other["tokens"] == streams[0]["tokens"]
        assert other["loss"] == pytest.approx(streams[0]["loss"], rel=1e-6)
    items, _ = cloze_passages(tok, version, n_items=12, context_tokens=40)
    clozes = [cloze_accuracy(model, tok, items, batch_size=b) for b in (1, 5, 32)]
    for other in clozes[1:]:
        assert other["accuracy"] == clozes[0]["accuracy"]
        assert other["mean_target_log_likelihood"] == pytest.approx(
            clozes[0]["mean_target_log_likelihood"], rel=1e-5
        )
    # German endings take many tokens under this English-only vocabulary: a longer context.
    model = small_model(block_size=256)
    mc = load_choice_items(REPO / "jobs" / "tasks" / "sample_choice.jsonl")[::4]
    choices = [choice_accuracy(model, tok, mc, batch_size=b) for b in (1, 7, 64)]
    assert choices[1] == choices[0] and choices[2] == choices[0]


def test_loss_by_source_splits_the_held_out_tokens(version):
    model = small_model()
    result = loss_by_source(model, version)
    docs = heldout_documents(version)
    assert result["tokens"] == sum(len(t) - 1 for _, t in docs)
    assert sum(s["tokens"] for s in result["by_source"].values()) == result["tokens"]
    assert set(result["by_source"]) == {r["source"] for r, _ in docs}


def test_cloze_passages_come_from_held_out_books(version):
    tok = Tokenizer.from_file(str(version / "tokenizer.json"))
    items, used = cloze_passages(tok, version, n_items=20, context_tokens=32)
    assert 0 < len(items) <= 20 and "source book" in used
    val_ids = {r["id"] for r, _ in heldout_documents(version)}
    for item in items:
        assert item["document"] in val_ids
        assert tok.decode(item["target_ids"]) == " " + item["target"]
    result = cloze_accuracy(small_model(), tok, items)
    assert 0 < result["chance"] <= 1 and result["items"] == len(items)


def test_multiple_choice_counts_summed_and_per_byte_rankings():
    class Letters:
        """Token i is the letter 'a' + i, each its own token."""

        class _Enc:
            def __init__(self, ids):
                self.ids = ids

        def encode(self, text):
            return self._Enc([ord(c) % 97 for c in text])

    model = small_model(97)
    # An untied output layer that ignores its input: p(space) = 0.27, p('z') = 0.73, the rest
    # nearly 0. Summed, the short all-'z' ending wins; per byte, the long one does.
    model.lm_head = torch.nn.Linear(32, 97)
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.lm_head.bias.fill_(-20.0)
        model.lm_head.bias[ord(" ") % 97] = 10.0
        model.lm_head.bias[ord("z") % 97] = 11.0
    items = [{"context": "abc", "endings": ["zz", "q", "zzzzzzzz", "r"], "label": 2}]
    result = choice_accuracy(model, Letters(), items)
    assert result["chance"] == 0.25 and result["items"] == 1
    assert result["accuracy"] == 0.0 and result["accuracy_norm"] == 1.0


def test_the_shipped_task_file_is_valid_and_four_way():
    items = load_choice_items(REPO / "jobs" / "tasks" / "sample_choice.jsonl")
    assert len(items) >= 20
    assert all(len(i["endings"]) == 4 for i in items)
    assert {i["language"] for i in items} >= {"en"}


def test_a_bad_task_line_names_its_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"context": "a", "endings": ["b", "c"], "label": 0}) + "\n")
    assert len(load_choice_items(path)) == 1
    path.write_text(json.dumps({"context": "a", "endings": ["b", "c"], "label": 2}) + "\n")
    with pytest.raises(ValueError, match=r"t.jsonl:1: 'label'"):
        load_choice_items(path)


def test_an_item_whose_ending_outgrows_the_context_is_skipped_and_counted(version):
    tok = Tokenizer.from_file(str(version / "tokenizer.json"))
    items = load_choice_items(REPO / "jobs" / "tasks" / "sample_choice.jsonl")
    # German endings under this English vocabulary exceed a 32-token context.
    model = GPT(GPTConfig(vocab_size=500, block_size=32, n_layer=1, n_head=2, d_model=16)).eval()
    result = choice_accuracy(model, tok, items)
    assert result["skipped_too_long"] > 0
    assert result["items"] + result["skipped_too_long"] == len(items)
