"""lm-evaluation-harness scores a kiln checkpoint through the adapter, on local tasks, offline."""

from __future__ import annotations

import math

import pytest

from tests.helpers import REPO

lm_eval = pytest.importorskip("lm_eval")

from model.lm_eval_adapter import KilnLM, local_task  # noqa: E402
from model.scores import choice_accuracy, load_choice_items  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

TASKS = REPO / "jobs" / "tasks"


class Request:
    """What the harness hands a model: an object with ``args``."""

    def __init__(self, *args):
        self.args = args


def test_the_three_request_types_answer_directly(final):
    lm = KilnLM(str(final), batch_size=4)
    (lp, greedy), (lp_empty, _) = lm.loglikelihood(
        [Request("The Time", " Traveller"), Request("", "The")]
    )
    assert lp < 0 and isinstance(greedy, bool) and lp_empty < 0
    (short,) = lm.loglikelihood_rolling([Request("The Time Traveller")])
    ((whole, _),) = lm.loglikelihood([Request("", "The Time Traveller")])
    assert short == pytest.approx(whole, rel=1e-5)  # one piece: the text after a document start
    text = "The Time Traveller " * 60  # longer than the 128-token context: scored in pieces
    (rolling,) = lm.loglikelihood_rolling([Request(text)])
    n_tokens = len(lm.tokenizer.encode(text).ids)
    assert n_tokens > 128 and rolling < 0
    # Each token predicted once: the mean loss is near ln(vocab) for an untrained model.
    assert -rolling / n_tokens == pytest.approx(math.log(500), rel=0.1)
    outs = lm.generate_until(
        [
            Request("It was", {"until": ["e"], "max_gen_toks": 10}),
            Request("The", {"until": [], "max_gen_toks": 5, "do_sample": False}),
        ]
    )
    assert all(isinstance(o, str) for o in outs) and "e" not in outs[0]


def test_simple_evaluate_runs_local_tasks_offline(final, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lm = KilnLM(str(final), batch_size=8)
    tasks = [
        local_task(TASKS / name)
        for name in (
            "kiln_sample_choice.yaml",
            "kiln_sample_rolling.yaml",
            "kiln_sample_generate.yaml",
        )
    ]
    from lm_eval.tasks import TaskManager

    # Without lm-eval's own catalogue of thousands of task files, which it would index first.
    manager = TaskManager(include_defaults=False)
    out = lm_eval.simple_evaluate(
        model=lm, tasks=tasks, limit=8, log_samples=False, task_manager=manager
    )
    results = out["results"]
    choice = results["kiln_sample_choice"]
    assert 0 <= choice["acc,none"] <= 1 and 0 <= choice["acc_norm,none"] <= 1
    assert results["kiln_sample_rolling"]["word_perplexity,none"] > 1
    assert results["kiln_sample_generate"]["exact_match,none"] >= 0
    # The harness and kiln's own scorer agree on the same items.
    items = load_choice_items(TASKS / "sample_choice.jsonl")[:8]
    ours = choice_accuracy(lm.model, lm.tokenizer, items)
    assert choice["acc,none"] == pytest.approx(ours["accuracy"])
    # lm-eval's acc_norm divides by an ending's characters, kiln's by its UTF-8 bytes: they
    # rank alike only where every ending is ASCII (the German items have umlauts).
    if all(e.isascii() for item in items for e in item["endings"]):
        assert choice["acc_norm,none"] == pytest.approx(ours["accuracy_norm"])
