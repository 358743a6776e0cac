"""Launchers: local worker processes and SLURM through submitit's local executor give the inline records."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from digitsum_bench import data as datamod
from digitsum_bench.cli import main
from digitsum_bench.engine import launch, plan, train
from digitsum_bench.engine.checkpoints import save_atomic
from digitsum_bench.engine.runner import RunOptions
from digitsum_bench.store import RunKey

NAMES = ["r003_convnet4", "r002_attention_cnn"]


def _metrics(results):
    out = {}
    for p in sorted(results.glob("records/smoke/*/*/seed*.json")):
        if p.name.endswith(".failed.json"):
            continue
        r = json.loads(p.read_text())
        out[(r["recipe"], r["seed"])] = {s: (m["exact"], m["mse"]) for s, m in r["metrics"].items() if m}
    return out


@pytest.fixture(scope="module")
def inline(tmp_path_factory):
    results = tmp_path_factory.mktemp("inline")
    assert launch.launch(NAMES, [0, 1], RunOptions(budget="smoke", data="synth", results=results, device="cpu")) == 0
    return _metrics(results)


def test_local_launcher_matches_inline(inline, tmp_path):
    assert launch.launch(NAMES, [0, 1], RunOptions(budget="smoke", data="synth", results=tmp_path, device="cpu"), launcher="local", jobs=2) == 0
    assert _metrics(tmp_path) == inline


def test_slurm_launcher_with_submitit_local_executor(inline, tmp_path):
    a = launch.SlurmOptions(cluster="local", wait=True, time=10, cpus=1, mem_gb=2, parallel=2)
    assert launch.launch(NAMES, [0, 1], RunOptions(budget="smoke", data="synth", results=tmp_path, device="cpu"), launcher="slurm", slurm=a) == 0
    assert _metrics(tmp_path) == inline
    assert list((tmp_path / "submitit").rglob("*_log.out"))  # submitit's logs live under the results folder


def test_failed_job_is_reported_and_rerun_alone(tmp_path, monkeypatch, capsys):
    real = train.train_one_epoch

    def fails_for_attention(*a, **k):
        if k["recipe"].name == "r002_attention_cnn":
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(*a, **k)

    monkeypatch.setattr(train, "train_one_epoch", fails_for_attention)
    assert launch.launch(NAMES, [0], RunOptions(budget="smoke", data="synth", results=tmp_path, device="cpu")) == 1
    rows = {r["recipe"]: r for r in launch.status_rows(tmp_path, NAMES, [0], "smoke")}
    assert rows["r003_convnet4"]["state"] == "finished"
    assert rows["r002_attention_cnn"]["state"] == "failed"
    assert rows["r002_attention_cnn"]["detail"] == "RuntimeError: CUDA error: an illegal memory access was encountered"
    finished = next(tmp_path.glob("records/smoke/*/r003_convnet4/seed0.json"))
    before = finished.read_text()

    monkeypatch.setattr(train, "train_one_epoch", real)
    capsys.readouterr()
    assert main(["run", "--recipe", *NAMES, "--budget", "smoke", "--device", "cpu", "--results", str(tmp_path),
                 "--no-report"]) == 0
    assert "1 run(s) to do, 1 already finished" in capsys.readouterr().out
    assert finished.read_text() == before  # nothing else recomputed
    rows = {r["recipe"]: r["state"] for r in launch.status_rows(tmp_path, NAMES, [0], "smoke")}
    assert rows == {"r003_convnet4": "finished", "r002_attention_cnn": "finished"}


def test_slurm_settings_file_and_overrides(tmp_path):
    cfg = tmp_path / "slurm.toml"
    cfg.write_text('partition = "gpu"\ntime = 60\ngpus = 2\n')
    s = launch.slurm_settings(cfg, partition=None, time=30, gpus=None)
    assert (s.partition, s.time, s.gpus, s.cpus) == ("gpu", 30, 2, launch.SlurmOptions().cpus)
    cfg.write_text('partiton = "gpu"\n')
    with pytest.raises(Exception, match="unknown keys partiton"):
        launch.slurm_settings(cfg)


def test_copied_records_from_another_machine_merge(inline, tmp_path):
    """Records copied in under another name are detected as duplicates by the report, not double-counted."""
    from digitsum_bench.reporting.report import leaderboard, load_records

    launch.launch(NAMES[:1], [0], RunOptions(budget="smoke", data="synth", results=tmp_path, device="cpu"))
    src = next(tmp_path.glob("records/smoke/*/r003_convnet4/seed0.json"))
    (src.parent / "seed0-from-node7.json").write_text(src.read_text())
    with pytest.warns(UserWarning, match="duplicate"):
        records = load_records(tmp_path)
    assert len(records) == 1
    assert leaderboard(records)["n_seeds"].tolist() == [1]


def test_status_names_corrupt_and_running_runs(tmp_path):
    import os
    import socket

    base = tmp_path / "records" / "smoke" / "synth-x" / "r003_convnet4"
    base.mkdir(parents=True)
    (base / "seed0.json").write_text("{truncated")
    (base / "seed1.lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    rows = {r["seed"]: r for r in launch.status_rows(tmp_path, ["r003_convnet4"], [0, 1, 2], "smoke")}
    assert rows[0]["state"] == "corrupt" and "seed0.json: corrupt record" in rows[0]["detail"]
    assert rows[1]["state"] == "running" and str(os.getpid()) in rows[1]["detail"]
    assert rows[2]["state"] == "missing"


def test_a_resumed_runs_estimate_counts_only_its_epochs_left(variant, tiny_recipe, tmp_path, monkeypatch, capsys):
    """A run cut mid pre-training stage, then mid main stage: the estimate shrinks by the epochs its checkpoints hold."""
    name = variant("tiny_two_stage", epochs=6, pretrain=replace(tiny_recipe, name="tiny_stage", epochs=4))
    options = RunOptions(budget="full", results=tmp_path, device="cpu", progress=False)
    dataset_id = datamod.dataset_id("synth")
    ckpt = RunKey(name, 0, "full", dataset_id).checkpoint_dir(tmp_path)
    left = lambda opts=options: plan.share_left(name, 0, opts, dataset_id)  # noqa: E731
    assert left() == 1
    save_atomic({"state": {"epoch": 2}}, ckpt / "stage1" / "last.pt")
    assert left() == pytest.approx(1 - 2 / 10)
    save_atomic({"model": {}}, ckpt / "stage1.pt")  # the stage is over
    save_atomic({"state": {"epoch": 3}}, ckpt / "last.pt")
    assert left() == pytest.approx(1 - 7 / 10)
    assert left(replace(options, force=True)) == 1

    timed = []
    monkeypatch.setattr(plan, "estimate_seconds", lambda *a, **k: timed.append(a) or 1000.0)
    monkeypatch.setattr(launch, "run_job", lambda job, *a, **k: [None] * len(job.seeds))
    assert launch.launch([name], [0, 1], options) == 0  # seed 1 from scratch, seed 0 with 3 of 10 epochs left
    assert "estimated time on cpu: 21.7 min" in capsys.readouterr().out
    assert len(timed) == 1  # one estimate a recipe, not one a seed
