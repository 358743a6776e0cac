"""Whole-step CUDA graph against eager steps (GPU only; skipped without CUDA)."""

from __future__ import annotations

import copy

import pytest
import torch

from digitsum_bench import data as datamod
from digitsum_bench import graphs, losses, train
from digitsum_bench.recipes import get_recipe

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_graphed_step_gives_the_eager_losses():
    dev = torch.device("cuda")
    recipe = get_recipe("r003_convnet4")  # Adam, constant learning rate, no EMA: what graphs.py captures today
    torch.manual_seed(0)
    eager = recipe.model().to(dev)
    graphed = copy.deepcopy(eager)
    data = datamod.random_split(32 * 6, dev)
    batches = [(train.to_input(data.images[i:i + 32], False), data.sums[i:i + 32]) for i in range(0, len(data), 32)]

    def loss_of(model):
        def fn(x, y):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = model(x)
            return losses.compute_loss(recipe.loss, recipe.head, out.float(), y, None)
        return fn

    opt = torch.optim.Adam(eager.parameters(), lr=recipe.lr, capturable=True)
    want = []
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        loss = loss_of(eager)(x, y)
        loss.backward()
        opt.step()
        want.append(float(loss))
    gopt = torch.optim.Adam(graphed.parameters(), lr=recipe.lr, capturable=True)
    step = graphs.capture_step(list(graphed.parameters()), gopt, loss_of(graphed),
                               batches[0][0].clone(), batches[0][1].clone())
    got = [float(step(x, y)) for x, y in batches]
    assert got == pytest.approx(want, rel=2e-2)  # bf16 tolerance
