"""The CI accuracy gate: retrain recipes that learn in minutes on a CPU and compare with baselines.

The gate recipes run under the `ci` budget (one epoch of the full training set) and must
reach at least 80% test exact, so that a drop means something. The tolerance is not a guess:
`gate --update` measures the spread of the gate's own number across thread counts (the same
seed trained with 1 and with 2 threads, whose float reductions differ as another machine's
would) and over seeds, and writes both into the baseline file with the tolerance they give.
Refresh the committed baselines after an intended change with::

    digitsum-bench gate --update
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from . import report
from .errors import BenchError
from .store import write_json_atomic
from .train import run_one

GATE_RECIPES = ("ours_digitsum",)  # recipes that reach >= 80% test exact at the ci budget on 2 CPU cores
GATE_SEEDS = (0,)  # what CI retrains
MEASURE_SEEDS = (0, 1, 2)  # what `gate --update` trains, with each thread count, to measure the spread
THREADS = (2, 1)  # the first is what CI uses (2 cores)
MIN_ACCURACY = 0.80  # a gate baseline below this could not tell a regression from noise
MIN_TOLERANCE = 0.005  # half a point: below it, the gate would fail on rounding alone
TOLERANCE_FACTOR = 3  # the tolerance is this many standard deviations of a same-seed difference across threads


def read_baseline(path: Path) -> dict:
    """The committed baseline, or a BenchError naming the file."""
    try:
        baseline = json.loads(Path(path).read_text())
        baseline["recipes"]
    except FileNotFoundError:
        raise BenchError(f"{path}: no baseline; make one with `digitsum-bench gate --update`") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BenchError(f"{path}: corrupt baseline ({type(e).__name__}: {e})") from None
    return baseline


@contextmanager
def threads(n: int) -> Iterator[None]:
    """Train with `n` CPU threads inside the block."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_runs(recipes: list[str], seeds: list[int], results: Path, n_threads: int, force: bool = False) -> None:
    """The gate's runs: CPU, ci budget, built-in data, `n_threads` threads."""
    with threads(n_threads):
        for name in recipes:
            for seed in seeds:
                run_one(name, seed, budget="ci", data="synth", results=results, device="cpu", force=force,
                        seeds_requested=seeds, progress=False)


def run_gate(baseline_path: Path, results: Path, update: bool = False, retrain: bool = True) -> tuple[bool, str]:
    """Retrain the baseline's recipes (CPU, ci budget, 2 threads) into `results` and compare.

    With `update`, measure instead (`measure_baseline`) and write a new baseline file.
    """
    if update:
        baseline = measure_baseline(list(GATE_RECIPES), Path(results), retrain)
        write_json_atomic(Path(baseline_path), baseline)
    else:
        baseline = read_baseline(baseline_path)
    seeds = sorted({s for r in baseline["recipes"].values() for s in r["seeds"]})
    folder = Path(results) / f"threads{THREADS[0]}"
    if retrain and not update:
        train_runs(list(baseline["recipes"]), seeds, folder, THREADS[0])
    return report.check_gate(report.load_records(folder), baseline)


def measure_baseline(recipes: list[str], results: Path, retrain: bool = True) -> dict:
    """Train every gate recipe on MEASURE_SEEDS with each of THREADS; the baseline with its tolerance.

    The baseline numbers are CI's own runs (GATE_SEEDS, THREADS[0]). The tolerance is
    TOLERANCE_FACTOR standard deviations of the same-seed difference between thread counts
    (the noise a rerun on another machine sees; its root mean square over MEASURE_SEEDS), at
    least MIN_TOLERANCE. The spread over seeds is written beside it: a regression smaller than
    that could also be an unlucky seed.
    """
    frames = {}
    for n in THREADS:
        if retrain:
            train_runs(recipes, list(MEASURE_SEEDS), results / f"threads{n}", n, force=True)
        frames[n] = report.load_records(results / f"threads{n}")
    baseline = report.make_baseline(frames[THREADS[0]], recipes, MIN_TOLERANCE, seeds=list(GATE_SEEDS))
    measured = {}
    for name in recipes:
        exact = {n: _exact_by_seed(frames[n], name) for n in THREADS}
        deltas = [abs(exact[THREADS[0]][s] - exact[n][s]) for n in THREADS[1:] for s in MEASURE_SEEDS]
        seed_values = list(exact[THREADS[0]].values())
        mean = sum(seed_values) / len(seed_values)
        measured[name] = {
            "test_exact_by_threads_and_seed": {str(n): {str(s): v for s, v in exact[n].items()} for n in THREADS},
            "max_thread_delta": max(deltas),
            "rms_thread_delta": math.sqrt(sum(d * d for d in deltas) / len(deltas)),
            "seed_std": math.sqrt(sum((v - mean) ** 2 for v in seed_values) / (len(seed_values) - 1)),
        }
        if baseline["recipes"][name]["test_exact"] < MIN_ACCURACY:
            raise BenchError(f"gate recipe {name}: {baseline['recipes'][name]['test_exact']:.1%} test exact at the ci "
                             f"budget, below the {MIN_ACCURACY:.0%} a gate baseline needs")
    sigma = max(m["rms_thread_delta"] for m in measured.values())
    baseline["tolerance"] = max(MIN_TOLERANCE, math.ceil(TOLERANCE_FACTOR * sigma * 1000) / 1000)
    baseline["measurement"] = {
        "what": f"test exact of seeds {list(MEASURE_SEEDS)} trained with {' and '.join(map(str, THREADS))} CPU threads",
        "rule": f"tolerance = max({MIN_TOLERANCE}, {TOLERANCE_FACTOR} x the root mean square of the same-seed "
                "differences across thread counts, i.e. 3 standard deviations of the difference between a rerun "
                "and the baseline); seed_std is the spread over seeds, for comparison",
        "recipes": measured,
    }
    return baseline


def _exact_by_seed(records, name: str) -> dict[int, float]:
    runs = records[(records["recipe"] == name) & (records["budget"] == "ci")]
    found = {int(s): float(e) for s, e in zip(runs["seed"], runs["test_exact"])}
    missing = set(MEASURE_SEEDS) - set(found)
    if missing:
        raise BenchError(f"gate measurement: {name} has no ci record for seed(s) {sorted(missing)}")
    return {s: found[s] for s in MEASURE_SEEDS}
