"""The CI accuracy gate: it passes on the committed baselines, and subtle sabotage makes it fail.

The gate's run is trained once per session (`gate_run`, about 2 minutes on 2 cores). Two
sabotages need training of their own (augmentation off, learning rate / 10); the other two
only change what is scored, so they reuse the gate run's final checkpoint (`fit` resumes
after its last epoch and trains nothing). Every gate run also scores the committed baseline
checkpoint again (`gate.rescore`).
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
    rows = [line for line in table.splitlines() if line.strip().startswith("ours_digitsum")]
    assert any("FAIL" in row for row in rows), table  # a check's table names the regressed recipe
    assert "gate FAILED" in table


def test_gate_passes_on_committed_baseline(gate_run):
    _, ok, table = gate_run
    print(table)
    assert ok, table
    for name in json.loads(BASELINE.read_text())["recipes"]:
        assert name in table


def test_committed_baseline_learns_and_its_tolerances_are_measured():
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
        losses = m["train_loss_by_threads_and_seed"]
        loss_deltas = [losses[str(gate.THREADS[0])][s] - by_seed[s] for n, by_seed in losses.items()
                       if n != str(gate.THREADS[0]) for s in by_seed]
        rms = (sum(d * d for d in loss_deltas) / len(loss_deltas)) ** 0.5
        assert m["rms_thread_delta_train_loss"] == pytest.approx(rms)
        assert baseline["loss_tolerance"] >= gate.TOLERANCE_FACTOR * m["rms_thread_delta_train_loss"] - 1e-9
    assert baseline["tolerance"] >= gate.MIN_TOLERANCE
    for name, ref in baseline["recipes"].items():
        measured = baseline["measurement"]["recipes"][name]["train_loss_by_threads_and_seed"]
        assert ref["train_loss"] == measured[str(gate.THREADS[0])][str(gate.GATE_SEEDS[0])]
        for seed in ref["seeds"]:  # the baseline run's own checkpoint, scored again by every gate run
            assert (BASELINE.parent / gate.CHECKPOINTS / name / f"seed{seed}" / "last.pt").is_file()


def test_gate_fails_with_augmentation_silently_off(tmp_path, monkeypatch):
    """Measured: 89.36% test exact, inside the accuracy noise; the training loss falls from 2.243 to 2.060."""
    monkeypatch.setattr(train, "augment", lambda x, generator, normalize="course": x)
    ok, table = gate.run_gate(BASELINE, tmp_path)
    assert_gate_fails(ok, table)
    assert "training loss moved" in table


def test_gate_fails_with_learning_rate_divided_by_10(tmp_path, monkeypatch):
    real = train.make_optimizer
    monkeypatch.setattr(train, "make_optimizer", lambda recipe, *a: real(replace(recipe, lr=recipe.lr / 10), *a))
    real_sched = train.make_scheduler
    monkeypatch.setattr(train, "make_scheduler", lambda recipe, *a: real_sched(replace(recipe, lr=recipe.lr / 10), *a))
    assert_gate_fails(*gate.run_gate(BASELINE, tmp_path))


def test_gate_fails_when_ema_is_never_applied_at_evaluation(gate_run, tmp_path, monkeypatch):
    real = train.fit

    def raw_weights(recipe, model, *a, **k):
        _, summary = real(recipe, model, *a, **k)
        return model, summary  # the trained weights, not their EMA

    monkeypatch.setattr(train, "fit", raw_weights)
    ok, table = gate.run_gate(BASELINE, from_checkpoints(gate_run, tmp_path))
    assert_gate_fails(ok, table)  # measured: the raw weights score 89.42%, the baseline's EMA 89.10%
    assert "re-scored checkpoints" in table.splitlines()[-1]


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


def test_a_missing_baseline_checkpoint_is_a_one_line_error(tmp_path):
    baseline = gate.read_baseline(BASELINE)
    with pytest.raises(BenchError, match=r"seed0/last.pt: no checkpoint of the baseline run; make one with"):
        gate.rescore(baseline, tmp_path / "none", tmp_path / "rescored")


def test_missing_or_corrupt_baseline(tmp_path):
    with pytest.raises(BenchError, match="no baseline"):
        gate.read_baseline(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(BenchError, match="bad.json: corrupt baseline"):
        gate.read_baseline(tmp_path / "bad.json")
