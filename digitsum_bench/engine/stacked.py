"""Seed-stacked training: the seeds of one recipe train in one process as one batched model.

The S seeds' parameters and buffers are stacked along a new first dimension
(`torch.func.stack_module_state`) and one forward pass runs all of them at once
(`torch.func.functional_call` under `vmap`): one kernel launch per layer for S models, which
is what a small model at batch 32 needs to fill a GPU, and fewer, larger ops on a CPU.

Each seed is still its own run, the same run as `runner.run_one` would make:
- its own initialisation (`runner.build_model`, which seeds with the training seed), its own
  data order and augmentation (the `train.epoch_seed` streams of its seed) and its own batch;
- BatchNorm's running statistics are stacked buffers that `vmap` updates in place per seed,
  so they stay exact; Adam/AdamW/SGD and the EMA are elementwise, so one optimizer and one
  `AveragedModel` over the stacked tensors do exactly the per-seed maths; OneCycle depends
  only on the step count, which all seeds share;
- after every epoch each seed's model, optimizer, EMA and history are split out and saved as
  that seed's `last.pt`/`best.pt` in `train.fit`'s format, and each seed's record is then
  written by `runner.run_one` itself (its `fit` finds the finished checkpoint). So status,
  report and resume see ordinary runs, and a stack interrupted at any point can be resumed
  stacked or seed by seed.

Not bitwise: a batched convolution adds in another order than S separate ones, so losses
agree within float tolerance, not to the last bit. The stack runs in the default memory
layout (vmap folds the seeds, so it cannot be channels_last), where separate runs use
channels_last (`train.CHANNELS_LAST`): the two layouts also differ in the last float bits. Dropout draws its masks for the whole
stack from one random stream (`vmap(randomness="different")`), so a recipe with dropout gets
masks as random as a separate run's but not the same ones; its stacked and separate records
differ the way two dropout draws differ.

Records of a stack say so (`stacked_seeds`); their `train_seconds` and `images_per_s` are
each seed's share of the stack's wall time (the stack's time divided by its seeds), so that
the seconds of a recipe's records add up to the time it took.
"""

from __future__ import annotations

import copy
import datetime as dt
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn as nn
from torch.func import functional_call, stack_module_state, vmap

from ..data import DeviceData
from ..errors import BenchError, TimeLimitReached
from ..registry.budgets import apply_budget
from ..registry.recipes import Recipe, get_recipe
from ..store import RunKey, finished_record, read_record, write_json_atomic
from . import runner
from .checkpoints import checkpoint_epoch, clear, fresh_state, resume
from .devices import autocast, resolve_device, set_deterministic, synchronize
from .train import (
    EpochStreams,
    batch_loss,
    end_epoch,
    epoch_seed,
    log_epoch,
    make_ema,
    make_optimizer,
    make_scheduler,
    optimizer_step,
    progress_bar,
    steps_per_epoch,
)


class Stack(nn.Module):
    """The parameters and buffers of S copies of one architecture, stacked on dim 0.

    An ordinary module to the optimizer and to `AveragedModel`, so both run unchanged on
    the stacked tensors (their maths is elementwise: stacked = per seed).
    """

    def __init__(self, models: list[nn.Module]) -> None:
        super().__init__()
        params, buffers = stack_module_state(models)
        self.param_names, self.buffer_names = list(params), list(buffers)
        for i, t in enumerate(params.values()):  # names with dots cannot be registered; keep the order
            self.register_parameter(f"p{i}", nn.Parameter(t.detach().clone()))
        for i, t in enumerate(buffers.values()):
            self.register_buffer(f"b{i}", t.detach().clone())

    def __len__(self) -> int:
        return next(iter(self.parameters())).shape[0]

    def tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Parameters and buffers under the model's own names, for `functional_call`."""
        return ({n: getattr(self, f"p{i}") for i, n in enumerate(self.param_names)},
                {n: getattr(self, f"b{i}") for i, n in enumerate(self.buffer_names)})

    @torch.no_grad()
    def copy_to(self, i: int, model: nn.Module) -> nn.Module:
        """Write seed i's slice into `model` (same architecture); returns it."""
        params, buffers = self.tensors()
        own = dict(model.named_parameters()) | dict(model.named_buffers())
        for name, t in (params | buffers).items():
            own[name].copy_(t[i])
        return model

    @torch.no_grad()
    def copy_from(self, models: list[nn.Module]) -> None:
        """Overwrite the stack with the models' current tensors (one model per seed)."""
        params, buffers = self.tensors()
        for i, model in enumerate(models):
            own = dict(model.named_parameters()) | dict(model.named_buffers())
            for name, t in (params | buffers).items():
                t[i].copy_(own[name])


def stacked_forward(base: nn.Module, stack: Stack, x: torch.Tensor) -> torch.Tensor:
    """(S,B,1,H,W) inputs -> (S,B,...) outputs, seed s's batch through seed s's weights.

    `base` supplies only the code and the train/eval mode; its own tensors are never read.
    """
    params, buffers = stack.tensors()

    def one(p, b, xs):
        return functional_call(base, (p, b), (xs,))

    return vmap(one, randomness="different")(params, buffers, x)


def _stack_opt_state(opts: list[torch.optim.Optimizer]) -> dict:
    """The per-seed optimizers' state dicts as one state dict of the stacked optimizer."""
    sds = [o.state_dict() for o in opts]
    state = {}
    for j, first in sds[0]["state"].items():
        # "step" is one count shared by all seeds; every other entry is shaped like its parameter
        state[j] = {k: torch.stack([sd["state"][j][k] for sd in sds]) if k != "step" and torch.is_tensor(v) else v
                    for k, v in first.items()}
    return {"state": state, "param_groups": sds[0]["param_groups"]}


def _unstack_opt_state(opt: torch.optim.Optimizer, i: int) -> dict:
    """Seed i's optimizer state dict out of the stacked optimizer's (cloned: a saved view keeps all seeds)."""
    sd = opt.state_dict()
    state = {j: {k: v[i].clone() if k != "step" and torch.is_tensor(v) else v for k, v in s.items()}
             for j, s in sd["state"].items()}
    return {"state": state, "param_groups": sd["param_groups"]}


def train_stacked_epoch(base: nn.Module, stack: Stack, opt, sched, ema, *, split: DeviceData, recipe: Recipe,
                        seeds: list[int], epoch: int, device: torch.device, progress: bool = False,
                        aux: DeviceData | None = None) -> list[float]:
    """One pass of every seed over the training split, as `train.train_one_epoch` makes it per seed.

    Returns each seed's mean training loss.
    """
    base.train()
    streams = [EpochStreams(split, recipe, s, epoch, device, aux) for s in seeds]
    torch.manual_seed(epoch_seed(seeds[0], epoch, 2))  # dropout: one stream for the stack (module doc)
    perms = torch.stack([st.perm for st in streams])
    total, count = torch.zeros(len(seeds), device=device), 0
    batches = range(0, len(split), recipe.batch_size)
    for step, start in enumerate(progress_bar(batches, progress, desc=f"epoch {epoch}", leave=False, unit="batch")):
        idx = perms[:, start:start + recipe.batch_size]
        batches = [st.batch(split, recipe, idx[i], step, False) for i, st in enumerate(streams)]
        with autocast(device):
            out = stacked_forward(base, stack, torch.stack([b.x for b in batches]))
        per_seed = torch.stack([batch_loss(recipe, out[i], b) for i, b in enumerate(batches)])
        optimizer_step(per_seed.sum(), opt, sched, ema, stack)  # seed s's parameters get exactly seed s's gradient
        total += per_seed.detach() * idx.shape[1]
        count += idx.shape[1]
    return (total / count).tolist()


def fit_stacked(recipe: Recipe, models: list[nn.Module], train_split: DeviceData, val: DeviceData,
                seeds: list[int], device: torch.device, ckpt_dirs: list[Path], progress: bool = True,
                deadline: float | None = None, aux: DeviceData | None = None) -> None:
    """Train the seeds' models as one stack, saving each seed's epoch checkpoints as `train.fit` does.

    Resumes from the seeds' `last.pt` files, which must all be at the same epoch. With a
    `deadline` (time.monotonic() seconds) it stops after the last epoch that is expected to
    end before it, by raising `TimeLimitReached` (the saved checkpoints resume the run).
    """
    steps = steps_per_epoch(recipe, len(train_split))
    opts = [make_optimizer(recipe, m, device) for m in models]
    scheds = [make_scheduler(recipe, o, steps) for o in opts]
    emas = [make_ema(recipe, m) for m in models]
    states = [resume(d / "last.pt", m, o, sc, e, device) or fresh_state()  # as train.fit, per seed
              for d, m, o, sc, e in zip(ckpt_dirs, models, opts, scheds, emas)]
    if len({s["epoch"] for s in states}) != 1:
        raise BenchError(f"recipe {recipe.name}: seeds {seeds} are at different epochs; stack only equal ones")
    stack = Stack(models)
    opt, ema = make_optimizer(recipe, stack, device), make_ema(recipe, stack)
    sched = make_scheduler(recipe, opt, steps)
    if states[0]["epoch"] > 0:
        opt.load_state_dict(_stack_opt_state(opts))
        if sched is not None:
            sched.load_state_dict(scheds[0].state_dict())
        if ema is not None:
            ema.module.copy_from([e.module for e in emas])
            ema.n_averaged.copy_(emas[0].n_averaged)
    base = copy.deepcopy(models[0]).to("meta")  # code and mode only: the stack holds the tensors

    bar = progress_bar(range(states[0]["epoch"] + 1, recipe.epochs + 1), progress, desc=f"{recipe.name} seeds {seeds}",
                       unit="epoch", initial=states[0]["epoch"], total=recipe.epochs, leave=False)
    for epoch in bar:
        t0 = time.perf_counter()
        train_losses = train_stacked_epoch(base, stack, opt, sched, ema, split=train_split, recipe=recipe, seeds=seeds,
                                           epoch=epoch, device=device, progress=progress, aux=aux)
        synchronize(device)
        share = (time.perf_counter() - t0) / len(seeds)  # each seed's share of the stack's step time
        for i in range(len(seeds)):
            _end_epoch(recipe, i, epoch, train_losses[i], share, stack, opt, sched, ema, models[i], opts[i], emas[i],
                       states[i], val, device, ckpt_dirs[i])
        epoch_seconds = time.perf_counter() - t0
        log_epoch(f"{recipe.name} seeds {seeds}", epoch, recipe.epochs, sum(train_losses) / len(train_losses),
                  states[0]["history"][-1]["val_exact"], epoch_seconds, progress)
        if deadline is not None and epoch < recipe.epochs and time.monotonic() + epoch_seconds > deadline:
            raise TimeLimitReached(f"{recipe.name} seeds {seeds}: stopped after epoch {epoch} at the time limit")


def _end_epoch(recipe: Recipe, i: int, epoch: int, train_loss: float, share: float, stack: Stack, opt, sched, ema,
               model: nn.Module, seed_opt, seed_ema, state: dict, val: DeviceData, device: torch.device,
               ckpt_dir: Path) -> None:
    """Split seed i out of the stack, then end its epoch as `train.fit` does (validation, history, checkpoints)."""
    stack.copy_to(i, model)
    seed_opt.load_state_dict(_unstack_opt_state(opt, i))
    if ema is not None:
        ema.module.copy_to(i, seed_ema.module)
        seed_ema.n_averaged.copy_(ema.n_averaged)
    scored = seed_ema.module if seed_ema is not None else model
    end_epoch(recipe, epoch, train_loss, share, scored, model, seed_opt, sched, seed_ema, state, val, device, ckpt_dir)


def run_stacked(name: str, seeds: list[int], options: runner.RunOptions = runner.RunOptions(),
                seeds_requested: list[int] | None = None, deadline: float | None = None) -> list[dict]:
    """Train the unfinished seeds of one recipe as one stack and write one record per seed.

    Finished seeds are returned as they are (unless `options.force`); seeds another live process is
    running are skipped. Seeds whose checkpoints are at different epochs are stacked by
    epoch; a seed left alone trains as an ordinary run. Returns the seeds' records.
    """
    recipe = apply_budget(get_recipe(name), options.budget)
    splits = runner.load_data(recipe, options.budget, options.data)
    results = Path(options.results)
    keys = {s: RunKey(name, s, options.budget, splits.dataset_id) for s in seeds}
    todo = [keys[s] for s in seeds if options.force or finished_record(keys[s], results) is None]
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    trained: list[int] = []
    with runner.guarded(todo, results) as mine:
        dev = resolve_device(options.device)
        set_deterministic(options.deterministic or dev.type == "cpu")
        if options.force:
            for key in mine:
                clear(key.checkpoint_dir(results), results)
        by_epoch: dict[int, list[RunKey]] = {}
        for key in mine:
            by_epoch.setdefault(checkpoint_epoch(key.checkpoint_dir(results)), []).append(key)
        for epoch, group in sorted(by_epoch.items()):
            if len(group) < 2 or epoch >= recipe.epochs:
                continue  # nothing to stack: runner.run_one below trains (or just records) it
            dirs = [key.checkpoint_dir(results) for key in group]
            models = [runner.build_model(recipe, key.seed, dev, d, options.weights, options.progress)[0]
                      for key, d in zip(group, dirs)]
            train_split, val = runner.device_splits(recipe, splits, dev)
            fit_stacked(recipe, models, train_split, val, [key.seed for key in group], dev, dirs, options.progress,
                        deadline, runner.load_aux(recipe, dev))
            trained += [key.seed for key in group]
    records = []
    for s in seeds:
        if options.force and s in trained:
            keys[s].record_path(results).unlink(missing_ok=True)  # replaced just below, from the new checkpoints
        one = replace(options, force=options.force and s not in trained)
        record = runner.run_one(name, s, one, seeds_requested or seeds)
        if record is not None and s in trained:
            record = _mark_stacked(keys[s].record_path(results), started, trained)
        records.append(record)
    return records


def _mark_stacked(path: Path, started: str, seeds: list[int]) -> dict:
    """Say in the record that it was trained in a stack, and when the stack started."""
    record = read_record(path)
    record["started"] = started
    record["stacked_seeds"] = sorted(seeds)
    record["engine"] = "stacked"
    write_json_atomic(path, record)
    return record
