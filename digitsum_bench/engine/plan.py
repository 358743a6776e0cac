"""The plan of `run`: which runs are left, as jobs, in what order, with what each is expected to cost.

Every `run` plans first (`make_plan`): the (recipe, seed) runs without a finished record become jobs
(`Job`: a recipe's name, its seeds, the resolved `Budget`, estimates), and one executor
(`launch.launch`) runs them, in this process, in local workers or as a SLURM array. Stacking seeds
(`--stack-seeds`: one job trains several seeds of a recipe) and the time box (`--time-limit`) are
properties of the plan, not separate loops.

Estimates come from a few timed training steps on this device (`estimate.estimate_seconds`); a CPU
plan also shows each job's GPU estimate from the measured images/s in `results/perf.csv` (`perf.py`),
and `run --plan --device cuda` plans by those alone, so it needs no GPU. A recipe with no measurement
says "not measured". On a CPU, `--cpu-limit` leaves out the recipes estimated over it, with a note
the leaderboard lists (`leave_out_slow`).

`run --time-limit 25m` runs the plan smallest first, so that the most runs finish in the time, and
starts a job only when its estimate fits in the time left. At the limit it stops cleanly: finished
runs keep their records, the run in progress stops like a Ctrl-C (no failure marker, lock released)
and resumes from its last epoch checkpoint, and the same command run again does exactly the missing
runs. The limit counts from the start of the command (planning included) and keeps a small margin
(`margin_seconds`) for regenerating the leaderboard afterwards.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import data as datamod
from ..errors import BenchError, duration
from ..registry.budgets import Budget, apply_budget
from ..registry.recipes import get_recipe
from ..store import RunKey, finished_record, remove_estimate, write_estimate
from . import runner
from .devices import device_name
from .estimate import estimate_seconds
from .perf import gpu_seconds
from .runner import RunOptions


@dataclass(frozen=True)
class Job:
    """One step of the plan: a run, or several seeds of one recipe trained as one stack. Plain data, so that
    it travels to a worker process or a SLURM task as it is."""

    recipe: str  # the registry's name
    seeds: tuple[int, ...]  # one seed, or the seeds of a stack
    budget: Budget  # resolved: how much of the recipe to train
    seconds: float | None = None  # estimated wall time here, for the epochs still to train; None: not timed
    gpu: float | None = None  # the same on a GPU, from results/perf.csv; None: not measured
    per_run: float | None = None  # one whole run's estimate here (a stack: each seed's share), for --cpu-limit


MAX_TIME_LIMIT = 366 * 24 * 3600.0  # seconds; more is a typo or "no limit"


def parse_duration(text: str) -> float:
    """Seconds in '25m', '1h30m', '90s', '2h', '1.5h'; a bare number counts minutes."""
    number = r"(\d+(?:\.\d+)?)"
    m = re.fullmatch(rf"{number}|(?:{number}h)?(?:{number}m)?(?:{number}s)?", text.strip().lower())
    if not m or not text.strip() or not any(m.groups()):
        raise BenchError(f"--time-limit {text!r}: give a duration such as 25m, 1h30m or 90s")
    minutes, h, mins, s = (float(g) if g else 0.0 for g in m.groups())
    seconds = 60 * minutes + 3600 * h + 60 * mins + s
    if seconds <= 0:
        raise BenchError(f"--time-limit {text!r}: must be more than zero")
    if not seconds <= MAX_TIME_LIMIT:  # a 400-digit number is inf, and the alarm's timer overflows far below that
        raise BenchError(f"--time-limit {text!r}: over a year; leave it out to run without a limit")
    return seconds


def margin_seconds(limit: float) -> float:
    """Time kept back from the limit for the leaderboard and the end of the last epoch: 5%, at most a minute."""
    return min(60.0, 0.05 * limit)


def unique(items: list) -> list:
    """`items` without repeats, in their first order."""
    return list(dict.fromkeys(items))


def pending(names: list[str], seeds: list[int], budget: Budget, dataset_id: str, results: Path,
            force: bool) -> list[tuple[str, int]]:
    """The (recipe, seed) pairs without a finished record on `dataset_id` (all of them with `force`)."""
    jobs = []
    for name in names:
        apply_budget(get_recipe(name), budget)  # an unknown recipe is an error before any work
        for seed in seeds:
            if force or finished_record(RunKey(name, seed, budget.name, dataset_id), results) is None:
                jobs.append((name, seed))
    return jobs


def share_left(name: str, seed: int, options: RunOptions, dataset_id: str) -> float:
    """The share of a run's epochs still to train: an interrupted run resumes from its checkpoints
    (`runner.epochs_done`). Every epoch counts as one, a pre-training stage's too; all of them with `force`."""
    if options.force:
        return 1.0
    recipe = apply_budget(get_recipe(name), options.budget)
    epochs = recipe.epochs + (recipe.pretrain.epochs if recipe.pretrain else 0)
    key = RunKey(name, seed, options.budget.name, dataset_id)
    return 1 - runner.epochs_done(recipe, key.checkpoint_dir(options.results)) / epochs


def make_plan(names: list[str], seeds: list[int], options: RunOptions, device: torch.device | None, *,
              stack: bool = False, timed: bool = True, measured: list[dict] | None = None) -> list[Job]:
    """The unfinished runs as jobs with estimates, smallest first (the most finished runs in a given time;
    registry order among equals, and where nothing is timed).

    `timed`: estimates from timed steps on `device` (`estimate_seconds`), one timing a recipe; without, from the
    GPU images/s of the `measured` perf.csv rows only (a stack of S seeds counted as S runs: stacks are not measured).
    """
    budget = options.budget
    dataset_id = datamod.dataset_id(options.data)  # also checks --data; the splits are made when the run starts
    by_recipe: dict[str, list[int]] = {}
    for name, seed in pending(names, seeds, budget, dataset_id, Path(options.results), options.force):
        by_recipe.setdefault(name, []).append(seed)
    jobs = []
    for name, todo in by_recipe.items():
        recipe = apply_budget(get_recipe(name), budget)
        left = {s: share_left(name, s, options, dataset_id) for s in todo}
        gpu = None if measured is None else gpu_seconds(recipe, measured)

        def scaled(seconds: float | None, fraction: float, n: int = 1) -> float | None:
            return None if seconds is None else seconds * n * fraction

        if stack and len(todo) > 1:
            here = estimate_seconds(recipe, device, budget.test_size, len(todo), engine=options.engine) if timed \
                else scaled(gpu, 1.0, len(todo))
            most = max(left.values())
            jobs.append(Job(name, tuple(todo), budget, scaled(here, most), scaled(gpu, most, len(todo)),
                            scaled(here, 1 / len(todo))))
        else:
            one = estimate_seconds(recipe, device, budget.test_size, engine=options.engine) if timed else gpu
            jobs += [Job(name, (s,), budget, scaled(one, left[s]), scaled(gpu, left[s]), one) for s in todo]
    return sorted(jobs, key=lambda j: (j.seconds is None, j.seconds or 0.0))  # stable: registry order among equals


def leave_out_slow(jobs: list[Job], options: RunOptions, limit_minutes: float, device: torch.device) -> list[Job]:
    """The jobs that fit a CPU: a recipe whose run is estimated over `limit_minutes` is not started.

    Each recipe left out gets a note (store.write_estimate) that the leaderboard lists as
    "needs a GPU at this budget", with its estimated CPU time, so it is not silently missing.
    """
    budget, results = options.budget, Path(options.results)
    dataset_id = datamod.dataset_id(options.data)
    slow = set()
    for name in unique([j.recipe for j in jobs]):
        seconds = next(j.per_run for j in jobs if j.recipe == name)
        if seconds is None or seconds <= limit_minutes * 60:
            remove_estimate(results, budget.name, dataset_id, name)
            continue
        slow.add(name)
        write_estimate(results, budget.name, dataset_id, name, seconds, device_name(device))
        print(f"skip {name}: estimated {duration(seconds)} per seed on this CPU, over the "
              f"{limit_minutes:g}-minute limit; needs a GPU at the {budget.name} budget (--cpu-limit 0 runs it anyway)")
    return [j for j in jobs if j.recipe not in slow]


def fitting(jobs: list[Job], seconds: float | None) -> list[bool]:
    """Which jobs the time box starts when the estimates hold: each one that fits in what is left after the ones before."""
    used, fits = 0.0, []
    for job in jobs:
        ok = job.seconds is not None and (seconds is None or used + job.seconds <= seconds)
        used += job.seconds if ok else 0.0
        fits.append(ok)
    return fits


def _estimate(seconds: float | None) -> str:
    return "not measured" if seconds is None else duration(seconds)


def format_plan(jobs: list[Job], device: torch.device, seconds: float | None = None, note: str = "") -> str:
    """The plan as a table: order, recipe, seeds, estimate, estimated end, whether it fits in `seconds`, and on a
    CPU each job's GPU estimate; `note` says where the estimates come from."""
    fits = fitting(jobs, seconds)
    runs = sum(len(j.seeds) for j in jobs)
    unknown = sum(len(j.seeds) for j in jobs if j.seconds is None)
    head = (f"plan on {device}{note}: {len(jobs)} job(s), {runs} run(s), estimated "
            f"{duration(sum(j.seconds or 0.0 for j in jobs))} in all")
    if unknown:
        head += f" but {unknown} run(s) not measured"
    if seconds is not None:
        n_fit = sum(len(j.seeds) for j, ok in zip(jobs, fits) if ok)
        head += f"; {n_fit} run(s) fit in {duration(seconds)}"
    gpu = device.type == "cpu"
    if gpu:
        head += "; GPU: training steps at the GPU images/s measured in perf.csv"
    lines = [head, f"{'#':>3}  {'recipe':<28} {'seeds':<10} {'estimate':>12} {'ends at':>8}  "
                   + (f"{'GPU':>12}  " if gpu else "") + "fits"]
    end = 0.0
    for i, (job, ok) in enumerate(zip(jobs, fits), 1):
        end += job.seconds if ok else 0.0
        verdict = "yes" if ok else ("no: next run" if job.seconds is not None else "-")
        lines.append(f"{i:>3}  {job.recipe:<28} {' '.join(map(str, job.seeds)):<10} "
                     f"{_estimate(job.seconds):>12} {duration(end) if ok else '-':>8}  "
                     + (f"{_estimate(job.gpu):>12}  " if gpu else "") + verdict)
    return "\n".join(lines)
