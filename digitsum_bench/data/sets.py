"""The shapes every image has, the limits on what a data file may hold, and the two containers:
`DigitSumData` (one split of one source, as numpy arrays) and `Splits` (what one run uses)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


HEIGHT, WIDTH = 40, 168
COURSE_MEAN, COURSE_STD = 0.0607, 0.2194  # pixel mean/std after /255, used for normalisation

# Bump when a change alters any generated pixel: it is part of every synthetic dataset id.
GENERATOR_VERSION = "v1"
TEST_FRACTION = 0.2  # per class, the last 20% of the source digits form the test pool

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
