"""The `digitsum-bench data` verbs: make, check, show, and their one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

from digitsum_bench import data
from digitsum_bench.cli import main


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DIGITSUM_CACHE", str(tmp_path / "cache"))


def test_make_check_show(tmp_path, capsys):
    out = tmp_path / "val.npz"
    assert main(["data", "make", "--split", "val", "--n", "30", "--seed", "1", "--out", str(out)]) == 0
    assert f"wrote {out}: 30 images" in capsys.readouterr().out
    made = data.load_path(out)
    assert np.array_equal(made.images, data.make_synth("val", 30, seed=1).images)

    assert main(["data", "check", str(out)]) == 0
    text = capsys.readouterr().out
    assert "30 x 40 x 168, uint8" in text and "pixel mean" in text and "sum histogram" in text

    grid = tmp_path / "grid.png"
    assert main(["data", "show", str(out), "--out", str(grid), "--n", "8"]) == 0
    assert grid.read_bytes()[:4] == b"\x89PNG"


def test_make_synth003(tmp_path, capsys):
    out = tmp_path / "s003.npz"
    assert main(["data", "make", "--kind", "synth003", "--split", "train", "--n", "12", "--out", str(out)]) == 0
    assert "DigitSum-Synth003" in capsys.readouterr().out and len(data.load_path(out)) == 12


def error_of(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_make_errors_write_nothing(tmp_path, capsys):
    out = tmp_path / "x.npz"
    assert main(["data", "make", "--kind", "synth003", "--split", "val", "--n", "5", "--out", str(out)]) == 2
    assert "synth003: report 003's generator makes training data only, not 'val'" in error_of(capsys)
    assert main(["data", "make", "--split", "test", "--n", "5", "--out", str(out), "--source", str(tmp_path / "m")]) == 2
    assert f"{tmp_path / 'm'}: MNIST folder not found" in error_of(capsys)
    assert main(["data", "make", "--split", "test", "--n", "5", "--seed", "-1", "--out", str(out)]) == 2
    assert "non-negative" in error_of(capsys)
    assert not out.exists()


def test_check_and_show_errors(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "missing.npz")]) == 2
    assert error_of(capsys) == f"error: {tmp_path / 'missing.npz'}: no such file or folder"
    np.save(tmp_path / "data0.npy", np.zeros((3, 40, 168), np.uint8))
    np.save(tmp_path / "lab0.npy", np.array([1, 2, 40]))
    assert main(["data", "check", str(tmp_path)]) == 2
    assert error_of(capsys) == f"error: {tmp_path / 'lab0.npy'}: labels span 1..40, outside 0..36"
    grid = tmp_path / "grid.png"
    assert main(["data", "show", str(tmp_path), "--out", str(grid)]) == 2
    assert "labels span 1..40" in error_of(capsys) and not grid.exists()
