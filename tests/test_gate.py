"""The CI accuracy gate: it passes on the committed baselines, and subtle sabotage makes it fail.

The gate's run is trained once per session (`gate_run`). Two sabotages need training of their own
(augmentation off, learning rate / 10); the other two only change what is scored, so the gate starts
them from the committed baseline checkpoint (`fit` resumes after its last epoch and trains nothing;
`digitsum_bench.sabotage`). Every gate run also scores the committed baseline checkpoint again
(`gate.rescore`): once for the gate and the two training sabotages (`scored`), which cannot change
what a finished checkpoint scores, and once under each scoring sabotage. The three tests that train are
marked `slow` (`pytest -m "not slow"` leaves them out). The comparison itself (`gate.check_gate`,
`gate.make_baseline`) is tested on fake records, with no training.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
from record_factory import DATASET_ID, make_record, write_record

from digitsum_bench.errors import BenchError
from digitsum_bench.reporting import report
from digitsum_bench.reporting.leaderboard import load_records
from digitsum_bench.scoring import gate, sabotage

BASELINE = Path(__file__).resolve().parent.parent / "results" / "baselines" / "ci.json"
A, B = "r002_attention_cnn", "r002_resnet50_pretrained"


@pytest.fixture(scope="module")
def measured(request):
    """What this module's gate runs measured; `--save-sabotage` merges it into sabotage.json (`sabotage.save`)."""
    found = {"sabotages": {}}
    yield found
    if request.config.getoption("--save-sabotage") and "device" in found:
        print(report.sabotage_table(sabotage.save(BASELINE, found.pop("device"), found)))


def remember(measured: dict, numbers: dict) -> dict:
    """Keep `gate.outcome`'s numbers of one gate run under the device it ran on; returns them."""
    measured["device"] = next(iter(numbers.values()))["device"]
    return numbers


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """The committed baseline checkpoints re-scored once (`gate.rescore`), shared by the gate and the sabotages
    that change training only: the folder of its records."""
    folder = tmp_path_factory.mktemp("rescored") / "rescored"
    gate.rescore(gate.read_baseline(BASELINE), BASELINE.parent / gate.CHECKPOINTS, folder)
    return folder


@pytest.fixture(scope="module")
def gate_run(tmp_path_factory, scored):
    """The gate retrained once on the committed baseline: (results folder, passed, table)."""
    results = tmp_path_factory.mktemp("gate")
    ok, table = gate.run_gate(BASELINE, results, scored=scored)
    return results, ok, table


@pytest.mark.slow
def test_gate_passes_on_committed_baseline(gate_run, measured):
    results, ok, table = gate_run
    print(table)
    assert ok, table
    for name in json.loads(BASELINE.read_text())["recipes"]:
        assert name in table
    measured["clean"] = remember(measured, gate.outcome(gate.read_baseline(BASELINE), results))
    assert all(not now["failed"] for now in measured["clean"].values())


@pytest.mark.parametrize("name", [pytest.param(s.name, marks=pytest.mark.slow if s.retrains else ())
                                  for s in sabotage.SABOTAGES.values()])
def test_gate_fails_under_each_sabotage(name, tmp_path, measured, request):
    """Each sabotage fails the gate, on the checks it names (what each scored: sabotage.json)."""
    s = sabotage.SABOTAGES[name]
    shared = request.getfixturevalue("scored") if s.retrains else None  # scoring sabotages score for themselves
    ok, table, found = sabotage.run_sabotage(s, BASELINE, tmp_path, scored=shared)
    print(table)  # with -s: what the sabotage scored
    assert not ok, table
    assert "gate FAILED" in table
    for recipe, now in found.items():
        assert set(s.caught_by) <= set(now["failed"]), (recipe, now, table)
        assert any(row.strip().startswith(recipe) and "FAIL" in row for row in table.splitlines()), table
    measured["sabotages"][name] = remember(measured, found)


def test_committed_sabotage_results_show_each_sabotage_caught():
    """results/baselines/sabotage.json: measured in float32 and in bf16, the clean gate passed and every one of the
    four sabotages was caught, by the checks it names, against the committed baseline."""
    found = json.loads((BASELINE.parent / sabotage.FILE).read_text())
    assert {"bf16" in device for device in found["devices"]} == {True, False}
    baseline = gate.read_baseline(BASELINE)["recipes"]
    for entry in found["devices"].values():
        assert set(entry["sabotages"]) == set(sabotage.SABOTAGES)
        assert entry["baseline"] == {name: {k: ref[k] for k in ("test_exact", "train_loss")} for name, ref in baseline.items()}
        for name, s in entry["sabotages"].items():
            for now in s["recipes"].values():
                assert set(sabotage.SABOTAGES[name].caught_by) <= set(now["failed"]), name
        assert set(entry["clean"]) == set(baseline)
        assert all(not now["failed"] for now in entry["clean"].values())


def test_sabotage_table_bolds_what_failed():
    now = {"test_exact": 0.8, "train_loss": 2.5, "rescored_exact": 0.9, "failed": ["accuracy", "training"]}
    entry = {"baseline": {A: {"test_exact": 0.9, "train_loss": 2.0}},
             "sabotages": {"augmentation_off": {"what": "augmentation silently off", "recipes": {A: now}}}}
    table = report.sabotage_table({"devices": {"cpu (x86_64, 2 threads)": entry}})
    assert table.startswith("On cpu (x86_64, 2 threads):")
    assert (f"| augmentation silently off | `{A}` | **80.00** (90.00) | **2.5000** (2.0000) | 90.00 (90.00) "
            "| accuracy and training |") in table
    entry["clean"] = {A: {**now, "failed": []}}
    assert f"| none (the gate as CI runs it) | `{A}` | 80.00 (90.00) | 2.5000 (2.0000) | 90.00 (90.00) " \
           "| nothing: the gate passes |" in report.sabotage_table({"devices": {"cpu": entry}})


def test_saving_keeps_each_devices_numbers(tmp_path):
    baseline = tmp_path / "ci.json"
    baseline.write_text(BASELINE.read_text())
    now = {"test_exact": 0.8, "train_loss": 2.5, "rescored_exact": 0.9, "failed": ["accuracy"], "device": "d"}
    sabotage.save(baseline, "cpu a", {"sabotages": {"augmentation_off": {A: now}}})
    sabotage.save(baseline, "cpu b", {"clean": {A: now}, "sabotages": {}})
    found = sabotage.save(baseline, "cpu a", {"sabotages": {"ema_never_applied": {A: now}}})
    assert found == json.loads((tmp_path / sabotage.FILE).read_text())
    assert set(found["devices"]["cpu a"]["sabotages"]) == {"augmentation_off", "ema_never_applied"}
    assert found["devices"]["cpu b"]["clean"] == {A: now}
    assert found["devices"]["cpu a"]["sabotages"]["augmentation_off"]["caught_by"] == ["training"]


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


def test_gate_table_shows_every_measured_run_and_the_tolerances():
    measurement = {"machine": "EPYC, AVX512, bf16", "recipes": {"r": {
        "test_exact_by_threads_and_seed": {"2": {"0": 0.90, "1": 0.88}, "1": {"0": 0.89, "1": 0.88}},
        "train_loss_by_threads_and_seed": {"2": {"0": 2.00, "1": 2.10}, "1": {"0": 2.01, "1": 2.10}}}},
        "machines": {"EPYC, AVX2, float32": {"r": {"test_exact_by_seed": {"0": 0.93, "1": 0.87},
                                                     "train_loss_by_seed": {"0": 2.04, "1": 2.12}}}}}
    table = report.gate_table(gate.set_tolerances({"measurement": measurement}))
    # exact deltas 0.01, 0, 0.03, 0.01: rms 0.0166, x3 = 0.0497 -> 5.0 points; loss deltas 0.01, 0, 0.04, 0.02: x3 = 0.0687
    assert table.startswith("Tolerance 5.0 points of test exact and 0.0688 of the final training loss")
    assert "| `r` | EPYC, AVX512, bf16, 1 threads | 89.00 (2.0100) | 88.00 (2.1000) |" in table
    assert "| `r` | EPYC, AVX2, float32, 2 threads | 93.00 (2.0400) | 87.00 (2.1200) |" in table
    assert table.count("| `r` |") == 3
