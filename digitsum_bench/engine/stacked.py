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
from pathlib import Path

import torch
import torch.nn as nn
from torch.func import functional_call, stack_module_state, vmap

from ..data import DeviceData
from ..errors import BenchError, TimeLimitReached
from ..registry.budgets import apply_budget
from ..registry.recipes import Recipe, get_recipe
from ..store import RunKey, finished_record
from . import engines, runner
from .checkpoints import checkpoint_epoch
from .devices import autocast, resolve_device, set_deterministic, synchronize
from .train import (
    EpochStreams,
    TrainState,
    batch_loss,
    end_epoch,
    epoch_seed,
    log_epoch,
    optimizer_step,
    progress_bar,
    restore_best,
    resume,
    start_leg,
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


def train_stacked_epoch(state: TrainState, *, base: nn.Module, split: DeviceData, recipe: Recipe, seeds: list[int],
                        epoch: int, device: torch.device, progress: bool = False,
                        aux: DeviceData | None = None) -> list[float]:
    """One pass of every seed over the training split, as `train.train_one_epoch` makes it per seed.

    `state.model` is the `Stack`; `base` supplies the code (`stacked_forward`). Returns each seed's mean
    training loss.
    """
    stack = state.model
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
        # seed s's parameters get exactly seed s's gradient
        optimizer_step(per_seed.sum(), state.opt, state.sched, state.ema, stack)
        total += per_seed.detach() * idx.shape[1]
        count += idx.shape[1]
    return (total / count).tolist()


def fit_stacked(recipe: Recipe, models: list[nn.Module], train_split: DeviceData, val: DeviceData,
                seeds: list[int], device: torch.device, ckpt_dirs: list[Path], progress: bool = True,
                deadline: float | None = None, aux: DeviceData | None = None, engine: str = "auto",
                leg: dict | None = None) -> None:
    """Train the seeds' models as one stack, saving each seed's epoch checkpoints as `train.fit` does.

    Resumes from the seeds' `last.pt` files (under the recipe's config, as `train.fit`), which must all be at
    the same epoch; `leg` (this process's provenance) is noted in each seed's books. With a
    `deadline` (time.monotonic() seconds) it stops after the last epoch that is expected to
    end before it, by raising `TimeLimitReached` (the saved checkpoints resume the run).
    `engine`: a stack trains eagerly under vmap with "auto" and "eager"; "graph" is a BenchError
    (`engines.check_stack_engine`: a stack is not captured).
    """
    engines.check_stack_engine(engine)
    steps = steps_per_epoch(recipe, len(train_split))
    seed_states = [TrainState.create(recipe, m, device, steps) for m in models]
    for d, s in zip(ckpt_dirs, seed_states):
        resume(d / "last.pt", s, device)  # as train.fit, per seed
        restore_best(d / "best.pt", s, recipe.name, device)
    done = seed_states[0].books["epoch"]
    if any(s.books["epoch"] != done for s in seed_states):
        raise BenchError(f"recipe {recipe.name}: seeds {seeds} are at different epochs; stack only equal ones")
    if done < recipe.epochs:
        for s in seed_states:
            start_leg(s.books, leg)
    stack = TrainState.create(recipe, Stack(models), device, steps)  # its books stay unused: each seed keeps its own
    if done > 0:
        stack.opt.load_state_dict(_stack_opt_state([s.opt for s in seed_states]))
        if stack.sched is not None:
            stack.sched.load_state_dict(seed_states[0].sched.state_dict())
        if stack.ema is not None:
            stack.ema.module.copy_from([s.ema.module for s in seed_states])
            stack.ema.n_averaged.copy_(seed_states[0].ema.n_averaged)
    base = copy.deepcopy(models[0]).to("meta")  # code and mode only: the stack holds the tensors

    bar = progress_bar(range(done + 1, recipe.epochs + 1), progress, desc=f"{recipe.name} seeds {seeds}",
                       unit="epoch", initial=done, total=recipe.epochs, leave=False)
    for epoch in bar:
        t0 = time.perf_counter()
        train_losses = train_stacked_epoch(stack, base=base, split=train_split, recipe=recipe, seeds=seeds,
                                           epoch=epoch, device=device, progress=progress, aux=aux)
        synchronize(device)
        share = (time.perf_counter() - t0) / len(seeds)  # each seed's share of the stack's step time
        for i, (seed_state, ckpt_dir) in enumerate(zip(seed_states, ckpt_dirs)):
            _end_epoch(stack, seed_state, i, recipe=recipe, epoch=epoch, train_loss=train_losses[i],
                       step_seconds=share, val=val, device=device, ckpt_dir=ckpt_dir)
        epoch_seconds = time.perf_counter() - t0
        log_epoch(f"{recipe.name} seeds {seeds}", epoch, recipe.epochs, sum(train_losses) / len(train_losses),
                  seed_states[0].books["history"][-1]["val_exact"], epoch_seconds, progress)
        if deadline is not None and epoch < recipe.epochs and time.monotonic() + epoch_seconds > deadline:
            raise TimeLimitReached(f"{recipe.name} seeds {seeds}: stopped after epoch {epoch} at the time limit")


def _end_epoch(stack: TrainState, seed: TrainState, i: int, *, recipe: Recipe, epoch: int, train_loss: float,
               step_seconds: float, val: DeviceData, device: torch.device, ckpt_dir: Path) -> None:
    """Split seed i out of the stack (weights, optimizer, schedule, EMA), then end its epoch as `train.fit` does
    (validation, history, checkpoints)."""
    stack.model.copy_to(i, seed.model)
    seed.opt.load_state_dict(_unstack_opt_state(stack.opt, i))
    if stack.sched is not None:  # OneCycle depends only on the step count, which all seeds share
        seed.sched.load_state_dict(stack.sched.state_dict())
    if stack.ema is not None:
        stack.ema.module.copy_to(i, seed.ema.module)
        seed.ema.n_averaged.copy_(stack.ema.n_averaged)
    end_epoch(seed, recipe=recipe, epoch=epoch, train_loss=train_loss, step_seconds=step_seconds, val=val,
              device=device, ckpt_dir=ckpt_dir)


def run_stacked(name: str, seeds: list[int], options: runner.RunOptions = runner.RunOptions(),
                seeds_requested: list[int] | None = None, deadline: float | None = None) -> list[dict]:
    """Train the unfinished seeds of one recipe as one stack and write one record per seed, once.

    Finished seeds are returned as they are (unless `options.force`); seeds another live process is
    running are skipped. Seeds whose checkpoints are at different epochs are stacked by
    epoch; a seed left alone trains as an ordinary run. Returns the seeds' records.
    """
    engines.check_stack_engine(options.engine)  # before any lock or work
    recipe = apply_budget(get_recipe(name), options.budget)
    splits = runner.load_data(recipe, options.budget, options.data)
    results = Path(options.results)
    keys = {s: RunKey(name, s, options.budget.name, splits.dataset_id) for s in seeds}
    todo = [keys[s] for s in seeds if options.force or finished_record(keys[s], results) is None]
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    trained: list[int] = []
    with runner.guarded(todo, results) as mine:
        dev = resolve_device(options.device)
        set_deterministic(options.deterministic or dev.type == "cpu")
        if options.force:
            for key in mine:
                runner.start_afresh(key, results)
        leg = runner.leg_of(runner.provenance(dev))
        by_epoch: dict[int, list[RunKey]] = {}
        for key in mine:
            by_epoch.setdefault(checkpoint_epoch(key.checkpoint_dir(results)), []).append(key)
        for epoch, group in sorted(by_epoch.items()):
            if len(group) < 2 or epoch >= recipe.epochs:
                continue  # nothing to stack: runner.run_one below trains (or just records) it
            dirs = [key.checkpoint_dir(results) for key in group]
            models = [runner.build_model(recipe, key.seed, dev, d, options.weights, options.progress, options.engine,
                                         leg)[0] for key, d in zip(group, dirs)]
            train_split, val = runner.device_splits(recipe, splits, dev)
            fit_stacked(recipe, models, train_split, val, [key.seed for key in group], dev, dirs, options.progress,
                        deadline, runner.load_aux(recipe, dev), options.engine, leg)
            trained += [key.seed for key in group]
    stack = runner.Stacked(started, tuple(trained))
    # a stacked seed's record comes from its finished checkpoints (run_one clears none of a stack's)
    return [runner.run_one(name, s, options, seeds_requested or seeds, stack if s in trained else None) for s in seeds]
