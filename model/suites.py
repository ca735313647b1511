"""Generation test suites: prompts with decoding settings and checks on what the model writes.

A suite is a YAML file (kiln's own live in jobs/suites/)::

    name: sample-heldout
    defaults: {max_new_tokens: 32}          # decoding settings every test starts from
    tests:
      - name: en-time-machine-1
        language: en
        prompt: "The Time Traveller (for so it will be convenient to speak of him)"
        decoding: {temperature: 0.8, seed: 1, stop: ["\\n\\n"]}
        checks:
          - {type: contains, value: "the"}
          - {type: regex, pattern: "\\\\w+ \\\\w+"}
          - {type: exact, value: "..."}
          - {type: stops_at_eos}
          - {type: length, min_tokens: 4, max_tokens: 32}
          - {type: max_repetition, n: 3, min_distinct: 0.5}

A test passes when every one of its checks does; the suite reports each test's continuation,
each check's verdict with the reason, and the pass rate overall and per language. Tests that
share decoding settings are generated as one batch.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from model.generate import generate_batch

__all__ = [
    "Decoding",
    "Suite",
    "SuiteError",
    "distinct_n",
    "load_suite",
    "run_check",
    "run_suite",
]


class SuiteError(ValueError):
    """A suite file is missing, is not YAML, or does not match the suite format."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Decoding(_Strict):
    """How a test's continuation is generated; every field may be left to the suite default."""

    max_new_tokens: int = Field(32, ge=1, description="New tokens at most (the prompt excluded).")
    min_new_tokens: int = Field(0, ge=0, description="Hold off end-of-document and stop strings.")
    temperature: float = Field(0.0, ge=0, description="0 is greedy.")
    top_k: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0, le=1)
    repetition_penalty: float = Field(1.0, gt=0)
    stop: list[str] = Field(default_factory=list, description="Stop strings, cut from the text.")
    seed: int = Field(0, description="Seeds sampling; ignored when greedy.")


class ContainsCheck(_Strict):
    type: Literal["contains"]
    value: str
    case_sensitive: bool = True


class RegexCheck(_Strict):
    type: Literal["regex"]
    pattern: str

    @model_validator(mode="after")
    def _compiles(self) -> RegexCheck:
        try:
            re.compile(self.pattern)
        except re.error as exc:
            raise ValueError(
                f"pattern {self.pattern!r} is not a regular expression: {exc}"
            ) from exc
        return self


class ExactCheck(_Strict):
    type: Literal["exact"]
    value: str
    strip: bool = Field(True, description="Compare without leading and trailing whitespace.")


class StopsAtEosCheck(_Strict):
    type: Literal["stops_at_eos"]


class LengthCheck(_Strict):
    type: Literal["length"]
    min_tokens: int = Field(0, ge=0)
    max_tokens: int | None = Field(None, ge=0)


class MaxRepetitionCheck(_Strict):
    """Distinct-n (Li et al., 2016): distinct word n-grams over all word n-grams of the text;
    1.0 repeats nothing, a text stuck in a loop tends to 0."""

    type: Literal["max_repetition"]
    n: int = Field(3, ge=1)
    min_distinct: float = Field(0.5, ge=0, le=1)


Check = Annotated[
    ContainsCheck | RegexCheck | ExactCheck | StopsAtEosCheck | LengthCheck | MaxRepetitionCheck,
    Field(discriminator="type"),
]


class SuiteTest(_Strict):
    name: str
    prompt: str = Field(min_length=1)
    language: str | None = None
    source: str | None = Field(None, description="Where the prompt was taken from.")
    decoding: dict = Field(default_factory=dict, description="Overrides of the suite defaults.")
    checks: list[Check] = Field(min_length=1)


class Suite(_Strict):
    name: str
    description: str = ""
    defaults: Decoding = Field(default_factory=Decoding)
    tests: list[SuiteTest] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names_and_valid_decoding(self) -> Suite:
        seen = set()
        for test in self.tests:
            if test.name in seen:
                raise ValueError(f"test name {test.name!r} appears twice")
            seen.add(test.name)
            self.decoding_for(test)
        return self

    def decoding_for(self, test: SuiteTest) -> Decoding:
        try:
            return Decoding(**{**self.defaults.model_dump(), **test.decoding})
        except ValidationError as exc:
            raise ValueError(f"test {test.name!r}: decoding: {exc}") from exc


def load_suite(path: str | Path) -> Suite:
    path = Path(path)
    if not path.is_file():
        raise SuiteError(f"no suite file at {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        return Suite(**(raw or {}))
    except yaml.YAMLError as exc:
        raise SuiteError(f"{path} is not valid YAML: {exc}") from exc
    except (ValidationError, TypeError) as exc:
        raise SuiteError(f"{path} is not a valid suite: {exc}") from exc


def distinct_n(text: str, n: int) -> float:
    """Share of distinct word n-grams; 1.0 for a text too short to hold one."""
    words = text.split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def run_check(check: Check, text: str, tokens: int, stop_reason: str) -> tuple[bool, str]:
    """Apply one check to a continuation; returns (passed, why)."""
    if isinstance(check, ContainsCheck):
        hay, needle = (
            (text, check.value)
            if check.case_sensitive
            else (text.casefold(), check.value.casefold())
        )
        ok = needle in hay
        return ok, f"{check.value!r} {'found' if ok else 'not found'}"
    if isinstance(check, RegexCheck):
        m = re.search(check.pattern, text)
        return m is not None, f"matched {m.group(0)!r}" if m else "no match"
    if isinstance(check, ExactCheck):
        got = text.strip() if check.strip else text
        want = check.value.strip() if check.strip else check.value
        return got == want, "equal" if got == want else f"expected {want!r}"
    if isinstance(check, StopsAtEosCheck):
        return stop_reason == "eos", f"stopped by {stop_reason}"
    if isinstance(check, LengthCheck):
        ok = tokens >= check.min_tokens and (check.max_tokens is None or tokens <= check.max_tokens)
        bounds = (
            f"[{check.min_tokens}, {check.max_tokens if check.max_tokens is not None else '∞'}]"
        )
        return ok, f"{tokens} tokens, bounds {bounds}"
    if isinstance(check, MaxRepetitionCheck):
        d = distinct_n(text, check.n)
        return d >= check.min_distinct, f"distinct-{check.n} {d:.2f}, at least {check.min_distinct}"
    raise TypeError(f"unknown check {check!r}")


def run_suite(model, tokenizer, suite: Suite, *, eos_id: int, batch_size: int = 16) -> dict:
    """Generate every test's continuation and apply its checks; a JSON-ready dict."""
    groups: dict[str, list[int]] = defaultdict(list)
    decodings = [suite.decoding_for(t) for t in suite.tests]
    for i, d in enumerate(decodings):
        groups[d.model_dump_json()].append(i)
    generations: list = [None] * len(suite.tests)
    context = model.config.block_size
    for members in groups.values():
        d = decodings[members[0]]
        # A model whose whole context is shorter than the tokens asked for still gets a prompt
        # token; the result records the cap.
        max_new = min(d.max_new_tokens, context - 1)
        for start in range(0, len(members), batch_size):
            chunk = members[start : start + batch_size]
            prompts = []
            for i in chunk:
                ids = tokenizer.encode(suite.tests[i].prompt).ids
                # A suite written for a long context still runs on a short one: keep the end
                # of a prompt that would not fit, and say so in the result.
                prompts.append(ids[-(context - max_new) :])
            gens = generate_batch(
                model,
                prompts,
                max_new_tokens=max_new,
                min_new_tokens=d.min_new_tokens,
                eos_id=eos_id,
                temperature=d.temperature,
                top_k=d.top_k,
                top_p=d.top_p,
                repetition_penalty=d.repetition_penalty,
                stop_strings=d.stop,
                decode=tokenizer.decode,
                seed=d.seed if d.temperature > 0 else None,
            )
            for i, ids, gen in zip(chunk, prompts, gens, strict=True):
                if max_new < d.max_new_tokens:
                    gen.notes.append(f"max_new_tokens capped at {max_new} by the context")
                generations[i] = (len(ids), gen)

    results = []
    by_language: dict[str, list[bool]] = defaultdict(list)
    for test, d, (prompt_tokens, gen) in zip(suite.tests, decodings, generations, strict=True):
        n_new = len(gen.tokens) - (gen.stop_reason == "eos")
        checks = []
        for check in test.checks:
            ok, why = run_check(check, gen.text, n_new, gen.stop_reason)
            checks.append({"type": check.type, "passed": ok, "detail": why})
        passed = all(c["passed"] for c in checks)
        by_language[test.language or "?"].append(passed)
        results.append(
            {
                "name": test.name,
                "language": test.language,
                "prompt": test.prompt,
                "prompt_tokens": prompt_tokens,
                "prompt_truncated": prompt_tokens < len(tokenizer.encode(test.prompt).ids),
                "decoding": d.model_dump(),
                "continuation": gen.text,
                "new_tokens": n_new,
                "stop_reason": gen.stop_reason,
                "notes": gen.notes,
                "checks": checks,
                "passed": passed,
            }
        )
    n_passed = sum(r["passed"] for r in results)
    return {
        "suite": suite.name,
        "tests": results,
        "passed": n_passed,
        "total": len(results),
        "pass_rate": n_passed / len(results),
        "pass_rate_by_language": {k: sum(v) / len(v) for k, v in sorted(by_language.items())},
    }
