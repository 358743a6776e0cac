"""The graph engine (graphs.py): its step is train_step, its self-check and its fallback to eager.

On a CPU nothing is captured: `capture` is replaced by an eager replay of `train_step` on the static
buffers (what a graph replays), or by a failing or wrong one. The GPU tests at the end run the real
capture and are skipped without CUDA.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import replace

import pytest
import torch

from digitsum_bench import data as datamod
from digitsum_bench.engine import engines, graphs, train

CPU = torch.device("cpu")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def eager_capture(model, opt, recipe, static, device):
    """A stand-in for a graph: replays `train_step` on the static buffers, eagerly."""
    return lambda: train.train_step(model, opt, recipe, static, device)


def setup(recipe, device=CPU, n=100, seed=0):
    """A fresh training state (model, optimizer, schedule, EMA) and a split of `n` images (100: a partial last
    batch)."""
    torch.manual_seed(seed)
    model = recipe.model().to(device, memory_format=train.memory_format())
    state = train.TrainState.create(recipe, model, device, train.steps_per_epoch(recipe, n))
    return state, datamod.random_split(n, device)


def first_batches(recipe, split, k=graphs.CHECK_STEPS, device=CPU):
    streams = train.EpochStreams(split, recipe, 0, 0, device, None)
    return list(itertools.islice(streams.batches(split, recipe, train.CHANNELS_LAST), k))


def params(model):
    return [p.detach().clone() for p in model.parameters()]


def test_train_step_is_train_one_epochs_step(tiny_recipe):
    """The one step function, run by hand over an epoch's batches, gives train_one_epoch's parameters, bit for bit."""
    state, split = setup(tiny_recipe)
    twin, _ = setup(tiny_recipe)
    train.train_one_epoch(state, split=split, recipe=tiny_recipe, seed=0, epoch=1, device=CPU)
    twin.model.train()
    torch.manual_seed(train.epoch_seed(0, 1, 2))  # dropout, as train_one_epoch seeds it
    for batch in train.EpochStreams(split, tiny_recipe, 0, 1, CPU, None).batches(split, tiny_recipe, train.CHANNELS_LAST):
        train.train_step(twin.model, twin.opt, tiny_recipe, batch, CPU)
        train.after_step(twin.sched, twin.ema, twin.model)
    assert all(torch.equal(a, b) for a, b in zip(params(state.model), params(twin.model)))
    assert all(torch.equal(a, b) for a, b in zip(params(state.scored), params(twin.scored)))


def test_graph_step_trains_as_eager_steps_with_the_schedule_and_a_partial_batch(tiny_recipe, monkeypatch):
    """Static buffers, the tensor learning rate and betas, OneCycle, EMA and the eager last batch: two epochs
    through a checked GraphStep end where two eager epochs end."""
    monkeypatch.setattr(graphs, "capture", eager_capture)
    state, split = setup(tiny_recipe)
    twin, _ = setup(tiny_recipe)
    step = graphs.checked(twin.model, twin.opt, tiny_recipe, first_batches(tiny_recipe, split), CPU)
    assert isinstance(step, graphs.GraphStep)
    assert all(torch.equal(a, b) for a, b in zip(params(state.model), params(twin.model)))  # the check left no trace
    for epoch in (1, 2):
        want = train.train_one_epoch(state, split=split, recipe=tiny_recipe, seed=0, epoch=epoch, device=CPU)
        got = train.train_one_epoch(twin, split=split, recipe=tiny_recipe, seed=0, epoch=epoch, device=CPU, engine=step)
        assert got == pytest.approx(want, rel=1e-5)
    for a, b in zip(params(state.scored), params(twin.scored)):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
    assert float(twin.opt.param_groups[0]["lr"]) == pytest.approx(state.opt.param_groups[0]["lr"])


def test_graph_step_puts_the_schedules_numbers_into_the_tensors_the_graph_reads(tiny_recipe, monkeypatch):
    monkeypatch.setattr(graphs, "capture", eager_capture)
    state, split = setup(tiny_recipe)
    opt, sched = state.opt, state.sched
    graphs.make_capturable(opt, CPU)
    batch = first_batches(tiny_recipe, split, 1)[0]
    step = graphs.GraphStep(state.model, opt, tiny_recipe, batch, CPU)
    captured = opt.param_groups[0]["betas"][0]
    for _ in range(3):
        step(batch)
        sched.step()  # sets beta1 as a Python number
        momentum = opt.param_groups[0]["betas"][0]
        assert not torch.is_tensor(momentum)
        step.follow_schedule()
        assert opt.param_groups[0]["betas"][0] is captured and float(captured) == pytest.approx(momentum)
    lr = opt.param_groups[0]["lr"]
    opt.param_groups[0]["lr"] = 0.125  # as a scheduler that assigns the learning rate would
    step.follow_schedule()
    assert opt.param_groups[0]["lr"] is lr and float(lr) == 0.125


@pytest.mark.parametrize("broken", ["capture raises", "graph skips the optimizer step"])
def test_a_failed_or_wrong_graph_warns_once_and_leaves_the_run_eager(tiny_recipe, monkeypatch, capsys, broken):
    def fails(*a):
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore detail")

    def no_update(model, opt, recipe, static, device):
        def replay():
            with train.autocast(device):
                return train.batch_loss(recipe, model(static.x), static)
        return replay

    monkeypatch.setattr(graphs, "capture", fails if broken == "capture raises" else no_update)
    state, split = setup(tiny_recipe)
    twin, _ = setup(tiny_recipe)
    before = copy.deepcopy(twin.opt.param_groups[0])
    assert graphs.checked(twin.model, twin.opt, tiny_recipe, first_batches(tiny_recipe, split), CPU) is None
    warning = capsys.readouterr().err.strip()
    assert len(warning.splitlines()) == 1 and "CUDA graph off" in warning and "training eagerly" in warning
    assert ("RuntimeError" in warning) == (broken == "capture raises")
    assert {k: v for k, v in twin.opt.param_groups[0].items() if k != "params"} == \
        {k: v for k, v in before.items() if k != "params"}  # the eager optimizer's own settings again
    want = train.train_one_epoch(state, split=split, recipe=tiny_recipe, seed=0, epoch=1, device=CPU)
    got = train.train_one_epoch(twin, split=split, recipe=tiny_recipe, seed=0, epoch=1, device=CPU)
    assert got == want and all(torch.equal(a, b) for a, b in zip(params(state.model), params(twin.model)))


def test_fit_records_the_engine_that_trained(tiny_recipe, monkeypatch, tmp_path, capsys):
    split, val = datamod.random_split(100, CPU), datamod.random_split(40, CPU, seed=1)
    monkeypatch.setattr(graphs, "capture", eager_capture)

    def engine(model, opt, recipe, train_split, seed, device, aux):  # graph_step without its CUDA gate
        return graphs.checked(model, opt, recipe, first_batches(recipe, train_split), device)

    one = replace(tiny_recipe, epochs=1)
    torch.manual_seed(0)
    assert train.fit(one, one.model(), split, val, 0, CPU, tmp_path / "a", False, make_engine=engine)[1]["engine"] == "graph"
    monkeypatch.setattr(graphs, "capture", lambda *a: 1 / 0)
    assert train.fit(one, one.model(), split, val, 0, CPU, tmp_path / "b", False, make_engine=engine)[1]["engine"] == "eager"
    assert "ZeroDivisionError" in capsys.readouterr().err
    assert train.fit(one, one.model(), split, val, 0, CPU, tmp_path / "c", False)[1]["engine"] == "eager"


def test_no_graph_on_a_cpu(tiny_recipe):
    state, split = setup(tiny_recipe)
    assert graphs.graph_step(state.model, state.opt, tiny_recipe, split, 0, CPU) is None


@needs_cuda
@pytest.mark.parametrize("name", ["r003_convnet4", "ours_digitsum"])  # Adam constant; AdamW + OneCycle + EMA + aux
def test_graph_engine_on_a_gpu_matches_eager_training(name):
    from digitsum_bench.registry.recipes import get_recipe
    from digitsum_bench.engine.runner import load_aux

    dev = torch.device("cuda")
    recipe = replace(get_recipe(name), epochs=2)
    aux = load_aux(replace(recipe, aux_size=2_000), dev) if recipe.aux_batch else None
    state, split = setup(recipe, dev, n=recipe.batch_size * 8 + 5)
    twin, _ = setup(recipe, dev, n=len(split))
    step = engines.engine_maker("graph", dev)(twin.model, twin.opt, recipe, split, 0, dev, aux)
    assert isinstance(step, graphs.GraphStep)
    for epoch in (1, 2):
        want = train.train_one_epoch(state, split=split, recipe=recipe, seed=0, epoch=epoch, device=dev, aux=aux)
        got = train.train_one_epoch(twin, split=split, recipe=recipe, seed=0, epoch=epoch, device=dev, aux=aux,
                                    engine=step)
        assert got == pytest.approx(want, rel=graphs.LOSS_RTOL)


def test_a_graph_engines_checkpoint_resumes_on_a_cpu(tiny_recipe, tmp_path):
    state, split = setup(tiny_recipe)
    graphs.make_capturable(state.opt, CPU)
    train.train_one_epoch(state, split=split, recipe=tiny_recipe, seed=0, epoch=1, device=CPU)
    for group in state.opt.param_groups:
        group.update(capturable=True, foreach=True)  # as saved on a GPU
    train.save_last(tmp_path / "last.pt", state)
    state, _ = setup(tiny_recipe)
    assert train.resume(tmp_path / "last.pt", state, CPU)
    # capturable kernels would refuse a CPU
    train.train_one_epoch(state, split=split, recipe=tiny_recipe, seed=0, epoch=2, device=CPU)
    assert torch.is_tensor(state.opt.param_groups[0]["lr"])
