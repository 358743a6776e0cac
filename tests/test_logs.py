"""Logs: where stderr is a file (a SLURM log, `2> run.log`), one line per epoch and per run, no bar redraws."""

from __future__ import annotations

import subprocess
import sys

from digitsum_bench.engine import train


def test_a_run_logged_to_a_file_writes_a_line_per_epoch(tmp_path):
    log = tmp_path / "run.log"
    with open(log, "w") as stderr:
        done = subprocess.run([sys.executable, "-m", "digitsum_bench.cli", "run", "--recipe", "r003_convnet4",
                               "--budget", "smoke", "--device", "cpu", "--results", str(tmp_path / "r"), "--no-report"],
                              stderr=stderr, stdout=subprocess.PIPE, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, log.read_text()
    text = log.read_text()
    assert "\r" not in text  # no bar redraws
    lines = text.splitlines()
    assert sum("epoch 1/1: train loss" in line for line in lines) == 1
    assert len(lines) <= 4, text  # smoke: one epoch


def test_progress_bar_only_on_a_terminal(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert not train.progress_bar(range(3), True).disable
    assert train.progress_bar(range(3), False).disable
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert train.progress_bar(range(3), True).disable
