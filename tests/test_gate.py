"""The CI accuracy gate: it passes on the committed baselines, and subtle sabotage makes it fail.

The gate's run is trained once per session (`gate_run`, about 2 minutes on 2 cores). Two
sabotages need training of their own (augmentation off, learning rate / 10); the other two
only change what is scored, so they reuse the gate run's final checkpoint (`fit` resumes
after its last epoch and trains nothing). Every gate run also scores the committed baseline
checkpoint again (`gate.rescore`). The comparison itself (`gate.check_gate`, `gate.make_baseline`)
is tested on fake records, with no training.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from record_factory import DATASET_ID, make_record, write_record

from digitsum_bench import gate, runner, train
from digitsum_bench.errors import BenchError
from digitsum_bench.leaderboard import load_records

BASELINE = Path(__file__).resolve().parent.parent / "results" / "baselines" / "ci.json"
FOLDER = f"threads{gate.THREADS[0]}"  # where run_gate trains
A, B = "r002_attention_cnn", "r002_resnet50_pretrained"


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


def test_tolerances_cover_thread_counts_and_other_machines():
    """3 x the RMS of every same-seed difference from the baseline machine's 2-thread runs (hand-computed)."""
    measurement = {"recipes": {"r": {
        "test_exact_by_threads_and_seed": {"2": {"0": 0.90, "1": 0.88}, "1": {"0": 0.89, "1": 0.88}},
        "train_loss_by_threads_and_seed": {"2": {"0": 2.00, "1": 2.10}, "1": {"0": 2.00, "1": 2.10}}}},
        "machines": {}}
    baseline = gate.set_tolerances({"measurement": measurement})
    assert baseline["tolerance"] == pytest.approx(0.022)  # deltas 0.01, 0: rms 0.00707, x3 = 0.0212, rounded up
    assert baseline["loss_tolerance"] == gate.MIN_LOSS_TOLERANCE  # no loss moved: the floor
    measurement["machines"]["other cpu"] = {"r": {"test_exact_by_seed": {"0": 0.93, "1": 0.88},
                                                  "train_loss_by_seed": {"0": 2.04, "1": 2.10}}}
    baseline = gate.set_tolerances({"measurement": measurement})
    assert baseline["tolerance"] == pytest.approx(0.048)  # deltas 0.01, 0, 0.03, 0: rms 0.0158, x3 = 0.0474
    assert baseline["loss_tolerance"] == pytest.approx(0.06)  # deltas 0, 0, 0.04, 0: rms 0.02, x3


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
    again = gate.set_tolerances(copy.deepcopy(baseline))  # the committed tolerances follow from the measurement
    assert (again["tolerance"], again["loss_tolerance"]) == (baseline["tolerance"], baseline["loss_tolerance"])
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
    real = runner.fit

    def raw_weights(recipe, model, *a, **k):
        _, summary = real(recipe, model, *a, **k)
        return model, summary  # the trained weights, not their EMA

    monkeypatch.setattr(runner, "fit", raw_weights)
    ok, table = gate.run_gate(BASELINE, from_checkpoints(gate_run, tmp_path))
    assert_gate_fails(ok, table)  # measured: the raw weights score 89.42%, the baseline's EMA 89.10%
    assert "re-scored checkpoints" in table.splitlines()[-1]


def test_gate_fails_when_test_images_are_shifted_by_4_pixels(gate_run, tmp_path, monkeypatch):
    real = runner.load_data

    def shifted(*a, **k):
        splits = real(*a, **k)
        test = splits.test
        moved = test.images.copy()
        moved[:, 4:, :] = test.images[:, :-4, :]  # 4 px down, black above
        moved[:, :4, :] = 0
        return replace(splits, test=replace(test, images=moved))

    monkeypatch.setattr(runner, "load_data", shifted)
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


# ---------------------------------------------------------------------------- the comparison, on fake records


@pytest.fixture()
def ci_records(tmp_path):
    """Budget ci: A seeds 0, 1 with test exact .40 and .36 (mean .38)."""
    for seed, exact in [(0, 0.40), (1, 0.36)]:
        write_record(tmp_path, make_record(A, seed, budget="ci", test=exact))
    return load_records(tmp_path)


def ci_baseline(recipes: dict, tolerance: float = 0.03) -> dict:
    return {"budget": "ci", "dataset_id": DATASET_ID, "tolerance": tolerance, "recipes": recipes}


def test_check_gate_passes_within_tolerance(ci_records):
    ok, text = gate.check_gate(ci_records, ci_baseline({A: {"seeds": [0, 1], "test_exact": 0.41}}))
    assert ok, text  # .38 is exactly .41 - .03
    assert "gate passed" in text and re.search(rf"{A}\s+0,1\s+41.00\s+38.00\s+-3.00", text)


def test_check_gate_fails_below_tolerance(ci_records):
    ok, text = gate.check_gate(ci_records, ci_baseline({A: {"seeds": [0, 1], "test_exact": 0.41}}, tolerance=0.02))
    assert not ok
    assert f"gate FAILED: {A} (more than 2.0 points below)" in text
    assert re.search(rf"{A}\s+0,1\s+41.00\s+38.00\s+-3.00 .* FAIL: more than 2.0 points below", text)


def test_check_gate_fails_when_the_training_loss_moves_either_way(ci_records):
    """The same seeds' final training loss (1.0 in these records) must stay within loss_tolerance of the baseline's."""
    def check(loss):
        ref = {A: {"seeds": [0, 1], "test_exact": 0.38, "train_loss": loss}}
        return gate.check_gate(ci_records, ci_baseline(ref) | {"loss_tolerance": 0.01})

    assert check(1.009)[0] and check(0.991)[0]
    for moved in (1.02, 0.98):  # augmentation off lowers it, a smaller learning rate raises it
        ok, text = check(moved)
        assert not ok and f"gate FAILED: {A} (training loss moved by more than 0.01)" in text
    ok, text = gate.check_gate(ci_records, ci_baseline({A: {"seeds": [0, 1], "test_exact": 0.38, "train_loss": 9.0}}))
    assert ok and "train loss" not in text  # a baseline without loss_tolerance checks accuracy only


def test_check_gate_fails_on_missing_seed_or_recipe(ci_records):
    ok, text = gate.check_gate(ci_records, ci_baseline({A: {"seeds": [0, 1, 2], "test_exact": 0.30},
                                                        B: {"seeds": [0], "test_exact": 0.30}}))  # fmt: skip
    assert not ok
    assert f"gate FAILED: {A} (no record for seed 2); {B} (no record for seed 0)" in text


def test_check_gate_rejects_malformed_baseline(ci_records):
    with pytest.raises(BenchError, match="gate baseline: missing key\\(s\\) tolerance"):
        gate.check_gate(ci_records, {"budget": "ci", "dataset_id": DATASET_ID, "recipes": {}})


def test_make_baseline_round_trip(ci_records):
    made = gate.make_baseline(ci_records, [A], 0.03)
    assert (made["budget"], made["dataset_id"], made["tolerance"]) == ("ci", DATASET_ID, 0.03)
    assert made["recipes"][A]["seeds"] == [0, 1]
    assert made["recipes"][A]["test_exact"] == pytest.approx(0.38)
    assert made["recipes"][A]["train_loss"] == pytest.approx(1.0)  # the last epoch's, as the factory writes it
    assert gate.check_gate(ci_records, json.loads(json.dumps(made)))[0]
    with pytest.raises(BenchError, match=f"recipe {B} has no ci record"):
        gate.make_baseline(ci_records, [A, B], 0.03)
