"""The exceptions that reach users: a one-line error, and the time limit's clean stop; `printable`, the text
from files (records, markers, paths) as a terminal may show it; `duration`, seconds as the terminal and the
report show them (here, at the bottom, so that the engine and the reporting both reach it)."""

import math
import re

QUOTE_CHARS = 200  # the most an error line quotes of a message, or of a name from a file
# C0 and C1 control characters (ANSI escapes start with ESC), DEL and Unicode's line and paragraph separators
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def printable(text: str) -> str:
    """`text` with every run of control characters (newlines, ANSI escapes' ESC) as one space: a record or file
    name from elsewhere can neither break a line of output nor steer the terminal."""
    return CONTROL.sub(" ", str(text))


def clip(text: str) -> str:
    """At most about QUOTE_CHARS of `text`, its start and its end (a library often says what failed last)."""
    half = QUOTE_CHARS // 2
    return text if len(text) <= QUOTE_CHARS else f"{text[:half]} ... {text[-half:]}"


def first_line(e: BaseException) -> str:
    """An exception as one line of an error: its type and its message's first line, clipped."""
    text = str(e).strip()
    return f"{type(e).__name__}: {clip(text.splitlines()[0])}" if text else type(e).__name__


def duration(seconds: float) -> str:
    """'42 s', '3.5 min', '2.1 h'; '—' for NaN."""
    if math.isnan(seconds):
        return "—"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


class BenchError(Exception):
    """A problem the user can fix (bad input, missing file, unknown name).

    The CLI prints ``error: <message>`` on one line and exits with status 2.
    """


class TimeLimitReached(KeyboardInterrupt):
    """The time limit ran out: an interruption like Ctrl-C, so nothing is marked failed and the run resumes."""
