"""The gate's own test: four subtle sabotages of training and scoring, each of which must fail the gate.

A sabotage patches the code the gate runs while the gate runs. Two change training (the learning
rate, the augmentation), so the gate retrains under them; the committed checkpoint's re-scoring, which
trains nothing and so never reaches what they change, may be shared with the unsabotaged gate's
(`run_sabotage`'s `scored`). Two change only what is scored (the test
images, the EMA weights): the committed baseline checkpoint then stands for the retrained model (the
model an unsabotaged retraining gives, up to float noise), and scoring it once under the sabotage
(`gate.rescore`) gives both the retrained runs' records and the re-scored ones: seconds instead of
minutes. Each sabotage names the checks that must catch it (`gate.outcome`'s names).

tests/test_gate.py runs the gate under each of them; `pytest tests/test_gate.py --save-sabotage` also
writes what each scored, per device, to `sabotage.json` beside the baseline (`save`), and
`report.sabotage_table` renders that file as markdown (a README section).
"""

from __future__ import annotations

import json
import shutil
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator
from unittest.mock import patch

from ..engine import runner, train
from ..store import write_json_atomic
from .gate import CHECKPOINTS, RETRAINED, judge, outcome, read_baseline, rescore, run_gate

FILE = "sabotage.json"  # beside the baseline file


@dataclass(frozen=True)
class Sabotage:
    name: str  # key in sabotage.json, test id
    what: str  # the table's wording
    retrains: bool  # changes training, so the gate retrains under it; otherwise only scoring changes
    caught_by: tuple[str, ...]  # the gate's checks that must fail under it: accuracy, training, scoring
    patch: Callable[[], AbstractContextManager]  # active while the gate runs


@contextmanager
def _lr_divided_by_10() -> Iterator[None]:
    def tenth(make):
        return lambda recipe, *a: make(replace(recipe, lr=recipe.lr / 10), *a)

    with patch.object(train, "make_optimizer", tenth(train.make_optimizer)), \
            patch.object(train, "make_scheduler", tenth(train.make_scheduler)):
        yield


@contextmanager
def _test_shifted_4px_down() -> Iterator[None]:
    real = runner.load_data

    def shifted(*a, **k):
        splits = real(*a, **k)
        moved = splits.test.images.copy()
        moved[:, 4:, :] = splits.test.images[:, :-4, :]
        moved[:, :4, :] = 0  # black above
        return replace(splits, test=replace(splits.test, images=moved))

    with patch.object(runner, "load_data", shifted):
        yield


@contextmanager
def _augmentation_off() -> Iterator[None]:
    with patch.object(train, "augment", lambda x, generator, normalize="course": x):
        yield


@contextmanager
def _ema_never_applied() -> Iterator[None]:
    real = runner.fit

    def raw_weights(recipe, model, *a, **k):
        _, summary = real(recipe, model, *a, **k)
        return model, summary  # the trained weights, not their EMA

    with patch.object(runner, "fit", raw_weights):
        yield


SABOTAGES = {s.name: s for s in (
    Sabotage("lr_divided_by_10", "learning rate divided by 10", True, ("accuracy", "training"), _lr_divided_by_10),
    Sabotage("test_shifted_4px", "test images shifted 4 px down", False, ("accuracy", "scoring"), _test_shifted_4px_down),
    Sabotage("augmentation_off", "augmentation silently off", True, ("training",), _augmentation_off),
    Sabotage("ema_never_applied", "EMA weights never used at evaluation", False, ("scoring",), _ema_never_applied),
)}  # fmt: skip


def run_sabotage(sabotage: Sabotage, baseline_path: Path, results: Path,
                 scored: Path | None = None) -> tuple[bool, str, dict]:
    """The gate under `sabotage`, into a fresh `results`: (passed, its table, `gate.outcome`).

    A sabotage of training alone may take its re-scored checkpoints from `scored` (an unsabotaged
    `gate.rescore`'s folder): scoring a finished checkpoint never reaches the code it changes."""
    results, baseline = Path(results), read_baseline(baseline_path)
    shutil.rmtree(results, ignore_errors=True)  # a finished record would not be run again
    with sabotage.patch():
        if sabotage.retrains:
            ok, table = run_gate(baseline_path, results, scored=scored)
        else:
            rescored = rescore(baseline, Path(baseline_path).parent / CHECKPOINTS, results / "rescored")
            shutil.copytree(results / "rescored", results / RETRAINED)
            ok, table = judge(baseline, results / RETRAINED, rescored)
    return ok, table, outcome(baseline, results)


def save(baseline_path: Path, device: str, measured: dict) -> dict:
    """Merge what the gate's tests measured on `device` into the sabotage.json beside the baseline; returns it.

    `measured` has "clean" (`gate.outcome` of the unsabotaged gate) and "sabotages" ({name: `gate.outcome`}),
    either possibly partial; each device keeps its own entry, since bf16 and float32 score differently."""
    path = Path(baseline_path).parent / FILE
    found = json.loads(path.read_text()) if path.is_file() else {}
    found["what"] = ("the CI gate under each sabotage, per device, as its tests measured it: "
                     "`pytest tests/test_gate.py --save-sabotage`")
    entry = found.setdefault("devices", {}).setdefault(device, {"sabotages": {}})
    entry["baseline"] = {name: {k: ref[k] for k in ("test_exact", "train_loss")}
                         for name, ref in read_baseline(baseline_path)["recipes"].items()}
    if "clean" in measured:
        entry["clean"] = measured["clean"]
    for name, numbers in measured.get("sabotages", {}).items():
        s = SABOTAGES[name]
        entry["sabotages"][name] = {"what": s.what, "caught_by": list(s.caught_by), "recipes": numbers}
    write_json_atomic(path, found)
    return found
