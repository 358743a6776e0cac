"""The one exception type that reaches users as a one-line message."""


class BenchError(Exception):
    """A problem the user can fix (bad input, missing file, unknown name).

    The CLI prints ``error: <message>`` on one line and exits with status 2.
    """
