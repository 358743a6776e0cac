"""The CI accuracy gate: it passes on the committed baselines, and subtle sabotage makes it fail.

The gate's run is trained once per session (`gate_run`, about 2 minutes on 2 cores). Two
sabotages need training of their own (augmentation off, learning rate / 10); the other two
only change what is scored, so they reuse the gate run's final checkpoint (`fit` resumes
after its last epoch and trains nothing).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from digitsum_bench import gate, train
from digitsum_bench.errors import BenchError

BASELINE = Path(__file__).resolve().parent.parent / "results" / "baselines" / "ci.json"
FOLDER = f"threads{gate.THREADS[0]}"  # where run_gate trains


@pytest.fixture(scope="module")
def gate_run(tmp_path_factory):
    """The gate retrained once on the committed baseline: (results folder, passed, table)."""
    results = tmp_path_factory.mktemp("gate")
    ok, table = gate.run_gate(BASELINE, results)
    return results, ok, table


def from_checkpoints(gate_run, tmp_path) -> Path:
    """A results folder holding the gate run's checkpoints but no records: the next run only scores."""
    results = tmp_path / "rescored"
    shutil.copytree(gate_run[0] / FOLDER / "checkpoints", results / FOLDER / "checkpoints")
    return results


def assert_gate_fails(ok: bool, table: str) -> None:
    print(table)  # with -s: what each sabotage scored
    assert not ok, table
    row = next(line for line in table.splitlines() if line.strip().startswith("ours_digitsum"))
    assert "FAIL" in row, table  # the table names the regressed recipe
    assert "gate FAILED" in table


def test_gate_passes_on_committed_baseline(gate_run):
    _, ok, table = gate_run
    print(table)
    assert ok, table
    for name in json.loads(BASELINE.read_text())["recipes"]:
        assert name in table


def test_committed_baseline_learns_and_its_tolerance_is_measured():
    baseline = gate.read_baseline(BASELINE)
    assert baseline["budget"] == "ci"
    for name, ref in baseline["recipes"].items():
        assert ref["test_exact"] >= gate.MIN_ACCURACY, name  # a drop from here means something
        measured = baseline["measurement"]["recipes"][name]
        runs = measured["test_exact_by_threads_and_seed"]
        assert set(runs) == {str(n) for n in gate.THREADS}
        assert all(set(by_seed) == {str(s) for s in gate.MEASURE_SEEDS} for by_seed in runs.values())
        assert ref["test_exact"] == runs[str(gate.THREADS[0])][str(gate.GATE_SEEDS[0])]
    for m in baseline["measurement"]["recipes"].values():
        deltas = [abs(m["test_exact_by_threads_and_seed"][str(gate.THREADS[0])][s] - by_seed[s])
                  for n, by_seed in m["test_exact_by_threads_and_seed"].items() if n != str(gate.THREADS[0])
                  for s in by_seed]
        assert m["rms_thread_delta"] == pytest.approx((sum(d * d for d in deltas) / len(deltas)) ** 0.5)
        assert baseline["tolerance"] >= gate.TOLERANCE_FACTOR * m["rms_thread_delta"] - 1e-9
    assert baseline["tolerance"] >= gate.MIN_TOLERANCE


@pytest.mark.xfail(reason="measured: at the ci budget (1 epoch) augmentation off scores 89.36% vs the baseline's 89.10% "
                          "(seed 0, 2 threads), inside the 2.1-point noise; test_runner::test_training_batches_are_augmented "
                          "catches it instead", strict=False)
def test_gate_fails_with_augmentation_silently_off(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "augment", lambda x, generator, normalize="course": x)
    assert_gate_fails(*gate.run_gate(BASELINE, tmp_path))


def test_gate_fails_with_learning_rate_divided_by_10(tmp_path, monkeypatch):
    real = train.make_optimizer
    monkeypatch.setattr(train, "make_optimizer", lambda recipe, *a: real(replace(recipe, lr=recipe.lr / 10), *a))
    real_sched = train.make_scheduler
    monkeypatch.setattr(train, "make_scheduler", lambda recipe, *a: real_sched(replace(recipe, lr=recipe.lr / 10), *a))
    assert_gate_fails(*gate.run_gate(BASELINE, tmp_path))


@pytest.mark.xfail(reason="measured: at the ci budget the raw weights score 0.32 points above the EMA (89.42% vs "
                          "89.10%, seed 0, 2 threads): an annealed schedule leaves the two alike, so no accuracy gate "
                          "can see this; test_runner::test_the_ema_weights_are_what_is_scored catches it instead",
                   strict=False)
def test_gate_fails_when_ema_is_never_applied_at_evaluation(gate_run, tmp_path, monkeypatch):
    real = train.fit

    def raw_weights(recipe, model, *a, **k):
        _, summary = real(recipe, model, *a, **k)
        return model, summary  # the trained weights, not their EMA

    monkeypatch.setattr(train, "fit", raw_weights)
    assert_gate_fails(*gate.run_gate(BASELINE, from_checkpoints(gate_run, tmp_path)))


def test_gate_fails_when_test_images_are_shifted_by_4_pixels(gate_run, tmp_path, monkeypatch):
    real = train.load_data

    def shifted(*a, **k):
        splits = real(*a, **k)
        test = splits.test
        moved = test.images.copy()
        moved[:, 4:, :] = test.images[:, :-4, :]  # 4 px down, black above
        moved[:, :4, :] = 0
        return replace(splits, test=replace(test, images=moved))

    monkeypatch.setattr(train, "load_data", shifted)
    assert_gate_fails(*gate.run_gate(BASELINE, from_checkpoints(gate_run, tmp_path)))


def test_missing_or_corrupt_baseline(tmp_path):
    with pytest.raises(BenchError, match="no baseline"):
        gate.read_baseline(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(BenchError, match="bad.json: corrupt baseline"):
        gate.read_baseline(tmp_path / "bad.json")
