"""The executor of `run`: the plan's jobs in this process, in local worker processes, or as a SLURM array.

`launch` plans (`plan.make_plan`), then runs the plan with one executor whatever the launcher; a job
(`plan.Job`) is run by `run_job` in any process. Every run writes its own record into the results store,
so a failed or pre-empted job is simply launched again: finished runs are skipped, and `report` merges
whatever is there.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import re
import reprlib
import signal
import threading
import time
import tomllib
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Iterator

import torch
from tqdm.auto import tqdm

from .. import data as datamod
from ..errors import BenchError, TimeLimitReached, duration
from ..registry.budgets import CHECK_ONLY, get_budget
from ..registry.recipes import get_recipe, list_recipes, load_recipes_from, loaded_files
from ..store import RunKey, run_states
from . import runner, stacked
from .devices import resolve_device
from .engines import check_engine, check_stack_engine, engine_maker
from .perf import perf_path, read_perf
from .plan import Job, format_plan, leave_out_slow, make_plan, margin_seconds, pending, unique
from .runner import RunOptions, check_seeds
from .train import progress_bar

LAUNCHERS = ("inline", "local", "slurm")


@dataclass(frozen=True)
class SlurmOptions:
    """The SLURM job array's settings (`run --launcher slurm`)."""

    partition: str | None = None  # SLURM partition; None: the cluster's default
    time: int = 240  # minutes per task
    gpus: int = 1  # per task
    cpus: int = 8  # per task
    mem_gb: int = 32  # per task
    parallel: int = 16  # array tasks running at once
    wait: bool = False  # wait for the tasks to end and count failures
    cluster: str | None = None  # submitit's cluster override ("local" in tests)


# The integer settings and their sane range: far outside it is a typo, which submitit would meet with an assertion
INTEGER_RANGES = {"time": (1, 366 * 24 * 60), "gpus": (0, 64), "cpus": (1, 4096), "mem_gb": (1, 1 << 16),
                  "parallel": (1, 100_000)}
FILE_KEYS = ("partition", *INTEGER_RANGES)  # what a --slurm-config file may set
PARTITION = re.compile(r"[\w.-]+(,[\w.-]+)*", re.ASCII)  # SLURM's names, comma-separated; no newline in the sbatch file
CONFIG_MAX_BYTES = 64 << 10  # a SLURM config is a few lines


def slurm_settings(config: Path | None = None, **overrides) -> SlurmOptions:
    """SLURM settings: defaults, then the config file, then the given options (None: not given)."""
    settings = SlurmOptions()
    if config:
        loaded = _read_slurm_config(Path(config))
        unknown = set(loaded) - set(FILE_KEYS)
        if unknown:
            raise BenchError(f"{config}: unknown keys {', '.join(sorted(unknown))}; known: {', '.join(FILE_KEYS)}")
        settings = replace(settings, **{k: _checked_setting(k, v, f"{config}: {k} =") for k, v in loaded.items()})
    given = {k: v for k, v in overrides.items() if k in {f.name for f in fields(SlurmOptions)} and v is not None}
    return replace(settings, **{k: _checked_setting(k, v, f"--{k.replace('_', '-')}") for k, v in given.items()})


def _read_slurm_config(config: Path) -> dict:
    """The TOML table of a --slurm-config file, read only from a regular file of a few kB."""
    if config.exists() and not config.is_file():  # a FIFO would hang, /dev/zero would fill the memory
        raise BenchError(f"{config}: not a regular file")
    try:
        with open(config, "rb") as f:
            text = f.read(CONFIG_MAX_BYTES + 1)
        if len(text) > CONFIG_MAX_BYTES:
            raise BenchError(f"{config}: over {CONFIG_MAX_BYTES >> 10} kB, too large for a SLURM config")
        return tomllib.loads(text.decode("utf-8"))
    except OSError as e:
        raise BenchError(f"{config}: cannot read SLURM config ({e.strerror})") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise BenchError(f"{config}: cannot read SLURM config ({e})") from None
    except RecursionError:
        raise BenchError(f"{config}: cannot read SLURM config (nested too deeply)") from None


def _checked_setting(key: str, value, where: str):
    """`value` of setting `key` if it has the type and range SLURM takes; `where` names it in the error."""
    if key in INTEGER_RANGES:
        low, high = INTEGER_RANGES[key]
        if type(value) is not int or not low <= value <= high:  # type(): a bool is an int too
            raise BenchError(f"{where} {reprlib.repr(value)}: expected a whole number from {low} to {high}")
    elif key == "partition" and not (isinstance(value, str) and PARTITION.fullmatch(value)):
        raise BenchError(f"{where} {reprlib.repr(value)}: expected a partition name (letters, digits, _ . -)")
    return value


def launch(names: list[str], seeds: list[int], options: RunOptions, launcher: str = "inline", jobs: int = 2,
           slurm: SlurmOptions = SlurmOptions(), cpu_limit: float = 0, stack: bool = False,
           time_limit: float | None = None, plan_only: bool = False) -> int:
    """Plan every (recipe, seed) not yet finished, print the plan, then (unless `plan_only`) run it; returns the
    number of failed runs.

    `stack`: one job per recipe trains its seeds together (`stacked.py`). `time_limit` (seconds): smallest
    first, each job started only where its estimate fits in the time left, stopping cleanly at the limit. On a
    CPU, recipes estimated over `cpu_limit` minutes per run are left out with a note (`plan.leave_out_slow`);
    0 runs everything. A BenchError where nothing asked for is finished and nothing could start: "nothing ran"
    is no success.
    """
    start = time.monotonic()
    if launcher not in LAUNCHERS:
        raise BenchError(f"unknown launcher {launcher!r}; choose from {', '.join(LAUNCHERS)}")
    if launcher != "inline" and (plan_only or stack or time_limit is not None):
        raise BenchError(f"--plan, --time-limit and --stack-seeds run in this process, not with --launcher {launcher} "
                         "(inside a SLURM task, give the task's time as --time-limit)")
    if launcher == "slurm" and slurm.cluster is None:
        _require_slurm()
    names, seeds = unique(names), unique(seeds)
    check_seeds(seeds)
    (check_stack_engine if stack else check_engine)(options.engine)
    budget, planned = options.budget, plan_only or time_limit is not None
    from_perf = plan_only and options.device == "cuda"  # planned from perf.csv alone: no GPU needed
    device = None if launcher == "slurm" else torch.device("cuda") if from_perf else resolve_device(options.device)
    if device is not None and not from_perf:
        engine_maker(options.engine, device)  # --engine graph on a CPU: refused before any work
    timed = device is not None and not from_perf and (planned or budget.name not in CHECK_ONLY)
    measured = read_perf(perf_path(options.results)) if planned else None
    plan = make_plan(names, seeds, options, device, stack=stack, timed=timed, measured=measured)
    asked = len(names) * len(seeds)
    done = asked - sum(len(j.seeds) for j in plan)
    print(f"{asked - done} run(s) to do, {done} already finished ({budget.name} budget, {launcher} launcher)")
    if plan and timed and cpu_limit > 0 and not plan_only and budget.name not in CHECK_ONLY and device.type == "cpu":
        plan = leave_out_slow(plan, options, cpu_limit, device)
        if not plan and not done:  # a script must not read "ran nothing" as success; a finished run counts as done
            raise BenchError(f"nothing run: every run asked for is estimated over the {cpu_limit:g}-minute "
                             "--cpu-limit on this CPU (--cpu-limit 0 runs them anyway)")
    seconds = None if time_limit is None else time_limit - margin_seconds(time_limit)
    if planned or stack:
        note = f" (from {perf_path(options.results)}: training steps at measured images/s)" if from_perf else ""
        print(format_plan(plan, device, seconds, note))
    elif timed and launcher == "inline" and plan:
        print(f"estimated time on {device}: {duration(sum(j.seconds for j in plan))} (from a few timed training "
              f"steps; a resumed run's finished epochs left out)")
    if plan_only or not plan:
        return 0
    if launcher == "local":
        outcome = _local(plan, options, seeds, jobs)
    elif launcher == "slurm":
        return _slurm(plan, options, seeds, slurm).failures
    else:
        outcome = _inline(plan, options, seeds, None if seconds is None else start + seconds)
    if outcome.timed_out:
        tqdm.write(f"time limit reached after {duration(time.monotonic() - start)}: "
                   f"the run in progress resumes from its last epoch")
    left = len(pending(names, seeds, budget, datamod.dataset_id(options.data), Path(options.results), False))
    print(f"{outcome.finished} run(s) finished, {left} left" + ("; run the same command again to continue" if left else ""))
    if not outcome.started and left == asked:
        raise BenchError(f"nothing run: no run asked for fits in the time limit of {duration(seconds)} "
                         "(the plan above); give more time")
    return outcome.failures


def run_job(job: Job, options: RunOptions, seeds_requested: list[int], recipes_from: tuple[str, ...] = (),
            deadline: float | None = None) -> list[dict | None]:
    """One job of the plan, in whatever process runs it: its records (None: another process runs that seed).
    Module-level, so that it pickles; `recipes_from`: the recipe files this command loaded (a worker knows only
    the built-in recipes)."""
    load_recipes_from(*recipes_from)
    options = replace(options, budget=job.budget)
    if len(job.seeds) > 1:
        return stacked.run_stacked(job.recipe, list(job.seeds), options, seeds_requested, deadline)
    return [runner.run_one(job.recipe, job.seeds[0], options, seeds_requested)]


def summary_line(record: dict) -> str:
    """The one-line summary printed when a run finishes."""
    m = record["metrics"]["test"] or record["metrics"]["val"]
    split = "test" if record["metrics"]["test"] else "val"
    return (f"{record['recipe']} seed {record['seed']} [{record['budget']}]: {split} exact {m['exact']:.2%}, "
            f"within-one {m['within_one']:.2%}, MSE {m['mse']:.3f} ({record['train_seconds']:.0f}s, {record['device']})")


@dataclass
class Outcome:
    """What the executor did with the plan."""

    failures: int = 0  # runs that failed
    started: int = 0  # jobs started
    finished: int = 0  # runs with a record
    timed_out: bool = False  # stopped at the time limit

    def ended(self, job: Job, records: list[dict | None], write=tqdm.write) -> None:
        """Count a job's records and print a line for each."""
        for seed, record in zip(job.seeds, records):
            self.finished += record is not None
            write(summary_line(record) if record else f"{job.recipe} seed {seed}: skipped (running elsewhere)")

    def failed(self, job: Job, e: BaseException, write=tqdm.write) -> None:
        """Count a failed job and print a line naming it and its error's last line."""
        self.failures += len(job.seeds)
        text = str(e).strip()
        seeds = f"seed {job.seeds[0]}" if len(job.seeds) == 1 else f"seeds {list(job.seeds)}"
        write(f"{job.recipe} {seeds}: FAILED ({type(e).__name__}: {text.splitlines()[-1] if text else ''})")


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


def _inline(plan: list[Job], options: RunOptions, seeds: list[int], deadline: float | None) -> Outcome:
    """The plan in this process, in order; with a `deadline`, only the jobs whose estimates fit in the time left."""
    outcome = Outcome()
    try:
        with _alarm(deadline):
            for job in progress_bar(plan, options.progress, desc="jobs", unit="job"):
                if deadline is not None and time.monotonic() + (job.seconds or 0.0) > deadline:
                    continue  # does not fit in the time left: the next run does it
                outcome.started += 1
                try:
                    records = run_job(job, options, seeds, deadline=deadline)
                except Exception as e:  # noqa: BLE001 - one failed job must not stop the others
                    outcome.failed(job, e)
                    continue
                outcome.ended(job, records)
    except TimeLimitReached:  # a KeyboardInterrupt: the run in progress left no failure marker
        outcome.timed_out = True
    return outcome


def _init_worker(ids: "mp.Queue", n_workers: int) -> None:
    """Pin a worker to one GPU (round robin) or to its share of the CPU threads."""
    worker = ids.get()
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(worker % gpus)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // n_workers))


def _local(plan: list[Job], options: RunOptions, seeds: list[int], n_workers: int) -> Outcome:
    """The plan in `n_workers` local processes, one job each at a time."""
    if n_workers < 1:
        raise BenchError("--jobs must be at least 1")
    ctx = mp.get_context("spawn")
    ids = ctx.Manager().Queue()
    for i in range(n_workers):
        ids.put(i)
    quiet, outcome = replace(options, progress=False), Outcome(started=len(plan))
    with cf.ProcessPoolExecutor(n_workers, mp_context=ctx, initializer=_init_worker, initargs=(ids, n_workers)) as pool:
        futures = {pool.submit(run_job, job, quiet, seeds, loaded_files()): job for job in plan}
        for fut in progress_bar(cf.as_completed(futures), True, total=len(futures), desc="runs", unit="run"):
            try:
                outcome.ended(futures[fut], fut.result())
            except Exception as e:  # noqa: BLE001
                outcome.failed(futures[fut], e)
    return outcome


def _require_slurm() -> None:
    """Refuse the SLURM launcher off a cluster: submitit would quietly train on this machine instead."""
    import submitit

    if submitit.AutoExecutor.which() != "slurm":  # submitit's own test: `srun` on PATH
        raise BenchError("--launcher slurm: no SLURM here (no srun on PATH); run it on a cluster's login node, "
                         "or use --launcher local to train on this machine")


def _slurm(plan: list[Job], options: RunOptions, seeds: list[int], s: SlurmOptions) -> Outcome:
    """The plan as a SLURM job array, one task a job; waits for the tasks where asked (or off a cluster)."""
    import submitit

    options = replace(options, progress=False)
    folder = Path(options.results) / "submitit"
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=s.cluster)
    params = dict(name="digitsum-bench", timeout_min=s.time, cpus_per_task=s.cpus, mem_gb=s.mem_gb,
                  slurm_array_parallelism=s.parallel)
    if executor.cluster == "slurm":
        params["gpus_per_node"] = s.gpus
        if s.partition:
            params["slurm_partition"] = s.partition
    executor.update_parameters(**params)
    n = len(plan)
    tasks = executor.map_array(run_job, plan, [options] * n, [seeds] * n, [loaded_files()] * n)
    print(f"submitted {len(tasks)} task(s) as job {tasks[0].job_id.split('_')[0]}; logs under {folder}")
    outcome = Outcome(started=n)
    if not s.wait and executor.cluster == "slurm":
        print(f"follow with: digitsum-bench status --results {options.results} --budget {options.budget.name}")
        return outcome
    for task, job in zip(tasks, plan):
        try:
            outcome.ended(job, task.result(), print)
        except Exception as e:  # noqa: BLE001 - submitit wraps the task's exception
            outcome.failed(job, e, print)
    return outcome


def status_rows(results: Path, recipes: list[str] | None, seeds: list[int], budget: str, data: str | None = None) -> list[dict]:
    """One row per (recipe, seed) per dataset: finished, running, failed, missing, corrupt or stale.

    The datasets are `data`'s (synth or course files) where it is given, else every dataset
    found under the budget. Runs of other seeds found on disk (records, locks, failure
    markers) are listed too.
    """
    names = unique(recipes or list_recipes())
    seeds = unique(seeds)
    check_seeds(seeds)
    for name in names:
        get_recipe(name)  # unknown names are an error, not "missing"
    get_budget(budget)
    base = Path(results) / "records" / budget
    if data is not None:
        dataset_ids = [datamod.dataset_id(data)]  # also checks the files: a bad --data is an error
    else:
        dataset_ids = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    keys = []
    for dataset_id in dataset_ids or ["-"]:
        for name in names:
            stems = (p.name[4:].split(".")[0] for p in (base / dataset_id / name).glob("seed*"))
            found = {int(s) for s in stems if s.isascii() and s.isdigit()}  # 'seed²' is no seed: int() refuses '²'
            keys += [RunKey(name, s, budget, dataset_id) for s in sorted(set(seeds) | found)]
    return run_states(keys, results)
