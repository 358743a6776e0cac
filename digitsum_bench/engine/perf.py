"""Measured training speed per recipe (`results/perf.csv`), and GPU time estimates from it.

A GPU run is planned before a GPU is there: `run --plan --device cuda`, and a CPU plan's GPU
column, divide a run's training images by the images/s measured for its recipe, batch size and
engine on a GPU. The rows come from the speed benchmarks (`benchmarks/test_speed_vs_plain.py`)
and from the GPU records' own measured images/s (`rows_from_records`, `digitsum-bench perf`);
each row says where it came from (`source`). `images_per_s` is one run's: where `runs` runs
shared the GPU (a stack, or runs on CUDA streams), it is their total over `runs`. A recipe with no
row is "not measured": nothing here is guessed. The estimate counts training steps only (not the
per-epoch validation, scoring or data generation), which is what images/s measures.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from pathlib import Path

from ..errors import BenchError
from ..registry.recipes import Recipe
from ..store import atomic_write, read_capped, read_record
from . import engines

COLUMNS = ("device", "torch", "commit", "engine", "recipe", "batch", "runs", "images_per_s", "source", "measured")
KEY = ("device", "torch", "commit", "engine", "recipe", "batch", "runs", "source")  # a row with the same key replaces it
ENGINES = (*engines.ENGINES, "stacked")  # what trains a record; a benchmark's "plain" loop is none of them
TEXT = ("device", "torch", "commit", "engine", "recipe", "source", "measured")  # the columns that are not numbers
MAX_PERF_BYTES = 4 << 20  # a perf.csv is some hundred rows of 200 bytes: far more is not one (/dev/zero, a huge file)
MAX_FIELD = 1000  # characters in one field (a device name, a record's path): a longer one is not one


def perf_path(results: Path) -> Path:
    return Path(results) / "perf.csv"


def read_perf(path: Path) -> list[dict]:
    """The rows of a perf.csv (none when there is no file), checked (`_checked`); a one-line BenchError naming
    the file where it is not a regular file of a few MB (a FIFO would hang), not UTF-8 CSV, or a row is malformed."""
    path = Path(path)
    if not path.exists():
        return []
    data = read_capped(path, MAX_PERF_BYTES, "cannot read")
    try:
        reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline=""))
        rows = list(reader)
    except UnicodeDecodeError:
        raise BenchError(f"{path}: cannot read (not UTF-8 text)") from None
    except csv.Error as e:  # a field over csv's limit of 128 kB, among others
        raise BenchError(f"{path}: line {reader.line_num}: not CSV ({e})") from None
    checked = []
    for i, row in enumerate(rows, 2):
        try:
            checked.append(_checked(row))
        except ValueError as e:
            raise BenchError(f"{path}: line {i}: {e} (columns: {', '.join(COLUMNS)})") from None
    return checked


def _checked(row: dict) -> dict:
    """`row` (a CSV row, or one made from a record) with batch and runs as whole numbers and images_per_s as a
    number; a ValueError saying what is wrong where a column is missing, not text or too long, or a number is not one."""
    for column in COLUMNS:
        value = row.get(column)
        if column == "runs" and value in (None, ""):
            continue  # older files have no runs column: one run
        if value is None:
            raise ValueError(f"no {column}")
        if isinstance(value, bool) or not isinstance(value, str if column in TEXT else (str, int, float)):
            raise ValueError(f"{column} is {type(value).__name__}")
        if len(str(value)) > MAX_FIELD:
            raise ValueError(f"{column} is over {MAX_FIELD} characters")
    try:
        batch, runs, speed = _whole(row["batch"]), _whole(row.get("runs") or 1), float(row["images_per_s"])
        if not (batch >= 1 and runs >= 1 and math.isfinite(speed) and speed > 0):
            raise ValueError(row)
    except ValueError:
        raise ValueError("needs a whole-number batch and runs of 1 or more and a positive number images_per_s") from None
    return {**row, "batch": batch, "runs": runs, "images_per_s": speed}


def _whole(value) -> int:
    """A whole number, from text or an int (not a float: 32.5 is no batch size); ValueError otherwise."""
    value = int(value) if isinstance(value, str) else value
    if type(value) is not int:
        raise ValueError(value)
    return value


def write_perf(path: Path, new: list[dict]) -> list[dict]:
    """Add `new` rows to the perf.csv at `path` (a row with the same KEY is replaced); returns all rows.

    Written atomically (`store.atomic_write`): a failed write (a full disk) leaves the old file whole,
    and a symlink at `path` is replaced by the file, never written through.
    """
    keep = {tuple(str(r[k]) for k in KEY): r for r in read_perf(path)}
    keep.update({tuple(str(r[k]) for k in KEY): r for r in new})
    rows = sorted(keep.values(), key=lambda r: (r["device"], r["recipe"], r["engine"], r["source"]))
    with atomic_write(path) as f:
        text = io.StringIO()
        w = csv.DictWriter(text, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        f.write(text.getvalue().encode())
    return rows


def is_gpu(device: str) -> bool:
    """Whether a record's or row's device string names a GPU (a CPU's reads "cpu (...)")."""
    return not device.lower().startswith("cpu")


def rows_from_records(results: Path) -> list[dict]:
    """A perf row for each GPU record under `results/records`: its recipe, batch size, engine and measured images/s.
    A record that is corrupt, of another schema or lacks what a row needs is skipped with a warning naming it:
    records are copied in from other machines, and one bad file must not stop the rest."""
    rows = []
    for path in sorted((Path(results) / "records").rglob("seed*.json")):
        if path.name.endswith(".failed.json"):
            continue
        try:
            row = _record_row(path, Path(results))
        except BenchError as e:  # OtherSchema too
            warnings.warn(f"skipped {e}", stacklevel=1)
            continue
        if row is not None:
            rows.append(row)
    return rows


def _record_row(path: Path, results: Path) -> dict | None:
    """The perf row of the record at `path`; None for a CPU record or one without images/s; a BenchError naming
    the file where the record is not valid or an optional key of it (`engine`, `stacked_seeds`) is malformed."""
    r = read_record(path)
    if not is_gpu(r["device"]) or not r.get("images_per_s"):
        return None
    seeds = r.get("stacked_seeds") or [0]
    if not isinstance(seeds, list):
        raise BenchError(f"{path}: no perf row from it (stacked_seeds is {type(seeds).__name__}, expected a list)")
    row = {"device": r["device"], "torch": r["versions"].get("torch"), "commit": r["git_commit"],
           "engine": r.get("engine", "eager"), "recipe": r["recipe"], "batch": r["config"].get("batch_size"),
           "runs": len(seeds), "images_per_s": round(float(r["images_per_s"]), 1),
           "source": f"record {path.relative_to(results).as_posix()}", "measured": r["finished"]}
    try:
        return _checked(row)
    except ValueError as e:
        raise BenchError(f"{path}: no perf row from it ({e})") from None


def gpu_images_per_s(rows: list[dict], recipe: str, batch: int) -> tuple[float, str] | None:
    """The GPU images/s of one run of a recipe at a batch size alone on the GPU, and its engine: the mean over
    the rows of the fastest measured engine (the one a GPU run uses when its check passes); None when no GPU
    row has it."""
    by_engine: dict[str, list[float]] = {}
    for r in rows:
        if (r["recipe"] == recipe and int(r["batch"]) == batch and int(r.get("runs") or 1) == 1
                and r["engine"] in ENGINES and is_gpu(r["device"])):
            by_engine.setdefault(r["engine"], []).append(float(r["images_per_s"]))
    if not by_engine:
        return None
    engine, speeds = max(by_engine.items(), key=lambda kv: sum(kv[1]) / len(kv[1]))
    return sum(speeds) / len(speeds), engine


def gpu_seconds(recipe: Recipe, rows: list[dict]) -> float | None:
    """Seconds of a run's training steps on a GPU at the measured images/s (every epoch of every member, and
    each member's pre-training stage); None when the recipe or its stage is not measured."""
    speed = gpu_images_per_s(rows, recipe.name, recipe.batch_size)
    stage = gpu_seconds(recipe.pretrain, rows) if recipe.pretrain is not None else 0.0
    if speed is None or stage is None:
        return None
    return (recipe.train_size * recipe.epochs / speed[0] + stage) * recipe.members
