"""The results store: one JSON record per finished run, written atomically.

Layout under a results folder::

    records/<budget>/<dataset_id>/<recipe>/seed<seed>.json         finished run (the record)
    records/<budget>/<dataset_id>/<recipe>/seed<seed>.lock         run in progress (pid, host)
    records/<budget>/<dataset_id>/<recipe>/seed<seed>.failed.json  last failure (error's last line)
    checkpoints/<budget>/<dataset_id>/<recipe>/seed<seed>/{last,best,stage1}.pt   (not in git)

A record's key is (recipe, seed, budget, dataset_id, code_version); a record made by another
code version does not count as finished. One file per run means several processes or machines
can write into one folder without a shared file to corrupt; the lock keeps two processes
off the same run.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import reprlib
import socket
import stat
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterator, NamedTuple

from packaging.version import Version

from . import __version__
from .claims import CLAIM_NAMES
from .errors import BenchError
from .metric_table import METRIC_TABLE, Metric


# A run on another host whose lock and checkpoints have not changed for this long is taken
# to be dead (pre-empted or killed): long enough for one epoch of the slowest recipe on a GPU.
LOCK_STALE_HOURS = float(os.environ.get("DIGITSUM_LOCK_STALE_HOURS", "6"))


@dataclass(frozen=True)
class RunKey:
    """Identifies one run; the code version is checked against the record's content."""

    recipe: str
    seed: int
    budget: str
    dataset_id: str

    def record_path(self, results: Path) -> Path:
        return Path(results) / "records" / self.budget / self.dataset_id / self.recipe / f"seed{self.seed}.json"

    def lock_path(self, results: Path) -> Path:
        return self.record_path(results).with_suffix(".lock")

    def failed_path(self, results: Path) -> Path:
        return self.record_path(results).with_suffix(".failed.json")

    def checkpoint_dir(self, results: Path) -> Path:
        return Path(results) / "checkpoints" / self.budget / self.dataset_id / self.recipe / f"seed{self.seed}"


def inside(path: Path, root: Path) -> Path:
    """`path`, where it stays inside the folder `root` with its symlinks followed; else a one-line BenchError.

    Results folders come from tarballs, shared disks and pull requests: a symlink planted in one
    must never lead a write or a delete out of it. Check a file's folder, not the file: a rename
    over a link, or an unlink of it, replaces the link and leaves what it points to alone.
    """
    path = Path(path)
    try:
        out = not path.resolve().is_relative_to(Path(root).resolve())
    except (OSError, RuntimeError):  # a symlink loop
        out = True
    if out:
        raise BenchError(f"{path}: a symlink leads out of {root} (or loops); refused to write or delete there")
    return path


def remove(path: Path, root: Path) -> None:
    """Delete the file `path` of the folder `root` (none there is fine): a symlink itself, never what it points
    to, and never through a folder that leads out of `root` (`inside`). OSError becomes a one-line BenchError."""
    path = Path(path)
    inside(path.parent, root)
    try:
        path.unlink(missing_ok=True)
    except OSError as e:  # a folder where the file should be
        raise BenchError(f"{path}: cannot delete ({e.strerror or e})") from None


def check_run_folders(key: RunKey, results: Path) -> None:
    """A BenchError where the run's record folder, its checkpoint folder or a link under that folder leads out
    of `results` (`inside`): a run writes its lock, record and checkpoints there, and `--force` deletes there."""
    inside(key.record_path(results).parent, results)
    folder = inside(key.checkpoint_dir(results), results)
    for path in folder.rglob("*"):  # rglob does not enter a linked folder: the link itself is checked here
        inside(path, results)


@contextmanager
def atomic_write(path: Path, root: Path | None = None) -> Iterator[IO[bytes]]:
    """A binary file that appears at `path` whole or not at all: a temp file beside it, then a rename.

    Every file the suite writes (records, checkpoints, datasets, leaderboard, plots) goes
    through here, so an interrupted or failed write never leaves half a file behind. With
    `root`, the results folder `path` is in, a folder that leads out of it is refused (`inside`);
    a link at `path` itself is replaced, not written through. An OSError (a read-only folder,
    a full disk) becomes a one-line BenchError naming the file.
    """
    path = Path(path)
    if root is not None:
        inside(path.parent, root)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:  # a read-only folder, a file where a folder should be, a full disk
        raise BenchError(f"{path}: cannot write ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; results are shared
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise BenchError(f"{path}: cannot write ({e.strerror or e})") from None
        raise


def read_capped(path: Path, limit: int, what: str) -> bytes:
    """A regular file's bytes, refused past `limit` bytes before more is read (files from elsewhere: a symlink
    to /dev/zero, a FIFO, a file with no end of line). OSError becomes a one-line BenchError naming the file."""
    path = Path(path)
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise BenchError(f"{path}: {what} (not a regular file)")
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise BenchError(f"{path}: no such file") from None
    except OSError as e:
        raise BenchError(f"{path}: {what} ({e.strerror or e})") from None
    if len(data) > limit:
        raise BenchError(f"{path}: {what} (over {limit:,} bytes)")
    return data


def write_json_atomic(path: Path, obj: object, root: Path | None = None) -> None:
    """Write JSON atomically, nowhere outside the folder `root` where it is given (see `atomic_write`)."""
    with atomic_write(path, root) as f:
        f.write(json.dumps(obj, indent=1).encode())


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
MAX_PID = 2**22  # Linux's largest pid_max: a lock naming a larger pid was not written by a live process


class OtherSchema(BenchError):
    """A well-formed record of another schema: not a finished run of this code, not corrupt either."""


def read_record(path: Path) -> dict:
    """The record at `path`, checked (size, depth, then each field against the schema table `RECORD`): the one
    reader of the runner, `status` and `report`.

    Raises `OtherSchema` for a record of another schema version, and a BenchError naming the
    file for anything else that is not a valid record.
    """
    text = read_capped(path, MAX_RECORD_BYTES, "corrupt record")
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
RECIPE = _value("a recipe's name (a Python identifier)", lambda v: isinstance(v, str) and v.isidentifier()
                and len(v) <= MAX_NAME)  # fmt: skip
NAMED = _value("a name of letters, digits, '_', '.' and '-'", lambda v: isinstance(v, str) and len(v) <= MAX_NAME
               and NAME.fullmatch(v) is not None)  # fmt: skip
SEED = _value(f"a seed in 0..{MAX_SEED}", lambda v: _is_int(v, 0, MAX_SEED))
WHOLE = _value("a whole number >= 0", lambda v: _is_int(v, 0))
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
CONFIG = {  # the recipe's fields that the leaderboard reads (the rest is shown as it is)
    "members": OptionalKey(_value("a whole number >= 1", lambda v: _is_int(v, 1))),
    "train_size": OptionalKey(_nullable(WHOLE)), "assumptions": OptionalKey(_list(TEXT)),
}  # fmt: skip
RECORD = {  # a record of this schema: what runner.run_one writes
    "schema": _value(str(SCHEMA), lambda v: _is_int(v, SCHEMA, SCHEMA)), "recipe": RECIPE, "report": TEXT,
    "method": TEXT, "seed": SEED, "seeds_requested": _list(SEED), "budget": NAMED, "dataset_id": NAMED,
    "dataset": TEXT, "code_version": _value("a version", _is_version), "git_commit": TEXT,
    "git_dirty": _value("true or false", lambda v: isinstance(v, bool)), "device": TEXT,
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
}  # fmt: skip
RECORD_KEYS = tuple(k for k, check in RECORD.items() if not isinstance(check, OptionalKey))
# A note of a recipe left out on a CPU (write_estimate): shown under the tables, so held to the record's names.
NOTE = {"recipe": RECIPE, "budget": NAMED, "dataset_id": NAMED, "device": OptionalKey(TEXT),
        "estimated_seconds": ERROR}  # fmt: skip


def _is_int(value, low: int = -math.inf, high: int = math.inf) -> bool:
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


def finished_record(key: RunKey, results: Path) -> dict | None:
    """The record of `key` made by this code version, None if there is none.

    A record of another schema or code version is not this code's finished run: None, and
    the runner redoes it. A corrupt record raises: it is reported, never silently skipped or
    overwritten.
    """
    path = key.record_path(results)
    if not path.exists():
        return None
    try:
        record = read_record(path)
    except OtherSchema:
        return None
    return record if record["code_version"] == __version__ else None


def _small_json(path: Path) -> object:
    """A lock, failure marker or estimate note (files this code writes, a few hundred bytes), parsed;
    None where it cannot be read: they are bookkeeping, and a bad one must not stop `run` or `status`."""
    try:
        return json.loads(read_capped(path, 1 << 16, "unreadable").decode("utf-8"))
    except (BenchError, ValueError, RecursionError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_owner(key: RunKey, results: Path) -> dict | None:
    """Who holds the run's lock ({pid, host, since}), None if nobody (stale locks count as none)."""
    path = key.lock_path(results)
    owner = _small_json(path)
    if not isinstance(owner, dict):
        return None  # not a lock this code wrote
    if owner.get("host") == socket.gethostname():
        pid = owner.get("pid")
        return owner if _is_int(pid, 1, MAX_PID) and _pid_alive(pid) else None  # died on this host: stale
    # Another host (e.g. a pre-empted SLURM task): alive while its lock or checkpoints keep changing.
    files = [path, *key.checkpoint_dir(results).rglob("*.pt")]
    last_sign = max(f.stat().st_mtime for f in files if f.exists())
    return owner if time.time() - last_sign < LOCK_STALE_HOURS * 3600 else None


@contextmanager
def run_lock(key: RunKey, results: Path) -> Iterator[bool]:
    """Hold the run's lock for the duration; yields False (and holds nothing) if another live process has it."""
    path = key.lock_path(results)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    for _ in range(2):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if lock_owner(key, results) is not None:
                yield False
                return
            path.unlink(missing_ok=True)  # stale lock from a dead process: take it over
            continue
        except OSError as e:
            raise BenchError(f"{path}: cannot write ({e.strerror or e})") from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        try:
            yield True
        finally:
            path.unlink(missing_ok=True)
        return
    yield False


def record_failure(key: RunKey, results: Path, error: BaseException) -> None:
    """Leave a marker saying the run failed and with what (its last line), for `status`."""
    lines = str(error).strip().splitlines() or [""]
    write_json_atomic(
        key.failed_path(results),
        {"recipe": key.recipe, "seed": key.seed, "budget": key.budget, "dataset_id": key.dataset_id,
         "error": f"{type(error).__name__}: {lines[-1]}", "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
        results,
    )


def run_states(keys: list[RunKey], results: Path) -> list[dict]:
    """For `status`: each run finished, running (lock held), failed (with the error), missing, corrupt
    (the record cannot be read) or stale (a record of another schema, which `run` redoes)."""
    rows = []
    for key in keys:
        row = {"recipe": key.recipe, "seed": key.seed, "budget": key.budget, "dataset_id": key.dataset_id, "detail": ""}
        stale = False
        try:
            record = finished_record(key, results)
            if record is None and key.record_path(results).exists():
                read_record(key.record_path(results))  # raises OtherSchema where that is why
        except OtherSchema as e:
            record, stale, row["detail"] = None, True, f"{e}; `run` redoes it"
        except BenchError as e:
            record, row["detail"] = None, str(e)
        owner = lock_owner(key, results)
        failed = key.failed_path(results)
        if record is not None:
            row["state"] = "finished"
            row["detail"] = f"test exact {record['metrics']['test']['exact']:.2%}" if record["metrics"].get("test") else ""
        elif owner is not None:
            row["state"], row["detail"] = "running", f"pid {owner.get('pid')} on {owner.get('host')}"
        elif failed.exists():
            row["state"] = "failed"
            marker = _small_json(failed)
            error = marker.get("error") if isinstance(marker, dict) else None
            row["detail"] = error[:300] if isinstance(error, str) else f"{failed}: unreadable failure marker"
        else:
            row["state"] = "stale" if stale else "corrupt" if row["detail"] else "missing"
        rows.append(row)
    return rows


def estimate_path(results: Path, budget: str, dataset_id: str, recipe: str) -> Path:
    """Where the note of a recipe left out on a CPU lives (beside the records, never read as one)."""
    return Path(results) / "estimates" / budget / dataset_id / f"{recipe}.json"


def write_estimate(results: Path, budget: str, dataset_id: str, recipe: str, seconds: float, device: str) -> None:
    """Note that `recipe` was not run on `device` under `budget`: its estimated time per seed was too long."""
    write_json_atomic(estimate_path(results, budget, dataset_id, recipe),
                      {"recipe": recipe, "budget": budget, "dataset_id": dataset_id, "device": device,
                       "estimated_seconds": round(seconds), "code_version": __version__}, results)


def remove_estimate(results: Path, budget: str, dataset_id: str, recipe: str) -> None:
    """Drop the note once the recipe is run here after all."""
    remove(estimate_path(results, budget, dataset_id, recipe), results)


def read_estimates(results: Path) -> list[dict]:
    """Every note of a recipe left out on a CPU; unreadable notes are skipped (they are advice, not results)."""
    notes = []
    for path in sorted((Path(results) / "estimates").rglob("*.json")):
        note = _small_json(path)
        if not _object(NOTE)(note, "note"):
            notes.append(note)
    return notes
