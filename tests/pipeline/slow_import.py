"""A module that takes a while to import, like trafilatura on a busy machine (test_timelimit)."""

import time

time.sleep(1.5)


def echo(value):
    return value
