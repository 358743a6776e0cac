"""The CI accuracy gate: retrain recipes that learn in minutes on a CPU and compare with baselines.

Owns the gate: its baselines (measuring, writing, reading them), retraining and re-scoring
the gate runs, and the comparison of fresh records with a baseline (`check_gate`).

The gate recipes run under the `ci` budget (one epoch of the full training set, at most 16
labelled synthetic images a step) and must reach at least 80% test exact, so that a drop means
something. Three checks, each with a measured tolerance:

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
the tolerances they give; `gate --add-machine` adds another CPU's runs (another model, instruction
set or precision). Refresh the committed baselines after an intended change with::

    digitsum-bench gate --update
"""

from __future__ import annotations

import json
import math
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import torch
from packaging.version import Version

from ..engine.devices import cpu_arithmetic
from ..engine.runner import RunOptions, run_one
from ..errors import BenchError
from ..metric_table import METRIC_TABLE
from ..reporting.leaderboard import current, load_records
from ..store import RunKey, atomic_write, write_json_atomic

GATE_RECIPES = ("ours_digitsum",)  # recipes that reach >= 80% test exact at the ci budget on 2 CPU cores
SHOWN = ("within_one", "mse")  # metrics (metric_table) shown beside test exact in the gate's table and baseline
GATE_SEEDS = (0,)  # what CI retrains
MEASURE_SEEDS = (0, 1, 2)  # what `gate --update` trains, with each thread count, to measure the spread
THREADS = (2, 1)  # the first is what CI uses (2 cores)
MIN_ACCURACY = 0.80  # a gate baseline below this could not tell a regression from noise
MIN_TOLERANCE = 0.005  # half a point: below it, the gate would fail on rounding alone
MIN_LOSS_TOLERANCE = 0.002  # of the final training loss
TOLERANCE_FACTOR = 3  # the tolerance is this many standard deviations of a same-seed difference across threads
RULE = (f"tolerance = max({MIN_TOLERANCE}, {TOLERANCE_FACTOR} x the root mean square of the same-seed differences "
        f"from the baseline machine's {THREADS[0]}-thread runs, across thread counts and across machines (`machines`), "
        f"i.e. {TOLERANCE_FACTOR} standard deviations of the difference between a rerun and the baseline); seed_std "
        f"is the spread over seeds, for comparison; loss_tolerance likewise from the final training losses, at "
        f"least {MIN_LOSS_TOLERANCE}")
# Re-scoring one checkpoint moved test exact by 0 images of 10,000 between 1 and 2 threads and by
# 2 between bf16 and float32 inference; 10 images leave room for other CPUs.
RESCORE_TOLERANCE = 0.001
RETRAINED = f"threads{THREADS[0]}"  # under the gate's results folder: its retrained runs
CHECKPOINTS = "ci-checkpoints"  # beside the baseline file: the baseline runs' last.pt, re-scored by every gate
EPS = 1e-9  # float slack in the comparisons: 0.41 - 0.03 must accept 0.38


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
                run_one(name, seed, RunOptions("ci", "synth", results, "cpu", force=force, progress=False), seeds)


def run_gate(baseline_path: Path, results: Path, update: bool = False, retrain: bool = True,
             scored: Path | None = None) -> tuple[bool, str]:
    """Retrain the baseline's recipes (CPU, ci budget, 2 threads) into `results`, compare their accuracy
    and training loss (`check_gate`), and score the committed baseline checkpoints again (`rescore`; with
    `scored`, an earlier re-scoring's folder, its records are reused).

    With `update`, measure instead (`measure_baseline`) and write a new baseline file and checkpoints.
    """
    folder = Path(results) / RETRAINED
    if update:
        baseline = measure_baseline(list(GATE_RECIPES), Path(results), retrain)
        keep_checkpoints(baseline, folder, Path(baseline_path).parent / CHECKPOINTS)
        write_json_atomic(Path(baseline_path), baseline)
    else:
        baseline = read_baseline(baseline_path)
    seeds = sorted({s for r in baseline["recipes"].values() for s in r["seeds"]})
    if retrain and not update:
        train_runs(list(baseline["recipes"]), seeds, folder, THREADS[0])
    checkpoints = Path(baseline_path).parent / CHECKPOINTS
    return judge(baseline, folder, rescore(baseline, checkpoints, Path(results) / "rescored", scored))


def judge(baseline: dict, folder: Path, rescored: tuple[bool, str]) -> tuple[bool, str]:
    """The gate's verdict: the retrained runs in `folder` compared with the baseline (`check_gate`), and
    `rescore`'s result; (passed, the tables)."""
    ok, table = check_gate(load_records(folder), baseline, label="retrained runs")
    scored_ok, scored = rescored
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


def _place_checkpoints(baseline: dict, checkpoints: Path, results: Path) -> None:
    """Put the baseline runs' committed last.pt where `run_one` resumes them in `results`: it then trains nothing."""
    for name, ref in baseline["recipes"].items():
        for seed in ref["seeds"]:
            src = _checkpoint(checkpoints, name, seed)
            if not src.is_file():
                raise BenchError(f"{src}: no checkpoint of the baseline run; "
                                 "make one with `digitsum-bench gate --update`")
            dst = _run_last(baseline, name, seed, results)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)


def rescore(baseline: dict, checkpoints: Path, results: Path, scored: Path | None = None) -> tuple[bool, str]:
    """Score each baseline run's committed checkpoint again, through the runner; (passed, a table).

    The checkpoint is placed where `run_one` resumes from, so `fit` trains nothing and the
    record is what this code scores for the baseline's own model. Its test exact must equal
    the baseline's within RESCORE_TOLERANCE, up or down. With `scored`, the folder of an earlier
    re-scoring by the same code (the gate's tests share one between the gate and the sabotages that
    change training only, which a finished checkpoint never reaches), its records are copied instead.
    """
    shutil.rmtree(results, ignore_errors=True)  # fresh records: a finished one would not be scored again
    if scored is not None:
        shutil.copytree(scored, results)
    else:
        _place_checkpoints(baseline, checkpoints, results)
        with threads(THREADS[0]):
            for name, ref in baseline["recipes"].items():
                for seed in ref["seeds"]:
                    run_one(name, seed, RunOptions(baseline["budget"], "synth", results, "cpu", progress=False))
    runs = _ci_runs(load_records(results), baseline)
    rows, passed = [], True
    for name, ref in baseline["recipes"].items():
        now = float(runs[(runs["recipe"] == name) & runs["seed"].isin(ref["seeds"])]["test_exact"].mean())
        moved = _moved(now, ref)
        passed = passed and not moved
        rows.append(f"{name:<16} {ref['test_exact'] * 100:>16.2f} {now * 100:>11.2f}  "
                    + (f"FAIL: moved by more than {RESCORE_TOLERANCE * 100:.1f} points" if moved else "ok"))
    text = (f"baseline checkpoints re-scored ({checkpoints}) · "
            f"tolerance {RESCORE_TOLERANCE * 100:.1f} points either way\n"
            f"{'recipe':<16} {'baseline exact %':>16} {'now exact %':>11}  verdict\n" + "\n".join(rows))
    return passed, text


def _moved(now: float, ref: dict) -> bool:
    """The scoring check: the re-scored checkpoint's test exact moved beyond RESCORE_TOLERANCE, up or down."""
    return abs(now - ref["test_exact"]) > RESCORE_TOLERANCE + EPS


def outcome(baseline: dict, results: Path) -> dict[str, dict]:
    """What a finished `run_gate` into `results` measured, per baseline recipe, and which of its three checks
    failed: {"test_exact", "train_loss" (retrained), "rescored_exact", "failed": ["accuracy", "training", "scoring"],
    "device" (the retrained runs')}."""
    _, _, tolerance, recipes = _baseline_fields(baseline)
    retrained = _ci_runs(load_records(Path(results) / RETRAINED), baseline)
    rescored = _ci_runs(load_records(Path(results) / "rescored"), baseline)
    found = {}
    for name, ref in recipes.items():
        mine = retrained[(retrained["recipe"] == name) & retrained["seed"].isin(ref["seeds"])]
        exact, loss = float(mine["test_exact"].mean()), final_train_loss(mine)
        now = float(rescored[rescored["recipe"] == name]["test_exact"].mean())
        failed = list(_failures(exact, loss, ref, tolerance, baseline.get("loss_tolerance")))
        found[name] = {"test_exact": exact, "train_loss": loss, "rescored_exact": now,
                       "failed": failed + ["scoring"] * _moved(now, ref), "device": str(mine["device"].iloc[0])}
    return found


def measure_baseline(recipes: list[str], results: Path, retrain: bool = True) -> dict:
    """Train every gate recipe on MEASURE_SEEDS with each of THREADS; the baseline with its tolerance.

    The baseline numbers are CI's own runs (GATE_SEEDS, THREADS[0]). The tolerance is
    TOLERANCE_FACTOR standard deviations of the same-seed difference between thread counts
    (the noise a rerun sees; its root mean square over MEASURE_SEEDS), at least MIN_TOLERANCE
    (`set_tolerances`). The spread over seeds is written beside it: a regression smaller than
    that could also be an unlucky seed.
    """
    frames = {}
    for n in THREADS:
        if retrain:
            train_runs(recipes, list(MEASURE_SEEDS), results / f"threads{n}", n, force=True)
        frames[n] = load_records(results / f"threads{n}")
    baseline = make_baseline(frames[THREADS[0]], recipes, MIN_TOLERANCE, seeds=list(GATE_SEEDS))
    measured = {}
    for name in recipes:
        exact = {n: _by_seed(frames[n], name, "test_exact") for n in THREADS}
        loss = {n: _by_seed(frames[n], name, "train_loss") for n in THREADS}
        seed_values = list(exact[THREADS[0]].values())
        mean = sum(seed_values) / len(seed_values)
        measured[name] = {
            "test_exact_by_threads_and_seed": {str(n): {str(s): v for s, v in exact[n].items()} for n in THREADS},
            "seed_std": math.sqrt(sum((v - mean) ** 2 for v in seed_values) / (len(seed_values) - 1)),
            "train_loss_by_threads_and_seed": {str(n): {str(s): v for s, v in loss[n].items()} for n in THREADS},
        }
        if baseline["recipes"][name]["test_exact"] < MIN_ACCURACY:
            raise BenchError(f"gate recipe {name}: {baseline['recipes'][name]['test_exact']:.1%} test exact at the ci "
                             f"budget, below the {MIN_ACCURACY:.0%} a gate baseline needs")
    baseline["measurement"] = {
        "what": f"test exact of seeds {list(MEASURE_SEEDS)} trained with {' and '.join(map(str, THREADS))} CPU threads"
                f" on {cpu_arithmetic()}, and (`gate --add-machine`) with {THREADS[0]} threads on other machines "
                "(another CPU model, instruction set or precision)",
        "machine": cpu_arithmetic(),
        "recipes": measured,
        "machines": {},
    }
    return set_tolerances(baseline)


def add_machine(baseline_path: Path, results: Path, retrain: bool = True) -> dict:
    """`gate --add-machine`: train MEASURE_SEEDS with THREADS[0] threads on this machine, add their numbers to
    the baseline's measurement under this CPU's arithmetic (`devices.cpu_arithmetic`: model, instruction set,
    precision), and widen the tolerances to cover them (`set_tolerances`). Another CPU model, one without
    AVX-512 or one without bf16 (float32) computes with other kernels: its same-seed runs differ from the
    baseline machine's more than two thread counts do, and CI may run on any of them. On the baseline machine,
    `DIGITSUM_BF16=0` measures float32 and ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 an AVX2 CPU."""
    baseline = read_baseline(baseline_path)
    folder = Path(results) / "machine"
    recipes = list(baseline["recipes"])
    if retrain:
        train_runs(recipes, list(MEASURE_SEEDS), folder, THREADS[0], force=True)
    frame = load_records(folder)
    baseline["measurement"].setdefault("machines", {})[cpu_arithmetic()] = {
        name: {"test_exact_by_seed": {str(s): v for s, v in _by_seed(frame, name, "test_exact").items()},
               "train_loss_by_seed": {str(s): v for s, v in _by_seed(frame, name, "train_loss").items()}}
        for name in recipes}
    set_tolerances(baseline)
    write_json_atomic(Path(baseline_path), baseline)
    return baseline


def _deltas(measurement: dict, name: str, what: str) -> list[float]:
    """|same-seed difference| from the baseline machine's THREADS[0]-thread runs: its other thread counts' runs,
    then every other machine's runs. `what` is "test_exact" or "train_loss"."""
    by_threads = measurement["recipes"][name][f"{what}_by_threads_and_seed"]
    reference = by_threads[str(THREADS[0])]
    others = [runs for n, runs in by_threads.items() if n != str(THREADS[0])]
    others += [machine[name][f"{what}_by_seed"] for machine in measurement.get("machines", {}).values()
               if name in machine]
    return [abs(reference[s] - runs[s]) for runs in others for s in reference if s in runs]


def set_tolerances(baseline: dict) -> dict:
    """The accuracy and loss tolerances from the baseline's measurement (its rule); returns the baseline."""
    measurement = baseline["measurement"]
    measurement["rule"] = RULE
    for name, m in measurement["recipes"].items():
        m["rms_delta"] = _rms(_deltas(measurement, name, "test_exact"))
        m["rms_delta_train_loss"] = _rms(_deltas(measurement, name, "train_loss"))
    sigma = max(m["rms_delta"] for m in measurement["recipes"].values())
    baseline["tolerance"] = max(MIN_TOLERANCE, _round_up(TOLERANCE_FACTOR * sigma, 3))
    loss_sigma = max(m["rms_delta_train_loss"] for m in measurement["recipes"].values())
    baseline["loss_tolerance"] = max(MIN_LOSS_TOLERANCE, _round_up(TOLERANCE_FACTOR * loss_sigma, 4))
    return baseline


def _round_up(value: float, digits: int) -> float:
    """`value` rounded up to `digits` decimals; a value already at that precision stays (0.06 is not 0.0601)."""
    scale = 10 ** digits
    return math.ceil(round(value * scale, 6)) / scale


# ----------------------------------------------------------------------------------------
# The comparison: fresh records against a baseline
# ----------------------------------------------------------------------------------------


def check_gate(records: pd.DataFrame, baseline: dict, label: str = "gate") -> tuple[bool, str]:
    """Compare fresh CI records with a baseline; returns (passed, a table to print).

    A recipe fails when its mean test exact accuracy over the baseline's seeds is below the
    baseline's by more than `tolerance`, when a baseline seed has no record, or (where the
    baseline has `loss_tolerance`) when its final training loss, the same seeds on the same data,
    differs from the baseline's by more than that either way: the training computation changed
    (augmentation, learning rate, loss, data), whether or not one epoch's accuracy can show it.
    """
    _, _, tolerance, recipes = _baseline_fields(baseline)
    runs = _ci_runs(records, baseline)
    loss_tolerance = baseline.get("loss_tolerance")
    table = pd.DataFrame([_gate_row(runs[runs["recipe"] == name], name, ref, tolerance, loss_tolerance)
                          for name, ref in recipes.items()])
    failed = table[table["verdict"] != "ok"]
    verdict = (
        f"{label} passed: {len(table)} recipe(s) within {tolerance * 100:.1f} points of the baseline"
        if failed.empty
        else f"{label} FAILED: " + "; ".join(f"{r.recipe} ({r.verdict.removeprefix('FAIL: ')})" for r in failed.itertuples())
    )
    text = (
        f"CI accuracy gate · budget {baseline['budget']} · dataset {baseline['dataset_id']} · tolerance {tolerance * 100:.1f} points\n"
        + table.to_string(index=False, float_format=lambda x: f"{x:.2f}", na_rep="—")
        + f"\n{verdict}"
    )
    return failed.empty, text


def _ci_runs(records: pd.DataFrame, baseline: dict) -> pd.DataFrame:
    """The newest code's records of the baseline's budget and dataset."""
    newest = current(records)
    return newest[(newest["budget"] == baseline["budget"]) & (newest["dataset_id"] == baseline["dataset_id"])]


def _baseline_fields(baseline: dict) -> tuple[str, str, float, dict]:
    missing = [k for k in ("budget", "dataset_id", "tolerance", "recipes") if k not in baseline]
    if missing:
        raise BenchError(f"gate baseline: missing key(s) {', '.join(missing)}")
    if not baseline["recipes"]:
        raise BenchError("gate baseline: lists no recipes")
    for name, ref in baseline["recipes"].items():
        lacking = [k for k in ("seeds", "test_exact") if k not in ref]
        if lacking or not ref.get("seeds"):
            raise BenchError(f"gate baseline: recipe {name} lacks {', '.join(lacking) or 'seeds'}")
    return baseline["budget"], baseline["dataset_id"], float(baseline["tolerance"]), baseline["recipes"]


def last_train_losses(runs: pd.DataFrame) -> list[float]:
    """Each run's last-epoch training loss (from its history), in the rows' order."""
    return [float(h[-1]["train_loss"]) for h in runs["history"]]


def final_train_loss(runs: pd.DataFrame) -> float:
    """The mean over runs of each run's last-epoch training loss."""
    return float(np.mean(last_train_losses(runs))) if len(runs) else math.nan


def _gate_row(runs: pd.DataFrame, name: str, ref: dict, tolerance: float, loss_tolerance: float | None = None) -> dict:
    """One row of the gate table: baseline vs now on the baseline's seeds, and its verdict."""
    seeds = [int(s) for s in ref["seeds"]]
    have = runs[runs["seed"].isin(seeds)]
    missing = sorted(set(seeds) - set(have["seed"]))
    now = {k: math.nan if missing else have[k].mean() for k in (f"test_{m}" for m in ("exact", *SHOWN))}
    exact = now["test_exact"]
    loss = math.nan if missing else final_train_loss(have)
    checks_loss = loss_tolerance is not None and "train_loss" in ref
    if missing:
        verdict = f"FAIL: no record for seed {', '.join(map(str, missing))}"
    elif math.isnan(exact):
        verdict = "FAIL: no test metrics"
    else:
        failures = _failures(exact, loss, ref, tolerance, loss_tolerance)
        verdict = "FAIL: " + "; ".join(failures.values()) if failures else "ok"
    return {
        "recipe": name,
        "seeds": ",".join(map(str, seeds)),
        "baseline exact %": ref["test_exact"] * 100,
        "now exact %": exact * 100,
        "delta": (exact - ref["test_exact"]) * 100,
        **{f"{when} {METRIC_TABLE[m].header}": value * (100 if METRIC_TABLE[m].percent else 1)
           for m in SHOWN for when, value in (("baseline", ref.get(f"test_{m}", math.nan)), ("now", now[f"test_{m}"]))},
        **({"baseline train loss": f"{ref['train_loss']:.4f}", "now train loss": f"{loss:.4f}"} if checks_loss else {}),
        "verdict": verdict,
    }


def _failures(exact: float, loss: float, ref: dict, tolerance: float, loss_tolerance: float | None) -> dict[str, str]:
    """The retrained runs' failed checks against the baseline entry `ref`: "accuracy" and "training", with why."""
    failures = {}
    if exact < ref["test_exact"] - tolerance - EPS:
        failures["accuracy"] = f"more than {tolerance * 100:.1f} points below"
    if loss_tolerance is not None and "train_loss" in ref and abs(loss - ref["train_loss"]) > loss_tolerance + EPS:
        failures["training"] = f"training loss moved by more than {loss_tolerance:g}"
    return failures


def make_baseline(records: pd.DataFrame, recipes: list[str], tolerance: float, budget: str = "ci",
                  seeds: list[int] | None = None) -> dict:
    """A gate baseline from the current `budget` records of `recipes` (of `seeds` only, if given)."""
    if not recipes:
        raise BenchError("gate baseline: name at least one recipe")
    if not 0 <= tolerance < 1:
        raise BenchError(f"gate tolerance {tolerance}: must be a fraction in [0, 1), e.g. 0.03")
    newest = current(records)
    runs = newest[(newest["budget"] == budget) & newest["recipe"].isin(recipes)]
    if seeds is not None:
        runs = runs[runs["seed"].isin(seeds)]
    datasets = sorted(set(runs["dataset_id"]))
    if len(datasets) > 1:
        raise BenchError(f"gate baseline: {budget} records span datasets {', '.join(datasets)}; keep one")
    entries = {}
    for name in recipes:
        mine = runs[runs["recipe"] == name]
        if mine.empty or mine["test_exact"].isna().any():
            raise BenchError(f"gate baseline: recipe {name} has no {budget} record with test metrics; run it first")
        entries[name] = {
            "seeds": sorted(int(s) for s in mine["seed"]),
            "test_exact": float(mine["test_exact"].mean()),
            **{f"test_{m}": float(mine[f"test_{m}"].mean()) for m in SHOWN},
            "train_loss": final_train_loss(mine),
        }
    code_version = str(max(runs["code_version"], key=Version))
    return {"budget": budget, "dataset_id": datasets[0], "tolerance": tolerance, "code_version": code_version,
            "recipes": entries}  # fmt: skip


def _rms(values: list[float]) -> float:
    return math.sqrt(sum(v * v for v in values) / len(values))


def _by_seed(records, name: str, what: str) -> dict[int, float]:
    """`what` ("test_exact" or "train_loss", the last epoch's) of each MEASURE_SEEDS ci record of `name`."""
    runs = records[(records["recipe"] == name) & (records["budget"] == "ci")]
    values = runs["test_exact"] if what == "test_exact" else last_train_losses(runs)
    found = {int(s): float(v) for s, v in zip(runs["seed"], values)}
    missing = set(MEASURE_SEEDS) - set(found)
    if missing:
        raise BenchError(f"gate measurement: {name} has no ci record for seed(s) {sorted(missing)}")
    return {s: found[s] for s in MEASURE_SEEDS}
