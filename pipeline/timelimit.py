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
import importlib
import logging
import os
import pickle
import select
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["CallFailed", "CallTimedOut", "ChildDied", "TimeLimitedWorker"]

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">Q")  # frame length, bytes


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
    function raises. After a timeout or a death the next call starts a new child (about a
    second for Python and its imports). Arguments and results must pickle.
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
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline.timelimit", self.target],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )

    def call(self, arg: Any) -> Any:
        if self._child is None or self._child.poll() is not None:
            self._child = self._start()
        child = self._child
        deadline = time.monotonic() + self.time_limit
        try:
            _write_frame(child.stdin, pickle.dumps(arg, protocol=pickle.HIGHEST_PROTOCOL))
            payload = _read_frame(child.stdout, deadline)
        except TimeoutError:
            self._kill()
            raise CallTimedOut(f"no result within {self.time_limit:g} s") from None
        except (BrokenPipeError, EOFError):
            code = child.wait()
            self._child = None
            self.restarts += 1
            raise ChildDied(f"extraction child exited with code {code}") from None
        status, value = pickle.loads(payload)
        if status == "ok":
            return value
        raise CallFailed(*value)

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


def _write_frame(stream, data: bytes) -> None:
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)
    stream.flush()


def _read_exact(stream, n: int, deadline: float | None) -> bytes:
    """n bytes from a pipe; EOFError if it closes first, TimeoutError past the deadline."""
    fd = stream.fileno()
    chunks, got = [], 0
    while got < n:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _read_frame(stream, deadline: float | None) -> bytes:
    (length,) = _HEADER.unpack(_read_exact(stream, _HEADER.size, deadline))
    return _read_exact(stream, length, deadline)


def _resolve(target: str) -> Callable[[Any], Any]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _serve(target: str) -> None:
    """The child's loop: read an argument, call, write ("ok", result) or ("error", (type, msg))."""
    fn = _resolve(target)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    # Anything the function prints must not corrupt the result frames.
    sys.stdout = sys.stderr
    while True:
        try:
            arg = pickle.loads(_read_frame(stdin, None))
        except EOFError:  # the parent closed our stdin or went away
            return
        try:
            reply = ("ok", fn(arg))
        except Exception as exc:  # reported to the parent, which counts it
            reply = ("error", (type(exc).__name__, str(exc)[:500]))
        _write_frame(stdout, pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))


if __name__ == "__main__":
    _serve(sys.argv[1])
