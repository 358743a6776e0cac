"""The record schema: what a record, a claim in it and a CPU-time note must hold, as tables of checks.

Torch-free and reading no files (store.py reads them, capped): the runner writes what `RECORD` says, and
`status`, `report` and the gate read records only through `parse_record`, so a record copied in from
elsewhere is checked field by field before anything shows it. Optional keys (`OptionalKey`) are those an
older record may lack; a metric's key is required or optional as the metrics table says.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import reprlib
from pathlib import Path
from typing import Callable, NamedTuple

from packaging.version import Version

from .claims import CLAIM_NAMES
from .errors import BenchError
from .metric_table import METRIC_TABLE, Metric

SCHEMA = 1  # the record schema this code writes and reads
N_SUMS = 37  # sums 0..36: the length of a record's per-sum accuracies, the side of its confusion matrix
SPLITS = ("val", "test")  # a record's scored splits (no test on course data); a claim is on one of them
MAX_NAME = 100  # characters in a recipe's, budget's or dataset id's name (a folder's): far more is not one
# A budget's or a dataset id's name: a folder's name, and text in the tables' code spans, so nothing
# that markdown, HTML, a CSV, a terminal or a regex would read as more than text.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*", re.ASCII)
MAX_RECORD_BYTES = 4 << 20  # a record is tens of kB: more is not one (a copied-in /dev/zero, a huge file)
MAX_RECORD_DEPTH = 16  # a record nests about 6 deep; far deeper JSON is built to exhaust a recursive reader
MAX_SEED = 2**31 - 1  # runner.check_seeds' range


class OtherSchema(BenchError):
    """A well-formed record of another schema: not a finished run of this code, not corrupt either."""


def parse_record(text: bytes, path: Path) -> dict:
    """A record's bytes, checked (depth, then each field against the schema table `RECORD`); `path` names it in errors.

    Raises `OtherSchema` for a record of another schema version, and a BenchError naming the
    file for anything else that is not a valid record.
    """
    try:
        record = json.loads(text.decode("utf-8"))
    except json.JSONDecodeError as e:
        raise BenchError(f"{path}: corrupt record (bad JSON: {e.msg}, line {e.lineno})") from None
    except RecursionError:
        raise BenchError(f"{path}: corrupt record (nested too deeply)") from None
    except (OSError, ValueError) as e:  # unreadable, not UTF-8, or an integer of thousands of digits
        raise BenchError(f"{path}: corrupt record ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(record, dict):
        raise BenchError(f"{path}: corrupt record (not a JSON object but {type(record).__name__})")
    if _depth(record) > MAX_RECORD_DEPTH:
        raise BenchError(f"{path}: corrupt record (nested deeper than {MAX_RECORD_DEPTH} levels)")
    if "schema" in record and record["schema"] != SCHEMA:
        raise OtherSchema(f"{path}: record of schema {repr(record['schema'])[:20]}; this code reads schema {SCHEMA}")
    problem = _object(RECORD)(record, "")
    if problem:
        raise BenchError(f"{path}: corrupt record ({problem})")
    return record


def _depth(value) -> int:
    """How deeply JSON containers nest in `value` (without recursion, which such JSON is made to exhaust)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            todo += [(x, depth + 1) for x in (item.values() if isinstance(item, dict) else item)]
    return deepest


# ----------------------------------------------------------------------------------------
# The record schema: every field a reader uses, with what its value must be
# ----------------------------------------------------------------------------------------

Check = Callable[[object, str], str]  # (a value, where it is in the record) -> what is wrong with it, "" if nothing


class OptionalKey(NamedTuple):
    """A key a record may leave out (a pre-training stage, an ensemble's members); where present, `check` holds."""

    check: Check


def _value(expected: str, ok: Callable[[object], bool]) -> Check:
    """A check that `ok(value)` holds; else 'where is <value>, expected <expected>'."""
    return lambda value, where: "" if ok(value) else f"{where} is {_shown(value)}, expected {expected}"


def _nullable(check: Check) -> Check:
    return lambda value, where: "" if value is None else check(value, where)


def _list(item: Check, length: int | None = None) -> Check:
    """A check of a JSON list (of `length` items, where given) whose every item passes `item`."""
    def check(value, where: str) -> str:
        if not isinstance(value, list) or length is not None and len(value) != length:
            return f"{where} is {_shown(value)}, expected a list" + (f" of {length}" if length else "")
        return next((problem for i, x in enumerate(value) if (problem := item(x, f"{where}[{i}]"))), "")
    return check


def _object(table: dict[str, Check | OptionalKey]) -> Check:
    """A check of a JSON object: every key of `table` there (an OptionalKey may be absent), its value passing its
    check; other keys are left alone (newer code may add some)."""
    def check(value, where: str) -> str:
        if not isinstance(value, dict):
            return f"{where} is {_shown(value)}, expected an object"
        prefix = f"{where}." if where else ""
        missing = [k for k, c in table.items() if k not in value and not isinstance(c, OptionalKey)]
        if missing:
            return f"missing key {prefix}{', '.join(missing)}"
        checks = ((k, c.check if isinstance(c, OptionalKey) else c) for k, c in table.items() if k in value)
        return next((problem for k, c in checks if (problem := c(value[k], prefix + k))), "")
    return check


def _shown(value) -> str:
    """A value as an error shows it: its type, and a scalar's repr cut short (no control character reaches a terminal)."""
    kind = f"list of {len(value)}" if isinstance(value, list) else type(value).__name__
    return f"{kind} {reprlib.repr(value)}" if isinstance(value, (str, int, float)) else kind


def _is_time(value) -> bool:
    try:
        dt.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return False
    return True


def _is_version(value) -> bool:
    """A version the leaderboard can order (it picks the newest code version)."""
    try:
        Version(value)
    except (TypeError, ValueError):  # InvalidVersion, or a number of thousands of digits
        return False
    return len(value) <= MAX_NAME


TEXT = _value("a string", lambda v: isinstance(v, str))
BOOL = _value("true or false", lambda v: isinstance(v, bool))
RECIPE = _value("a recipe's name (a Python identifier)", lambda v: isinstance(v, str) and v.isidentifier()
                and len(v) <= MAX_NAME)  # fmt: skip
NAMED = _value("a name of letters, digits, '_', '.' and '-'", lambda v: isinstance(v, str) and len(v) <= MAX_NAME
               and NAME.fullmatch(v) is not None)  # fmt: skip
SEED = _value(f"a seed in 0..{MAX_SEED}", lambda v: is_int(v, 0, MAX_SEED))
WHOLE = _value("a whole number >= 0", lambda v: is_int(v, 0))
FRACTION = _value("a fraction in 0..1", lambda v: _is_number(v, 0, 1))
ERROR = _value("a finite number >= 0", lambda v: _is_number(v, 0))
NUMBER = _value("a finite number or null", lambda v: _is_number(v, nullable=True))
ANY_NUMBER = _value("a number or null", lambda v: _is_number(v, nullable=True, finite=False))  # NaN, inf: a run diverged
TIME = _value("an ISO time", _is_time)


def _metric_check(metric: Metric) -> Check | OptionalKey:
    """A metric of the table as a record must hold it: an optional one may be absent or null (older records, runs
    it does not apply to)."""
    check = FRACTION if metric.percent else ERROR if metric.finite else ANY_NUMBER
    return check if metric.required else OptionalKey(_nullable(check))


SPLIT = {  # a split's metrics (every metric of metric_table, per-sum accuracy, confusion)
    "n": WHOLE, "loss": ANY_NUMBER, **{name: _metric_check(m) for name, m in METRIC_TABLE.items()},
    "per_sum": _list(_nullable(FRACTION), N_SUMS),  # null: a sum absent from the split
    "confusion": _list(_list(WHOLE, N_SUMS), N_SUMS),
}  # fmt: skip
HISTORY = {  # one epoch; val_exact is null in a pre-training stage, which is scored otherwise
    "epoch": WHOLE, "train_loss": ANY_NUMBER, "val_loss": ANY_NUMBER, "val_exact": _nullable(FRACTION),
    "val_within_one": _nullable(FRACTION), "lr": ANY_NUMBER, "seconds": ANY_NUMBER,
}  # fmt: skip
CLAIM = {  # claims.Claim as a dict: the tables show a claim beside the measured metric of its name and split
    "metric": _value(f"one of {', '.join(CLAIM_NAMES)}", lambda v: v in CLAIM_NAMES),
    "value": NUMBER, "split": _value(f"one of {', '.join(SPLITS)}", lambda v: v in SPLITS),
    "note": OptionalKey(TEXT),
}  # fmt: skip
LEG = {  # one process that trained a run (runner.LEG_KEYS), from the first epoch it trained (of its part, if named)
    "epoch": WHOLE, "git_commit": TEXT, "git_dirty": BOOL, "device": TEXT, "part": OptionalKey(TEXT),
}  # fmt: skip
CONFIG = {  # the recipe's fields that the leaderboard reads (the rest is shown as it is)
    "members": OptionalKey(_value("a whole number >= 1", lambda v: is_int(v, 1))),
    "train_size": OptionalKey(_nullable(WHOLE)), "assumptions": OptionalKey(_list(TEXT)),
}  # fmt: skip
RECORD = {  # a record of this schema: what runner.run_one writes
    "schema": _value(str(SCHEMA), lambda v: is_int(v, SCHEMA, SCHEMA)), "recipe": RECIPE, "report": TEXT,
    "method": TEXT, "seed": SEED, "seeds_requested": _list(SEED), "budget": NAMED, "dataset_id": NAMED,
    "dataset": TEXT, "code_version": _value("a version", _is_version), "git_commit": TEXT,
    "git_dirty": BOOL, "device": TEXT,
    "versions": _value("an object of version strings", lambda v: isinstance(v, dict)
                       and all(isinstance(s, str) for s in v.values())),  # fmt: skip
    "pretrained": TEXT, "params_m": NUMBER, "gflops": NUMBER, "train_seconds": NUMBER, "images_per_s": NUMBER,
    "epochs_run": _nullable(WHOLE), "selected_epoch": _nullable(WHOLE), "started": TIME, "finished": TIME,
    "config": _object(CONFIG), "claimed": _list(_object(CLAIM)),
    "metrics": _object({"val": _object(SPLIT), "test": OptionalKey(_nullable(_object(SPLIT)))}),
    "history": _list(_object(HISTORY)),
    "members": OptionalKey(_list(_object({"test": OptionalKey(_nullable(_object({"exact": FRACTION})))}))),
    "pretrain": OptionalKey(_object({"history": _list(_object(HISTORY))})),  # a pre-training stage's epochs
    "engine": OptionalKey(TEXT), "stacked_seeds": OptionalKey(_nullable(_list(SEED))),
    "legs": OptionalKey(_list(_object(LEG))),  # where a resumed run's legs differ in commit, dirty tree or device
}  # fmt: skip
RECORD_KEYS = tuple(k for k, check in RECORD.items() if not isinstance(check, OptionalKey))
# A note of a recipe left out on a CPU (write_estimate): shown under the tables, so held to the record's names.
NOTE = {"recipe": RECIPE, "budget": NAMED, "dataset_id": NAMED, "device": OptionalKey(TEXT),
        "estimated_seconds": ERROR}  # fmt: skip


def is_int(value, low: int = -math.inf, high: int = math.inf) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _is_number(value, low: float = -math.inf, high: float = math.inf, nullable: bool = False,
               finite: bool = True) -> bool:
    """A JSON number a float can hold (not 10**400), in low..high; NaN and inf only where not `finite`."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return value is None and nullable
    try:
        value = float(value)
    except OverflowError:
        return False
    if not math.isfinite(value):
        return not finite
    return low <= value <= high


def note_problem(note: object) -> str:
    """What is wrong with a CPU-time note (store.write_estimate), "" if nothing."""
    return _object(NOTE)(note, "note")
