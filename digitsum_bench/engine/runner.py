"""The runner: one (recipe, seed) run under a budget, from data to its record.

`run_one` finds or makes the run's data, builds the model (after report 004's pre-training
stage where the recipe has one), fits each ensemble member (`fit_members`), scores the result
on val and test, and writes one record with its provenance (code version, git commit, library
versions, device). A finished record is never recomputed unless forced; a run holds a lock while
it trains, and a failure leaves a marker for `status` (`guarded`, shared with the stacked runner).
"""

from __future__ import annotations

import copy
import datetime as dt
import platform
import subprocess
import warnings
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .. import __version__
from .. import data as datamod
from ..data import DeviceData
from ..errors import BenchError
from ..registry import models
from ..registry.budgets import BUDGETS, Budget, apply_budget, get_budget
from ..registry.recipes import Recipe, get_recipe
from ..schema import SCHEMA
from ..store import RunKey, check_run_folders, finished_record, record_failure, remove, run_lock, write_json_atomic
from . import engines, metrics
from .checkpoints import check_config, checkpoint_epoch, clear, load_checkpoint, load_pt, recipe_config, save_atomic
from .devices import device_name, resolve_device, set_deterministic
from .train import evaluate, fit, memory_format, needs_digits

MAX_SEED = 2**31 - 1  # torch, numpy and every seed derived from it accept 0..2**31-1
STAGE1 = "stage1"  # a pre-training stage's epoch checkpoints: <run folder>/stage1/; its trained model: stage1.pt
LEG_KEYS = ("git_commit", "git_dirty", "device")  # the provenance of each process that trains a run (train.start_leg)


@dataclass(frozen=True)
class RunOptions:
    """How runs are made, the same for every (recipe, seed) of one command."""

    budget: Budget = BUDGETS["smoke"]  # how much of each recipe to train; a name ("quick") is resolved on creation
    data: str = "synth"  # "synth" (DigitSum-Synth) or a path to course files
    results: Path = Path("results")  # the results folder: records, checkpoints, leaderboard
    device: str = "auto"  # "auto", "cpu" or "cuda"
    force: bool = False  # redo finished runs, from scratch
    deterministic: bool = False  # bitwise-reproducible GPU kernels (always on a CPU)
    weights: str | None = None  # an ImageNet weights file for the recipes that start from one
    progress: bool = True  # progress bars
    engine: str = "auto"  # engines.ENGINES: how the training steps run ("auto": the fastest that checks out here)

    def __post_init__(self) -> None:
        if isinstance(self.budget, str):  # an unknown name is a BenchError naming the budgets
            object.__setattr__(self, "budget", get_budget(self.budget))


def check_seeds(seeds: list[int]) -> None:
    """A BenchError before any work for a seed outside 0..MAX_SEED (it would fail mid-training)."""
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise BenchError(f"--seeds {seed}: a seed is a whole number in 0..{MAX_SEED}")


def member_seed(seed: int, k: int) -> int:
    """Ensemble member k's training seed: the run's own seed for member 0, so that a one-member budget
    trains exactly member 0; an independent seed in 0..MAX_SEED for each other member."""
    return seed if k == 0 else int(np.random.SeedSequence([seed, k, 4]).generate_state(1)[0]) & MAX_SEED


def load_data(recipe: Recipe, budget: Budget, data: str) -> datamod.Splits:
    """The recipe's splits under the budget (data seed 0: the same data for every training seed)."""
    return datamod.cached_splits(data, recipe.data, recipe.train_size, recipe.val_size, budget.test_size)


def device_splits(recipe: Recipe, splits: datamod.Splits, device: torch.device) -> tuple[DeviceData, DeviceData]:
    """The training and validation splits on the device; a BenchError where the recipe needs digit labels
    the data does not have."""
    if needs_digits(recipe) and splits.train.digits is None:
        raise BenchError(f"recipe {recipe.name} trains on per-digit labels, which {splits.train.name} does not have")
    return DeviceData.from_numpy(splits.train, device), DeviceData.from_numpy(splits.val, device)


def load_aux(recipe: Recipe, device: torch.device) -> DeviceData | None:
    """The recipe's labelled synthetic set (`data.labelled_set`) on the device, or None."""
    if not recipe.aux_batch:
        return None
    return DeviceData.from_numpy(datamod.labelled_set(recipe.aux_size, recipe.aux_distort), device)


def build_model(recipe: Recipe, seed: int, device: torch.device, ckpt_dir: Path, weights: str | None,
                progress: bool, engine: str = "auto", leg: dict | None = None) -> tuple[nn.Module, str, dict | None]:
    """The recipe's model, seeded, after its pre-training stage where it has one (report 004, trained with
    `engine` under this process's provenance `leg`); its weight status; and that stage's seconds, history and
    legs (`_stage1`), None without one."""
    torch.manual_seed(seed)
    model, status = recipe.create_model(weights)
    stage = None
    if recipe.pretrain is not None:
        stage1, stage = _stage1(recipe.pretrain, seed, device, ckpt_dir, weights, progress, engine, leg)
        model.features.load_state_dict(stage1.features.state_dict())
    return model.to(device, memory_format=memory_format()), status, stage


def epochs_done(recipe: Recipe, ckpt_dir: Path) -> int:
    """The epochs an interrupted run of `recipe` has saved in `ckpt_dir`, its pre-training stage's counted with
    them (`stage1.pt` once the stage is over, its own `stage1/last.pt` before)."""
    done = min(checkpoint_epoch(ckpt_dir), recipe.epochs)
    if recipe.pretrain is not None:
        stage = recipe.pretrain.epochs
        done += stage if (ckpt_dir / f"{STAGE1}.pt").exists() else min(checkpoint_epoch(ckpt_dir / STAGE1), stage)
    return done


def _stage1(stage: Recipe, seed: int, device: torch.device, ckpt_dir: Path, weights: str | None,
            progress: bool, engine: str = "auto", leg: dict | None = None) -> tuple[nn.Module, dict | None]:
    """A pre-training stage's trained model, from `stage1.pt` where an earlier attempt saved it (under the stage's
    config: `checkpoints.check_config`), else fitted with `engine` on the stage's own data (`data.pretrain_splits`)
    and saved there with its config; and its training seconds, per-epoch history and legs for the record (from the
    stage's own last.pt for a stage1.pt saved without them; None when neither has them)."""
    stage1_file = ckpt_dir / f"{STAGE1}.pt"
    config = recipe_config(stage)
    model = stage.create_model(weights)[0].to(device, memory_format=memory_format())
    if stage1_file.exists():
        saved = load_pt(stage1_file, device)
        check_config(stage1_file, saved.get("config"), config)
        model.load_state_dict(saved["model"])
        last = ckpt_dir / STAGE1 / "last.pt"
        if "summary" not in saved and last.exists():
            state = load_pt(last, device)["state"]
            return model, {"train_seconds": state["train_seconds"], "history": state["history"]}
        return model, saved.get("summary")
    if stage.data_seed is None:
        raise BenchError(f"recipe {stage.name}: a pre-training stage needs its own data_seed")
    splits = datamod.pretrain_splits(stage.train_size, stage.val_size, stage.data_seed)
    train, val = device_splits(stage, splits, device)
    model, fitted = fit(stage, model, train, val, seed, device, ckpt_dir / STAGE1, progress,
                        make_engine=engines.engine_maker(engine, device), leg=leg)
    summary = {"train_seconds": fitted["train_seconds"], "history": fitted["history"], "legs": fitted["legs"]}
    save_atomic({"recipe": stage.name, "config": config, "model": model.state_dict(), "summary": summary}, stage1_file)
    return model, summary


def fit_members(recipe: Recipe, train: DeviceData, val: DeviceData, test: DeviceData | None, seed: int,
                device: torch.device, ckpt_dir: Path, weights: str | None, progress: bool,
                engine: str = "auto", leg: dict | None = None) -> tuple[nn.Module, str, dict]:
    """Build and `fit` each of the recipe's members: the scored model (their `models.Ensemble` when there
    are several), its weight status, and the summary `fit` gives (member 0's history; the seconds and
    images/s of all members; the legs of all, `leg` being this process's provenance, each other part's
    named in its "part": "pretrain", "member 1", ...). `engine` (engines.engine_names()) runs the training
    steps; an engine this device cannot run is a BenchError before any training.

    Member k > 0 trains with `member_seed(seed, k)` in `ckpt_dir/member{k}`, so an interrupted ensemble
    resumes at the member and epoch it reached. With several members the summary also lists each
    member's seed and its own test metrics, so that a record shows what the ensemble adds.
    """
    make_engine = engines.engine_maker(engine, device)
    aux = load_aux(recipe, device)
    seeds = [member_seed(seed, k) for k in range(recipe.members)]
    fitted, status, legs = [], "none", []
    for k, s in enumerate(seeds):
        d = ckpt_dir if k == 0 else ckpt_dir / f"member{k}"
        if len(seeds) > 1 and progress:
            tqdm.write(f"{recipe.name} seed {seed}: member {k + 1} of {len(seeds)} (training seed {s})")
        model, status, stage = build_model(recipe, s, device, d, weights, progress, engine, leg)
        model, summary = fit(recipe, model, train, val, s, device, d, progress, aux, make_engine, leg)
        part = f"member {k}" if len(seeds) > 1 else ""
        if stage is not None:  # the record's seconds are the whole training: the pre-training stage's too
            legs += _in_part(stage.get("legs", []), f"{part} pretrain".strip())
            stage = {key: v for key, v in stage.items() if key != "legs"}
            summary = {**summary, "train_seconds": summary["train_seconds"] + stage["train_seconds"], "pretrain": stage}
        legs += _in_part(summary["legs"], part)
        fitted.append((model, summary))
    if len(fitted) == 1:
        return fitted[0][0], status, {**fitted[0][1], "legs": legs}
    members = []
    for s, (model, summary) in zip(seeds, fitted):
        alone = None if test is None else evaluate(model, test, recipe, device)
        members.append({"seed": s, "val_exact": summary["history"][-1]["val_exact"],
                        "test": None if alone is None else {m: alone[m] for m in metrics.SUMMARY_KEYS}})
    summaries = [summary for _, summary in fitted]
    summary = {**summaries[0], "train_seconds": sum(x["train_seconds"] for x in summaries),
               "images_per_s": len(summaries) / sum(1 / x["images_per_s"] for x in summaries), "members": members,
               "legs": legs}
    return models.Ensemble([model for model, _ in fitted]), status, summary


def _in_part(legs: list[dict], part: str) -> list[dict]:
    """The legs of one part of a run, named by `part` ("pretrain", "member 1"); the main model's ("") as they are."""
    return [{**leg, "part": part} for leg in legs] if part else legs


def provenance(device: torch.device) -> dict:
    """Code version, git commit, library versions and device name for a record."""
    import timm
    import torchvision

    root = Path(__file__).resolve().parents[2]  # the repository: digitsum_bench/engine/runner.py

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "code_version": __version__,
        "git_commit": git("rev-parse", "HEAD") or "unknown",
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "device": device_name(device),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "timm": timm.__version__, "numpy": np.__version__},
    }


def leg_of(provenance: dict) -> dict:
    """The part of a provenance (`provenance`, or a leg with its epoch) that tells one leg of a run from another."""
    return {k: provenance[k] for k in LEG_KEYS}


def start_afresh(key: RunKey, results: Path) -> None:
    """`--force`: delete the run's old record and its checkpoints (final.pt too) as it starts again, so that a
    forced run interrupted midway resumes when the command is run again without --force."""
    remove(key.record_path(results), results)
    clear(key.checkpoint_dir(results), results)


@contextmanager
def guarded(keys: list[RunKey], results: Path) -> Iterator[list[RunKey]]:
    """Lock the runs of `keys` and yield those this process holds (another live process holds the rest:
    they are skipped, with a line saying so). A failure inside leaves a marker for `status` on each held
    run and re-raises; an interruption (Ctrl-C, the time limit) leaves none, so the runs resume. A run whose
    folders lead out of `results` through a symlink is refused before anything is written (`check_run_folders`)."""
    for k in keys:
        check_run_folders(k, results)
    with ExitStack() as locks:
        mine = [k for k in keys if locks.enter_context(run_lock(k, results))]
        for k in keys:
            if k not in mine:
                tqdm.write(f"skip {k.recipe} seed {k.seed}: another process is running it")
        try:
            yield mine
        except KeyboardInterrupt:
            raise
        except BaseException as e:
            for k in mine:
                record_failure(k, results, e)
            raise
    for k in mine:
        try:
            remove(k.failed_path(results), results)
        except BenchError as e:  # the run went well: `status` reads its record before any marker
            warnings.warn(f"{e}; an old failure marker, left as it is", stacklevel=1)


@dataclass(frozen=True)
class Stacked:
    """How a run was trained in a stack of seeds (`stacked.py`): when the stack started, and its seeds."""

    started: str  # ISO time, UTC
    seeds: tuple[int, ...]


def run_one(name: str, seed: int, options: RunOptions = RunOptions(), seeds_requested: list[int] | None = None,
            stacked: Stacked | None = None) -> dict | None:
    """Train one (recipe, seed) under a budget and write its record once; returns the record.

    A finished record of this code version is returned as it is unless `options.force` (checked again once
    the lock is held: another process may have finished the run meanwhile). A run whose
    lock another live process holds is skipped (returns None). A failure leaves a marker for
    `status` and re-raises; nothing half-written is left behind. `stacked`: the run's epochs were
    trained in a stack (its checkpoints are finished), which its record says.
    """
    check_seeds([seed])
    engines.engine_maker(options.engine, resolve_device(options.device))  # an engine this device lacks: before the lock
    recipe = apply_budget(get_recipe(name), options.budget)
    splits = load_data(recipe, options.budget, options.data)
    key = RunKey(name, seed, options.budget.name, splits.dataset_id)
    results = Path(options.results)
    if not options.force and (done := finished_record(key, results)) is not None:
        return done
    with guarded([key], results) as mine:
        if not mine:
            return None
        if not options.force and (done := finished_record(key, results)) is not None:
            return done  # another process finished it between the check above and the lock
        return _train_and_record(recipe, key, splits, options, seeds_requested or [seed], stacked)


def _train_and_record(recipe: Recipe, key: RunKey, splits: datamod.Splits, options: RunOptions,
                      seeds_requested: list[int], stacked: Stacked | None) -> dict:
    device = resolve_device(options.device)
    set_deterministic(options.deterministic or device.type == "cpu")
    results = Path(options.results)
    ckpt_dir = key.checkpoint_dir(results)
    if options.force and stacked is None:  # a stack's checkpoints are this run's training
        start_afresh(key, results)
    started = stacked.started if stacked else dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    prov = provenance(device)
    leg = leg_of(prov)
    train, val = device_splits(recipe, splits, device)
    test = DeviceData.from_numpy(splits.test, device) if splits.test is not None else None
    selected, status, summary = fit_members(recipe, train, val, test, key.seed, device, ckpt_dir, options.weights,
                                            options.progress, engine=options.engine, leg=leg)
    params_m = models.count_params(selected) / 1e6
    gflops = models.gflops_per_image(copy.deepcopy(selected).cpu().float())
    scores = {"val": evaluate(selected, val, recipe, device),
              "test": evaluate(selected, test, recipe, device) if test is not None else None}
    save_atomic({"recipe": recipe.name, "config": recipe_config(recipe), "model": selected.state_dict()},
                ckpt_dir / "final.pt", results)
    record = {
        "schema": SCHEMA, "recipe": recipe.name, "report": recipe.report, "method": recipe.method,
        "seed": key.seed, "seeds_requested": sorted(seeds_requested), "budget": key.budget,
        "dataset_id": key.dataset_id, "dataset": splits.description, **prov,
        "pretrained": status, "params_m": params_m, "gflops": gflops,
        "train_seconds": summary["train_seconds"], "images_per_s": summary["images_per_s"],
        "epochs_run": recipe.epochs, "selected_epoch": summary["selected_epoch"],
        "engine": "stacked" if stacked else summary.get("engine", "eager"),  # optional key: what trained it
        "started": started, "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "config": recipe_config(recipe),
        "claimed": [asdict(c) for c in recipe.claimed],
        "metrics": scores, "history": summary["history"],
        **({"members": summary["members"]} if "members" in summary else {}),
        **({"pretrain": summary["pretrain"]} if "pretrain" in summary else {}),  # optional: a pre-training stage
        **({"stacked_seeds": sorted(stacked.seeds)} if stacked else {}),  # optional: trained in a stack of these seeds
        # optional: the processes that trained it, where one's commit, dirty tree or device is not the record's
        **({"legs": summary["legs"]} if any(leg_of(x) != leg for x in summary["legs"]) else {}),
    }
    write_json_atomic(key.record_path(results), record, results)
    return record


def evaluate_file(checkpoint: str | Path, data_path: str | Path, device: str = "auto") -> dict:
    """Score a saved model on a dataset file or folder (course files, .npz)."""
    dev = resolve_device(device)
    model, recipe = load_checkpoint(checkpoint, dev)
    split = DeviceData.from_numpy(datamod.load_path(data_path), dev)
    result = evaluate(model, split, recipe, dev)
    return {"recipe": recipe.name, "checkpoint": str(checkpoint), "data": str(data_path),
            **metrics.summary(result)}
