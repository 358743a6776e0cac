"""Train-step and evaluation throughput (images/s) of a small and a ResNet-50 recipe.

    pytest benchmarks --benchmark-only            # CPU or GPU, whichever is there
"""

from __future__ import annotations

import pytest
import torch
from speed import runner_images_per_s

from digitsum_bench import data as datamod
from digitsum_bench.engine import train
from digitsum_bench.registry.recipes import get_recipe

RECIPES = ["r002_attention_cnn", "r002_resnet50"]


@pytest.mark.parametrize("name", RECIPES)
def test_train_step_throughput(benchmark, name, device, steps):
    recipe = get_recipe(name)
    ips = benchmark.pedantic(runner_images_per_s, args=(recipe, device, steps), rounds=3, iterations=1)
    benchmark.extra_info.update(images_per_s=ips, device=str(device), batch_size=recipe.batch_size)
    assert ips > 0


@pytest.mark.parametrize("name", RECIPES)
def test_evaluation_throughput(benchmark, name, device):
    recipe = get_recipe(name)
    model = recipe.create_model()[0].to(device)
    split = datamod.random_split(2048 if device.type == "cuda" else 128, device)

    def run():
        out = train.predict(model, split.images, recipe, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out

    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    if benchmark.stats:  # None under --benchmark-disable, which only checks that the code runs
        benchmark.extra_info.update(images_per_s=len(split) / benchmark.stats.stats.mean, device=str(device))
