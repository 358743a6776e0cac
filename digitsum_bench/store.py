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

import json
import os
import socket
import stat
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

from . import __version__
from .errors import BenchError
from .schema import MAX_RECORD_BYTES, OtherSchema, is_int, note_problem, parse_record


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


MAX_PID = 2**22  # Linux's largest pid_max: a lock naming a larger pid was not written by a live process


def read_record(path: Path) -> dict:
    """The record at `path`, read capped and checked (`schema.parse_record`): the one reader of the runner,
    `status` and `report`. Raises `OtherSchema` for another schema version, a BenchError for anything else wrong."""
    return parse_record(read_capped(path, MAX_RECORD_BYTES, "corrupt record"), path)


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
        return owner if is_int(pid, 1, MAX_PID) and _pid_alive(pid) else None  # died on this host: stale
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
        if not note_problem(note):
            notes.append(note)
    return notes
