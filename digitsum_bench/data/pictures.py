"""Saving a set as .npz, a one-paragraph summary of a set, and a picture grid of its images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import BenchError
from .cache import _write_npz
from .sets import COURSE_MEAN, COURSE_STD, DigitSumData


def save_npz(data: DigitSumData, path: str | Path) -> None:
    """Write `images`, `sums` and, where known, `digits` and `instances` to a compressed .npz, atomically."""
    arrays = {"images": data.images, "sums": data.sums.astype(np.int64)}
    arrays |= {k: v for k, v in (("digits", data.digits), ("instances", data.instances)) if v is not None}
    _write_npz(Path(path), arrays, compress=True)  # 7x smaller; the cache stays uncompressed, for speed


def describe(data: DigitSumData) -> str:
    """The `data check` table: size, dtype, value range, pixel mean/std (/255), label histogram 0..36."""
    if len(data) == 0:
        raise BenchError(f"{data.name}: no images to describe")
    pixels = np.zeros(256, np.int64)  # a histogram gives exact statistics without a float copy of the images
    for start in range(0, len(data), 1000):  # bincount converts to int64: chunks bound that copy
        pixels += np.bincount(data.images[start : start + 1000].ravel(), minlength=256)
    values = np.arange(256) / 255
    mean = (pixels * values).sum() / pixels.sum()
    std = np.sqrt((pixels * (values - mean) ** 2).sum() / pixels.sum())
    seen = np.flatnonzero(pixels)
    counts = np.bincount(data.sums, minlength=37)
    lines = [
        f"data        {data.name}",
        f"images      {len(data):,} x {data.images.shape[1]} x {data.images.shape[2]}, {data.images.dtype}",
        f"values      {seen.min()}..{seen.max()}",
        f"pixel mean  {mean:.4f}  (/255; course data {COURSE_MEAN})",
        f"pixel std   {std:.4f}  (/255; course data {COURSE_STD})",
        f"digits      {'known' if data.digits is not None else 'unknown (sums only)'}",
        "sum histogram:",
    ]
    for start in range(0, 37, 10):
        sums = range(start, min(start + 10, 37))
        lines.append("  sum   " + "".join(f"{s:>6}" for s in sums))
        lines.append("  count " + "".join(f"{counts[s]:>6}" for s in sums))
    return "\n".join(lines)


def save_grid(data: DigitSumData, path: str | Path, n: int = 24, seed: int = 0) -> None:
    """A PNG of `n` random images, each titled "sum=S (d d d d)" (digits where known)."""
    from matplotlib.figure import (
        Figure,  # no pyplot: no global state, and Agg renders the PNG
    )

    if len(data) == 0:
        raise BenchError(f"{data.name}: no images to show")
    if n < 1:
        raise BenchError(f"--n {n}: show at least 1 image")
    if seed < 0:
        raise BenchError(f"--seed {seed}: a whole number >= 0")
    pick = np.sort(np.random.default_rng(seed).choice(len(data), min(n, len(data)), replace=False))
    cols = 4
    rows = -(-len(pick) // cols)
    fig = Figure(figsize=(cols * 2.6, rows * 0.95), layout="constrained")
    for ax, k in zip(fig.subplots(rows, cols, squeeze=False).ravel(), list(pick) + [None] * (rows * cols)):
        ax.axis("off")
        if k is not None:
            ax.imshow(data.images[k], cmap="gray", vmin=0, vmax=255)
            digits = "" if data.digits is None else " (" + " ".join(map(str, data.digits[k])) + ")"
            ax.set_title(f"sum={data.sums[k]}{digits}", fontsize=8)
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    except OSError as e:
        raise BenchError(f"{path}: cannot write ({e.strerror or e})") from None
