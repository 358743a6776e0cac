"""The CI accuracy gate: retrain recipes that learn in minutes on a CPU and compare with baselines.

The gate recipes run under the `ci` budget (one epoch of the full training set) and must
reach at least 80% test exact, so that a drop means something. Three checks, each with a
measured tolerance:

- accuracy: the retrained run's test exact may not fall more than `tolerance` below the
  baseline's;
- training: its final training loss (same seed, same data, same steps) may not move more than
  `loss_tolerance` either way. One epoch's accuracy cannot see every training regression
  (augmentation silently off scores within the accuracy noise), but the loss moves 14 times
  its noise;
- scoring: the baseline run's own checkpoint (`ci-checkpoints/` beside the baseline file, its
  last.pt) is scored again through the runner, which resumes it and trains nothing, and must
  give the baseline's test exact within RESCORE_TOLERANCE either way. This catches a change in
  what is scored (EMA weights, test data, decoding) that a retrained model's accuracy noise hides.

The tolerances are not guesses: `gate --update` measures the spread of the gate's numbers
across thread counts (the same seed trained with 1 and with 2 threads, whose float reductions
differ as another machine's would) and over seeds, and writes them into the baseline file with
the tolerances they give. Refresh the committed baselines after an intended change with::

    digitsum-bench gate --update
"""

from __future__ import annotations

import json
import math
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from . import report
from .errors import BenchError
from .store import RunKey, atomic_write, write_json_atomic
from .train import run_one

GATE_RECIPES = ("ours_digitsum",)  # recipes that reach >= 80% test exact at the ci budget on 2 CPU cores
GATE_SEEDS = (0,)  # what CI retrains
MEASURE_SEEDS = (0, 1, 2)  # what `gate --update` trains, with each thread count, to measure the spread
THREADS = (2, 1)  # the first is what CI uses (2 cores)
MIN_ACCURACY = 0.80  # a gate baseline below this could not tell a regression from noise
MIN_TOLERANCE = 0.005  # half a point: below it, the gate would fail on rounding alone
MIN_LOSS_TOLERANCE = 0.002  # of the final training loss
TOLERANCE_FACTOR = 3  # the tolerance is this many standard deviations of a same-seed difference across threads
# Re-scoring one checkpoint moved test exact by 0 images of 10,000 between 1 and 2 threads and by
# 2 between bf16 and float32 inference; 10 images leave room for other CPUs.
RESCORE_TOLERANCE = 0.001
CHECKPOINTS = "ci-checkpoints"  # beside the baseline file: the baseline runs' last.pt, re-scored by every gate


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
    """Retrain the baseline's recipes (CPU, ci budget, 2 threads) into `results`, compare their accuracy
    and training loss (`report.check_gate`), and score the committed baseline checkpoints again (`rescore`).

    With `update`, measure instead (`measure_baseline`) and write a new baseline file and checkpoints.
    """
    folder = Path(results) / f"threads{THREADS[0]}"
    if update:
        baseline = measure_baseline(list(GATE_RECIPES), Path(results), retrain)
        keep_checkpoints(baseline, folder, Path(baseline_path).parent / CHECKPOINTS)
        write_json_atomic(Path(baseline_path), baseline)
    else:
        baseline = read_baseline(baseline_path)
    seeds = sorted({s for r in baseline["recipes"].values() for s in r["seeds"]})
    if retrain and not update:
        train_runs(list(baseline["recipes"]), seeds, folder, THREADS[0])
    ok, table = report.check_gate(report.load_records(folder), baseline, label="retrained runs")
    scored_ok, scored = rescore(baseline, Path(baseline_path).parent / CHECKPOINTS, Path(results) / "rescored")
    failed = [part for part, good in (("retrained runs", ok), ("re-scored checkpoints", scored_ok)) if not good]
    verdict = f"gate FAILED: {' and '.join(failed)}" if failed else "gate passed"
    return not failed, f"{table}\n\n{scored}\n{verdict}"


def _checkpoint(checkpoints: Path, name: str, seed: int) -> Path:
    """A baseline run's committed last.pt."""
    return checkpoints / name / f"seed{seed}" / "last.pt"


def _run_last(baseline: dict, name: str, seed: int, results: Path) -> Path:
    """Where the runner keeps (and resumes from) the last.pt of a baseline run in `results`."""
    return RunKey(name, seed, baseline["budget"], baseline["dataset_id"]).checkpoint_dir(results) / "last.pt"


def keep_checkpoints(baseline: dict, folder: Path, checkpoints: Path) -> None:
    """Copy the baseline runs' last.pt (in `folder`) to `checkpoints`, for `rescore`."""
    for name, ref in baseline["recipes"].items():
        for seed in ref["seeds"]:
            src = _run_last(baseline, name, seed, folder)
            dst = _checkpoint(checkpoints, name, seed)
            dst.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(dst) as f:
                f.write(src.read_bytes())


def rescore(baseline: dict, checkpoints: Path, results: Path) -> tuple[bool, str]:
    """Score each baseline run's committed checkpoint again, through the runner; (passed, a table).

    The checkpoint is placed where `run_one` resumes from, so `fit` trains nothing and the
    record is what this code scores for the baseline's own model. Its test exact must equal
    the baseline's within RESCORE_TOLERANCE, up or down.
    """
    shutil.rmtree(results, ignore_errors=True)  # fresh records: a finished one would not be scored again
    rows, passed = [], True
    for name, ref in baseline["recipes"].items():
        scores = []
        for seed in ref["seeds"]:
            src = _checkpoint(checkpoints, name, seed)
            if not src.is_file():
                raise BenchError(f"{src}: no checkpoint of the baseline run; "
                                 "make one with `digitsum-bench gate --update`")
            dst = _run_last(baseline, name, seed, results)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            with threads(THREADS[0]):
                record = run_one(name, seed, budget=baseline["budget"], data="synth", results=results, device="cpu",
                                 progress=False)
            scores.append(record["metrics"]["test"]["exact"])
        now = sum(scores) / len(scores)
        moved = abs(now - ref["test_exact"]) > RESCORE_TOLERANCE + report.EPS
        passed = passed and not moved
        rows.append(f"{name:<16} {ref['test_exact'] * 100:>16.2f} {now * 100:>11.2f}  "
                    + (f"FAIL: moved by more than {RESCORE_TOLERANCE * 100:.1f} points" if moved else "ok"))
    text = (f"baseline checkpoints re-scored ({checkpoints}) · "
            f"tolerance {RESCORE_TOLERANCE * 100:.1f} points either way\n"
            f"{'recipe':<16} {'baseline exact %':>16} {'now exact %':>11}  verdict\n" + "\n".join(rows))
    return passed, text


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
        exact = {n: _by_seed(frames[n], name, "test_exact") for n in THREADS}
        loss = {n: _by_seed(frames[n], name, "train_loss") for n in THREADS}
        deltas = [abs(exact[THREADS[0]][s] - exact[n][s]) for n in THREADS[1:] for s in MEASURE_SEEDS]
        loss_deltas = [abs(loss[THREADS[0]][s] - loss[n][s]) for n in THREADS[1:] for s in MEASURE_SEEDS]
        seed_values = list(exact[THREADS[0]].values())
        mean = sum(seed_values) / len(seed_values)
        measured[name] = {
            "test_exact_by_threads_and_seed": {str(n): {str(s): v for s, v in exact[n].items()} for n in THREADS},
            "max_thread_delta": max(deltas),
            "rms_thread_delta": _rms(deltas),
            "seed_std": math.sqrt(sum((v - mean) ** 2 for v in seed_values) / (len(seed_values) - 1)),
            "train_loss_by_threads_and_seed": {str(n): {str(s): v for s, v in loss[n].items()} for n in THREADS},
            "rms_thread_delta_train_loss": _rms(loss_deltas),
        }
        if baseline["recipes"][name]["test_exact"] < MIN_ACCURACY:
            raise BenchError(f"gate recipe {name}: {baseline['recipes'][name]['test_exact']:.1%} test exact at the ci "
                             f"budget, below the {MIN_ACCURACY:.0%} a gate baseline needs")
    sigma = max(m["rms_thread_delta"] for m in measured.values())
    baseline["tolerance"] = max(MIN_TOLERANCE, math.ceil(TOLERANCE_FACTOR * sigma * 1000) / 1000)
    loss_sigma = max(m["rms_thread_delta_train_loss"] for m in measured.values())
    baseline["loss_tolerance"] = max(MIN_LOSS_TOLERANCE, math.ceil(TOLERANCE_FACTOR * loss_sigma * 10_000) / 10_000)
    baseline["measurement"] = {
        "what": f"test exact of seeds {list(MEASURE_SEEDS)} trained with {' and '.join(map(str, THREADS))} CPU threads",
        "rule": f"tolerance = max({MIN_TOLERANCE}, {TOLERANCE_FACTOR} x the root mean square of the same-seed "
                "differences across thread counts, i.e. 3 standard deviations of the difference between a rerun "
                "and the baseline); seed_std is the spread over seeds, for comparison; loss_tolerance likewise from "
                f"the final training losses, at least {MIN_LOSS_TOLERANCE}",
        "recipes": measured,
    }
    return baseline


def _rms(values: list[float]) -> float:
    return math.sqrt(sum(v * v for v in values) / len(values))


def _by_seed(records, name: str, what: str) -> dict[int, float]:
    """`what` ("test_exact" or "train_loss", the last epoch's) of each MEASURE_SEEDS ci record of `name`."""
    runs = records[(records["recipe"] == name) & (records["budget"] == "ci")]
    values = runs["test_exact"] if what == "test_exact" else report.last_train_losses(runs)
    found = {int(s): float(v) for s, v in zip(runs["seed"], values)}
    missing = set(MEASURE_SEEDS) - set(found)
    if missing:
        raise BenchError(f"gate measurement: {name} has no ci record for seed(s) {sorted(missing)}")
    return {s: found[s] for s in MEASURE_SEEDS}
