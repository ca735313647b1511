"""Run a function in a child process with a time limit on every call.

Some inputs make a library run for minutes (trafilatura on a page with a million table rows,
a regex on a pathological line). The extract stage must give such a page up and go on, so each
call here has a deadline, and a call that misses it is stopped for real: the child process is
killed and a fresh one serves the next call.

Why a child process and not the alternatives:

- a signal alarm (``signal.setitimer``) only works in a process's main thread, and Ray may run
  a stage on another thread; it also cannot interrupt C code (libxml2, the ``re`` engine),
  which is where a pathological page spends its time;
- a thread can wait for a result with a timeout, but cannot be stopped: the runaway call keeps
  a core busy for as long as it likes;
- a killed process always stops, whatever it was doing, and takes its memory with it.

The child is a plain ``python -m pipeline.timelimit MODULE:FUNCTION`` talking over its stdin and
stdout with length-prefixed pickles; it is started on the first call. It is not a
``multiprocessing`` child: those re-import the parent's ``__main__``, which inside a Ray worker
is Ray's own worker script.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import logging
import os
import pickle
import select
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["CallFailed", "CallTimedOut", "ChildDied", "TimeLimitedWorker"]

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">Q")  # frame length, bytes
# How long a new child may take to start Python and import its target before it is given up.
STARTUP_LIMIT_S = 120.0


class CallFailed(Exception):
    """The function raised in the child; ``kind`` is the exception's type name."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind = kind


class CallTimedOut(Exception):
    """The call did not finish within its time limit; the child was killed."""


class ChildDied(Exception):
    """The child process exited in the middle of a call (a crash, or killed for memory)."""


class TimeLimitedWorker:
    """Calls ``target`` (a ``"module:function"`` name) in a child process, one call at a time.

    ``call(arg)`` returns the function's result, or raises :class:`CallTimedOut` after
    ``time_limit`` seconds, :class:`ChildDied` if the child exits, or :class:`CallFailed` if the
    function raises. ``map(args)`` does the same for many arguments and returns each outcome,
    the exceptions included, instead of raising. After a timeout or a death a new child serves
    what is left (about a second for Python and its imports). Arguments and results must pickle.
    """

    def __init__(self, target: str, *, time_limit: float):
        if ":" not in target:
            raise ValueError(f"target must be 'module:function', got {target!r}")
        if time_limit <= 0:
            raise ValueError(f"time_limit must be positive seconds, got {time_limit}")
        self.target = target
        self.time_limit = time_limit
        self._child: subprocess.Popen | None = None
        self.restarts = 0

    def _start(self) -> subprocess.Popen:
        env = dict(os.environ)
        # The child must import what the parent imports (a Ray worker may have a working_dir on
        # its path that the installed environment lacks).
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        child = subprocess.Popen(
            [sys.executable, "-m", "pipeline.timelimit", self.target],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        _widen_pipe(child.stdin)
        _widen_pipe(child.stdout)
        # Requests are written without blocking, so that a child busy writing a large result
        # and a parent busy writing a large request can never wait on each other.
        os.set_blocking(child.stdin.fileno(), False)
        self._await_ready(child)
        return child

    def _await_ready(self, child: subprocess.Popen) -> None:
        """Wait for the child's empty "ready" frame, sent once its imports are done.

        Starting Python and importing the target takes a second or more on a busy machine;
        were that counted against the first call's limit, a restart after a timeout could time
        out the next page as well, and so on down the batch.
        """
        fd = child.stdout.fileno()
        deadline = time.monotonic() + STARTUP_LIMIT_S
        header = b""
        while len(header) < _HEADER.size:
            remaining = deadline - time.monotonic()
            readable, _, _ = select.select([fd], [], [], max(remaining, 0))
            if not readable:
                child.kill()
                child.wait()
                raise ChildDied(f"child did not start within {STARTUP_LIMIT_S:g} s")
            chunk = os.read(fd, _HEADER.size - len(header))
            if not chunk:
                raise ChildDied(f"child exited with code {child.wait()} while starting")
            header += chunk

    def call(self, arg: Any) -> Any:
        [outcome] = self.map([arg])
        if isinstance(outcome, (CallFailed, CallTimedOut, ChildDied)):
            raise outcome
        return outcome

    def map(self, args: Sequence[Any]) -> list[Any]:
        """Each argument's result, or the CallFailed/CallTimedOut/ChildDied it ended in.

        The next argument always waits in the child's pipe while it works on the current one,
        so it goes from one call to the next without waiting for this process to be scheduled
        (on a busy machine that wait cost about 5% of extraction time). Each call still has its
        own time limit, counted from when the child could start on it.
        """
        frames = [pickle.dumps(a, protocol=pickle.HIGHEST_PROTOCOL) for a in args]
        outcomes: list[Any] = [None] * len(frames)
        done = 0
        while done < len(frames):
            done = self._drive(frames, done, outcomes)
        return outcomes

    def _drive(self, frames: list[bytes], first: int, outcomes: list[Any]) -> int:
        """Run frames[first:] through one child until all are done or one fails; returns the
        index of the first frame not yet answered."""
        if self._child is None or self._child.poll() is not None:
            try:
                self._child = self._start()
            except ChildDied as exc:
                self._child = None
                self.restarts += 1
                outcomes[first] = exc
                return first + 1
        child = self._child
        to_child, from_child = child.stdin.fileno(), child.stdout.fileno()
        sent = received = first
        unsent = memoryview(b"")
        inbox = bytearray()
        started = time.monotonic()  # when the child could begin on frames[received]
        while received < len(frames):
            if not unsent and sent < len(frames) and sent <= received + 1:
                unsent = memoryview(_HEADER.pack(len(frames[sent])) + frames[sent])
                sent += 1
            remaining = started + self.time_limit - time.monotonic()
            if remaining <= 0:
                self._kill()
                outcomes[received] = CallTimedOut(f"no result within {self.time_limit:g} s")
                return received + 1
            readable, writable, _ = select.select(
                [from_child], [to_child] if unsent else [], [], remaining
            )
            if writable:
                try:
                    unsent = unsent[os.write(to_child, unsent) :]
                except BlockingIOError:
                    pass
                except BrokenPipeError:  # the child is gone; its stdout says so next
                    unsent = memoryview(b"")
            if readable:
                chunk = os.read(from_child, 1 << 20)
                if not chunk:
                    code = child.wait()
                    self._child = None
                    self.restarts += 1
                    outcomes[received] = ChildDied(f"child exited with code {code}")
                    return received + 1
                inbox += chunk
                while len(inbox) >= _HEADER.size:
                    (length,) = _HEADER.unpack_from(inbox)
                    if len(inbox) < _HEADER.size + length:
                        break
                    status, value = pickle.loads(inbox[_HEADER.size : _HEADER.size + length])
                    del inbox[: _HEADER.size + length]
                    outcomes[received] = value if status == "ok" else CallFailed(*value)
                    received += 1
                    started = time.monotonic()
        return received

    def _kill(self) -> None:
        if self._child is not None:
            self._child.kill()
            self._child.wait()
            self._child = None
            self.restarts += 1

    def close(self) -> None:
        """Stop the child (closing its stdin ends its loop; kill it if it does not listen)."""
        child, self._child = self._child, None
        if child is None:
            return
        try:
            child.stdin.close()
            child.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            child.kill()
            child.wait()
        child.stdout.close()

    def __del__(self):
        with contextlib.suppress(Exception):  # interpreter shutdown: nothing useful left to do
            self.close()


# A web page is about 100 KB; through Linux's default 64 KB pipe it crosses in several
# writer/reader hand-offs, each a context switch, which on a busy machine cost about 5% of
# extraction time (measured with bench/bench_extract.py). One MiB is the default most a user
# may ask for (/proc/sys/fs/pipe-max-size).
_PIPE_BYTES = 1 << 20


def _widen_pipe(stream) -> None:
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)  # Linux only
    if set_size is not None:
        with contextlib.suppress(OSError):  # over the system's limit: keep the default
            fcntl.fcntl(stream.fileno(), set_size, _PIPE_BYTES)


def _write_frame(stream, data: bytes) -> None:
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)
    stream.flush()


def _read_exact(stream, n: int) -> bytes:
    """n bytes from a pipe; EOFError if it closes first."""
    data = stream.read(n)
    if len(data) < n:
        raise EOFError
    return data


def _read_frame(stream) -> bytes:
    (length,) = _HEADER.unpack(_read_exact(stream, _HEADER.size))
    return _read_exact(stream, length)


def _resolve(target: str) -> Callable[[Any], Any]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _serve(target: str) -> None:
    """The child's loop: read an argument, call, write ("ok", result) or ("error", (type, msg))."""
    fn = _resolve(target)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    # Anything the function prints must not corrupt the result frames.
    sys.stdout = sys.stderr
    stdout.write(_HEADER.pack(0))  # ready: imports done, the parent may start its clock
    stdout.flush()
    while True:
        try:
            arg = pickle.loads(_read_frame(stdin))
        except EOFError:  # the parent closed our stdin or went away
            return
        try:
            reply = ("ok", fn(arg))
        except Exception as exc:  # reported to the parent, which counts it
            reply = ("error", (type(exc).__name__, str(exc)[:500]))
        _write_frame(stdout, pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))


if __name__ == "__main__":
    _serve(sys.argv[1])
