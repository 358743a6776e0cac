"""The splits a run uses (train/val/test of DigitSum-Synth or of the course files) and their dataset id,
which names the data family, never the sizes."""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np

from ..errors import BenchError
from .course import load_path
from .generators import load_synth
from .sets import GENERATOR_VERSION, DigitSumData, Splits
from .sources import _source_hash, _source_name


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
