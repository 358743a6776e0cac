"""Course files: folders of `data*.npy` + `lab*.npy` pairs, or one .npz, read and validated (shapes, dtypes,
sizes checked before numpy allocates) so that a bad file is a one-line error."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..errors import BenchError
from .sets import HEIGHT, MAX_DATA_BYTES, WIDTH, DigitSumData


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
