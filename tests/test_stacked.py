"""Seed-stacked training: each seed of a stack is the same run as a separate one."""

from __future__ import annotations

import copy
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from digitsum_bench.engine import checkpoints, devices, runner, stacked, train
from digitsum_bench.engine.launch import status_rows
from digitsum_bench.engine.runner import RunOptions
from digitsum_bench.registry.recipes import get_recipe, list_recipes
from digitsum_bench.store import RunKey

SEEDS = [0, 1, 2]


@pytest.fixture(autouse=True)
def same_layout(monkeypatch):
    """Separate runs in the stack's memory layout (vmap folds the seeds, so a stack cannot be channels_last),
    both in float32 (bf16 rounds the two differently): the comparison is of the training, not of last bits."""
    monkeypatch.setattr(train, "CHANNELS_LAST", False)
    monkeypatch.setattr(devices, "uses_bf16", lambda device: False)


class TinySum37(nn.Module):
    """Conv + BatchNorm + a 37-way head, no dropout: stacked and separate runs can agree to float tolerance."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(), nn.BatchNorm2d(8),
            nn.AdaptiveAvgPool2d((2, 8)), nn.Flatten(), nn.Linear(128, 37),
        )

    def forward(self, x):
        return self.net(x)


@pytest.fixture
def tiny37(variant):
    """tiny_test with a 37-way head, cross-entropy, no dropout (EMA, OneCycle, augmentation, best-val kept)."""
    return variant("tiny_stack", model=TinySum37, head="sum37", loss="ce", lr=1e-2)


def _final_state(results, name, seed, dataset_id):
    path = RunKey(name, seed, "full", dataset_id).checkpoint_dir(results) / "final.pt"
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def _compare(sep: dict, stk: dict) -> None:
    assert [h["train_loss"] for h in stk["history"]] == pytest.approx([h["train_loss"] for h in sep["history"]], rel=1e-5)
    assert [h["val_loss"] for h in stk["history"]] == pytest.approx([h["val_loss"] for h in sep["history"]], rel=1e-5)
    assert stk["selected_epoch"] == sep["selected_epoch"]
    for split in ("val", "test"):
        for k in ("exact", "within_one", "mse", "mae", "per_sum", "confusion"):
            assert stk["metrics"][split][k] == sep["metrics"][split][k], (split, k)


def test_stacked_equals_separate_runs(tiny37, tmp_path):
    sep = [runner.run_one(tiny37, s, RunOptions(budget="full", results=tmp_path / "sep", device="cpu", progress=False)) for s in SEEDS]
    stk = stacked.run_stacked(tiny37, SEEDS, RunOptions(budget="full", results=tmp_path / "stk", device="cpu", progress=False))
    assert [r["seed"] for r in stk] == SEEDS and all(r["stacked_seeds"] == SEEDS and r["engine"] == "stacked" for r in stk)
    predicted = [any(col) for col in zip(*sep[0]["metrics"]["test"]["confusion"])]
    assert sum(predicted) > 3  # it predicts several sums, so equal metrics mean something
    assert len({r["metrics"]["test"]["exact"] for r in sep}) > 1  # and the seeds really differ
    for a, b in zip(sep, stk):
        _compare(a, b)
        # the scored weights, BatchNorm running statistics and counters included, are each seed's own
        sa = _final_state(tmp_path / "sep", tiny37, a["seed"], a["dataset_id"])
        sb = _final_state(tmp_path / "stk", tiny37, b["seed"], b["dataset_id"])
        assert sa.keys() == sb.keys()
        for k in sa:
            torch.testing.assert_close(sb[k], sa[k], rtol=1e-3, atol=1e-4, msg=k)  # Adam amplifies float noise a little
        assert any("running_mean" in k for k in sa)
    rows = status_rows(tmp_path / "stk", [tiny37], SEEDS, "full")
    assert [r["state"] for r in rows] == ["finished"] * 3
    # a finished stack is not trained again
    again = stacked.run_stacked(tiny37, SEEDS, RunOptions(budget="full", results=tmp_path / "stk", device="cpu", progress=False))
    assert again == stk


def test_a_stack_writes_each_record_once(tiny37, tmp_path, monkeypatch):
    """A stack's records are written once each, already saying so (not written, read back and written again)."""
    written = []
    real = os.replace  # every atomic write ends in one (store.atomic_write)
    monkeypatch.setattr(os, "replace", lambda src, dst: written.append(Path(dst).name) or real(src, dst))
    options = RunOptions(budget="full", results=tmp_path, device="cpu", progress=False)
    first = stacked.run_stacked(tiny37, [0, 1], options)
    assert sorted(n for n in written if n.endswith(".json")) == ["seed0.json", "seed1.json"]
    assert all(r["engine"] == "stacked" and r["stacked_seeds"] == [0, 1] for r in first)
    written.clear()
    forced = stacked.run_stacked(tiny37, [0, 1], replace(options, force=True))  # trained again, from scratch
    assert sorted(n for n in written if n.endswith(".json")) == ["seed0.json", "seed1.json"]
    assert [r["history"] for r in forced] != [r["history"] for r in first]  # new seconds: really retrained
    assert [r["metrics"] for r in forced] == [r["metrics"] for r in first]
    assert all(r["engine"] == "stacked" and r["stacked_seeds"] == [0, 1] for r in forced)


def test_interrupted_stack_resumes_stacked_or_seed_by_seed(tiny37, tmp_path, monkeypatch):
    whole = stacked.run_stacked(tiny37, [0, 1], RunOptions(budget="full", results=tmp_path / "whole", device="cpu", progress=False))
    real = stacked.train_stacked_epoch

    def dies_in_epoch_2(*args, **kw):
        if kw["epoch"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(stacked, "train_stacked_epoch", dies_in_epoch_2)
    for cut in ("a", "b"):
        with pytest.raises(KeyboardInterrupt):
            stacked.run_stacked(tiny37, [0, 1], RunOptions(budget="full", results=tmp_path / cut, device="cpu", progress=False))
    monkeypatch.setattr(stacked, "train_stacked_epoch", real)
    keys = [RunKey(tiny37, s, "full", whole[0]["dataset_id"]) for s in (0, 1)]
    for k in keys:
        assert not k.record_path(tmp_path / "a").exists() and not k.lock_path(tmp_path / "a").exists()
        assert not k.failed_path(tmp_path / "a").exists()  # an interruption is not a failure
        assert checkpoints.checkpoint_epoch(k.checkpoint_dir(tmp_path / "a")) == 1
    resumed = stacked.run_stacked(tiny37, [0, 1], RunOptions(budget="full", results=tmp_path / "a", device="cpu", progress=False))
    for a, b in zip(whole, resumed):
        assert [h["train_loss"] for h in b["history"]] == [h["train_loss"] for h in a["history"]]
        assert b["metrics"] == a["metrics"]
    # the same checkpoints also resume as ordinary, separate runs
    alone = [runner.run_one(tiny37, s, RunOptions(budget="full", results=tmp_path / "b", device="cpu", progress=False)) for s in (0, 1)]
    for a, b in zip(whole, alone):
        _compare(a, b)


@pytest.mark.parametrize("name", list_recipes())
def test_every_recipe_model_stacks(name):
    """Two seeds' models under vmap give each model's own outputs and BatchNorm statistics."""
    recipe = get_recipe(name)
    models = []
    for s in (0, 1):
        torch.manual_seed(s)
        models.append(recipe.model())
    stack = stacked.Stack(models)
    meta = copy.deepcopy(models[0]).to("meta")
    x = torch.randn(2, 2, 1, 40, 168, generator=torch.Generator().manual_seed(0))
    for m in (*models, meta):
        m.train()
        for d in m.modules():
            if isinstance(d, nn.Dropout):
                d.p = 0.0  # dropout masks cannot match (module doc); everything else must
    with torch.no_grad():
        out = stacked.stacked_forward(meta, stack, x)
        for i, m in enumerate(models):
            torch.testing.assert_close(out[i], m(x[i]), rtol=1e-4, atol=1e-4)
            for k, b in m.named_buffers():
                torch.testing.assert_close(stack.tensors()[1][k][i], b, rtol=1e-4, atol=1e-5, msg=k)
