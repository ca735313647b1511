"""Evaluation of a checkpoint: every score, its lineage, the report, and `kiln eval`."""

from __future__ import annotations

import json

import pytest
import torch

from jobs.cli import main as kiln
from model.config import EvalConfig
from model.evaluate import evaluate, format_report, in_loop_eval
from model.gpt import GPT, GPTConfig
from model.scores import cloze_accuracy

pytestmark = pytest.mark.usefixtures("one_thread")


def test_evaluate_scores_everything_and_records_lineage(final, version):
    cfg = EvalConfig(max_new_tokens=8, cloze_items=10, val_max_windows=8).model_dump()
    results = evaluate(final, None, cfg)
    assert results["checkpoint"] == str(final.resolve())
    assert results["training_run"] == "test-run"
    assert results["dataset"]["version"] == "v0001"
    assert results["dataset"]["dir"] == str(version.resolve())
    assert results["dataset"]["documents_listing"]  # the way back to each document's URL
    assert results["validation"]["loss"] > 0
    assert set(results["validation_by_source"]["by_source"]) == {"book"}
    suite = results["suites"]["sample-heldout"]
    assert suite["total"] == len(suite["tests"]) and 0 <= suite["pass_rate"] <= 1
    assert {"en", "de", "fr"} <= set(suite["pass_rate_by_language"])
    assert results["cloze"]["items"] == 10 and "source book" in results["cloze"]["text"]
    choice = results["multiple_choice"]["sample_choice"]
    assert choice["chance"] == 0.25 and choice["items"] >= 20
    report = format_report(results)
    assert "| source `book` |" in report and "Suite `sample-heldout`" in report
    assert "| sample_choice: per-byte log-likelihood |" in report


def test_in_loop_eval_leaves_the_model_in_training_mode_and_the_rng_alone(final, version):
    from model.checkpoint import load_final

    model, tokenizer, _ = load_final(final)
    model.train()
    cfg = EvalConfig(max_new_tokens=6, val_max_windows=2, in_loop_prompts=2).model_dump()
    state = torch.get_rng_state()
    result = in_loop_eval(model, tokenizer, version, cfg)
    assert model.training and torch.equal(state, torch.get_rng_state())
    assert result["generation"]["total"] == 2 and result["validation"]["tokens"] > 0


def test_kiln_eval_writes_json_and_a_report(final, tmp_path, capsys):
    out = tmp_path / "scores.json"
    code = kiln(
        [
            "eval",
            str(final),
            "--out",
            str(out),
            "eval.max_new_tokens=6",
            "eval.cloze_items=5",
            "eval.val_max_windows=4",
            "eval.suites=[]",
            "eval.choice_tasks=[]",
        ]
    )
    assert code == 0
    results = json.loads(out.read_text())
    assert results["training_run"] == "test-run" and results["suites"] == {}
    assert (tmp_path / "scores.md").read_text().startswith("# Evaluation of")
    assert "results written to" in capsys.readouterr().out
    assert kiln(["eval", str(final), "--out", str(out), "eval.suites=[nonexistent]"]) == 2


def test_a_cloze_item_counts_only_when_every_target_token_is_the_argmax():
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
    result = cloze_accuracy(model, None, items)
    assert result["items"] == 3 and result["accuracy"] == 2 / 3
    assert [e["correct"] for e in result["examples"]] == [True, True, False]
    assert result["chance"] == 1 / 3  # three different words: always guessing one gets 1 in 3
