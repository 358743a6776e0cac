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
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

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
    through here, so an interrupted or failed write never leaves half a file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; results are shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj: object) -> None:
    """Write JSON atomically (see `atomic_write`)."""
    with atomic_write(path) as f:
        f.write(json.dumps(obj, indent=1).encode())


def read_record(path: Path) -> dict:
    """A record, or a BenchError naming the file when it is not a valid record."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise BenchError(f"{path}: corrupt record ({type(e).__name__}: {e})") from None
    missing = [k for k in ("recipe", "seed", "budget", "dataset_id", "code_version", "metrics") if k not in record]
    if not isinstance(record, dict) or missing:
        raise BenchError(f"{path}: corrupt record (missing {', '.join(missing)})")
    return record


def finished_record(key: RunKey, results: Path) -> dict | None:
    """The record of `key` made by this code version, None if there is none.

    A corrupt record raises: it is reported, never silently skipped or overwritten.
    """
    path = key.record_path(results)
    if not path.exists():
        return None
    record = read_record(path)
    return record if record["code_version"] == __version__ else None


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
    try:
        owner = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if owner.get("host") == socket.gethostname():
        return owner if _pid_alive(int(owner.get("pid", -1))) else None  # died on this host: stale
    # Another host (e.g. a pre-empted SLURM task): alive while its lock or checkpoints keep changing.
    files = [path, *key.checkpoint_dir(results).rglob("*.pt")]
    last_sign = max(f.stat().st_mtime for f in files if f.exists())
    return owner if time.time() - last_sign < LOCK_STALE_HOURS * 3600 else None


@contextmanager
def run_lock(key: RunKey, results: Path) -> Iterator[bool]:
    """Hold the run's lock for the duration; yields False (and holds nothing) if another live process has it."""
    path = key.lock_path(results)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if lock_owner(key, results) is not None:
                yield False
                return
            path.unlink(missing_ok=True)  # stale lock from a dead process: take it over
            continue
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
    """For `status`: each run finished, running (lock held), failed (with the error) or missing."""
    rows = []
    for key in keys:
        row = {"recipe": key.recipe, "seed": key.seed, "budget": key.budget, "dataset_id": key.dataset_id, "detail": ""}
        try:
            record = finished_record(key, results)
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
            try:
                row["detail"] = json.loads(failed.read_text()).get("error", "")
            except (OSError, ValueError):
                row["detail"] = f"{failed}: unreadable failure marker"
        else:
            row["state"] = "corrupt" if row["detail"] else "missing"
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
        try:
            note = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(note, dict) and {"recipe", "budget", "dataset_id", "estimated_seconds"} <= set(note):
            notes.append(note)
    return notes
