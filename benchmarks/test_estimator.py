"""The time estimate printed before a run, checked against a short measured run of the same recipe.

    pytest benchmarks/test_estimator.py -s      # CPU or GPU; about a minute per recipe on 2 CPU cores

A short run is the recipe at the `quick` or `ci` budget with its data cut to a few hundred images
(the estimator scales per step and per image, so the ratio carries over to the full run).
The estimate must be within a factor of 1.5 of the measured wall time of `fit` plus the
final scoring, which is what `run` spends after its data is cached. The measured ratio is
printed for every recipe that fits a CPU at `quick`.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from digitsum_bench import data as datamod
from digitsum_bench.engine import engines, runner, train
from digitsum_bench.engine.estimate import estimate_seconds
from digitsum_bench.registry import budgets
from digitsum_bench.registry.recipes import get_recipe

RECIPES = ["ours_digitsum", "r003_convnet4", "r002_attention_cnn", "r004_multilabel_transfer", "r003_resnet18_scratch"]
FACTOR = 1.5


def short(recipe, budget):
    """The recipe at `budget` on 24 training batches, 512 validation and 1,024 test images."""
    quick = budgets.apply_budget(recipe, budget)
    cut = dict(train_size=24 * quick.batch_size, val_size=512, aux_size=min(quick.aux_size, 4096))
    pre = replace(quick.pretrain, **{k: v for k, v in cut.items() if k != "aux_size"}) if quick.pretrain else None
    return replace(quick, **cut, pretrain=pre)


@pytest.mark.parametrize("budget", ["quick", "ci"])
@pytest.mark.parametrize("name", RECIPES)
def test_estimate_within_factor_of_a_measured_run(name, budget, device):
    recipe = short(get_recipe(name), budget)
    test_size = 1024
    splits = runner.load_data(recipe, budgets.BUDGETS[budget], "synth")
    splits = replace(splits, test=splits.test.subset(slice(0, test_size)))
    estimate = estimate_seconds(recipe, device, test_size)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        model = runner.build_model(recipe, 0, device, Path(tmp), None, progress=False)[0]
        tr, val = runner.device_splits(recipe, splits, device)
        selected, _ = train.fit(recipe, model, tr, val, 0, device, Path(tmp), False, runner.load_aux(recipe, device),
                                engines.engine_maker("auto", device))  # the engine the estimate timed
        train.evaluate(selected, val, recipe, device)
        train.evaluate(selected, datamod.DeviceData.from_numpy(splits.test, device), recipe, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        measured = time.perf_counter() - t0
    ratio = estimate / measured
    print(f"\n{name} [{budget}]: estimated {estimate:.1f} s, measured {measured:.1f} s, ratio {ratio:.2f} ({device})")
    assert 1 / FACTOR <= ratio <= FACTOR
