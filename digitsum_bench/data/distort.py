"""Labelled synthetic sets: new handwriting (distorted digits), a recipe's labelled set, pre-training data."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from .generators import compose_synth, load_synth
from .sets import DigitSumData, Splits
from .sources import pool_digits


def distort_digits(digits: torch.Tensor, generator: torch.Generator, rotation: float = 12.0, shear: float = 0.2,
                   zoom: float = 0.1, elastic: float = 2.0, stroke: float = 0.5) -> torch.Tensor:
    """A new handwriting of each MNIST digit (N,28,28) uint8, by one resample: rotation up to `rotation`
    degrees, shear up to `shear`, scale 1 +- `zoom` (the width a further 1 +- zoom/2), a smooth elastic
    field (Gaussian of sigma 4 px, largest displacement `elastic` px; Simard et al. 2003); then the
    stroke thickened or thinned by up to `stroke` of a 3x3 dilation or erosion."""
    x = digits[:, None].float() / 255
    n = len(x)
    r = torch.rand(n, 5, generator=generator) * 2 - 1
    angle = r[:, 0] * rotation * math.pi / 180
    cos, sin = torch.cos(angle), torch.sin(angle)
    zoom_y = 1 + zoom * r[:, 2]
    zoom_x = zoom_y * (1 + zoom / 2 * r[:, 3])
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos / zoom_x, (shear * r[:, 1] - sin) / zoom_x
    theta[:, 1, 0], theta[:, 1, 1] = sin / zoom_y, cos / zoom_y
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    if elastic:
        field = torch.rand(n * 2, 1, 28, 28, generator=generator) * 2 - 1
        taps = torch.exp(-torch.arange(-12, 13.0) ** 2 / (2 * 4.0 ** 2))
        taps = taps / taps.sum()
        field = F.conv2d(F.pad(field, (12, 12, 0, 0), mode="reflect"), taps.view(1, 1, 1, -1))
        field = F.conv2d(F.pad(field, (0, 0, 12, 12), mode="reflect"), taps.view(1, 1, -1, 1)).view(n, 2, 28, 28)
        field = field / field.flatten(1).abs().amax(1).clamp(min=1e-6).view(n, 1, 1, 1)
        grid = grid + elastic * (2 / 28) * field.permute(0, 2, 3, 1)  # px -> grid units
    y = F.grid_sample(x, grid, align_corners=False)
    if stroke:
        t = stroke * r[:, 4].view(n, 1, 1, 1)
        thicker, thinner = F.max_pool2d(y, 3, 1, 1), -F.max_pool2d(-y, 3, 1, 1)
        y = torch.where(t > 0, y + t * (thicker - y), y - t * (thinner - y))
    y = (y.clamp(0, 1) * 255).round().to(torch.uint8)[:, 0]
    y[y < 8] = 0  # interpolation dust would widen the ink box the composer crops to
    return y


def labelled_set(size: int, distort: int = 0) -> DigitSumData:
    """A recipe's labelled synthetic set (`Recipe.aux_set`): DigitSum-Synth from the training digit pool,
    data seed 1.

    A different seed from the benchmark's data (seed 0) makes different compositions, so the
    training images' own digit labels are never used, and the test pool never is. With
    `distort` k, it is composed from each training-pool digit and k `distort_digits` copies
    of it (torch seed 1, on the CPU).
    """
    if not distort:
        return load_synth("synth", "train", size, seed=1)
    return _distorted_set(size, distort)


@lru_cache(maxsize=1)
def _distorted_set(size: int, distort: int) -> DigitSumData:
    """`labelled_set` with `distort` copies: seconds on a CPU, so made once per process and shared by
    every seed of a run (the same on 1 and 2 threads: nothing in it depends on the seed)."""
    digits, labels, index = pool_digits("train")
    generator = torch.Generator().manual_seed(1)
    copies = [torch.from_numpy(digits)]
    copies += [distort_digits(copies[0], generator) for _ in range(distort)]
    k = distort + 1
    return compose_synth(torch.cat(copies).numpy(), np.tile(labels, k), np.tile(index, k), size,
                         seed=1, name=f"DigitSum-Synth from training-pool digits and {k - 1} distorted copies")


def pretrain_splits(train_size: int, val_size: int, data_seed: int) -> Splits:
    """A pre-training stage's own data: DigitSum-Synth train/val of its `data_seed`, from the train/val
    digit pool (never the test pool), whatever --data names: report 004 pre-trained "on a separate dataset"."""
    train = load_synth("synth", "train", train_size, data_seed)
    val = load_synth("synth", "val", val_size, data_seed)
    return Splits(train, val, None, f"stage-{data_seed}", f"DigitSum-Synth, data seed {data_seed}")
