"""Time estimates: one cost model for a run or a stack of seeds, on any device.

A few training steps at the recipe's batch size are timed on random images (after a warm-up
step; with the engine the run will train with, e.g. "auto"'s graph on a GPU where its check passes), and one
evaluation forward pass; then the run's work is counted: every training step of every epoch, a validation pass per epoch, the final validation and test passes with test-time
augmentation, a pre-training stage, and every ensemble member. Data generation is not counted
(it is cached after the first run).
"""

from __future__ import annotations

import copy
import functools
import time
from dataclasses import replace

import torch
import torch.nn as nn

from ..data import random_split
from ..registry.recipes import Recipe
from . import engines, stacked
from .devices import synchronize
from .train import HISTORY_VAL, TTA_SHIFTS, TrainState, make_optimizer, memory_format, predict, train_one_epoch


@functools.lru_cache(maxsize=64)
def estimate_seconds(recipe: Recipe, device: torch.device, test_size: int = 0, seeds: int = 1, steps: int = 3,
                     engine: str = "auto") -> float:
    """Wall time of `seeds` runs of `recipe` trained together as one stack (`stacked.py`; with 1, an
    ordinary run) with `engine` (engines.engine_names()). Training steps are the stack's; validation, scoring and a
    pre-training stage run seed by seed; an ensemble's members after the first train seed by seed
    (`runner.fit_members`)."""
    model, per_step = _step_seconds(recipe, device, seeds, steps, engine)
    views = len(TTA_SHIFTS) if recipe.tta else 1
    per_epoch = recipe.val_size if recipe.selection != "last" else min(recipe.val_size, HISTORY_VAL)
    scored = recipe.epochs * per_epoch + views * (recipe.val_size + test_size)
    if recipe.members > 1:
        scored += views * test_size  # each member is also scored alone on the test split
    stage1 = estimate_seconds(recipe.pretrain, device, 0, 1, steps, engine) if recipe.pretrain else 0.0
    member = per_step * recipe.epochs * -(-recipe.train_size // recipe.batch_size) \
        + seeds * (_forward_seconds(model, recipe, device) * scored + stage1)
    if recipe.members == 1:
        return member
    alone = member if seeds == 1 else estimate_seconds(recipe, device, test_size, 1, steps, engine) / recipe.members
    return member + (recipe.members - 1) * seeds * alone


def _step_seconds(recipe: Recipe, device: torch.device, seeds: int, steps: int,
                  engine: str = "auto") -> tuple[nn.Module, float]:
    """A model of the recipe and the seconds of one training step of `seeds` seeds (a stack when several),
    with the engine the run will train with (`engines.engine_maker`; a stack's: `engines.check_stack_engine`)."""
    models = []
    for s in range(seeds):
        torch.manual_seed(s)
        models.append(recipe.model().to(device, memory_format=memory_format()))
    n = recipe.batch_size
    aux = random_split(recipe.aux_batch * (steps + 1), device) if recipe.aux_batch else None
    timed = replace(recipe, epochs=1)
    timed_split = random_split(n * steps, device, seed=1)
    if seeds == 1:
        state = TrainState(models[0], make_optimizer(recipe, models[0], device), None, None)
        make_engine = engines.engine_maker(engine, device)
        step = make_engine(state.model, state.opt, recipe, timed_split, 0, device, aux) if make_engine else None
        epoch = functools.partial(train_one_epoch, state, recipe=timed, seed=0, device=device, aux=aux, engine=step)
    else:
        engines.check_stack_engine(engine)
        stack = stacked.Stack(models)
        state = TrainState(stack, make_optimizer(recipe, stack, device), None, None)
        epoch = functools.partial(stacked.train_stacked_epoch, state, base=copy.deepcopy(models[0]).to("meta"),
                                  recipe=timed, seeds=list(range(seeds)), device=device, aux=aux)
    epoch(split=random_split(n, device), epoch=0)  # warm-up
    t0 = time.perf_counter()
    epoch(split=timed_split, epoch=1)
    synchronize(device)
    return models[0], (time.perf_counter() - t0) / steps


def _forward_seconds(model: nn.Module, recipe: Recipe, device: torch.device, n: int = 256) -> float:
    """Seconds per image of an evaluation forward pass (one view), timed on `n` images after a warm-up."""
    images = random_split(n, device).images
    plain = replace(recipe, tta=False)
    predict(model, images[:32], plain, device)  # warm-up
    t0 = time.perf_counter()
    predict(model, images, plain, device)
    synchronize(device)
    return (time.perf_counter() - t0) / n
