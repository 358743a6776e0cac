"""The plan and the time box of `run`: which runs, in what order, and which fit in the time left.

`run --plan` prints the runs still to do with an estimate of each on this device
(`estimate.estimate_seconds`: a few timed training steps) and trains nothing. A CPU plan also
shows each job's GPU estimate from the measured images/s in `results/perf.csv` (`perf.py`), and
`run --plan --device cuda` plans by those alone, so it needs no GPU: GPU time is planned before
it starts. A recipe with no measurement says "not measured".

`run --time-limit 25m` runs that plan smallest first, so that the most runs finish in the
time, and starts a run only when its estimate fits in the time left. At the limit it stops
cleanly: finished runs keep their records, the run in progress stops like a Ctrl-C (no
failure marker, lock released) and resumes from its last epoch checkpoint, and the same
command run again does exactly the missing runs. The same option suits a SLURM task with a
wall-time limit: give it the task's time, inside the task.

The limit counts from the start of the command (planning included) and keeps a small margin
(`margin_seconds`) for regenerating the leaderboard afterwards.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from tqdm.auto import tqdm

from .. import data as datamod
from ..errors import BenchError, TimeLimitReached, duration
from ..registry.budgets import apply_budget, get_budget
from ..registry.recipes import get_recipe
from . import runner, stacked
from .devices import resolve_device
from .estimate import estimate_seconds
from .launch import pending, share_left, summary_line
from .perf import gpu_seconds, perf_path, read_perf
from .runner import RunOptions
from .train import progress_bar


@dataclass(frozen=True)
class Job:
    """One step of the plan: a run, or several seeds of one recipe trained as one stack."""

    recipe: str
    seeds: tuple[int, ...]  # one seed, or the seeds of a stack
    seconds: float | None  # estimated wall time on this device, for the epochs still to train; None: not measured
    gpu: float | None = None  # the same on a GPU, from results/perf.csv; None: not measured


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


def make_plan(names: list[str], seeds: list[int], options: RunOptions, device: torch.device,
              stack: bool = False, measured: list[dict] | None = None, timed: bool = True) -> list[Job]:
    """The unfinished runs as jobs with estimates, smallest first (the most finished runs in a given time).

    `timed`: estimates from timed steps on `device` (`estimate_seconds`); without, from the GPU images/s of
    the `measured` perf.csv rows only (a stack of S seeds counted as S runs: stacks are not measured).
    """
    results = Path(options.results)
    by_recipe: dict[str, list[int]] = {}
    dataset_id = datamod.dataset_id(options.data)  # also checks --data; the splits are made when the run starts
    for name, seed in pending(names, seeds, options.budget, dataset_id, results, options.force):
        by_recipe.setdefault(name, []).append(seed)
    jobs = []
    for name, todo in by_recipe.items():
        recipe = apply_budget(get_recipe(name), options.budget)
        test_size = get_budget(options.budget).test_size
        left = {s: share_left(name, s, options, dataset_id) for s in todo}
        gpu = None if measured is None else gpu_seconds(recipe, measured)

        def scaled(seconds: float | None, fraction: float, n: int = 1) -> float | None:
            return None if seconds is None else seconds * n * fraction

        if stack and len(todo) > 1:
            here = estimate_seconds(recipe, device, test_size, len(todo)) if timed else scaled(gpu, 1.0, len(todo))
            most = max(left.values())
            jobs.append(Job(name, tuple(todo), scaled(here, most), scaled(gpu, most, len(todo))))
        else:
            one = estimate_seconds(recipe, device, test_size) if timed else gpu
            jobs += [Job(name, (s,), scaled(one, left[s]), scaled(gpu, left[s])) for s in todo]
    return sorted(jobs, key=lambda j: (j.seconds is None, j.seconds or 0.0))  # stable: registry order among equals


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


@contextmanager
def _alarm(deadline: float | None) -> Iterator[None]:
    """Raise TimeLimitReached in this (main) thread at `deadline` (time.monotonic() seconds)."""
    if deadline is None or threading.current_thread() is not threading.main_thread():
        yield  # no signal off the main thread: the checks between jobs and epochs still apply
        return

    def ring(signum, frame):
        raise TimeLimitReached("time limit reached")

    old = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, max(deadline - time.monotonic(), 1e-3))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_planned(names: list[str], seeds: list[int], options: RunOptions, stack: bool = False,
                time_limit: float | None = None, plan_only: bool = False) -> int:
    """Print the plan, then (unless `plan_only`) run it inside the time limit; returns the number of failed runs.
    A BenchError where no run started and none asked for was finished before: nothing fits in the time."""
    start = time.monotonic()
    measured = read_perf(perf_path(options.results))
    if plan_only and options.device == "cuda":  # planned from perf.csv alone: no GPU needed
        dev = torch.device("cuda")
        jobs = make_plan(names, seeds, options, dev, stack, measured, timed=False)
        note = f" (from {perf_path(options.results)}: training steps at measured images/s)"
    else:
        dev = resolve_device(options.device)
        jobs = make_plan(names, seeds, options, dev, stack, measured)
        note = ""
    seconds = None if time_limit is None else time_limit - margin_seconds(time_limit)
    print(format_plan(jobs, dev, seconds, note))
    if plan_only or not jobs:
        return 0
    deadline = None if seconds is None else start + seconds
    failures, started, finished = 0, 0, 0
    try:
        with _alarm(deadline):
            for job in progress_bar(jobs, options.progress, desc="jobs", unit="job"):
                if deadline is not None and time.monotonic() + job.seconds > deadline:
                    continue  # does not fit in the time left: the next run does it
                started += 1
                try:
                    if len(job.seeds) > 1:
                        records = stacked.run_stacked(job.recipe, list(job.seeds), options, seeds, deadline)
                    else:
                        records = [runner.run_one(job.recipe, job.seeds[0], options, seeds)]
                except TimeLimitReached:
                    raise
                except Exception as e:  # noqa: BLE001 - one failed job must not stop the others
                    failures += len(job.seeds)
                    tqdm.write(f"{job.recipe} seeds {list(job.seeds)}: FAILED ({type(e).__name__}: {e})")
                    continue
                for record in records:
                    if record is not None:
                        finished += 1
                        tqdm.write(summary_line(record))
    except TimeLimitReached:
        tqdm.write(f"time limit reached after {duration(time.monotonic() - start)}: "
                   f"the run in progress resumes from its last epoch")
    left = len(pending(names, seeds, options.budget, datamod.dataset_id(options.data), Path(options.results), False))
    print(f"{finished} run(s) finished, {left} left" + ("; run the same command again to continue" if left else ""))
    if not started and left == len(names) * len(seeds):  # a script must not read "ran nothing" as success
        raise BenchError(f"nothing run: no run asked for fits in the time limit of {duration(seconds)} "
                         "(the plan above); give more time")
    return failures
