"""The engine registry (engines.py) threaded from RunOptions to the record, and the one training state
(`train.TrainState`) that last.pt saves and resumes."""

from __future__ import annotations

import inspect

import pytest
import torch

from digitsum_bench import data
from digitsum_bench.engine import checkpoints, engines, graphs, perf, runner, stacked, train
from digitsum_bench.engine.runner import RunOptions
from digitsum_bench.errors import BenchError

CPU = torch.device("cpu")


def options(results, engine: str) -> RunOptions:
    return RunOptions(budget="full", results=results, device="cpu", progress=False, engine=engine)


def test_an_eager_run_trains_eagerly_and_says_so(tiny_recipe, tmp_path, monkeypatch):
    real_fit = runner.fit
    makers = []

    def spy(*a, **k):
        makers.append(inspect.signature(real_fit).bind(*a, **k).arguments.get("make_engine"))
        return real_fit(*a, **k)

    monkeypatch.setattr(runner, "fit", spy)
    rec = runner.run_one("tiny_test", 0, options(tmp_path, "eager"))
    assert rec["engine"] == "eager" and makers == [None]


def test_a_registered_engine_trains_the_run_and_the_record_names_it(tiny_recipe, tmp_path, monkeypatch):
    """An engine added to ENGINES is accepted by name, takes every step of the run, and the record says so."""
    steps = []

    class Counted:
        name = "counted"

        def __init__(self, model, opt, recipe, split, seed, device, aux):
            self.args = (model, opt, recipe)

        def __call__(self, batch):
            steps.append(len(batch.sums))
            model, opt, recipe = self.args
            return train.train_step(model, opt, recipe, batch, CPU)

    monkeypatch.setitem(engines.ENGINES, "counted", Counted)
    rec = runner.run_one("tiny_test", 0, options(tmp_path / "counted", "counted"))
    eager = runner.run_one("tiny_test", 0, options(tmp_path / "eager", "eager"))
    assert rec["engine"] == "counted" and steps == [32] * 4 * 3  # 128 images at batch 32, 3 epochs
    assert [h["train_loss"] for h in rec["history"]] == [h["train_loss"] for h in eager["history"]]  # the same step


def test_graph_on_a_cpu_is_a_one_line_error_before_training(tiny_recipe, tmp_path, monkeypatch):
    monkeypatch.setattr(train, "train_one_epoch", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(BenchError) as e:
        runner.run_one("tiny_test", 0, options(tmp_path, "graph"))
    assert str(e.value).startswith("--engine graph needs a CUDA GPU") and "\n" not in str(e.value)


def test_an_unknown_engine_is_an_error_listing_the_engines(tiny_recipe, tmp_path, monkeypatch):
    monkeypatch.setattr(train, "train_one_epoch", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(BenchError, match="no such engine; known: auto, eager, graph$"):
        runner.run_one("tiny_test", 0, options(tmp_path, "grpah"))


@pytest.mark.parametrize("argv,words", [
    (["--engine", "graph"], "--engine graph needs a CUDA GPU"),
    (["--engine", "grpah"], "--engine 'grpah': no such engine; known: auto, eager, graph"),
    (["--engine", "graph", "--stack-seeds", "--seeds", "0", "1"], "--engine graph does not train a stack"),
])
def test_run_refuses_an_engine_it_cannot_use_in_one_line_and_writes_nothing(tiny_recipe, tmp_path, capsys, argv, words):
    from digitsum_bench.cli import main

    assert main(["run", "--recipe", "tiny_test", "--device", "cpu", "--budget", "smoke", "--results", str(tmp_path),
                 "--no-report", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {words}") and err.count("\n") == 1
    assert not list(tmp_path.rglob("*.*"))  # no record, lock, failure marker or estimate note


def test_auto_is_the_graph_on_a_cuda_device_and_eager_elsewhere():
    assert engines.engine_maker("auto", torch.device("cuda")) is graphs.graph_step
    assert engines.engine_maker("auto", CPU) is None and engines.engine_maker("eager", CPU) is None
    assert set(perf.ENGINES) == {*engines.ENGINES, "stacked"}  # every engine a record can name, for perf rows


def test_a_stack_refuses_the_graph_engine_before_any_work():
    with pytest.raises(BenchError, match="--engine graph does not train a stack"):
        stacked.fit_stacked(None, [], None, None, [0, 1], CPU, [], engine="graph")
    with pytest.raises(BenchError, match="no such engine"):
        stacked.fit_stacked(None, [], None, None, [0, 1], CPU, [], engine="vmap")


def new_state(recipe, seed: int, n: int = 100) -> train.TrainState:
    torch.manual_seed(seed)
    return train.TrainState.create(recipe, recipe.model(), CPU, train.steps_per_epoch(recipe, n))


def same(a, b) -> bool:
    """Equal nested dicts, lists and tensors (state dicts)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if torch.is_tensor(a):
        return torch.is_tensor(b) and torch.equal(a, b)
    return a == b


def test_a_saved_training_state_resumes_whole(tiny_recipe, tmp_path):
    """save_last then resume into a fresh state (other weights): the same parameters, optimizer state, schedule,
    EMA and bookkeeping; last.pt keeps its keys, so checkpoints of earlier versions resume."""
    state = new_state(tiny_recipe, 0)
    train.train_one_epoch(state, split=data.random_split(100, CPU), recipe=tiny_recipe, seed=0, epoch=1, device=CPU)
    state.books.update(epoch=1, best_score=0.5, best_epoch=1, history=[{"epoch": 1, "train_loss": 2.0}],
                       train_seconds=3.0, step_seconds=2.0, engine="graph")
    train.save_last(tmp_path / "last.pt", state)
    assert set(checkpoints.load_pt(tmp_path / "last.pt")) == {"model", "opt", "sched", "ema", "state", "config"}

    fresh = new_state(tiny_recipe, 1)
    assert not same(fresh.model.state_dict(), state.model.state_dict())
    assert train.resume(tmp_path / "last.pt", fresh, CPU)
    assert same(fresh.model.state_dict(), state.model.state_dict())
    assert same(fresh.opt.state_dict(), state.opt.state_dict()) and fresh.opt.state_dict()["state"]  # Adam's moments
    assert same(fresh.sched.state_dict(), state.sched.state_dict())
    assert same(fresh.ema.state_dict(), state.ema.state_dict()) and fresh.scored is fresh.ema.module
    assert fresh.books == state.books

    old = checkpoints.load_pt(tmp_path / "last.pt")  # as saved before the bookkeeping had "engine"
    del old["state"]["engine"]
    torch.save(old, tmp_path / "old.pt")
    assert train.resume(tmp_path / "old.pt", fresh, CPU) and fresh.books["engine"] == "eager"
    assert not train.resume(tmp_path / "none.pt", fresh, CPU) and fresh.books["epoch"] == 1  # nothing to resume
