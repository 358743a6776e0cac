"""The metrics table (metric_table.py) drives every view: a metric added to it reaches the CSV, the markdown and
the page with no other edit; an optional metric missing from an older record is shown as missing, not corrupt."""

from __future__ import annotations

import html
import warnings
from pathlib import Path

import pandas as pd
import pytest
from record_factory import make_record, split_metrics, write_record

from digitsum_bench import metric_table, store
from digitsum_bench.claims import CLAIM_NAMES, PERCENT, Claim
from digitsum_bench.errors import BenchError
from digitsum_bench.metric_table import METRIC_TABLE, Metric
from digitsum_bench.reporting import report
from digitsum_bench.reporting.leaderboard import CLAIM_METRICS, METRIC_COLUMNS, METRICS, load_records
from digitsum_bench.reporting.page import MEASURED_TIPS, SHOWN_METRICS

A, B = "r002_attention_cnn", "r003_convnet4"
REPO_RESULTS = Path(__file__).resolve().parent.parent / "results"


def cell(markdown: str, recipe: str, header: str) -> str:
    """The markdown cell of `recipe`'s row under `header`, in the first table that has both."""
    columns = None
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| # |"):
            columns = cells
        elif columns and line.startswith("|") and f"`{recipe}`" in cells and header in columns:
            return cells[columns.index(header)]
    raise AssertionError(f"no cell of {recipe} under {header!r}")


def write(results: Path, extra: dict[str, dict]) -> None:
    """Two recipes, two seeds each, at the full budget; `extra[recipe]`: added to both splits of its records."""
    for recipe, exact in ((A, 0.30), (B, 0.10)):
        for seed in (0, 1):
            added = extra.get(recipe, {})
            val, test = split_metrics(exact) | added, split_metrics(exact + 0.01) | added
            write_record(results, make_record(recipe, seed, val=val, test=test, seeds_requested=(0, 1)))


def test_a_metric_added_to_the_table_reaches_csv_markdown_and_page(tmp_path, monkeypatch):
    fake = Metric("fake_rate", "fake rate", "fraction", "higher", required=False, claimable=False,
                  tip="a fake metric's tooltip")  # fmt: skip
    monkeypatch.setitem(METRIC_TABLE, "fake_rate", fake)
    write(tmp_path, {A: {"fake_rate": 0.25}})  # B's records lack it, as records made before it was
    report.write_report(tmp_path)
    board = pd.read_csv(tmp_path / "leaderboard.csv").set_index("recipe")
    assert board.loc[A, "test_fake_rate_mean"] == pytest.approx(0.25) and board.loc[A, "val_fake_rate_std"] == 0
    assert pd.isna(board.loc[B, "test_fake_rate_mean"])
    markdown = (tmp_path / "leaderboard.md").read_text()
    assert cell(markdown, A, "fake rate %") == "25.0" and cell(markdown, B, "fake rate %") == "—"  # a fraction: in %
    page = html.unescape((tmp_path / "index.html").read_text(encoding="utf-8"))
    assert "fake rate %" in page and "a fake metric's tooltip" in page
    assert "fake_rate" in METRICS and METRIC_COLUMNS["fake_rate"] == "fake rate %" and "fake_rate" in PERCENT
    assert "fake_rate" not in CLAIM_NAMES and "fake_rate" not in SHOWN_METRICS  # not claimable; one click away


def test_an_older_record_without_an_optional_metric_loads_and_shows_a_dash(tmp_path):
    write(tmp_path, {A: {"digit_accuracy": 0.875}, B: {"digit_accuracy": None}})  # B: null, as good as absent
    older = make_record(B, 2, val=0.1, test=0.1, seeds_requested=(0, 1, 2))
    assert "digit_accuracy" not in older["metrics"]["test"]  # record_factory writes records as older code did
    write_record(tmp_path, older)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a skipped record would warn
        records = load_records(tmp_path)
    assert len(records) == 5 and records[records["recipe"] == B]["test_digit_accuracy"].isna().all()
    report.write_report(tmp_path)
    markdown = (tmp_path / "leaderboard.md").read_text()
    assert cell(markdown, A, "per-digit %") == "87.5" and cell(markdown, B, "per-digit %") == "—"


def test_the_committed_records_load_without_the_new_metric():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        records = load_records(REPO_RESULTS)
    assert len(records) > 0 and "test_digit_accuracy" in records.columns


def test_records_are_checked_by_the_table(tmp_path):
    path = write_record(tmp_path, make_record(A, 0, test=split_metrics(0.5) | {"digit_accuracy": 1.5}))
    with pytest.raises(BenchError, match=r"metrics.test.digit_accuracy is float 1.5, expected a fraction in 0..1"):
        store.read_record(path)
    bad = make_record(A, 0)
    del bad["metrics"]["val"]["rmse"]  # a required metric of the table, though not on the board
    with pytest.raises(BenchError, match=r"missing key metrics.val.rmse"):
        store.read_record(write_record(tmp_path, bad))


def test_the_views_of_the_table_are_what_they_were():
    """Behaviour unchanged: the names, order, headers and claims of the metrics that were spelled out by hand."""
    assert dict(CLAIM_NAMES) == {"exact": "exact", "within_one": "within-one", "mse_raw": "MSE raw",
                                 "mse": "MSE (rounded)", "mae": "MAE"}  # fmt: skip
    assert tuple(CLAIM_METRICS) == ("exact", "within_one", "mse_raw", "mse", "mae")
    assert dict(METRIC_COLUMNS) == {"exact": "exact % (95% CI)", "within_one": "within-one %", "mse_raw": "MSE raw",
                                    "mse": "MSE (rounded)", "mae": "MAE", "digit_accuracy": "per-digit %"}  # fmt: skip
    assert tuple(SHOWN_METRICS) == ("exact", "within_one", "mse_raw") and set(MEASURED_TIPS) == set(METRIC_TABLE)
    assert [name for name, m in METRIC_TABLE.items() if m.required] == ["exact", "within_one", "mse", "rmse", "mae"]
    assert not METRIC_TABLE["digit_accuracy"].required and not METRIC_TABLE["digit_accuracy"].claimable


def test_a_claim_is_of_a_claimable_metric_only():
    with pytest.raises(BenchError, match="a claim is of one of exact, within_one, mse_raw, mse, mae"):
        Claim("digit_accuracy", 0.9, "val")
    assert Claim("mse_raw", 0.26, "val").metric == "mse_raw"
    with pytest.raises(ValueError, match="claimable, so it needs its column"):
        metric_table.Metric("x", "x", "sum", "lower", required=False, claimable=True, tip="", board=False)
