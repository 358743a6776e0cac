"""The exceptions that reach users: a one-line error, and the time limit's clean stop."""


class BenchError(Exception):
    """A problem the user can fix (bad input, missing file, unknown name).

    The CLI prints ``error: <message>`` on one line and exits with status 2.
    """


class TimeLimitReached(KeyboardInterrupt):
    """The time limit ran out: an interruption like Ctrl-C, so nothing is marked failed and the run resumes."""
