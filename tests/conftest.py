"""Shared fixtures: a private dataset cache and a tiny registered recipe for runner tests."""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace

import pytest
import torch.nn as nn

# Generated datasets are cached on disk; keep the tests' cache out of the user's home.
os.environ.setdefault("DIGITSUM_CACHE", os.path.join(tempfile.gettempdir(), "digitsum-bench-test-cache"))

# `DIGITSUM_RECIPES_FROM=mymethods.py pytest tests/test_recipes.py` puts a user's own recipes
# through the registry-wide tests (build, forward and backward, FLOPs) with no test change.
if os.environ.get("DIGITSUM_RECIPES_FROM"):
    from digitsum_bench.registry.recipes import load_recipes_from

    load_recipes_from(*os.environ["DIGITSUM_RECIPES_FROM"].split(os.pathsep))


def pytest_addoption(parser):
    parser.addoption("--save-sabotage", action="store_true",
                     help="write what tests/test_gate.py's gate runs measured to results/baselines/sabotage.json")
    parser.addoption("--save-test-time", action="store_true",
                     help="when every test passed, write the run's time on this CPU to results/baselines/test-time.json")


# `pytest --save-test-time`: the suite's wall time and slowest tests on this CPU, a README section (`report`).
_TIMES: dict[str, float] = {}  # test id -> setup + call + teardown seconds
_PASSED: set[str] = set()


def pytest_sessionstart(session):
    import time

    import torch

    session.config.stash["started"] = (time.monotonic(), torch.get_num_threads())


def pytest_runtest_logreport(report):
    _TIMES[report.nodeid] = _TIMES.get(report.nodeid, 0.0) + report.duration
    if report.when == "call" and report.passed:
        _PASSED.add(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    import datetime as dt
    import json
    import time
    from pathlib import Path

    if not session.config.getoption("--save-test-time"):
        return
    if exitstatus != 0:
        print(f"\n--save-test-time: not saved, pytest exited {exitstatus}")
        return
    from digitsum_bench.engine.devices import cpu_arithmetic
    from digitsum_bench.reporting.report import TEST_TIME
    from digitsum_bench.store import write_json_atomic

    started, threads = session.config.stash["started"]
    args = [a for a in session.config.invocation_params.args if not a.startswith(("--save-", "--durations"))]
    command = " ".join(["pytest", *(f'"{a}"' if " " in a else a for a in args)])
    path = Path(__file__).resolve().parent.parent / "results" / "baselines" / TEST_TIME
    found = json.loads(path.read_text()) if path.is_file() else {"runs": {}}
    found["what"] = "the test suite's wall time per CPU and command: `pytest --save-test-time` (README: `report`)"
    slowest = sorted(_TIMES.items(), key=lambda kv: -kv[1])[:10]
    found["runs"][f"{cpu_arithmetic()}, {threads} threads: {command}"] = {
        "cpu": cpu_arithmetic(), "threads": threads, "command": command, "passed": len(_PASSED),
        "seconds": round(time.monotonic() - started, 1), "date": dt.date.today().isoformat(),
        "slowest": [{"test": name, "seconds": round(sec, 1)} for name, sec in slowest]}
    write_json_atomic(path, found)


class TinyNet(nn.Module):
    """A few thousand parameters: enough to learn something in seconds, with dropout to exercise RNG."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(), nn.BatchNorm2d(8),
            nn.AdaptiveAvgPool2d((2, 8)), nn.Flatten(), nn.Dropout(0.2), nn.Linear(128, 1),
        )

    def forward(self, x):
        return self.net(x).squeeze(1)


@pytest.fixture
def tiny_recipe():
    """Registers `tiny_test` (3 epochs on 128 images, EMA, best-val selection) for the test's duration."""
    from digitsum_bench.registry import recipes

    base = recipes.Recipe(
        name="tiny_test", report="test", method="tiny regression CNN", model=TinyNet, head="regression",
        loss="mse", optimizer="adamw", lr=3e-3, schedule="onecycle", epochs=3, batch_size=32, ema_decay=0.9,
        train_size=128, val_size=64, selection="best_val_exact", augment=True, assumptions=("test only",),
    )
    recipes._REGISTRY["tiny_test"] = lambda: base
    yield base
    recipes._REGISTRY.pop("tiny_test", None)


@pytest.fixture
def variant(tiny_recipe):
    """Register a variant of the tiny recipe under a new name."""
    from digitsum_bench.registry import recipes

    names = []

    def make(name: str, **changes):
        recipes._REGISTRY[name] = lambda: replace(tiny_recipe, name=name, **changes)
        names.append(name)
        return name

    yield make
    for n in names:
        recipes._REGISTRY.pop(n, None)
