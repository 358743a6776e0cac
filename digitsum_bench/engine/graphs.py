"""The graph engine: `train.train_step` (forward, loss, backward, optimizer step) captured as one CUDA graph.

At batch 32 a GPU spends its time launching kernels, not running them; one graph replay
launches the whole step at once. The method does not change: the same step function runs,
on static input buffers that each full batch is copied into; the data order, augmentation and
inputs are made eagerly as before (`train.EpochStreams`), and the last partial batch of an
epoch takes an ordinary eager `train_step` (a graph's shapes are fixed).

What a graph would freeze, and how it stays exact:
- the learning rate and Adam's betas are read by the graph from device tensors
  (`make_capturable`; Adam/AdamW then run their `capturable` foreach kernels, the same maths
  as the fused ones). The schedule steps outside the graph: OneCycle writes the learning
  rate into its tensor in place, and its momentum cycling, which sets beta1 as a Python
  number, is copied into beta1's tensor before each step (`GraphStep.follow_schedule`; so is
  the learning rate, where an older torch's scheduler assigns a number instead);
- capturing takes warm-up steps, which move the weights, BatchNorm statistics and optimizer
  state: all are put back in place afterwards (`snapshot`/`restore`);
- the EMA updates after each replay, eagerly (`train.after_step`), as in an eager run;
- dropout draws from CUDA's default generator, whose graph replays advance it as eager steps do.

It checks itself (`checked`): before training, a few graph steps are compared with eager steps
from the same state (losses, and the parameters' change, within bf16 tolerance). On a mismatch,
or any error in capture, it warns in one line and the run trains eagerly; the record's `engine`
says which one trained it. On a CPU nothing is captured (`graph_step` gives None: eager).
"""

from __future__ import annotations

import itertools
import sys
from typing import Callable

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..data import DeviceData
from ..registry.recipes import Recipe
from . import train
from .train import Batch, EpochStreams, train_step

CHECK_STEPS = 3  # graph steps compared with eager ones before a run trusts its graph
LOSS_RTOL = 2e-2  # bf16 forward passes: the same batch's loss agrees to about 1%
UPDATE_RTOL = 5e-2  # the parameters' change over CHECK_STEPS steps, graph vs eager, as a norm
WARMUP_STEPS = 3  # eager steps on a side stream before capture, as torch.cuda.graph requires


def make_capturable(opt: torch.optim.Optimizer, device: torch.device) -> None:
    """The learning rate and Adam's betas as device tensors, which a graph reads at each replay (a Python
    number would be frozen into it). Fused Adam reads betas as Python numbers, so Adam/AdamW take their
    `capturable` foreach kernels on a GPU (the same maths); a CPU (tests) has no capturable kernels."""
    cuda = device.type == "cuda"
    for group in opt.param_groups:
        group["lr"] = torch.tensor(float(group["lr"]), device=device)
        if "betas" in group:
            group["betas"] = tuple(torch.tensor(float(b), device=device) for b in group["betas"])
            group.update(capturable=cuda, foreach=cuda, fused=False)


def snapshot(model: nn.Module, opt: torch.optim.Optimizer) -> dict:
    """Copies of the model's parameters and buffers and of the optimizer's state tensors."""
    return {"model": [t.detach().clone() for t in _model_tensors(model)],
            "opt": {(i, k): v.detach().clone() for i, p in enumerate(_params(opt))
                    for k, v in opt.state.get(p, {}).items() if torch.is_tensor(v)}}


@torch.no_grad()
def restore(model: nn.Module, opt: torch.optim.Optimizer, saved: dict) -> None:
    """Put a `snapshot` back in place (a captured graph holds these very tensors). Optimizer state made
    after the snapshot is zeroed: Adam's fresh moments and step are zeros, and SGD's first momentum
    step from a zero buffer equals its first step from none."""
    for t, s in zip(_model_tensors(model), saved["model"]):
        t.copy_(s)
    for i, p in enumerate(_params(opt)):
        for k, v in opt.state.get(p, {}).items():
            if torch.is_tensor(v):
                v.copy_(saved["opt"][i, k]) if (i, k) in saved["opt"] else v.zero_()


def _model_tensors(model: nn.Module) -> list[torch.Tensor]:
    return [*model.parameters(), *model.buffers()]


def _params(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in opt.param_groups for p in group["params"]]


def capture(model: nn.Module, opt: torch.optim.Optimizer, recipe: Recipe, static: Batch,
            device: torch.device) -> Callable[[], torch.Tensor]:
    """`train_step` on the `static` batch captured as one CUDA graph; returns `replay() -> loss`.

    The warm-up steps before capture are undone (`restore`), so the first replay is the run's next step.
    """
    if device.type != "cuda":
        raise RuntimeError("CUDA graphs need a CUDA device")
    saved = snapshot(model, opt)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(WARMUP_STEPS):
            train_step(model, opt, recipe, static, device)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        loss = train_step(model, opt, recipe, static, device)
    restore(model, opt, saved)

    def replay() -> torch.Tensor:
        graph.replay()
        return loss

    return replay


class GraphStep:
    """A `train.Step`: full batches replay the captured `train_step`, a partial batch runs it eagerly."""

    name = "graph"  # the engine a record names (engines.ENGINES)

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer, recipe: Recipe, example: Batch,
                 device: torch.device) -> None:
        self.model, self.opt, self.recipe, self.device = model, opt, recipe, device
        self.static = Batch(*(None if t is None else t.clone() for t in example))
        self.lr = [group["lr"] for group in opt.param_groups]
        self.beta1 = [group["betas"][0] if "betas" in group else None for group in opt.param_groups]
        self.replay = capture(model, opt, recipe, self.static, device)

    def follow_schedule(self) -> None:
        """Put what the schedule set as Python numbers (OneCycle's beta1; the learning rate, where a scheduler
        assigns it rather than filling its tensor) into the tensors the graph reads."""
        for group, lr, beta1 in zip(self.opt.param_groups, self.lr, self.beta1):
            if group["lr"] is not lr:
                lr.fill_(float(group["lr"]))
                group["lr"] = lr
            if beta1 is not None and group["betas"][0] is not beta1:
                beta1.fill_(float(group["betas"][0]))
                group["betas"] = (beta1, *group["betas"][1:])

    def __call__(self, batch: Batch) -> torch.Tensor:
        self.follow_schedule()
        if batch.x.shape != self.static.x.shape:
            return train_step(self.model, self.opt, self.recipe, batch, self.device)
        for buffer, t in zip(self.static, batch):
            if buffer is not None:
                buffer.copy_(t)
        return self.replay()


def _steps(step: Callable[[Batch], torch.Tensor], batches: list[Batch], model: nn.Module) -> tuple[torch.Tensor, list]:
    """The losses of `step` over `batches` (dropout seeded alike), and the parameters after them."""
    torch.manual_seed(0)
    losses = torch.stack([step(b).detach().float().clone() for b in batches])  # a replay overwrites its loss
    return losses, [p.detach().clone() for p in model.parameters()]


def mismatch(eager: tuple[torch.Tensor, list], graph: tuple[torch.Tensor, list], start: list) -> str | None:
    """Why the graph's steps differ from the eager ones (losses; the parameters' change, as a norm), or None."""
    if not torch.allclose(graph[0], eager[0], rtol=LOSS_RTOL, atol=1e-6):
        return f"losses {graph[0].tolist()} vs eager {eager[0].tolist()}"
    moved = torch.cat([(p - s).flatten().float() for p, s in zip(eager[1], start)])
    off = torch.cat([(g - e).flatten().float() for g, e in zip(graph[1], eager[1])])
    rel = float(off.norm() / moved.norm().clamp_min(1e-12))
    return None if rel <= UPDATE_RTOL else f"the parameters' change differs from eager by {rel:.1%}"


def checked(model: nn.Module, opt: torch.optim.Optimizer, recipe: Recipe, batches: list[Batch],
            device: torch.device) -> GraphStep | None:
    """A `GraphStep` whose first steps on `batches` match eager ones from the same state, or None (after a
    one-line warning): the run then trains eagerly, with its model and optimizer as they were."""
    saved = snapshot(model, opt)
    settings = [{k: v for k, v in group.items() if k != "params"} for group in opt.param_groups]
    start = [p.detach().clone() for p in model.parameters()]
    problem, step = None, None
    try:
        eager = _steps(lambda b: train_step(model, opt, recipe, b, device), batches, model)
        restore(model, opt, saved)
        make_capturable(opt, device)
        step = GraphStep(model, opt, recipe, batches[0], device)
        problem = mismatch(eager, _steps(step, batches, model), start)
    except Exception as e:  # noqa: BLE001 - any capture error means: train eagerly
        problem = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    restore(model, opt, saved)
    if problem is None:
        return step
    for group, old in zip(opt.param_groups, settings):
        group.update(old)
    tqdm.write(f"warning: {recipe.name}: CUDA graph off ({problem}); training eagerly", file=sys.stderr)
    return None


def graph_step(model: nn.Module, opt: torch.optim.Optimizer, recipe: Recipe, split: DeviceData, seed: int,
               device: torch.device, aux: DeviceData | None = None) -> GraphStep | None:
    """The run's graph engine on a GPU (`train.fit`'s `make_engine`), checked on the first batches of an
    epoch 0 (never trained: epochs count from 1); None on a CPU, or with too few full batches to check."""
    if device.type != "cuda" or len(split) < CHECK_STEPS * recipe.batch_size:
        return None
    streams = EpochStreams(split, recipe, seed, 0, device, aux)
    batches = list(itertools.islice(streams.batches(split, recipe, train.CHANNELS_LAST), CHECK_STEPS))
    return checked(model, opt, recipe, batches, device)
