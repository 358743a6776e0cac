"""The CI accuracy gate: retrain a few fast recipes under the `ci` budget and compare with baselines.

Refresh the committed baselines after an intended change with::

    digitsum-bench gate --update
"""

from __future__ import annotations

import json
from pathlib import Path

from . import report
from .errors import BenchError
from .store import write_json_atomic
from .train import run_one

# Recipes that learn in minutes on 2 CPU cores under --budget ci.
GATE_RECIPES = ("ours_digitsum", "r003_convnet4")
GATE_SEEDS = (0,)
TOLERANCE = 0.03  # absolute exact accuracy: below baseline - 3 points is a regression


def read_baseline(path: Path) -> dict:
    """The committed baseline, or a BenchError naming the file."""
    try:
        baseline = json.loads(Path(path).read_text())
        baseline["recipes"]
    except FileNotFoundError:
        raise BenchError(f"{path}: no baseline; make one with `digitsum-bench gate --update`") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BenchError(f"{path}: corrupt baseline ({type(e).__name__}: {e})") from None
    return baseline


def run_gate(baseline_path: Path, results: Path, update: bool = False, retrain: bool = True) -> tuple[bool, str]:
    """Retrain the baseline recipes (CPU, ci budget) into `results` and compare, or refresh the baseline."""
    baseline = None if update and not Path(baseline_path).exists() else read_baseline(baseline_path)
    recipes = list(baseline["recipes"]) if baseline else list(GATE_RECIPES)
    seeds = sorted({s for r in baseline["recipes"].values() for s in r["seeds"]}) if baseline else list(GATE_SEEDS)
    if retrain:
        for name in recipes:
            for seed in seeds:
                run_one(name, seed, budget="ci", data="synth", results=results, device="cpu", force=update,
                        seeds_requested=seeds, progress=False)
    records = report.load_records(Path(results))
    if update:
        tolerance = baseline.get("tolerance", TOLERANCE) if baseline else TOLERANCE
        baseline = report.make_baseline(records, recipes, tolerance)
        write_json_atomic(Path(baseline_path), baseline)
    return report.check_gate(records, baseline)
