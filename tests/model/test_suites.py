"""Generation test suites: the YAML format, each check type, and a suite run end to end."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer

from model.gpt import GPT, GPTConfig
from model.suites import (
    Suite,
    SuiteError,
    distinct_n,
    load_suite,
    run_check,
    run_suite,
)
from pipeline.tokenizer import EOS_TOKEN
from tests.helpers import REPO

pytestmark = pytest.mark.usefixtures("one_thread")


def check(spec: dict):
    return (
        Suite(name="s", tests=[{"name": "t", "prompt": "p", "checks": [spec]}]).tests[0].checks[0]
    )


def test_contains_check_and_its_case_option():
    assert run_check(check({"type": "contains", "value": "Time"}), "The Time Machine", 3, "eos")[0]
    assert not run_check(check({"type": "contains", "value": "time"}), "The Time", 3, "eos")[0]
    spec = {"type": "contains", "value": "time", "case_sensitive": False}
    assert run_check(check(spec), "The Time", 3, "eos")[0]


def test_regex_check_searches_and_rejects_a_bad_pattern():
    ok, why = run_check(check({"type": "regex", "pattern": r"\d{4}"}), "in 1895 he", 4, "eos")
    assert ok and "1895" in why
    assert not run_check(check({"type": "regex", "pattern": r"^\d"}), "in 1895", 4, "eos")[0]
    with pytest.raises(ValueError, match="not a regular expression"):
        check({"type": "regex", "pattern": "("})


def test_exact_check_strips_unless_told_not_to():
    assert run_check(check({"type": "exact", "value": "Hyde"}), " Hyde\n", 2, "eos")[0]
    spec = {"type": "exact", "value": "Hyde", "strip": False}
    assert not run_check(check(spec), " Hyde", 2, "eos")[0]


def test_stops_at_eos_check_reads_the_stop_reason():
    c = check({"type": "stops_at_eos"})
    assert run_check(c, "x", 1, "eos")[0]
    ok, why = run_check(c, "x", 1, "max_new_tokens")
    assert not ok and "max_new_tokens" in why


def test_length_check_bounds_in_new_tokens():
    c = check({"type": "length", "min_tokens": 3, "max_tokens": 5})
    assert [run_check(c, "", n, "eos")[0] for n in (2, 3, 5, 6)] == [False, True, True, False]
    assert run_check(check({"type": "length", "min_tokens": 1}), "", 10_000, "eos")[0]


def test_max_repetition_check_is_distinct_n():
    assert distinct_n("a b c a b c a b c", 3) == pytest.approx(3 / 7)
    assert distinct_n("one two", 3) == 1.0  # too short to hold a trigram: nothing repeated
    c = check({"type": "max_repetition", "n": 3, "min_distinct": 0.5})
    assert not run_check(c, "a b c a b c a b c", 9, "eos")[0]
    assert run_check(c, "the quick brown fox jumps over the lazy dog", 9, "eos")[0]


def test_a_bad_suite_names_the_problem(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ntests:\n  - {name: a, prompt: p, checks: [{type: sounds_good}]}\n")
    with pytest.raises(SuiteError, match="sounds_good"):
        load_suite(path)
    path.write_text(
        "name: x\ntests:\n  - {name: a, prompt: p, decoding: {top_p: 2},"
        " checks: [{type: stops_at_eos}]}\n"
    )
    with pytest.raises(SuiteError, match="top_p"):
        load_suite(path)
    with pytest.raises(SuiteError, match="no suite file"):
        load_suite(tmp_path / "missing.yaml")


def test_shipped_suites_load_and_cover_the_sample_languages():
    suites = sorted((REPO / "jobs" / "suites").glob("*.yaml"))
    assert suites
    languages = set()
    for path in suites:
        suite = load_suite(path)
        languages |= {t.language for t in suite.tests}
    assert {"en", "de", "fr"} <= languages


def test_a_suite_runs_and_reports_per_test_results_and_pass_rate(version):
    tok = Tokenizer.from_file(str(version / "tokenizer.json"))
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=500, block_size=64, n_layer=1, n_head=2, d_model=32)).eval()
    suite = Suite(
        name="t",
        defaults={"max_new_tokens": 8},
        tests=[
            {
                "name": "greedy",
                "language": "en",
                "prompt": "The Time Traveller",
                "checks": [{"type": "length", "min_tokens": 1, "max_tokens": 8}],
            },
            {
                "name": "sampled",
                "language": "en",
                "prompt": "It was",
                "decoding": {"temperature": 1.0, "top_k": 20, "seed": 1},
                "checks": [{"type": "length", "min_tokens": 1}],
            },
            {
                "name": "never",
                "language": "de",
                "prompt": "Die Stadt liegt",
                "checks": [{"type": "exact", "value": "an der Elbe"}],
            },
            {
                "name": "long",
                "language": "fr",
                "prompt": "Candide " * 80,
                "checks": [{"type": "length", "min_tokens": 1}],
            },
        ],
    )
    eos = tok.token_to_id(EOS_TOKEN)
    first = run_suite(model, tok, suite, eos_id=eos)
    again = run_suite(model, tok, suite, eos_id=eos, batch_size=1)
    assert [t["continuation"] for t in first["tests"]] == [
        t["continuation"] for t in again["tests"]
    ]
    assert first["total"] == 4 and first["passed"] == 3 and first["pass_rate"] == 0.75
    assert first["pass_rate_by_language"] == {"de": 0.0, "en": 1.0, "fr": 1.0}
    never = first["tests"][2]
    assert not never["passed"] and never["checks"][0]["detail"] == "expected 'an der Elbe'"
    assert first["tests"][3]["prompt_truncated"]  # kept the end of a prompt that did not fit
