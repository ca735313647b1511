"""Errors the data side raises for input it cannot use (as opposed to bugs)."""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """The inputs, after reading and filtering, cannot make a dataset; the message says why
    and what to change."""
