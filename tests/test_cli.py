"""The command line as users meet it: run, status, evaluate, list, errors."""

from __future__ import annotations

import json

import pytest
import torch

from digitsum_bench.cli import main
from digitsum_bench.registry.budgets import apply_budget
from digitsum_bench.registry.recipes import get_recipe, list_recipes

# r003_resnet18_scratch: its claim is words without a number, which the report must carry through
SMALL = ["r003_convnet4", "r002_attention_cnn", "r004_multilabel_transfer", "r003_resnet18_scratch"]


def test_run_smoke_subset_writes_records_and_leaderboard(tmp_path, capsys):
    code = main(["run", "--recipe", *SMALL, "--budget", "smoke", "--device", "cpu", "--results", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    records = sorted(tmp_path.glob("records/smoke/*/*/seed0.json"))
    assert [p.parent.name for p in records] == sorted(SMALL)
    for name in SMALL:
        assert f"{name} seed 0 [smoke]: test exact" in out  # one-line summary per run
    assert (tmp_path / "leaderboard.csv").exists() and (tmp_path / "leaderboard.md").exists()
    # 004's two stages both ran: its stage-1 model is kept beside the checkpoints
    assert list(tmp_path.glob("checkpoints/smoke/*/r004_multilabel_transfer/seed0/stage1.pt"))
    # ... and its record times both: the stage's epochs and seconds are in it and in its train_seconds
    r004 = next(tmp_path.glob("records/smoke/*/r004_multilabel_transfer/seed0.json"))
    stage = json.loads(r004.read_text())["pretrain"]
    stage_epochs = apply_budget(get_recipe("r004_multilabel_transfer"), "smoke").pretrain.epochs
    assert [e["epoch"] for e in stage["history"]] == list(range(1, stage_epochs + 1))
    assert json.loads(r004.read_text())["train_seconds"] > stage["train_seconds"] > 0
    # a stage1.pt saved before it kept its times: the record takes them from the stage's own last.pt
    stage1 = next(tmp_path.glob("checkpoints/smoke/*/r004_multilabel_transfer/seed0/stage1.pt"))
    torch.save({k: v for k, v in torch.load(stage1).items() if k != "summary"}, stage1)
    r004.unlink()
    assert main(["run", "--recipe", "r004_multilabel_transfer", "--budget", "smoke", "--device", "cpu",
                 "--results", str(tmp_path), "--no-report"]) == 0
    assert json.loads(r004.read_text())["pretrain"] == stage

    # a second run finds everything done
    assert main(["run", "--recipe", *SMALL, "--budget", "smoke", "--device", "cpu", "--results", str(tmp_path),
                 "--no-report"]) == 0
    assert "0 run(s) to do, 4 already finished" in capsys.readouterr().out

    assert main(["status", "--results", str(tmp_path), "--budget", "smoke", "--recipe", *SMALL, "--seeds", "0", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("finished") >= 4 and "4 finished, 4 missing" in out

    ckpt = next(tmp_path.glob("checkpoints/smoke/*/r003_convnet4/seed0/final.pt"))
    npz = tmp_path / "t.npz"
    assert main(["data", "make", "--split", "test", "--n", "64", "--out", str(npz)]) == 0
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(npz), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    record = json.loads(next(tmp_path.glob("records/smoke/*/r003_convnet4/seed0.json")).read_text())
    assert result["exact"] == pytest.approx(record["metrics"]["test"]["exact"])  # the smoke test split is these 64


def test_unknown_recipe_and_bad_data_are_one_line_errors(tmp_path, capsys):
    assert main(["run", "--recipe", "no_such_recipe", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown recipe 'no_such_recipe'") and err.count("\n") == 1
    assert main(["run", "--recipe", "r003_convnet4", "--data", str(tmp_path / "missing"), "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing" in err and err.count("\n") == 1
    assert not (tmp_path / "records").exists()
    assert main(["run", "--results", str(tmp_path)]) == 2
    assert "--all" in capsys.readouterr().err


def test_list_shows_every_recipe_with_claims(capsys):
    assert main(["list", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list_recipes()
    assert len([r for r in rows if r["report"] in {"000", "001", "002", "003", "004"}]) == 11
    assert all(r["gflops"] > 0 and r["params_m"] > 0 for r in rows)
    assert main(["list"]) == 0
    table = capsys.readouterr().out
    assert "r002_resnet50" in table and "94.9" in table


def test_every_verb_has_help(capsys):
    for verb in (["data", "make"], ["data", "check"], ["data", "show"], ["list"], ["run"], ["evaluate"],
                 ["export"], ["report"], ["status"], ["gate"]):
        with pytest.raises(SystemExit) as e:
            main([*verb, "--help"])
        assert e.value.code == 0
        assert "usage: digitsum-bench" in capsys.readouterr().out
