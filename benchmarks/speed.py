"""Shared pieces of the speed benchmarks: the runner's step, a plain loop in the reports' style, MFU."""

from __future__ import annotations

import time
from dataclasses import replace

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from digitsum_bench import data as datamod
from digitsum_bench import train
from digitsum_bench.recipes import Recipe

# Dense bf16 tensor-core peak (FLOP/s) for model FLOP utilisation.
BF16_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def runner_images_per_s(recipe: Recipe, device: torch.device, steps: int, compile: bool = False) -> float:
    """Images/s of the suite's training step (train.train_one_epoch) for `steps` batches, after a warm-up."""
    model = recipe.create_model()[0].to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if compile:
        model = torch.compile(model)
    opt = train.make_optimizer(recipe, model, device)
    split = datamod.random_split(recipe.batch_size * steps, device)
    one = replace(recipe, epochs=1)
    train.train_one_epoch(model, opt, None, None, datamod.random_split(recipe.batch_size * 3, device), one, 0, 0, device)
    _sync(device)
    t0 = time.perf_counter()
    train.train_one_epoch(model, opt, None, None, split, one, 0, 1, device)
    _sync(device)
    return len(split) / (time.perf_counter() - t0)


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


def mfu(gflops_forward: float, images_per_s: float, device: torch.device) -> float | None:
    """Model FLOP utilisation: training FLOPs/s (3x the forward pass) over the GPU's bf16 peak."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    peak = next((p for k, p in BF16_PEAK.items() if k in name), None)
    return None if peak is None else 3 * gflops_forward * 1e9 * images_per_s / peak


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
