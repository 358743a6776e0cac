"""The generators: DigitSum-Synth (`make_synth`) and report 003's set (`make_synth003`), chunk by chunk,
each chunk from its own seeded generator, so that a set is prefix-stable and byte-identical everywhere."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import BenchError
from .cache import _cache_dir, _cached
from .sets import GENERATOR_VERSION, HEIGHT, MAX_IMAGES, WIDTH, DigitSumData
from .sources import _bilinear, _draw_instances, _ink_boxes, _padded, _source_hash, _source_name, mnist_digits


CHUNK = 1000  # images per independently seeded chunk; changing it changes every synthetic set
STREAMS = {"train": 0, "val": 1, "test": 2, "synth003": 3}  # one random stream per split

# DigitSum-Synth layout, calibrated on 10,000 test images against the course statistics
# (pixel mean 0.0607, std 0.2194; data-spec.md): it gives mean 0.0597, std 0.2075.
DIGIT_HEIGHT = (13, 30)  # ink height in px: min + floor(span * u^2), skewed small so the ink matches
PATCH_H, PATCH_W = 30, 36  # fixed patch a digit is resized into; wider digits are shrunk to fit
FIRST_X = (0, 16)  # left edge of the first digit
GAP = (-3, 34)  # px between neighbours; negative gaps make digits touch or overlap

# Report 003's generator: digits stretched into four equal 40x42 cells, then transformed.
CELL_W = WIDTH // 4  # 42
ROTATION_TAN = 0.1317  # tan(7.5 deg): rotations up to +-15 deg, drawn as tan(angle/2)
SCALE_003 = (0.9, 1.1)  # "slight scaling" about the cell centre
NOISE_003 = 0.05 * 255  # std of additive Gaussian pixel noise ("noise addition")


@dataclass(frozen=True)
class _Source:
    """What the chunk renderers need from a digit source, prepared once per call."""

    labels: np.ndarray  # (M,) class of each source digit
    table: np.ndarray  # `_padded` digits, gathered by `_bilinear`
    boxes: np.ndarray  # (M,4) `_ink_boxes`


def _generate(render, stream: str, pool: str, n: int, seed: int, source) -> dict[str, np.ndarray]:
    """Run `render(rng, src, pool, m)` chunk by chunk; each chunk has its own seed, hence prefix stability."""
    if n < 0 or seed < 0:
        raise BenchError(f"synthetic data: n and seed must be non-negative (got n={n}, seed={seed})")
    return _compose(render, stream, pool, n, seed, *mnist_digits(source))


def _compose(render, stream: str, pool: str, n: int, seed: int, digits: np.ndarray, labels: np.ndarray
             ) -> dict[str, np.ndarray]:
    """`_generate` from given digit images (N,28,28) and labels (N,)."""
    src = _Source(labels, _padded(digits), _ink_boxes(digits))
    chunks = [
        render(np.random.default_rng([seed, STREAMS[stream], c]), src, pool, min(CHUNK, n - c * CHUNK))
        for c in range(max(1, -(-n // CHUNK)))  # n == 0: one empty chunk gives the arrays their shapes
    ]
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def _synth_chunk(rng: np.random.Generator, src: _Source, pool: str, m: int) -> dict[str, np.ndarray]:
    """The first m of CHUNK DigitSum-Synth images (all CHUNK are drawn, so every chunk uses the same randomness)."""
    digits, inst = _draw_instances(rng, src.labels, pool, CHUNK)
    u, y_frac = rng.random(size=(CHUNK, 4)), rng.random(size=(CHUNK, 4))
    first_x = rng.integers(FIRST_X[0], FIRST_X[1] + 1, size=CHUNK)
    gap = rng.integers(GAP[0], GAP[1] + 1, size=(CHUNK, 3))
    digits, inst, u, y_frac, first_x, gap = (a[:m] for a in (digits, inst, u, y_frac, first_x, gap))

    top, left, ch, cw = np.moveaxis(src.boxes[inst], -1, 0)  # ink boxes, each (m,4)
    height = DIGIT_HEIGHT[0] + np.floor((DIGIT_HEIGHT[1] - DIGIT_HEIGHT[0] + 1) * u * u).astype(np.int64)
    width = np.maximum(np.rint(height * cw / ch), 1).astype(np.int64)
    too_wide = width > PATCH_W  # e.g. a flat 2 at full height: shrink it to the patch, aspect kept
    height = np.where(too_wide, np.maximum(np.rint(PATCH_W * ch / cw), 1).astype(np.int64), height)
    width = np.minimum(width, PATCH_W)
    y = np.floor(y_frac * (HEIGHT - height + 1)).astype(np.int64)
    x = _x_positions(first_x, width, gap)

    canvas = np.zeros((m, HEIGHT + PATCH_H, WIDTH + PATCH_W), np.uint8)  # margin: patches never clip
    flat = canvas.reshape(-1)
    i, j = np.arange(PATCH_H)[None, :, None], np.arange(PATCH_W)[None, None, :]
    for k in range(4):
        h, w, col = height[:, k, None, None], width[:, k, None, None], (slice(None), k, None, None)
        sy = np.where(i < h, top[col] + (i + 0.5) * ch[col] / h - 0.5, -9.0)  # beyond the digit: zeros
        sx = np.where(j < w, left[col] + (j + 0.5) * cw[col] / w - 0.5, -9.0)
        patch = _bilinear(src.table, inst[:, k], sy, sx)
        at = ((np.arange(m)[:, None, None] * (HEIGHT + PATCH_H) + y[col] + i) * (WIDTH + PATCH_W) + x[col] + j)
        flat[at] = np.maximum(flat[at], patch)  # pixel-wise max: overlapping digits both stay visible
    return {"images": canvas[:, :HEIGHT, :WIDTH], "digits": digits, "instances": inst}


def _x_positions(first_x: np.ndarray, width: np.ndarray, gap: np.ndarray) -> np.ndarray:
    """Left edges (m,4), left to right; a row wider than the canvas is compressed to fit."""
    gap = np.maximum(gap, -(np.minimum(width[:, :3], width[:, 1:]) // 2))  # overlap, but never hide a digit
    step = width[:, :3] + gap
    x = first_x[:, None] + np.concatenate([np.zeros((len(step), 1), np.int64), np.cumsum(step, 1)], 1)
    last = x[:, 3:]
    room = WIDTH - width[:, 3:]
    x = np.where(last > room, x * room // last, x)  # integer arithmetic: exact everywhere (last >= 3)
    return np.minimum(x, WIDTH - width)


def _synth003_chunk(rng: np.random.Generator, src: _Source, pool: str, m: int) -> dict[str, np.ndarray]:
    """Report 003's composite: four digits stretched into 40x42 cells, rotated, scaled, plus noise."""
    digits, inst = _draw_instances(rng, src.labels, pool, CHUNK)
    t = rng.uniform(-ROTATION_TAN, ROTATION_TAN, size=(CHUNK, 4))
    scale = rng.uniform(*SCALE_003, size=(CHUNK, 4))
    noise = rng.standard_normal(size=(CHUNK, HEIGHT, WIDTH))
    digits, inst, t, scale, noise = (a[:m] for a in (digits, inst, t, scale, noise))

    # Rotation from t = tan(angle/2): rational, so no sin/cos whose last bit could differ by machine.
    cos, sin = (1 - t * t) / (1 + t * t), 2 * t / (1 + t * t)
    vy = np.arange(HEIGHT)[None, :, None] + 0.5 - HEIGHT / 2
    vx = np.arange(CELL_W)[None, None, :] + 0.5 - CELL_W / 2
    cells = []
    for k in range(4):
        c, s, z = cos[:, k, None, None], sin[:, k, None, None], scale[:, k, None, None]
        sy = (c * vy + s * vx) / z * (28 / HEIGHT) + 13.5  # inverse map: cell pixel -> source pixel (centre 13.5)
        sx = (c * vx - s * vy) / z * (28 / CELL_W) + 13.5
        cells.append(_bilinear(src.table, inst[:, k], sy, sx))
    images = np.clip(np.rint(np.concatenate(cells, 2) + NOISE_003 * noise), 0, 255).astype(np.uint8)
    return {"images": images, "digits": digits, "instances": inst}


def make_synth(split: str, n: int, seed: int = 0, source=None) -> DigitSumData:
    """`n` DigitSum-Synth images of `split` (train/val: train/val pool, test: test pool)."""
    if split not in ("train", "val", "test"):
        raise BenchError(f"DigitSum-Synth: unknown split {split!r}; known: train, val, test")
    return _data(_generate(_synth_chunk, split, split, n, seed, source), _synth_name("synth", split, seed, source))


def compose_synth(digits: np.ndarray, labels: np.ndarray, instances: np.ndarray, n: int, seed: int,
                  name: str) -> DigitSumData:
    """`n` DigitSum-Synth images composed from any of the given digits (N,28,28) uint8 with labels (N,);
    `instances` (N,) is each digit's source index, which the images' `instances` report."""
    arrays = _compose(_synth_chunk, "train", "all", n, seed, digits, labels)
    arrays["instances"] = instances[arrays["instances"]]
    return _data(arrays, name)


def make_synth003(n: int, seed: int = 0, source=None) -> DigitSumData:
    """`n` images of report 003's synthetic training set, from train/val pool digits only."""
    return _data(_generate(_synth003_chunk, "synth003", "train", n, seed, source),
                 _synth_name("synth003", "train", seed, source))


def _synth_name(kind: str, split: str, seed: int, source) -> str:
    title = {"synth": "DigitSum-Synth", "synth003": "DigitSum-Synth003"}[kind]
    return f"{title} {GENERATOR_VERSION} {split}, seed {seed} ({_source_name(source)})"


def _data(arrays: dict[str, np.ndarray], name: str) -> DigitSumData:
    """A synthetic set from its generator arrays (images, digits, instances); sums follow from digits."""
    digits = arrays["digits"]
    return DigitSumData(arrays["images"], digits.sum(1), digits, name, arrays["instances"])


def _arrays(data: DigitSumData) -> dict[str, np.ndarray]:
    return {"images": data.images, "digits": data.digits, "instances": data.instances}


def load_synth(kind: str, split: str, n: int, seed: int = 0, source=None) -> DigitSumData:
    """`make_synth` (kind "synth") or `make_synth003` (kind "synth003", train only), cached on disk."""
    if kind not in ("synth", "synth003"):
        raise BenchError(f"unknown synthetic data kind {kind!r}; known: synth, synth003")
    if kind == "synth003" and split != "train":
        raise BenchError(f"synth003: report 003's generator makes training data only, not {split!r}")
    if not 1 <= n <= MAX_IMAGES:
        raise BenchError(f"--n {n}: a generated set holds 1..{MAX_IMAGES:,} images")
    make = (lambda: make_synth(split, n, seed, source)) if kind == "synth" else (lambda: make_synth003(n, seed, source))
    path = _cache_dir() / f"{kind}-{GENERATOR_VERSION}-{_source_hash(source)}-seed{seed}-{split}-{n}.npz"
    arrays = _cached(path, lambda: _arrays(make()))
    return _data(arrays, _synth_name(kind, split, seed, source))
