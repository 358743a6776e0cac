"""The CI accuracy gate: it passes on the committed baselines, and it bites when training is sabotaged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from digitsum_bench import gate, train
from digitsum_bench.errors import BenchError

BASELINE = Path(__file__).resolve().parent.parent / "results" / "baselines" / "ci.json"


def test_gate_passes_on_committed_baseline(tmp_path):
    ok, table = gate.run_gate(BASELINE, tmp_path)
    print(table)
    assert ok, table
    for name in json.loads(BASELINE.read_text())["recipes"]:
        assert name in table


def test_gate_reports_regression_when_training_is_sabotaged(tmp_path, monkeypatch):
    baseline = json.loads(BASELINE.read_text())
    name = "ours_digitsum"
    baseline["recipes"] = {name: baseline["recipes"][name]}
    path = tmp_path / "one.json"
    path.write_text(json.dumps(baseline))
    real = train.losses.compute_loss
    monkeypatch.setattr(train.losses, "compute_loss", lambda *a, **k: real(*a, **k) * 0.0)  # a zeroed loss
    ok, table = gate.run_gate(path, tmp_path / "runs")
    assert not ok
    row = next(line for line in table.splitlines() if line.strip().startswith(name))
    assert "FAIL" in row  # the table names the regressed recipe
    assert "gate FAILED" in table


def test_missing_or_corrupt_baseline(tmp_path):
    with pytest.raises(BenchError, match="no baseline"):
        gate.read_baseline(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(BenchError, match="bad.json: corrupt baseline"):
        gate.read_baseline(tmp_path / "bad.json")
