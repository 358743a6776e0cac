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
import socket
import stat
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

from packaging.version import InvalidVersion, Version

from . import __version__
from .errors import BenchError


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


@contextmanager
def atomic_write(path: Path) -> Iterator[IO[bytes]]:
    """A binary file that appears at `path` whole or not at all: a temp file beside it, then a rename.

    Every file the suite writes (records, checkpoints, datasets, leaderboard, plots) goes
    through here, so an interrupted or failed write never leaves half a file behind. An
    OSError (a read-only folder, a full disk) becomes a one-line BenchError naming the file.
    """
    path = Path(path)
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


def write_json_atomic(path: Path, obj: object) -> None:
    """Write JSON atomically (see `atomic_write`)."""
    with atomic_write(path) as f:
        f.write(json.dumps(obj, indent=1).encode())


SCHEMA = 1  # the record schema this code writes and reads
N_SUMS = 37  # sums 0..36: the length of a record's per-sum accuracies, the side of its confusion matrix
RECORD_KEYS = (
    "schema", "recipe", "report", "method", "seed", "seeds_requested", "budget", "dataset_id",
    "dataset", "code_version", "git_commit", "git_dirty", "device", "versions", "pretrained",
    "params_m", "gflops", "train_seconds", "images_per_s", "epochs_run", "selected_epoch",
    "started", "finished", "config", "claimed", "metrics", "history",
)  # fmt: skip
SPLIT_KEYS = ("n", "loss", "exact", "within_one", "mse", "rmse", "mae", "per_sum", "confusion")
HISTORY_KEYS = ("epoch", "train_loss", "val_loss", "val_exact", "val_within_one", "lr", "seconds")
# Types a record's fields must have for the runner, `status` and `report` to use them.
_TYPES = {"recipe": str, "report": str, "method": str, "budget": str, "dataset_id": str, "dataset": str,
          "code_version": str, "git_commit": str, "git_dirty": bool, "device": str, "pretrained": str,
          "started": str, "finished": str, "seeds_requested": list, "versions": dict, "config": dict,
          "claimed": list, "metrics": dict, "history": list}
MAX_RECORD_BYTES = 4 << 20  # a record is tens of kB: more is not one (a copied-in /dev/zero, a huge file)
MAX_RECORD_DEPTH = 16  # a record nests about 6 deep; far deeper JSON is built to exhaust a recursive reader
MAX_SEED = 2**31 - 1  # runner.check_seeds' range
MAX_PID = 2**22  # Linux's largest pid_max: a lock naming a larger pid was not written by a live process


class OtherSchema(BenchError):
    """A well-formed record of another schema: not a finished run of this code, not corrupt either."""


def read_record(path: Path) -> dict:
    """The record at `path`, checked (size, depth, schema, keys, types, ranges): the one reader of the runner,
    `status` and `report`.

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
    problem = _record_problem(record)
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


def _record_problem(record: dict) -> str:
    """What is wrong with a parsed record of this schema ("" when nothing is)."""
    missing = [k for k in RECORD_KEYS if k not in record]
    if missing:
        return f"missing key {', '.join(missing)}"
    for key, kind in _TYPES.items():
        if not isinstance(record[key], kind):
            return f"{key} is {type(record[key]).__name__}, expected {kind.__name__}"
    if not _is_int(record["seed"], 0, MAX_SEED):
        return f"seed is {str(record['seed'])[:20]}, expected an integer in 0..{MAX_SEED}"
    if not all(_is_int(s, 0, MAX_SEED) for s in record["seeds_requested"]):
        return "seeds_requested holds something other than a seed"
    if not all(isinstance(v, str) for v in record["versions"].values()):
        return "versions holds a non-string"
    for key in ("params_m", "gflops", "train_seconds", "images_per_s"):
        if not _is_number(record[key], nullable=True):
            return f"{key} is not a number"
    for key in ("epochs_run", "selected_epoch"):
        if not (record[key] is None or _is_int(record[key], 0)):
            return f"{key} is not a whole number"
    for key in ("started", "finished"):
        try:
            dt.datetime.fromisoformat(record[key])
        except ValueError:
            return f"{key} is not an ISO time"
    try:
        Version(record["code_version"])  # the leaderboard picks the newest code version
    except InvalidVersion:
        return f"code_version {record['code_version'][:20]!r} is not a version"
    assumptions = record["config"].get("assumptions", [])
    if not (isinstance(assumptions, list) and all(isinstance(a, str) for a in assumptions)):
        return "config.assumptions is not a list of strings"
    return _metrics_problem(record["metrics"]) or _history_problem(record["history"]) or _claims_problem(record["claimed"])


def _metrics_problem(metrics: dict) -> str:
    """What is wrong with a record's metrics: each split's numbers in their ranges, per-sum and confusion the right size."""
    if not isinstance(metrics.get("val"), dict):
        return "metrics.val is not an object"
    for split in ("val", "test"):
        values = metrics.get(split)
        if split == "test" and values is None:
            continue  # course data has no test split
        if not isinstance(values, dict):
            return f"metrics.{split} is not an object"
        missing = [k for k in SPLIT_KEYS if k not in values]
        if missing:
            return f"missing key metrics.{split}.{', '.join(missing)}"
        if not _is_int(values["n"], 0):
            return f"metrics.{split}.n is not a whole number"
        for k in ("exact", "within_one"):
            if not _is_number(values[k], 0, 1):
                return f"metrics.{split}.{k} is not a fraction in 0..1"
        for k in ("mse", "rmse", "mae"):
            if not _is_number(values[k], 0):
                return f"metrics.{split}.{k} is not a finite number >= 0"
        for k in ("loss", "mse_raw"):  # NaN or inf where a run diverged
            if not _is_number(values.get(k), nullable=True, finite=False):
                return f"metrics.{split}.{k} is not a number"
        per_sum, confusion = values["per_sum"], values["confusion"]
        if not (isinstance(per_sum, list) and len(per_sum) == N_SUMS
                and all(_is_number(a, 0, 1, nullable=True) for a in per_sum)):
            return f"metrics.{split}.per_sum is not {N_SUMS} fractions (or null)"
        if not (isinstance(confusion, list) and len(confusion) == N_SUMS
                and all(isinstance(row, list) and len(row) == N_SUMS and all(_is_int(c, 0) for c in row)
                        for row in confusion)):
            return f"metrics.{split}.confusion is not {N_SUMS}x{N_SUMS} counts"
    return ""


def _history_problem(history: list) -> str:
    for entry in history:
        if not isinstance(entry, dict):
            return "history[] holds a non-object"
        missing = [k for k in HISTORY_KEYS if k not in entry]
        if missing:
            return f"missing key history[].{', '.join(missing)}"
        if not _is_int(entry["epoch"], 0):
            return "history[].epoch is not a whole number"
        if not all(_is_number(entry[k], nullable=True, finite=False) for k in HISTORY_KEYS[1:]):
            return "history[] holds a value that is not a number"
    return ""


def _claims_problem(claimed: list) -> str:
    for c in claimed:
        if not (isinstance(c, dict) and {"metric", "value", "split"} <= set(c)):
            return "claimed[] entries need metric, value and split"
        if not (isinstance(c["metric"], str) and isinstance(c["split"], str) and isinstance(c.get("note", ""), str)
                and _is_number(c["value"], nullable=True)):
            return "claimed[] holds an entry of the wrong types"
    return ""


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
                       "estimated_seconds": round(seconds), "code_version": __version__})


def remove_estimate(results: Path, budget: str, dataset_id: str, recipe: str) -> None:
    """Drop the note once the recipe is run here after all."""
    estimate_path(results, budget, dataset_id, recipe).unlink(missing_ok=True)


def read_estimates(results: Path) -> list[dict]:
    """Every note of a recipe left out on a CPU; unreadable notes are skipped (they are advice, not results)."""
    notes = []
    for path in sorted((Path(results) / "estimates").rglob("*.json")):
        note = _small_json(path)
        if (isinstance(note, dict) and all(isinstance(note.get(k), str) for k in ("recipe", "budget", "dataset_id"))
                and _is_number(note.get("estimated_seconds"), 0)):
            notes.append(note)
    return notes
