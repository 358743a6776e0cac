"""The leaderboard, its markdown and CSV, and the plots, on fake records whose means and stds are computed by hand."""

from __future__ import annotations

import json
import math
import re

import pandas as pd
import pytest
from record_factory import DATASET_ID, make_record, split_metrics, write_record

from digitsum_bench.errors import BenchError
from digitsum_bench.reporting import plots, report
from digitsum_bench.reporting.leaderboard import claim_fields, leaderboard, load_records

A, B = "r002_attention_cnn", "r002_resnet50_pretrained"
PNG = b"\x89PNG\r\n\x1a\n"
CLAIM_B = [{"metric": "exact", "value": 0.9492, "split": "val", "note": ""},
           {"metric": "mse_raw", "value": 0.264, "split": "val", "note": ""}]  # fmt: skip


def write_fixture(results) -> None:
    """Two recipes x 2-3 seeds in two budgets.

    full:  A test exact .30/.32/.34 (mean .32, sd .02); B .90/.92 (mean .91, sd .01414), 2 of 3 seeds.
    quick: A .10/.20 (mean .15, sd .07071); B .12/.16 (mean .14) - not significantly worse than A.
    """
    for seed, exact, w1, mse, mae in [(0, 0.30, 0.70, 2.0, 1.0), (1, 0.32, 0.72, 2.2, 1.1), (2, 0.34, 0.74, 2.4, 1.2)]:
        test = split_metrics(exact, within_one=w1, mse=mse, mae=mae)
        write_record(results, make_record(A, seed, val=exact - 0.02, test=test, train_seconds=10.0 + seed))
    for seed, exact in [(0, 0.90), (1, 0.92)]:
        write_record(results, make_record(B, seed, val=0.95, test=exact, pretrained="unavailable", gflops=4.1,
                                          params_m=23.5, claimed=CLAIM_B))  # fmt: skip
    for recipe, exacts in [(A, (0.10, 0.20)), (B, (0.12, 0.16))]:
        for seed, exact in enumerate(exacts):
            write_record(results, make_record(recipe, seed, budget="quick", test=exact, seeds_requested=(0, 1)))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The fixture's report, written once: (results folder, returned paths)."""
    results = tmp_path_factory.mktemp("results")
    write_fixture(results)
    return results, report.write_report(results)


def row(board: pd.DataFrame, recipe: str, budget: str) -> pd.Series:
    match = board[(board["recipe"] == recipe) & (board["budget"] == budget)]
    assert len(match) == 1
    return match.iloc[0]


# ---------------------------------------------------------------------------- leaderboard


def test_csv_matches_records(built):
    results, _ = built
    board = pd.read_csv(results / "leaderboard.csv")
    for column in ["recipe", "report", "method", "budget", "dataset_id", "dataset", "device", "n_seeds",
                   "seeds_requested", "complete", "test_exact_mean", "test_exact_std", "test_within_one_mean",
                   "test_mse_std", "test_mae_mean", "val_exact_mean", "val_mae_std", "params_m", "gflops",
                   "train_seconds", "images_per_s", "claimed", "claimed_exact", "claimed_split", "pretrained",
                   "code_version", "git_commit"]:  # fmt: skip
        assert column in board.columns
    a = row(board, A, "full")
    assert a["n_seeds"] == 3 and a["seeds_requested"] == 3 and a["complete"]
    assert a["test_exact_mean"] == pytest.approx(0.32)
    assert a["test_exact_std"] == pytest.approx(0.02)  # sqrt((.02^2 + 0 + .02^2) / 2)
    assert a["test_within_one_mean"] == pytest.approx(0.72)
    assert a["test_mse_mean"] == pytest.approx(2.2) and a["test_mse_std"] == pytest.approx(0.2)
    assert a["test_mae_mean"] == pytest.approx(1.1) and a["test_mae_std"] == pytest.approx(0.1)
    assert a["val_exact_mean"] == pytest.approx(0.30)
    assert a["train_seconds"] == pytest.approx(11.0)
    assert pd.isna(a["claimed"]) and pd.isna(a["claimed_exact"])  # no claim: empty cells
    b = row(board, B, "full")
    assert b["n_seeds"] == 2 and b["seeds_requested"] == 3 and not b["complete"]
    assert b["test_exact_mean"] == pytest.approx(0.91)
    assert b["test_exact_std"] == pytest.approx(0.02 / math.sqrt(2))
    assert (b["gflops"], b["params_m"], b["pretrained"]) == (4.1, 23.5, "unavailable")
    assert b["claimed"] == "val exact 94.92%, val MSE raw 0.264"
    assert b["claimed_mse_raw"] == 0.264 and pd.isna(b["claimed_mse"])  # the claim's own definition
    assert (b["claimed_exact"], b["claimed_split"]) == (0.9492, "val")


def test_sorted_by_test_exact(built):
    board = pd.read_csv(built[0] / "leaderboard.csv")
    board = board[board["n_seeds"] > 0]  # the registry's recipes not run yet come last, in the full table
    assert list(zip(board["recipe"], board["budget"])) == [(B, "full"), (A, "full"), (A, "quick"), (B, "quick")]


def test_sorted_by_val_without_test_split(tmp_path):
    """Course data has no test split: rank on val instead."""
    for recipe, val in [("r000_se_resnet", 0.5), ("r001_se_resnet", 0.7)]:
        write_record(tmp_path, make_record(recipe, dataset_id="course-0a0b", val=val, test=None))
    board = leaderboard(load_records(tmp_path))
    assert list(board["recipe"]) == ["r001_se_resnet", "r000_se_resnet"]
    assert list(board["split"]) == ["val", "val"] and board["test_exact_mean"].isna().all()


def test_newest_code_version_only(tmp_path):
    """Records of older code are not mixed in; 0.10.0 is newer than 0.9.0."""
    write_record(tmp_path, make_record(A, 0, test=0.2, code_version="0.9.0"))
    write_record(tmp_path, make_record(A, 1, test=0.3, code_version="0.9.0"))
    write_record(tmp_path, make_record(A, 0, test=0.6, code_version="0.10.0"), name="seed0-new.json")
    board = leaderboard(load_records(tmp_path))
    assert len(board) == 1
    assert (board["code_version"][0], board["n_seeds"][0], board["test_exact_mean"][0]) == ("0.10.0", 1, 0.6)


# ---------------------------------------------------------------------------- markdown


def tables(markdown: str) -> dict[str, str]:
    """Each table's text by its budget."""
    sections = markdown.split("\n## ")[1:]
    return {re.match(r"budget `(\w+)`", s).group(1): s for s in sections}


def test_markdown_one_table_per_budget_with_ci_and_marks(built):
    markdown = (built[0] / "leaderboard.md").read_text()
    by_budget = tables(markdown)
    assert set(by_budget) == {"full", "quick"}
    full, quick = by_budget["full"], by_budget["quick"]
    assert f"(`{DATASET_ID}`)" in full and "code version 0.1.0" in full and "| device |" in full
    full_rows = [line for line in full.splitlines() if line.startswith("| ") and "`r0" in line and "not run" not in line]
    quick_rows = [line for line in quick.splitlines() if line.startswith("| ") and "`r0" in line]
    assert len(full_rows) == len(quick_rows) == 2  # budgets are not mixed
    # t(.975, 2) = 4.303: .02 / sqrt(3) * 4.303 = 4.97 points; t(.975, 1) = 12.706: .07071 / sqrt(2) * 12.706 = 63.5
    assert f"| `{B}` |" in full_rows[0] and "| best |" in full_rows[0]
    assert "32.0 ± 5.0" in full_rows[1] and "| p<0.001 |" in full_rows[1]
    assert "15.0 ± 63.5" in quick_rows[0] and "14.0 ± 25.4" in quick_rows[1]
    assert "| ≈ (p=" in quick_rows[1]
    assert "| 2/3 |" in full_rows[0] and "| unavailable |" in full_rows[0]
    assert "| val 94.92% |" in full_rows[0]
    # epochs: run / the report's: the registry's 50 for A, the run's own for B (a full run of a recipe not registered)
    assert "| 3/3 |" in full_rows[0] and "| 3/50 |" in full_rows[1] and "| 3/50 |" in quick_rows[0]
    assert "claims" in markdown.split("\n## ")[0]  # the legend says claims are not measurements


def test_markdown_single_seed_says_untestable(tmp_path):
    write_record(tmp_path, make_record(A, 0, test=0.5))
    write_record(tmp_path, make_record(B, 0, test=0.4))
    markdown = report.markdown(leaderboard(load_records(tmp_path)))
    second = [line for line in markdown.splitlines() if f"`{B}`" in line][0]
    assert "40.0 ± n/a" in second and "untestable" in second


def test_check_only_budget_is_in_the_markdown_only_and_unranked(tmp_path):
    """A smoke run proves only that the code runs: not in the CSV, and in the markdown under its label, no rank."""
    write_record(tmp_path, make_record(A, 0, test=0.3))
    for recipe, exact in [(A, 0.10), (B, 0.16)]:
        write_record(tmp_path, make_record(recipe, 0, budget="smoke", test=exact, seeds_requested=(0,)))
    report.write_report(tmp_path)
    assert set(pd.read_csv(tmp_path / "leaderboard.csv")["budget"]) == {"full"}
    smoke = tables((tmp_path / "leaderboard.md").read_text())["smoke"]
    header = next(line for line in smoke.splitlines() if line.startswith("| "))
    assert "not ranked" in smoke.splitlines()[0] and "are not results" in smoke
    assert not header.startswith("| # |") and "vs best" not in header and "best" not in smoke.split(header)[1]
    assert f"| `{A}` |" in smoke and f"| `{B}` |" in smoke


def test_pareto_front():
    points = pd.DataFrame({"cost": [1, 2, 3, 3, 5], "value": [50, 40, 70, 60, 70]})
    front = plots.pareto_front(points, "cost", "value")
    assert list(zip(front["cost"], front["value"])) == [(1, 50), (3, 70)]


# ---------------------------------------------------------------------------- files


def test_all_plots_are_pngs(built):
    results, paths = built
    tables = {results / "leaderboard.csv", results / "leaderboard.md", results / "index.html"}
    expected = tables | {
        results / "plots" / f"{name}_{budget}_{DATASET_ID}.png" for name in plots.PLOTS for budget in ("full", "quick")
    } - {results / "plots" / f"claimed_vs_reproduced_quick_{DATASET_ID}.png"}  # capped: no claims to set beside
    assert set(paths) == expected
    for path in expected - tables:
        data = path.read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, path
    assert not list(results.rglob("*.tmp"))


def test_corrupt_record_is_skipped_with_a_warning_naming_it(tmp_path):
    """Records are copied in from other machines: one bad file is named and left out, the rest are reported."""
    write_record(tmp_path, make_record(A, 0))
    report.write_report(tmp_path)
    before = (tmp_path / "leaderboard.csv").read_bytes()
    bad = write_record(tmp_path, make_record(A, 1))
    bad.write_text('{"schema": 1, "recipe": ')
    with pytest.warns(UserWarning, match=re.escape(str(bad)) + r": corrupt record \(bad JSON"):
        report.write_report(tmp_path)
    assert (tmp_path / "leaderboard.csv").read_bytes() == before


def test_record_missing_key_is_corrupt(tmp_path):
    record = make_record(A, 0)
    del record["metrics"]["val"]["mae"]
    path = write_record(tmp_path, record)
    with pytest.warns(UserWarning, match=re.escape(str(path)) + r": corrupt record \(missing key metrics.val.mae\)"):
        with pytest.raises(BenchError, match="no records in it"):
            load_records(tmp_path)


def test_failed_plot_writes_nothing(tmp_path, monkeypatch):
    """Everything is rendered before anything is written."""
    write_record(tmp_path, make_record(A, 0))

    def broken(*args):
        raise RuntimeError("plot failed")

    monkeypatch.setitem(plots.PLOTS, "confusion", broken)
    with pytest.raises(RuntimeError):
        report.write_report(tmp_path, out=tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))


def test_no_records_says_how_to_make_some(tmp_path):
    with pytest.raises(BenchError, match=r"records: no records in it; make some with `digitsum-bench run"):
        load_records(tmp_path)
    folder = write_record(tmp_path, make_record(A, 0)).parent
    for path in folder.iterdir():  # only a lock and a failed run remain: still nothing to report
        path.unlink()
    (folder / "seed0.lock").write_text("")
    (folder / "seed0.failed.json").write_text(json.dumps({"recipe": A, "seed": 0, "error": "boom"}))
    with pytest.raises(BenchError, match="no records"):
        load_records(tmp_path)


def test_duplicate_record_counted_once(tmp_path):
    """A copy under another name (another machine): keep the latest finished, warn, never count twice."""
    for seed, exact in [(0, 0.30), (1, 0.32), (2, 0.34)]:
        write_record(tmp_path, make_record(A, seed, test=exact))
    later = make_record(A, 0, test=0.36, finished="2026-11-26T09:00:00")  # no zone: read as UTC
    write_record(tmp_path, later, name="seed0-from-gpu-box.json")
    with pytest.warns(UserWarning, match="duplicate records .*seed0-from-gpu-box.json, ignored .*seed0.json"):
        records = load_records(tmp_path)
    assert len(records) == 3
    board = leaderboard(records)
    assert board["n_seeds"][0] == 3 and board["test_exact_mean"][0] == pytest.approx((0.36 + 0.32 + 0.34) / 3)


def test_out_folder_leaves_results_alone(tmp_path):
    """`out` receives the whole report; the results folder gets none of it."""
    write_record(tmp_path, make_record(A, 0))
    paths = report.write_report(tmp_path, out=tmp_path / "elsewhere")
    assert len(paths) == 3 + len(plots.PLOTS) - 1  # csv, md, index.html and the plots (no claim: no claimed-vs plot)
    assert all(p.is_relative_to(tmp_path / "elsewhere") and p.is_file() for p in paths)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "records"]


def test_claim_given_in_words_only():
    """Report 003 says ResNet-18 was 'unable to learn' without a number: shown as words, no number invented."""
    c = claim_fields([{"metric": "exact", "value": None, "split": "test", "note": "'unable to learn'"}])
    assert c["claimed"] == "test exact: 'unable to learn'"
    assert math.isnan(c["claimed_exact"]) and c["claimed_split"] == "test"


# ---------------------------------------------------------------------------- issue 11: like-for-like, robustness


def test_mse_raw_in_csv_and_each_claim_beside_its_own_metric(built):
    """Report 002's MSE claim is of raw outputs: it stands beside MSE raw, never beside the rounded MSE."""
    results, _ = built
    board = pd.read_csv(results / "leaderboard.csv")
    assert {"test_mse_raw_mean", "test_mse_raw_std", "val_mse_raw_mean", "claimed_mse_raw"} <= set(board.columns)
    a = row(board, A, "full")
    assert a["test_mse_raw_mean"] == pytest.approx(0.8 * 2.2)  # record_factory: mse_raw = 0.8 * mse
    markdown = (results / "leaderboard.md").read_text()
    full = tables(markdown)["full"]
    header = next(line for line in full.splitlines() if line.startswith("| # |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    # the claims are on val: beside the val numbers, never beside test (the ranked split)
    assert columns[columns.index("val MSE raw") + 1] == "claim: val MSE raw"
    assert columns[columns.index("val exact % (95% CI)") + 1] == "claim: val exact"
    # the registry's recipes not run yet bring report 003's test claims: beside the test column itself
    assert columns[columns.index("exact % (95% CI)") + 1 : columns.index("exact % (95% CI)") + 3] == [
        "claim: test exact", "vs best"]
    assert "claim: val MSE (rounded)" not in columns  # no report claims the rounded MSE
    cells = dict(zip(columns, [c.strip() for c in
                               next(line for line in full.splitlines() if f"`{B}`" in line).strip("|").split("|")]))
    assert cells["claim: val MSE raw"] == "val 0.264" and cells["val MSE raw"] == f"{0.8 * 4 * (1 - 0.95):.3f}"
    assert cells["val exact % (95% CI)"].startswith("95.0 ±")
    legend = markdown.split("\n## ")[0]
    assert "MSE raw" in legend and "MSE (rounded)" in legend and "multiply-add" in legend


def test_other_schema_is_skipped_by_report_not_fatal(tmp_path):
    write_record(tmp_path, make_record(A, 0, test=0.5))
    future = write_record(tmp_path, make_record(A, 1, test=0.9, schema=2))
    with pytest.warns(UserWarning, match=re.escape(str(future)) + ".*schema 2"):
        board = leaderboard(load_records(tmp_path))
    assert board["n_seeds"].tolist() == [1] and board["test_exact_mean"].tolist() == [0.5]


def test_unwritable_results_folder_is_a_one_line_error(tmp_path, monkeypatch):
    """A read-only folder (simulated: the tests may run as root, who can write anywhere)."""
    import tempfile

    write_record(tmp_path, make_record(A, 0))

    def read_only(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(BenchError, match=r"leaderboard.csv: cannot write \(Permission denied\)"):
        report.write_report(tmp_path)


def test_empty_folder_hint_is_a_command_run_accepts(tmp_path):
    from digitsum_bench.cli import build_parser

    with pytest.raises(BenchError) as e:
        load_records(tmp_path)
    hint = re.search(r"`digitsum-bench (run [^`]*)`", str(e.value)).group(1)
    args = build_parser().parse_args(hint.replace("NAME", "r003_convnet4").split())
    assert args.recipe == ["r003_convnet4"] and args.results == tmp_path
