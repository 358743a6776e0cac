"""Shared pieces of the speed benchmarks: the runner's engines (eager, graph, runs sharing a GPU), and a plain
loop in the reports' style."""

from __future__ import annotations

import time
from dataclasses import replace

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from digitsum_bench import data as datamod
from digitsum_bench.engine import engines, stacked, train
from digitsum_bench.registry.recipes import Recipe


def runner_images_per_s(recipe: Recipe, device: torch.device, steps: int, compile: bool = False) -> float:
    """Images/s of the suite's training step (train.train_one_epoch) for `steps` batches, after a warm-up."""
    model = recipe.create_model()[0].to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if compile:
        model = torch.compile(model)
    state = train.TrainState(model, train.make_optimizer(recipe, model, device), None, None)
    split = datamod.random_split(recipe.batch_size * steps, device)
    one = replace(recipe, epochs=1)
    train.train_one_epoch(state, split=datamod.random_split(recipe.batch_size * 3, device), recipe=one, seed=0, epoch=0,
                          device=device)
    _sync(device)
    t0 = time.perf_counter()
    train.train_one_epoch(state, split=split, recipe=one, seed=0, epoch=1, device=device)
    _sync(device)
    return len(split) / (time.perf_counter() - t0)


def _run(recipe: Recipe, device: torch.device, steps: int, engine: str, seed: int = 0):
    """A training state and a split of `steps` batches, and the step of `engine` (engines.ENGINES; None: eager).
    An AssertionError where a named engine falls back to eager: the goal is that engine's."""
    torch.manual_seed(seed)
    model = recipe.model().to(device, memory_format=train.memory_format())
    state = train.TrainState(model, train.make_optimizer(recipe, model, device), None, None)
    split = datamod.random_split(recipe.batch_size * steps, device, seed=seed)
    make = engines.engine_maker(engine, device)
    step = make(model, state.opt, recipe, split, seed, device, None) if make is not None else None
    assert step is not None or make is None, f"{recipe.name}: the {engine} engine fell back to eager"
    return state, split, step


def engine_images_per_s(recipe: Recipe, device: torch.device, steps: int, engine: str) -> float:
    """Images/s of one run's `train.train_one_epoch` (batches made as in a run) with `engine` (engines.ENGINES)."""
    state, split, step = _run(recipe, device, steps, engine)
    one = replace(recipe, epochs=1)
    train.train_one_epoch(state, split=split, recipe=one, seed=0, epoch=0, device=device, engine=step)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    train.train_one_epoch(state, split=split, recipe=one, seed=0, epoch=1, device=device, engine=step)
    _sync(device)
    return len(split) / (time.perf_counter() - t0)


def streams_images_per_s(recipe: Recipe, device: torch.device, steps: int, runs: int) -> float:
    """Total images/s of `runs` runs sharing one GPU, each with its own graph on its own CUDA stream, stepped in
    turn from one thread (each still at its own batch size)."""
    setups = []
    for r in range(runs):
        stream = torch.cuda.Stream()
        with torch.cuda.stream(stream):
            setups.append((stream, *_run(recipe, device, steps, "graph", seed=r)))

    def epoch(e: int) -> None:
        turns = [(stream, engine, train.EpochStreams(split, recipe, 0, e, device, None)
                  .batches(split, recipe, train.CHANNELS_LAST)) for stream, _, split, engine in setups]
        for _ in range(steps):
            for stream, engine, batches in turns:
                with torch.cuda.stream(stream):
                    engine(next(batches))

    epoch(0)
    _sync(device)
    t0 = time.perf_counter()
    epoch(1)
    _sync(device)
    return runs * recipe.batch_size * steps / (time.perf_counter() - t0)


def stacked_images_per_s(recipe: Recipe, device: torch.device, steps: int, seeds: int) -> float:
    """Total images/s of `seeds` runs trained as one stack (stacked.py), each at its own batch size."""
    models = []
    for s in range(seeds):
        torch.manual_seed(s)
        models.append(recipe.model().to(device))
    stack = stacked.Stack(models)
    state = train.TrainState(stack, train.make_optimizer(recipe, stack, device), None, None)
    base = models[0].to("meta")
    split = datamod.random_split(recipe.batch_size * steps, device)
    one = replace(recipe, epochs=1)
    for epoch in (0, 1):  # warm-up, then timed
        if epoch == 1:
            _sync(device)
            t0 = time.perf_counter()
        stacked.train_stacked_epoch(state, base=base, split=split, recipe=one, seeds=list(range(seeds)), epoch=epoch,
                                    device=device)
    _sync(device)
    return seeds * len(split) / (time.perf_counter() - t0)


def plain_images_per_s(model: nn.Module, device: torch.device, steps: int, batch_size: int = 32) -> float:
    """Images/s of a training loop as the reports wrote it: DataLoader over a TensorDataset, fp32, Adam, MSE."""
    model = model.to(device).train()
    n = batch_size * (steps + 3)
    split = datamod.random_split(n, "cpu")
    ds = TensorDataset(split.images.float().div(255).unsqueeze(1), split.sums.float())
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.MSELoss()
    seen, t0 = 0, None
    for i, (x, y) in enumerate(loader):
        if i == 3:  # warm-up done
            _sync(device)
            t0, seen = time.perf_counter(), 0
        x, y = x.to(device), y.to(device)
        opt.zero_grad()
        loss = loss_fn(model(x).reshape(-1), y)
        loss.backward()
        opt.step()
        seen += len(x)
    _sync(device)
    return seen / (time.perf_counter() - t0)


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
