"""Launchers: run (recipe, seed) jobs in this process, in local worker processes, or as a SLURM array.

Every job writes its own record into the results store, so a failed or pre-empted job is
simply launched again: finished runs are skipped, and `report` merges whatever is there.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing as mp
import os
import tomllib
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import data as datamod
from . import train
from .errors import BenchError
from .recipes import get_recipe, list_recipes, load_recipes_from, loaded_files
from .store import RunKey, finished_record, remove_estimate, run_states, write_estimate

SLURM_DEFAULTS = {"partition": None, "time": 240, "gpus": 1, "cpus": 8, "mem_gb": 32, "parallel": 16}


def slurm_settings(a: argparse.Namespace) -> dict:
    """SLURM settings: defaults, then the config file, then command-line options."""
    settings = dict(SLURM_DEFAULTS)
    if getattr(a, "slurm_config", None):
        try:
            loaded = tomllib.loads(Path(a.slurm_config).read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise BenchError(f"{a.slurm_config}: cannot read SLURM config ({e})") from None
        unknown = set(loaded) - set(settings)
        if unknown:
            raise BenchError(f"{a.slurm_config}: unknown keys {', '.join(sorted(unknown))}; known: {', '.join(settings)}")
        settings.update(loaded)
    for key in settings:
        value = getattr(a, key, None)
        if value is not None:
            settings[key] = value
    return settings


def _job(name: str, seed: int, kw: dict) -> str:
    """One (recipe, seed) run; returns its one-line summary. Module-level so that it pickles."""
    kw = dict(kw)
    load_recipes_from(*kw.pop("recipes_from", ()))  # a worker process knows only the built-in recipes
    record = train.run_one(name, seed, **kw)
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


def pending(names: list[str], seeds: list[int], budget: str, data: str, results: Path, force: bool) -> list[tuple[str, int]]:
    """The (recipe, seed) pairs without a finished record (all of them with `force`)."""
    jobs = []
    for name in names:
        recipe = train.apply_budget(get_recipe(name), budget)
        dataset_id = train.load_data(recipe, budget, data).dataset_id  # also checks --data before any work
        for seed in seeds:
            if force or finished_record(RunKey(name, seed, budget, dataset_id), results) is None:
                jobs.append((name, seed))
    return jobs


def estimate(name: str, budget: str, device: torch.device) -> float:
    """Estimated seconds of one (recipe, seed) run under `budget` on `device` (train.estimate_seconds)."""
    recipe = train.apply_budget(get_recipe(name), budget)
    return train.estimate_seconds(recipe, device, train.BUDGETS[budget].test_size)


def skip_slow_on_cpu(todo: list[tuple[str, int]], budget: str, data: str, results: Path,
                     limit_minutes: float) -> list[tuple[str, int]]:
    """The runs that fit a CPU: a recipe whose run is estimated over `limit_minutes` is not started.

    Each recipe left out gets a note (store.write_estimate) that the leaderboard lists as
    "needs a GPU at this budget", with its estimated CPU time, so it is not silently missing.
    """
    cpu = torch.device("cpu")
    kept = []
    for name in dict.fromkeys(n for n, _ in todo):
        seconds = estimate(name, budget, cpu)
        dataset_id = train.load_data(train.apply_budget(get_recipe(name), budget), budget, data).dataset_id
        if seconds <= limit_minutes * 60:
            remove_estimate(results, budget, dataset_id, name)
            kept += [(n, s) for n, s in todo if n == name]
            continue
        write_estimate(results, budget, dataset_id, name, seconds, train.provenance(cpu)["device"])
        print(f"skip {name}: estimated {train.format_seconds(seconds)} per seed on this CPU, over the "
              f"{limit_minutes:g}-minute limit; needs a GPU at the {budget} budget (--cpu-limit 0 runs it anyway)")
    return kept


def launch(names: list[str], seeds: list[int], budget: str, data: str, results: Path, device: str = "auto",
           force: bool = False, deterministic: bool = False, weights: str | None = None, launcher: str = "inline",
           jobs: int = 2, slurm: argparse.Namespace | None = None, cpu_limit: float = 0) -> int:
    """Run every (recipe, seed) not yet finished; returns the number of failed runs.

    On a CPU (inline or local launcher), recipes estimated over `cpu_limit` minutes per run are
    left out with a note (`skip_slow_on_cpu`); 0 runs everything.
    """
    names, seeds = unique(names), unique(seeds)
    train.check_seeds(seeds)
    results = Path(results)
    todo = pending(names, seeds, budget, data, results, force)
    done = len(names) * len(seeds) - len(todo)
    print(f"{len(todo)} run(s) to do, {done} already finished ({budget} budget, {launcher} launcher)")
    if todo and cpu_limit > 0 and budget not in train.CHECK_ONLY and launcher != "slurm" \
            and train.resolve_device(device).type == "cpu":
        todo = skip_slow_on_cpu(todo, budget, data, results, cpu_limit)
    if not todo:
        return 0
    kw = dict(budget=budget, data=data, results=results, device=device, force=force, deterministic=deterministic,
              weights=weights, seeds_requested=seeds, recipes_from=loaded_files())
    if launcher == "inline":
        return _inline(todo, kw)
    if launcher == "local":
        return _local(todo, kw, jobs)
    if launcher == "slurm":
        return _slurm(todo, kw, slurm or argparse.Namespace())
    raise BenchError(f"unknown launcher {launcher!r}")


def _inline(todo: list[tuple[str, int]], kw: dict) -> int:
    device = train.resolve_device(kw["device"])
    if kw["budget"] != "smoke":
        total = sum(estimate(n, kw["budget"], device) for n, _ in todo)
        print(f"estimated time on {device}: {train.format_seconds(total)} (from a few timed training steps)")
    failures = 0
    for name, seed in tqdm(todo, desc="runs", unit="run"):
        try:
            tqdm.write(_job(name, seed, kw))
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


def _local(todo: list[tuple[str, int]], kw: dict, n_workers: int) -> int:
    if n_workers < 1:
        raise BenchError("--jobs must be at least 1")
    ctx = mp.get_context("spawn")
    ids = ctx.Manager().Queue()
    for i in range(n_workers):
        ids.put(i)
    kw = {**kw, "progress": False}
    failures = 0
    with cf.ProcessPoolExecutor(n_workers, mp_context=ctx, initializer=_init_worker, initargs=(ids, n_workers)) as pool:
        futures = {pool.submit(_job, name, seed, kw): (name, seed) for name, seed in todo}
        for fut in tqdm(cf.as_completed(futures), total=len(futures), desc="runs", unit="run"):
            name, seed = futures[fut]
            try:
                tqdm.write(fut.result())
            except Exception as e:  # noqa: BLE001
                failures += 1
                tqdm.write(f"{name} seed {seed}: FAILED ({type(e).__name__}: {e})")
    return failures


def _slurm(todo: list[tuple[str, int]], kw: dict, a: argparse.Namespace) -> int:
    import submitit

    s = slurm_settings(a)
    folder = Path(kw["results"]) / "submitit"
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=getattr(a, "cluster", None))
    params = dict(name="digitsum-bench", timeout_min=s["time"], cpus_per_task=s["cpus"], mem_gb=s["mem_gb"],
                  slurm_array_parallelism=s["parallel"])
    if executor.cluster == "slurm":
        params["gpus_per_node"] = s["gpus"]
        if s["partition"]:
            params["slurm_partition"] = s["partition"]
    executor.update_parameters(**params)
    kw = {**kw, "progress": False}
    jobs = executor.map_array(_job, [n for n, _ in todo], [s_ for _, s_ in todo], [kw] * len(todo))
    print(f"submitted {len(jobs)} task(s) as job {jobs[0].job_id.split('_')[0]}; logs under {folder}")
    if not getattr(a, "wait", False) and executor.cluster == "slurm":
        print(f"follow with: digitsum-bench status --results {kw['results']} --budget {kw['budget']}")
        return 0
    failures = 0
    for job, (name, seed) in zip(jobs, todo):
        try:
            print(job.result())
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
    train.check_seeds(seeds)
    for name in names:
        get_recipe(name)  # unknown names are an error, not "missing"
    if budget not in train.BUDGETS:
        raise BenchError(f"unknown budget {budget!r}; choose from {', '.join(train.BUDGETS)}")
    base = Path(results) / "records" / budget
    if data is not None:
        dataset_ids = [datamod.dataset_id(data)]  # also checks the files: a bad --data is an error
    else:
        dataset_ids = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    keys = []
    for dataset_id in dataset_ids or ["-"]:
        for name in names:
            found = {int(p.name[4:].split(".")[0]) for p in (base / dataset_id / name).glob("seed*")
                     if p.name[4:].split(".")[0].isdigit()}
            keys += [RunKey(name, s, budget, dataset_id) for s in sorted(set(seeds) | found)]
    return run_states(keys, results)
