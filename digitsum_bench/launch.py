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

from . import train
from .errors import BenchError
from .recipes import get_recipe, list_recipes, load_recipes_from, loaded_files
from .store import RunKey, finished_record, run_states

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


def launch(names: list[str], seeds: list[int], budget: str, data: str, results: Path, device: str = "auto",
           force: bool = False, deterministic: bool = False, weights: str | None = None, launcher: str = "inline",
           jobs: int = 2, slurm: argparse.Namespace | None = None) -> int:
    """Run every (recipe, seed) not yet finished; returns the number of failed runs."""
    results = Path(results)
    todo = pending(names, seeds, budget, data, results, force)
    done = len(names) * len(seeds) - len(todo)
    print(f"{len(todo)} run(s) to do, {done} already finished ({budget} budget, {launcher} launcher)")
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
        total = sum(train.estimate_seconds(train.apply_budget(get_recipe(n), kw["budget"]), device) for n, _ in todo)
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
    """One row per (recipe, seed) per dataset found under the budget: finished, running, failed or missing.

    Runs of other seeds found on disk (records, locks, failure markers) are listed too.
    """
    names = recipes or list_recipes()
    for name in names:
        get_recipe(name)  # unknown names are an error, not "missing"
    base = Path(results) / "records" / budget
    dataset_ids = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    keys = []
    for dataset_id in dataset_ids or ["-"]:
        for name in names:
            found = {int(p.name[4:].split(".")[0]) for p in (base / dataset_id / name).glob("seed*")
                     if p.name[4:].split(".")[0].isdigit()}
            keys += [RunKey(name, s, budget, dataset_id) for s in sorted(set(seeds) | found)]
    return run_states(keys, results)
