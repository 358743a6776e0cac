"""Whole-step CUDA graphs (CUDA only): forward, loss, backward and optimizer step replayed as one graph.

At batch 32 a GPU spends its time launching kernels, not running them; one graph replay
launches the whole step at once. Shapes are static, so the last partial batch of an epoch
takes an ordinary eager step.

What this module does today: capture the step of a model (or a `stacked.Stack` through
`stacked.stacked_forward`) with a constant learning rate, with the optimizer in its
`capturable` form (the same maths). It is not yet wired into the runner: OneCycle
(learning rate and Adam's beta1 as device tensors indexed by a step counter inside the
graph), the EMA update (`torch._foreach_lerp_` inside the graph) and the augmentation's random
numbers still need a GPU to build and check. `tests/test_graphs.py` (skipped without CUDA)
checks graph against eager.
"""

from __future__ import annotations

from typing import Callable

import torch


def capture_step(params: list[torch.Tensor], opt: torch.optim.Optimizer,
                 loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 static_x: torch.Tensor, static_y: torch.Tensor, warmup: int = 3) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A function `step(x, y) -> loss` that replays one captured training step on the batch (x, y).

    `opt` must be built with `capturable=True`. `loss_fn(x, y)` runs the forward pass and
    returns the scalar loss. Capturing needs a few warm-up steps; the parameters and the
    optimizer state are put back afterwards, so the first replay is the run's first step.
    """
    if not static_x.is_cuda:
        raise RuntimeError("CUDA graphs need CUDA tensors")
    saved = [p.detach().clone() for p in params]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as graph capture requires
        for _ in range(warmup):
            opt.zero_grad(set_to_none=True)
            loss_fn(static_x, static_y).backward()
            opt.step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        static_loss = loss_fn(static_x, static_y)
        static_loss.backward()
        opt.step()
    with torch.no_grad():  # undo the warm-up in place: the graph holds these very tensors
        for p, s in zip(params, saved):
            p.copy_(s)
        for state in opt.state.values():
            for v in state.values():
                if torch.is_tensor(v):
                    v.zero_()

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        static_x.copy_(x)
        static_y.copy_(y)
        graph.replay()
        return static_loss

    return step
