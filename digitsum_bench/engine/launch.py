"""Launchers: run (recipe, seed) jobs in this process, in local worker processes, or as a SLURM array.

Every job writes its own record into the results store, so a failed or pre-empted job is
simply launched again: finished runs are skipped, and `report` merges whatever is there.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import re
import reprlib
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import data as datamod
from ..errors import BenchError, duration
from ..registry.budgets import CHECK_ONLY, apply_budget, get_budget
from ..registry.recipes import get_recipe, list_recipes, load_recipes_from, loaded_files
from ..store import RunKey, finished_record, remove_estimate, run_states, write_estimate
from . import runner
from .devices import device_name, resolve_device
from .estimate import run_seconds
from .runner import RunOptions, check_seeds, load_data
from .train import progress_bar


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


def _job(name: str, seed: int, options: RunOptions, seeds: list[int], recipes_from: list[str]) -> str:
    """One (recipe, seed) run; returns its one-line summary. Module-level so that it pickles."""
    load_recipes_from(*recipes_from)  # a worker process knows only the built-in recipes
    record = runner.run_one(name, seed, options, seeds)
    return summary_line(record) if record else f"{name} seed {seed}: skipped (running elsewhere)"


def summary_line(record: dict) -> str:
    """The one-line summary printed when a run finishes."""
    m = record["metrics"]["test"] or record["metrics"]["val"]
    split = "test" if record["metrics"]["test"] else "val"
    return (f"{record['recipe']} seed {record['seed']} [{record['budget']}]: {split} exact {m['exact']:.2%}, "
            f"within-one {m['within_one']:.2%}, MSE {m['mse']:.3f} ({record['train_seconds']:.0f}s, {record['device']})")


def unique(items: list) -> list:
    """`items` without repeats, in their first order."""
    return list(dict.fromkeys(items))


def pending(names: list[str], seeds: list[int], budget: str, dataset_id: str, results: Path,
            force: bool) -> list[tuple[str, int]]:
    """The (recipe, seed) pairs without a finished record on `dataset_id` (all of them with `force`)."""
    jobs = []
    for name in names:
        apply_budget(get_recipe(name), budget)  # an unknown recipe or budget is an error before any work
        for seed in seeds:
            if force or finished_record(RunKey(name, seed, budget, dataset_id), results) is None:
                jobs.append((name, seed))
    return jobs


def share_left(name: str, seed: int, options: RunOptions, dataset_id: str) -> float:
    """The share of a run's epochs still to train: an interrupted run resumes from its checkpoints
    (`runner.epochs_done`). Every epoch counts as one, a pre-training stage's too; all of them with `force`."""
    if options.force:
        return 1.0
    recipe = apply_budget(get_recipe(name), options.budget)
    epochs = recipe.epochs + (recipe.pretrain.epochs if recipe.pretrain else 0)
    done = runner.epochs_done(recipe, RunKey(name, seed, options.budget, dataset_id).checkpoint_dir(options.results))
    return 1 - done / epochs


def skip_slow_on_cpu(todo: list[tuple[str, int]], budget: str, data: str, results: Path,
                     limit_minutes: float) -> list[tuple[str, int]]:
    """The runs that fit a CPU: a recipe whose run is estimated over `limit_minutes` is not started.

    Each recipe left out gets a note (store.write_estimate) that the leaderboard lists as
    "needs a GPU at this budget", with its estimated CPU time, so it is not silently missing.
    """
    cpu = torch.device("cpu")
    kept = []
    for name in dict.fromkeys(n for n, _ in todo):
        seconds = run_seconds(name, budget, cpu)
        dataset_id = load_data(apply_budget(get_recipe(name), budget), budget, data).dataset_id
        if seconds <= limit_minutes * 60:
            remove_estimate(results, budget, dataset_id, name)
            kept += [(n, s) for n, s in todo if n == name]
            continue
        write_estimate(results, budget, dataset_id, name, seconds, device_name(cpu))
        print(f"skip {name}: estimated {duration(seconds)} per seed on this CPU, over the "
              f"{limit_minutes:g}-minute limit; needs a GPU at the {budget} budget (--cpu-limit 0 runs it anyway)")
    return kept


def launch(names: list[str], seeds: list[int], options: RunOptions, launcher: str = "inline", jobs: int = 2,
           slurm: SlurmOptions = SlurmOptions(), cpu_limit: float = 0) -> int:
    """Run every (recipe, seed) not yet finished; returns the number of failed runs.

    On a CPU (inline or local launcher), recipes estimated over `cpu_limit` minutes per run are
    left out with a note (`skip_slow_on_cpu`); 0 runs everything. Where that leaves nothing to run and
    no run asked for is finished, a BenchError says so: "nothing ran" is no success.
    """
    if launcher == "slurm" and slurm.cluster is None:
        _require_slurm()
    names, seeds = unique(names), unique(seeds)
    check_seeds(seeds)
    results = Path(options.results)
    dataset_id = datamod.dataset_id(options.data)  # also checks --data; a run makes its splits when it starts
    todo = pending(names, seeds, options.budget, dataset_id, results, options.force)
    done = len(names) * len(seeds) - len(todo)
    print(f"{len(todo)} run(s) to do, {done} already finished ({options.budget} budget, {launcher} launcher)")
    if todo and cpu_limit > 0 and options.budget not in CHECK_ONLY and launcher != "slurm" \
            and resolve_device(options.device).type == "cpu":
        todo = skip_slow_on_cpu(todo, options.budget, options.data, results, cpu_limit)
        if not todo and not done:  # a script must not read "ran nothing" as success; a finished run counts as done
            raise BenchError(f"nothing run: every run asked for is estimated over the {cpu_limit:g}-minute "
                             "--cpu-limit on this CPU (--cpu-limit 0 runs them anyway)")
    if not todo:
        return 0
    job = (options, seeds, loaded_files())
    if launcher == "inline":
        return _inline(todo, job, dataset_id)
    if launcher == "local":
        return _local(todo, job, jobs)
    if launcher == "slurm":
        return _slurm(todo, job, slurm)
    raise BenchError(f"unknown launcher {launcher!r}")


def _inline(todo: list[tuple[str, int]], job: tuple, dataset_id: str) -> int:
    options = job[0]
    device = resolve_device(options.device)
    if options.budget not in CHECK_ONLY:
        per_run = {n: run_seconds(n, options.budget, device) for n in dict.fromkeys(n for n, _ in todo)}
        total = sum(per_run[n] * share_left(n, s, options, dataset_id) for n, s in todo)
        print(f"estimated time on {device}: {duration(total)} (from a few timed training steps; "
              f"a resumed run's finished epochs left out)")
    failures = 0
    for name, seed in progress_bar(todo, True, desc="runs", unit="run"):
        try:
            tqdm.write(_job(name, seed, *job))
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - one failed run must not stop the others
            failures += 1
            tqdm.write(f"{name} seed {seed}: FAILED ({type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''})")
    return failures


def _init_worker(ids: "mp.Queue", n_workers: int) -> None:
    """Pin a worker to one GPU (round robin) or to its share of the CPU threads."""
    worker = ids.get()
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(worker % gpus)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // n_workers))


def _local(todo: list[tuple[str, int]], job: tuple, n_workers: int) -> int:
    if n_workers < 1:
        raise BenchError("--jobs must be at least 1")
    ctx = mp.get_context("spawn")
    ids = ctx.Manager().Queue()
    for i in range(n_workers):
        ids.put(i)
    job = (replace(job[0], progress=False), *job[1:])
    failures = 0
    with cf.ProcessPoolExecutor(n_workers, mp_context=ctx, initializer=_init_worker, initargs=(ids, n_workers)) as pool:
        futures = {pool.submit(_job, name, seed, *job): (name, seed) for name, seed in todo}
        for fut in progress_bar(cf.as_completed(futures), True, total=len(futures), desc="runs", unit="run"):
            name, seed = futures[fut]
            try:
                tqdm.write(fut.result())
            except Exception as e:  # noqa: BLE001
                failures += 1
                tqdm.write(f"{name} seed {seed}: FAILED ({type(e).__name__}: {e})")
    return failures


def _require_slurm() -> None:
    """Refuse the SLURM launcher off a cluster: submitit would quietly train on this machine instead."""
    import submitit

    if submitit.AutoExecutor.which() != "slurm":  # submitit's own test: `srun` on PATH
        raise BenchError("--launcher slurm: no SLURM here (no srun on PATH); run it on a cluster's login node, "
                         "or use --launcher local to train on this machine")


def _slurm(todo: list[tuple[str, int]], job: tuple, s: SlurmOptions) -> int:
    import submitit

    options = replace(job[0], progress=False)
    folder = Path(options.results) / "submitit"
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=s.cluster)
    params = dict(name="digitsum-bench", timeout_min=s.time, cpus_per_task=s.cpus, mem_gb=s.mem_gb,
                  slurm_array_parallelism=s.parallel)
    if executor.cluster == "slurm":
        params["gpus_per_node"] = s.gpus
        if s.partition:
            params["slurm_partition"] = s.partition
    executor.update_parameters(**params)
    n = len(todo)
    tasks = executor.map_array(_job, [name for name, _ in todo], [seed for _, seed in todo], [options] * n,
                               [job[1]] * n, [job[2]] * n)
    print(f"submitted {len(tasks)} task(s) as job {tasks[0].job_id.split('_')[0]}; logs under {folder}")
    if not s.wait and executor.cluster == "slurm":
        print(f"follow with: digitsum-bench status --results {options.results} --budget {options.budget}")
        return 0
    failures = 0
    for task, (name, seed) in zip(tasks, todo):
        try:
            print(task.result())
        except Exception as e:  # noqa: BLE001 - submitit wraps the task's exception
            failures += 1
            print(f"{name} seed {seed}: FAILED ({str(e).strip().splitlines()[-1]})")
    return failures


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
