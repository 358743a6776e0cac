"""The plan and the time box of `run`."""

from __future__ import annotations


class TimeLimitReached(KeyboardInterrupt):
    """The time limit ran out: an interruption like Ctrl-C, so nothing is marked failed and the run resumes."""
