"""The plan (`run --plan`) and the time box (`run --time-limit`), on the CPU at tiny budgets."""

from __future__ import annotations

import dataclasses
import inspect
import pickle
import time

import pytest
import torch

from digitsum_bench.cli import main
from digitsum_bench.engine import checkpoints, plan, runner, stacked, train
from digitsum_bench.engine.runner import RunOptions
from digitsum_bench.errors import BenchError
from digitsum_bench.registry.budgets import BUDGETS
from digitsum_bench.store import RunKey


@pytest.mark.parametrize("text,seconds", [("25m", 1500), ("1h30m", 5400), ("90s", 90), ("45", 2700),
                                          ("1.5h", 5400), ("2m30s", 150)])
def test_parse_duration(text, seconds):
    assert plan.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "10x", "0m", "m", "5 minutes"])
def test_parse_duration_rejects(text):
    with pytest.raises(BenchError, match="--time-limit"):
        plan.parse_duration(text)


def test_bad_time_limit_is_a_one_line_cli_error(tiny_recipe, capsys):
    assert main(["run", "--recipe", "tiny_test", "--time-limit", "soon", "--device", "cpu"]) == 2
    assert capsys.readouterr().err.startswith("error: --time-limit 'soon'")


@pytest.fixture
def two(variant, monkeypatch):
    """Two tiny recipes whose estimates are fixed: 'tiny_big' 5s per run, 'tiny_small' 1s."""
    big, small = variant("tiny_big"), variant("tiny_small")
    estimates = {big: 5.0, small: 1.0}
    monkeypatch.setattr(plan, "estimate_seconds",
                        lambda recipe, device, test_size=0, seeds=1, engine="auto": (2 if seeds > 1 else 1) * estimates[recipe.name])
    return big, small


def test_plan_prints_order_and_estimates_and_trains_nothing(two, tmp_path, monkeypatch, capsys):
    big, small = two
    monkeypatch.setattr(runner, "fit", lambda *a, **k: pytest.fail("--plan must not train"))
    args = ["run", "--recipe", big, small, "--seeds", "0", "1", "--budget", "smoke", "--device", "cpu",
            "--results", str(tmp_path), "--plan"]
    assert main([*args, "--time-limit", "11s"]) == 0  # 11s less the 5% margin: room for 10.45s
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "4 run(s) to do, 0 already finished (smoke budget, inline launcher)"
    rows = [line.split() for line in out.splitlines()[3:]]
    assert [(r[1], r[2]) for r in rows] == [(small, "0"), (small, "1"), (big, "0"), (big, "1")]  # smallest first
    assert [r[-1] for r in rows] == ["yes", "yes", "yes", "run"]  # 1 + 1 + 5 fit, the second 5 does not
    assert "4 run(s), estimated 12 s in all; 3 run(s) fit in 10 s" in out
    assert not list(tmp_path.rglob("*.json")) and not list(tmp_path.rglob("*.pt"))

    assert main([*args, "--stack-seeds"]) == 0  # one job per recipe, its seeds together
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[3:]]
    assert [(r[1], r[2], r[3]) for r in rows] == [(small, "0", "1"), (big, "0", "1")]


def test_a_plan_is_jobs_of_plain_data_with_the_budget_resolved(two, tmp_path):
    big, small = two
    jobs = plan.make_plan([big, small], [0, 1], RunOptions(budget="smoke", results=tmp_path), torch.device("cpu"))
    assert [(j.recipe, j.seeds, j.seconds) for j in jobs] == [(small, (0,), 1.0), (small, (1,), 1.0), (big, (0,), 5.0),
                                                              (big, (1,), 5.0)]
    assert all(j.budget is BUDGETS["smoke"] for j in jobs)
    assert pickle.loads(pickle.dumps(jobs)) == jobs  # what a worker process or a SLURM task receives
    with pytest.raises(dataclasses.FrozenInstanceError):
        jobs[0].seeds = (5,)
    assert RunOptions(budget="quick").budget is BUDGETS["quick"]  # a budget's name is resolved once, on creation
    with pytest.raises(BenchError, match="unknown budget 'fast'"):
        RunOptions(budget="fast")


def test_time_limit_starts_only_runs_that_fit_and_next_run_does_the_rest(two, tmp_path, monkeypatch, capsys):
    big, small = two
    monkeypatch.setattr(plan, "estimate_seconds",
                        lambda recipe, device, test_size=0, seeds=1, engine="auto": {big: 1000.0, small: 0.01}[recipe.name])
    args = ["run", "--recipe", big, small, "--seeds", "0", "1", "--budget", "smoke", "--device", "cpu",
            "--results", str(tmp_path), "--no-report"]
    assert main([*args, "--time-limit", "60s"]) == 0
    assert "2 run(s) finished, 2 left; run the same command again" in capsys.readouterr().out
    done = sorted(tmp_path.glob("records/smoke/*/*/seed*.json"))
    assert [(p.parent.name, p.name) for p in done] == [(small, "seed0.json"), (small, "seed1.json")]
    before = [p.read_text() for p in done]

    calls = []
    real = runner.run_one
    monkeypatch.setattr(runner, "run_one", lambda name, seed, *a: calls.append((name, seed)) or real(name, seed, *a))
    assert main([*args, "--time-limit", "2h"]) == 0
    assert calls == [(big, 0), (big, 1)]  # exactly the missing runs
    assert [p.read_text() for p in done] == before
    assert "2 run(s) finished, 0 left" in capsys.readouterr().out


@pytest.mark.parametrize("stack", [False, True], ids=["separate", "stacked"])
def test_time_limit_stops_cleanly_mid_run_and_the_next_run_resumes_it(tiny_recipe, tmp_path, monkeypatch, capsys,
                                                                       stack):
    monkeypatch.setattr(plan, "estimate_seconds", lambda recipe, device, test_size=0, seeds=1, engine="auto": 0.01 * seeds)
    seeds = [0, 1] if stack else [0]
    run = stacked.run_stacked if stack else (lambda name, seeds, options: [runner.run_one(name, seeds[0], options)])
    whole = run("tiny_test", seeds, RunOptions(budget="full", results=tmp_path / "whole", device="cpu", progress=False))
    # epoch 2 hangs: only the time limit's alarm can end it
    module, fn = (stacked, "train_stacked_epoch") if stack else (train, "train_one_epoch")
    real = getattr(module, fn)
    epoch_of = lambda *a, **k: inspect.signature(real).bind(*a, **k).arguments["epoch"]  # noqa: E731
    monkeypatch.setattr(module, fn, lambda *a, **k: time.sleep(60) if epoch_of(*a, **k) == 2 else real(*a, **k))
    args = ["run", "--recipe", "tiny_test", "--seeds", *map(str, seeds), "--budget", "full", "--device", "cpu",
            "--results", str(tmp_path / "cut"), "--no-report", *(["--stack-seeds"] if stack else [])]
    t0 = time.monotonic()
    assert main([*args, "--time-limit", "3s"]) == 0
    assert time.monotonic() - t0 < 10
    out = capsys.readouterr().out
    assert "time limit reached" in out and f"0 run(s) finished, {len(seeds)} left" in out
    for s in seeds:
        key = RunKey("tiny_test", s, "full", whole[0]["dataset_id"])
        assert not key.record_path(tmp_path / "cut").exists()
        assert not key.lock_path(tmp_path / "cut").exists() and not key.failed_path(tmp_path / "cut").exists()
        assert checkpoints.checkpoint_epoch(key.checkpoint_dir(tmp_path / "cut")) == 1

    monkeypatch.setattr(module, fn, real)
    assert main([*args, "--time-limit", "1h"]) == 0
    out = capsys.readouterr().out
    assert f"{len(seeds)} run(s) finished, 0 left" in out
    for s, ref in zip(seeds, whole):
        rec = runner.run_one("tiny_test", s, RunOptions(budget="full", results=tmp_path / "cut", device="cpu", progress=False))
        assert [h["train_loss"] for h in rec["history"]] == [h["train_loss"] for h in ref["history"]]
        assert rec["metrics"] == ref["metrics"]
