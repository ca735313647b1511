"""The time-limited child process: results, errors, deaths and timeouts."""

from __future__ import annotations

import time

import pytest

from pipeline.timelimit import CallFailed, CallTimedOut, ChildDied, TimeLimitedWorker


@pytest.fixture
def worker():
    w = TimeLimitedWorker("math:sqrt", time_limit=10)
    yield w
    w.close()


def test_a_call_returns_the_functions_result(worker):
    assert worker.call(16.0) == 4.0
    assert worker.call(2.25) == 1.5  # the same child serves the next call
    assert worker.restarts == 0


def test_an_exception_in_the_child_is_reported_by_type(worker):
    with pytest.raises(CallFailed) as info:
        worker.call(-1.0)
    assert info.value.kind == "ValueError"
    assert worker.call(9.0) == 3.0  # and the child lives on


def test_a_call_past_its_limit_is_stopped_and_the_next_call_gets_a_new_child():
    worker = TimeLimitedWorker("time:sleep", time_limit=0.5)
    try:
        worker.call(0)  # start the child outside the timing
        t0 = time.monotonic()
        with pytest.raises(CallTimedOut):
            worker.call(60)
        assert time.monotonic() - t0 < 5  # not 60: the child was killed
        assert worker.restarts == 1
        assert worker.call(0) is None
    finally:
        worker.close()


def test_a_child_that_dies_is_reported_and_replaced():
    worker = TimeLimitedWorker("os:_exit", time_limit=10)
    try:
        with pytest.raises(ChildDied):
            worker.call(3)
        with pytest.raises(ChildDied):  # a fresh child, which dies again
            worker.call(3)
        assert worker.restarts == 2
    finally:
        worker.close()


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="module:function"):
        TimeLimitedWorker("math.sqrt", time_limit=1)
    with pytest.raises(ValueError, match="positive"):
        TimeLimitedWorker("math:sqrt", time_limit=0)


def test_map_returns_each_outcome_in_order():
    worker = TimeLimitedWorker("math:sqrt", time_limit=10)
    try:
        out = worker.map([4.0, -1.0, 9.0])
    finally:
        worker.close()
    assert out[0] == 2.0 and out[2] == 3.0
    assert isinstance(out[1], CallFailed)


def test_map_goes_on_after_a_timeout():
    worker = TimeLimitedWorker("time:sleep", time_limit=0.5)
    try:
        out = worker.map([0, 60, 0, 0])
    finally:
        worker.close()
    assert out[0] is None and out[2] is None and out[3] is None
    assert isinstance(out[1], CallTimedOut)


def test_large_requests_and_results_cross_without_deadlock():
    payload = bytes(range(256)) * 12_000  # 3 MB each way, larger than any pipe buffer
    worker = TimeLimitedWorker("builtins:bytes", time_limit=20)
    try:
        out = worker.map([payload] * 3)
    finally:
        worker.close()
    assert out == [payload] * 3


def test_a_slow_start_does_not_count_against_the_first_call():
    # Importing the target takes 1.5 s, three times the limit: only the call itself is timed.
    worker = TimeLimitedWorker("tests.pipeline.slow_import:echo", time_limit=0.5)
    try:
        assert worker.map([1, 2]) == [1, 2]
        assert worker.restarts == 0
    finally:
        worker.close()
