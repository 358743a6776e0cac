"""One evaluation module for every head type and every caller.

Predicted sums come from any head: a regression output is rounded and clamped to 0..36,
a 37-way head by argmax, four digit heads by summing the most likely digits or by the most
likely sum of the exact sum distribution. All error metrics (MSE, RMSE, MAE) are computed on
those integer predictions, so that heads of different kinds are compared on the same footing.

`mse_raw` is the other MSE, of the unrounded output (`expected_sums`): the one the reports
quote (report 002's MSE is of raw outputs, its MAE of rounded ones; report 004 quotes its
MSE loss), so that each claim can be set beside the measurement of its own definition.
`digit_accuracy`, the fraction of the four digits read right, is measured where a digit head
(`predict_digits`) meets data with digit labels, and is missing otherwise.

What each metric is called, how it is shown and checked is the metrics table (metric_table.py,
re-exported here): it lives apart because claims.py and schema.py read it without torch. A new
metric is an entry there and its computation in `compute_metrics`.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import confusion_matrix

from ..errors import BenchError
from ..metric_table import METRIC_TABLE, Metric, TableView  # noqa: F401  (re-exported: the metrics table)
from ..schema import N_SUMS


def predict_sums(output: torch.Tensor, head: str, decode: str = "sum_of_digits") -> torch.Tensor:
    """Integer sums (B,) from a model's raw output for the given head type."""
    output = output.float()
    if head == "regression":
        return output.reshape(-1).round().clamp(0, N_SUMS - 1).long()
    if head == "sum37":
        return output.argmax(dim=1)
    if head == "digits4":
        if decode == "sum_of_digits":
            return output.argmax(dim=2).sum(dim=1)
        if decode == "most_likely_sum":
            from ..registry.losses import sum_log_probs

            return sum_log_probs(output).argmax(dim=1)
        raise BenchError(f"unknown digit decoding {decode!r}")
    raise BenchError(f"head {head!r} does not predict sums")


def expected_sums(out: torch.Tensor, head: str) -> torch.Tensor:
    """Unrounded predicted sums (B,) float: the regression output itself, the expected sum under a
    37-way softmax, or the sum of the four digits' expected values under their softmaxes."""
    out = out.float()
    if head == "regression":
        return out.reshape(-1)
    if head == "sum37":
        return out.softmax(dim=1) @ torch.arange(N_SUMS, dtype=out.dtype, device=out.device)
    if head == "digits4":
        return (out.softmax(dim=2) @ torch.arange(10, dtype=out.dtype, device=out.device)).sum(dim=1)
    raise BenchError(f"head {head!r} does not predict sums")


def predict_digits(output: torch.Tensor, head: str) -> torch.Tensor | None:
    """The most likely digit at each of the four places (B,4), for a head that reads digits; None for one that
    does not (the sum's digits cannot be told from a sum)."""
    return output.argmax(dim=2) if head == "digits4" else None


def compute_metrics(pred: np.ndarray, true: np.ndarray, raw: np.ndarray | None = None,
                    digits: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """Exact and within-one accuracy (fractions), MSE, RMSE, MAE, per-sum accuracy and confusion.

    `per_sum[s]` is the exact accuracy over images whose true sum is s (None where none occur);
    `confusion[t][p]` counts images of true sum t predicted as p. With `raw`, the unrounded
    predicted sums (`expected_sums`), the result also has `mse_raw`, their MSE. With `digits`,
    the (predicted, true) digits (N,4) (`predict_digits`, the data's labels), it also has
    `digit_accuracy`, the fraction of the 4N digits predicted right.
    """
    pred = np.asarray(pred, dtype=np.int64).reshape(-1)
    true = np.asarray(true, dtype=np.int64).reshape(-1)
    if pred.shape != true.shape:
        raise BenchError(f"metrics: {pred.size} predictions for {true.size} labels")
    if raw is not None:
        raw = np.asarray(raw, dtype=np.float64).reshape(-1)
        if raw.shape != true.shape:
            raise BenchError(f"metrics: {raw.size} raw predictions for {true.size} labels")
    if pred.size == 0:
        raise BenchError("metrics: no predictions to score")
    err = (pred - true).astype(np.float64)
    counts = np.bincount(true, minlength=N_SUMS)
    hits = np.bincount(true[pred == true], minlength=N_SUMS)
    per_sum = [float(h / c) if c else None for h, c in zip(hits, counts)]
    mse = float(np.mean(err**2))
    result = {
        "n": int(true.size),
        "exact": float(np.mean(err == 0)),
        "within_one": float(np.mean(np.abs(err) <= 1)),
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
        "mae": float(np.mean(np.abs(err))),
        "per_sum": per_sum,
        "confusion": confusion_matrix(true, pred, labels=np.arange(N_SUMS)).tolist(),
    }
    if raw is not None:
        result["mse_raw"] = float(np.mean((raw - true) ** 2))
    if digits is not None:
        result["digit_accuracy"] = digit_accuracy(*digits)
    return result


def digit_accuracy(pred: np.ndarray, true: np.ndarray) -> float:
    """The fraction of digits predicted right, over every place of every image: (N,4) predicted and true digits."""
    pred, true = np.asarray(pred, dtype=np.int64), np.asarray(true, dtype=np.int64)
    if pred.shape != true.shape or pred.ndim != 2 or pred.size == 0:
        raise BenchError(f"metrics: predicted digits of shape {pred.shape} for true digits of shape {true.shape}")
    return float(np.mean(pred == true))


SUMMARY_KEYS = ("n", *(name for name, m in METRIC_TABLE.items() if m.required))  # in every record's splits


def summary(result: dict) -> dict:
    """What `evaluate` reports of `compute_metrics`' result: SUMMARY_KEYS, the optional metrics it has, per_sum."""
    optional = [name for name, m in METRIC_TABLE.items() if not m.required and name in result]
    return {k: result[k] for k in (*SUMMARY_KEYS, *optional, "per_sum")}


def format_table(metrics_by_split: dict[str, dict | None]) -> str:
    """A small text table of the summary metrics, one row per split."""
    lines = [f"{'split':<6} {'n':>6} {'exact':>8} {'within1':>8} {'mse':>8} {'rmse':>8} {'mae':>8}"]
    for split, m in metrics_by_split.items():
        if m is None:
            continue
        lines.append(
            f"{split:<6} {m['n']:>6} {100 * m['exact']:>7.2f}% {100 * m['within_one']:>7.2f}% "
            f"{m['mse']:>8.4f} {m['rmse']:>8.4f} {m['mae']:>8.4f}"
        )
    return "\n".join(lines)
