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
from pathlib import Path

from .errors import BenchError
from .recipes import Recipe
from .store import read_record

COLUMNS = ("device", "torch", "commit", "engine", "recipe", "batch", "runs", "images_per_s", "source", "measured")
KEY = ("device", "torch", "commit", "engine", "recipe", "batch", "runs", "source")  # a row with the same key replaces it
ENGINES = ("eager", "graph", "stacked")  # the runner's engines; a benchmark's "plain" loop is none of them


def perf_path(results: Path) -> Path:
    return Path(results) / "perf.csv"


def read_perf(path: Path) -> list[dict]:
    """The rows of a perf.csv (none when there is no file); a BenchError naming the file when it is malformed."""
    if not Path(path).exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for i, row in enumerate(rows, 2):
        try:
            row["batch"], row["runs"] = int(row["batch"]), int(row.get("runs") or 1)
            row["images_per_s"] = float(row["images_per_s"])
        except (KeyError, TypeError, ValueError):
            raise BenchError(f"{path}: line {i} needs a whole-number batch and runs and a number images_per_s "
                             f"(columns: {', '.join(COLUMNS)})") from None
    return rows


def write_perf(path: Path, new: list[dict]) -> list[dict]:
    """Add `new` rows to the perf.csv at `path` (a row with the same KEY is replaced); returns all rows."""
    keep = {tuple(str(r[k]) for k in KEY): r for r in read_perf(path)}
    keep.update({tuple(str(r[k]) for k in KEY): r for r in new})
    rows = sorted(keep.values(), key=lambda r: (r["device"], r["recipe"], r["engine"], r["source"]))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return rows


def is_gpu(device: str) -> bool:
    """Whether a record's or row's device string names a GPU (a CPU's reads "cpu (...)")."""
    return not device.lower().startswith("cpu")


def rows_from_records(results: Path) -> list[dict]:
    """A perf row for each GPU record under `results/records`: its recipe, batch size, engine and measured images/s."""
    rows = []
    for path in sorted((Path(results) / "records").rglob("seed*.json")):
        if path.name.endswith(".failed.json"):
            continue
        r = read_record(path)
        if not is_gpu(r["device"]) or not r.get("images_per_s"):
            continue
        rows.append({"device": r["device"], "torch": r["versions"]["torch"], "commit": r["git_commit"],
                     "engine": r.get("engine", "eager"), "recipe": r["recipe"], "batch": r["config"]["batch_size"],
                     "runs": len(r.get("stacked_seeds") or [0]), "images_per_s": round(float(r["images_per_s"]), 1),
                     "source": f"record {path.relative_to(results).as_posix()}", "measured": r["finished"]})
    return rows


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
