"""A checkpoint from someone else never runs code: `evaluate --checkpoint`, best.pt/final.pt and resume."""

from __future__ import annotations

import pytest
import torch

from digitsum_bench.cli import main
from digitsum_bench.engine import checkpoints, runner
from digitsum_bench.engine.runner import RunOptions
from digitsum_bench.errors import BenchError
from digitsum_bench.registry import budgets
from digitsum_bench.store import RunKey


class _WritesAFile:
    """Unpickling this object calls open(marker, "w"): the file appearing means code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def crafted_checkpoint(path, marker, recipe: str = "r003_convnet4"):
    """A .pt that looks like the runner's (recipe name, config, model) but whose unpickling writes `marker`."""
    torch.save({"recipe": recipe, "config": {"name": recipe}, "model": _WritesAFile(marker)}, path)
    assert not marker.exists()
    return path


def test_evaluate_refuses_a_crafted_checkpoint(tmp_path, capsys):
    marker = tmp_path / "pwned"
    ckpt = crafted_checkpoint(tmp_path / "final.pt", marker)
    npz = tmp_path / "t.npz"
    assert main(["data", "make", "--split", "test", "--n", "8", "--out", str(npz)]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(npz), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {ckpt}: not a digitsum-bench checkpoint, refused") and err.count("\n") == 1
    assert "io.open" in err
    assert not marker.exists()


def test_best_pt_with_a_crafted_final_pt_beside_it_is_refused(tmp_path):
    """An older best.pt names no recipe; the name is then read from final.pt, which must be loaded safely too."""
    marker = tmp_path / "pwned"
    torch.save({"model": {}}, tmp_path / "best.pt")
    crafted_checkpoint(tmp_path / "final.pt", marker)
    with pytest.raises(BenchError, match=r"final\.pt: not a digitsum-bench checkpoint, refused"):
        checkpoints.load_checkpoint(tmp_path / "best.pt", torch.device("cpu"))
    assert not marker.exists()


def test_resume_refuses_a_crafted_last_pt(tiny_recipe, tmp_path):
    """A last.pt copied into a results folder is read on resume: it must not run code either."""
    marker = tmp_path / "pwned"
    splits = runner.load_data(budgets.apply_budget(tiny_recipe, "smoke"), budgets.BUDGETS["smoke"], "synth")
    key = RunKey("tiny_test", 0, "smoke", splits.dataset_id)
    last = key.checkpoint_dir(tmp_path) / "last.pt"
    last.parent.mkdir(parents=True)
    crafted_checkpoint(last, marker, "tiny_test")
    with pytest.raises(BenchError, match=r"last\.pt: not a digitsum-bench checkpoint, refused") as e:
        runner.run_one("tiny_test", 0, RunOptions(budget="smoke", results=tmp_path, device="cpu", progress=False))
    assert "\n" not in str(e.value)
    assert not marker.exists()
    assert not key.record_path(tmp_path).exists()


def test_checkpoints_hold_only_plain_data(tiny_recipe, tmp_path):
    """final.pt stores the recipe's name and config as plain data: it loads with weights_only=True."""
    rec = runner.run_one("tiny_test", 0, RunOptions(budget="smoke", results=tmp_path, device="cpu", progress=False))
    folder = RunKey("tiny_test", 0, "smoke", rec["dataset_id"]).checkpoint_dir(tmp_path)
    final = torch.load(folder / "final.pt", weights_only=True)
    assert final["recipe"] == "tiny_test" and final["config"]["model"] == "TinyNet"
    for name in ("last.pt", "best.pt"):
        torch.load(folder / name, weights_only=True)


def test_checkpoint_of_an_unknown_recipe_names_the_file(tmp_path, capsys):
    ckpt = tmp_path / "final.pt"
    torch.save({"recipe": "r999_gone", "config": {}, "model": {}}, ckpt)
    npz = tmp_path / "t.npz"
    assert main(["data", "make", "--split", "test", "--n", "8", "--out", str(npz)]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(npz), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {ckpt}: unknown recipe 'r999_gone'") and err.count("\n") == 1
