"""The disk cache of generated sets (`$DIGITSUM_CACHE`, or ~/.cache/digitsum-bench): `load_synth` makes a
set once and reads it back after; files are written atomically and an unreadable one is remade."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from ..errors import BenchError
from ..store import atomic_write


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
