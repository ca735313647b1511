"""Named points where a test can kill the data job, to prove that a rerun recovers.

Setting ``KILN_CRASH_AT=<point>`` makes the process SIGKILL itself when it reaches that point:
no ``finally`` block, no atexit handler and no flush runs, as when a node dies or the OOM killer
strikes. The refresh tests use it (tests/pipeline/test_refresh_crash.py); in production the
variable is unset and each call is one dictionary lookup.
"""

from __future__ import annotations

import logging
import os
import signal

__all__ = ["CRASH_ENV", "crash_point"]

CRASH_ENV = "KILN_CRASH_AT"

log = logging.getLogger(__name__)


def crash_point(name: str) -> None:
    """Kill this process with SIGKILL if ``KILN_CRASH_AT`` names this point."""
    if os.environ.get(CRASH_ENV) == name:
        log.warning("%s=%s: killing this process now", CRASH_ENV, name)
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)
