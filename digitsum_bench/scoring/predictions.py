"""Scoring a CSV of predicted sums from a model trained elsewhere.

The CSV has one row per image: `index,sum`, where `index` is the image's position in the dataset
(0..N-1, any order) and `sum` its predicted sum (an integer 0..36). An optional `expected_sum` column
(the unrounded prediction), or the 37 probability columns `p0`..`p36`, feeds `mse_raw`. It is scored
with the same `metrics.compute_metrics` as the runner's own checkpoints (`score`, which exported models'
scoring uses too), on any dataset `data.load_path` reads. The file is read capped, every cell checked.
"""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path

import numpy as np

from .. import data as datamod
from ..engine import metrics
from ..errors import BenchError, first_line
from ..store import atomic_write, read_capped

PROB_COLUMNS = tuple(f"p{s}" for s in range(metrics.N_SUMS))
CSV_HEADER_BYTES, CSV_ROW_BYTES = 4096, 2048  # a predictions CSV's size limit: 37 probabilities fit a row
NUMBER = re.compile(r"\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*")  # no 1_0, nan, inf, 0x1p3


def read_predictions(path: str | Path, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Predicted sums (n,) in dataset order and the unrounded sums (n,) or None, from a CSV.

    Every problem is a BenchError naming the file and, where there is one, the line.
    """
    path = Path(path)
    if not path.exists():
        raise BenchError(f"{path}: no such predictions file")
    raw = read_capped(path, CSV_HEADER_BYTES + n * CSV_ROW_BYTES, "too large for predictions of the data's images")
    try:  # utf-8-sig: spreadsheet programs start a CSV with a byte-order mark
        lines = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    except (UnicodeDecodeError, csv.Error) as e:
        raise BenchError(f"{path}: cannot read predictions ({first_line(e)})") from None
    while lines and not any(cell.strip() for cell in lines[-1]):  # trailing blank lines are harmless
        lines.pop()
    if not lines:
        raise BenchError(f"{path}: empty; expected a header line index,sum")
    header = [c.strip() for c in lines[0]]
    _check_header(path, header)
    rows = lines[1:]
    if len(rows) != n:
        raise BenchError(f"{path}: {len(rows)} prediction rows for {n} images in the data")
    col = {name: i for i, name in enumerate(header)}
    for lineno, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise BenchError(f"{path}: line {lineno} has {len(row)} fields, the header {len(header)}")
    index = np.array([_integer(path, k, "index", row[col["index"]], 0, n - 1) for k, row in enumerate(rows, start=2)],
                     dtype=np.int64)
    _check_indexes(path, index, n)
    pred = np.empty(n, dtype=np.int64)
    pred[index] = [_integer(path, k, "sum", row[col["sum"]], 0, metrics.N_SUMS - 1) for k, row in enumerate(rows, start=2)]
    raw = None
    if "expected_sum" in col:
        raw = np.empty(n)
        raw[index] = [_real(path, k, "expected_sum", row[col["expected_sum"]]) for k, row in enumerate(rows, start=2)]
    elif len(header) > 2:
        raw = np.empty(n)
        raw[index] = [_expected_from_probs(path, k, [row[col[c]] for c in PROB_COLUMNS])
                      for k, row in enumerate(rows, start=2)]
    return pred, raw


def _check_indexes(path: Path, index: np.ndarray, n: int) -> None:
    """n rows whose indexes lie in 0..n-1: each index once, or one is missing and another repeated."""
    counts = np.bincount(index, minlength=n)
    if (counts == 1).all():
        return
    missing, twice = int(np.argmin(counts)), int(np.argmax(counts))
    lines = ", ".join(str(k + 2) for k in np.flatnonzero(index == twice)[:3])
    raise BenchError(f"{path}: index {missing} is missing ({(counts == 0).sum()} in all; "
                     f"index {twice} appears {counts[twice]} times, lines {lines})")


def _check_header(path: Path, header: list[str]) -> None:
    expected = "index,sum[,expected_sum | ,p0,...,p36]"
    missing = [c for c in ("index", "sum") if c not in header]
    if missing:
        raise BenchError(f"{path}: no column {' or '.join(missing)} in the header; expected {expected}")
    extra = [c for c in header if c not in ("index", "sum")]
    probs = [c for c in extra if c in PROB_COLUMNS]
    unknown = [c for c in extra if c not in PROB_COLUMNS and c != "expected_sum"]
    if unknown:
        raise BenchError(f"{path}: unknown column(s) {', '.join(unknown)}; expected {expected}")
    if len(set(header)) != len(header):
        raise BenchError(f"{path}: a column appears twice in the header")
    if probs and "expected_sum" in header:
        raise BenchError(f"{path}: give expected_sum or the probability columns p0..p36, not both")
    if probs and len(probs) != len(PROB_COLUMNS):
        lacking = [c for c in PROB_COLUMNS if c not in probs]
        raise BenchError(f"{path}: probability columns p0..p36 incomplete (missing {', '.join(lacking[:3])}"
                         f"{', ...' if len(lacking) > 3 else ''})")


def _integer(path: Path, lineno: int, what: str, text: str, low: int, high: int) -> int:
    """An integer cell; '7' and '7.0' are 7, '7.5', '1_0' and 'x' are errors."""
    value = float(text) if NUMBER.fullmatch(text) else math.nan
    if not value.is_integer():
        raise BenchError(f"{path}: line {lineno}: {what} {text.strip()[:40]!r} is not an integer")
    if not low <= value <= high:
        raise BenchError(f"{path}: line {lineno}: {what} {int(value)} is outside {low}..{high}")
    return int(value)


def _real(path: Path, lineno: int, what: str, text: str) -> float:
    """A decimal number cell (Python's own spellings 'nan', 'inf' and '1_0' are not numbers in a CSV)."""
    if not NUMBER.fullmatch(text):
        raise BenchError(f"{path}: line {lineno}: {what} {text.strip()[:40]!r} is not a number")
    value = float(text)
    if not math.isfinite(value):
        raise BenchError(f"{path}: line {lineno}: {what} {text.strip()[:40]} is too large")
    return value


def _expected_from_probs(path: Path, lineno: int, cells: list[str]) -> float:
    """The expected sum under one row's 37 probabilities, which must be a distribution."""
    p = np.array([_real(path, lineno, f"p{s}", c) for s, c in enumerate(cells)])
    if (p < 0).any() or abs(p.sum() - 1) > 1e-3:
        raise BenchError(f"{path}: line {lineno}: p0..p36 are not probabilities (negative, or sum {p.sum():.4g} != 1)")
    return float(p @ np.arange(metrics.N_SUMS))


def write_predictions(path: str | Path, pred: np.ndarray, raw: np.ndarray | None = None) -> None:
    """Write predictions in the format `read_predictions` reads (index,sum[,expected_sum])."""
    lines = ["index,sum" + (",expected_sum" if raw is not None else "")]
    for i, s in enumerate(np.asarray(pred).reshape(-1)):
        lines.append(f"{i},{int(s)}" + (f",{float(raw[i])!r}" if raw is not None else ""))
    with atomic_write(Path(path)) as f:
        f.write(("\n".join(lines) + "\n").encode())


def evaluate_predictions(predictions: str | Path, data_path: str | Path) -> dict:
    """Score a predictions CSV on a dataset file or folder."""
    data = datamod.load_path(data_path)
    pred, raw = read_predictions(predictions, len(data))
    return {"predictions": str(predictions), "data": str(data_path), **score(pred, data.sums, raw, predictions)}


def score(pred: np.ndarray, sums: np.ndarray, raw: np.ndarray | None, source: str | Path) -> dict:
    """The metrics `evaluate` prints, all finite: JSON has no Infinity."""
    with np.errstate(over="ignore"):  # refused below, in one line
        result = metrics.compute_metrics(pred, sums, raw=raw)
    summary = metrics.summary(result)
    overflow = [k for k, v in summary.items() if isinstance(v, float) and not math.isfinite(v)]
    if overflow:
        raise BenchError(f"{source}: {overflow[0]} overflows: unrounded predictions too far outside 0..36")
    return summary
