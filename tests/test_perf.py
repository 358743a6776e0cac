"""Measured speed (perf.csv) and the plans' GPU estimates from it, with no GPU."""

from __future__ import annotations

import csv

import pytest
import torch

from digitsum_bench.cli import main
from digitsum_bench.engine import perf, plan
from digitsum_bench.errors import BenchError
from digitsum_bench.registry.budgets import apply_budget
from digitsum_bench.registry.recipes import get_recipe

from record_factory import make_record, write_record

H200 = "NVIDIA H200"


def row(recipe, ips, engine="graph", device=H200, batch=32, source="benchmark", runs=1):
    return {"device": device, "torch": "2.14.1", "commit": "abc", "engine": engine, "recipe": recipe, "batch": batch,
            "runs": runs, "images_per_s": ips, "source": source, "measured": "2026-12-03T08:00:00+00:00"}


@pytest.fixture
def measured(two, tmp_path):
    """results/perf.csv: tiny_small measured on a GPU (graph 1000 and 1200 img/s, eager 400; a CPU row, another
    batch size, a plain loop and runs sharing the GPU, which must not count); tiny_big not measured."""
    big, small = two
    with open(tmp_path / "perf.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=perf.COLUMNS)
        w.writeheader()
        w.writerows([row(small, 1000.0), row(small, 1200.0, source="other"), row(small, 400.0, "eager"),
                     row(small, 9e9, device="cpu (x86_64, 2 threads)"), row(small, 9e9, batch=512),
                     row(small, 9e9, engine="plain"), row(small, 9e9, engine="stacked", runs=8),
                     row(big, 9e9, device="cpu (x86_64, 2 threads)")])
    recipe = apply_budget(get_recipe(small), "smoke")
    return big, small, recipe.train_size * recipe.epochs / 1100.0


@pytest.fixture
def two(variant):
    return variant("tiny_big"), variant("tiny_small")


def test_gpu_images_per_s_is_the_fastest_measured_engine_on_a_gpu_at_the_batch(measured, tmp_path):
    big, small, _ = measured
    rows = perf.read_perf(tmp_path / "perf.csv")
    assert perf.gpu_images_per_s(rows, small, 32) == (1100.0, "graph")
    assert perf.gpu_images_per_s(rows, big, 32) is None  # a CPU row is no GPU measurement
    assert perf.gpu_images_per_s(rows, small, 64) is None


def test_gpu_seconds_counts_every_member_and_the_pretraining_stage():
    ensemble = get_recipe("ours_digitsum")
    rows = [row(ensemble.name, 100.0, batch=ensemble.batch_size)]
    assert ensemble.members > 1
    assert perf.gpu_seconds(ensemble, rows) == pytest.approx(ensemble.train_size * ensemble.epochs / 100.0 * ensemble.members)
    recipe = get_recipe("r004_multilabel_transfer")
    stage = recipe.pretrain
    rows = [row(recipe.name, 100.0, batch=recipe.batch_size), row(stage.name, 50.0, batch=stage.batch_size)]
    want = recipe.train_size * recipe.epochs / 100.0 + stage.train_size * stage.epochs / 50.0
    assert perf.gpu_seconds(recipe, rows) == pytest.approx(want)
    assert perf.gpu_seconds(recipe, rows[:1]) is None  # the stage is not measured


def test_gpu_plan_needs_no_gpu_and_says_what_is_not_measured(measured, tmp_path, monkeypatch, capsys):
    big, small, seconds = measured
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(plan, "estimate_seconds", lambda *a, **k: pytest.fail("a GPU plan times nothing"))
    assert main(["run", "--recipe", big, small, "--seeds", "0", "--budget", "smoke", "--device", "cuda",
                 "--results", str(tmp_path), "--plan"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]  # after "2 run(s) to do, ..."
    assert lines[0].startswith(f"plan on cuda (from {tmp_path / 'perf.csv'}") and "1 run(s) not measured" in lines[0]
    assert lines[2].split()[1] == small and f"{round(seconds)} s" in lines[2] and lines[2].split()[-1] == "yes"
    assert lines[3].split()[1] == big and "not measured" in lines[3] and lines[3].split()[-1] == "-"


def test_cpu_plan_shows_each_jobs_gpu_estimate(measured, tmp_path, monkeypatch, capsys):
    big, small, seconds = measured
    monkeypatch.setattr(plan, "estimate_seconds", lambda recipe, device, test_size=0, seeds=1, engine="auto": 60.0)
    assert main(["run", "--recipe", big, small, "--seeds", "0", "--budget", "smoke", "--device", "cpu",
                 "--results", str(tmp_path), "--plan"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert "GPU: training steps at the GPU images/s measured in perf.csv" in lines[0]
    by_recipe = {line.split()[1]: line for line in lines[2:]}
    assert by_recipe[small].split()[-3:-1] == [str(round(seconds)), "s"]
    assert by_recipe[big].split()[-3:-1] == ["not", "measured"]


def test_perf_rows_from_gpu_records_replace_their_own_rows_only(tmp_path, capsys):
    gpu = {**make_record("r003_convnet4", 0, device=H200, images_per_s=5000.0), "engine": "graph"}
    write_record(tmp_path, gpu)
    write_record(tmp_path, make_record("r003_convnet4", 1, images_per_s=300.0))  # a CPU record: no row
    perf.write_perf(tmp_path / "perf.csv", [row("r002_resnet50", 7000.0)])
    for _ in range(2):  # the second time replaces the record's row
        assert main(["perf", "--results", str(tmp_path)]) == 0
    rows = perf.read_perf(tmp_path / "perf.csv")
    assert sorted((r["recipe"], r["engine"], r["images_per_s"], r["source"]) for r in rows) == [
        ("r002_resnet50", "graph", 7000.0, "benchmark"),
        ("r003_convnet4", "graph", 5000.0, "record records/full/synth-1a2b3c4d/r003_convnet4/seed0.json")]


def test_a_malformed_perf_csv_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "perf.csv").write_text("device,recipe,batch,images_per_s\nNVIDIA H200,r003_convnet4,32,fast\n")
    with pytest.raises(BenchError, match="line 2"):
        perf.read_perf(tmp_path / "perf.csv")
    assert main(["run", "--recipe", "r003_convnet4", "--device", "cuda", "--results", str(tmp_path), "--plan"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
