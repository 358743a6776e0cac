"""A leaderboard that tells the truth at a glance (issue 20): claims only beside like-for-like runs,
the epochs a row trained, time to accuracy, and every recipe of the registry in the full table."""

from __future__ import annotations

import math
import re
from dataclasses import asdict

import pandas as pd
import pytest
from record_factory import DATASET_ID, make_record, split_metrics, write_record

from digitsum_bench.claims import CLAIM_NAMES, Claim
from digitsum_bench.errors import BenchError
from digitsum_bench.registry import recipes
from digitsum_bench.registry.recipes import get_recipe, list_recipes
from digitsum_bench.reporting import plots, report
from digitsum_bench.reporting.leaderboard import first_reached, leaderboard, load_records, verdict
from digitsum_bench.store import read_estimates, write_estimate

R50 = "r003_resnet50_scratch"  # its report claims test exact ~30%, from scratch
A = "r002_attention_cnn"  # its report claims val exact, within-one, MSE raw and MAE
OWN_A = {"name": A, "epochs": 50, "train_size": 24_000, "members": 1}  # A's config at its own budget


def _claims(name: str) -> list[dict]:
    return [asdict(c) for c in get_recipe(name).claimed]


def _row_cells(table: str, start: str) -> dict[str, str]:
    """The cells, by header, of the markdown table's row that starts with `start`."""
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    row = next(line for line in lines if line.startswith(start))
    return dict(zip(*([c.strip() for c in line.strip("|").split("|")] for line in (lines[0], row))))


def _section(text: str, budget: str) -> str:
    """One budget's table of the markdown or the page."""
    if "<section" in text:
        return next(s for s in re.findall(r'<section class="board".*?</section>', text, flags=re.S)
                    if f"budget <code>{budget}</code>" in s)  # fmt: skip
    return next(s for s in text.split("\n## ")[1:] if s.startswith(f"budget `{budget}`"))


@pytest.fixture(scope="module")
def capped(tmp_path_factory):
    """A at the quick budget (2 of its 50 epochs, claims in its records) and at its own full budget."""
    results = tmp_path_factory.mktemp("capped")
    for seed in (0, 1):
        write_record(results, make_record(A, seed, budget="quick", epochs_run=2, claimed=_claims(A), seeds_requested=(0, 1),
                                          config={"name": A, "epochs": 2, "train_size": 24_000, "members": 1}))
        write_record(results, make_record(A, seed, budget="full", epochs_run=50, claimed=_claims(A), seeds_requested=(0, 1),
                                          val=0.28, test=0.22,
                                          config={"name": A, "epochs": 50, "train_size": 24_000, "members": 1}))
    report.write_report(results)
    return results, (results / "leaderboard.md").read_text(), (results / "index.html").read_text()


def test_no_claim_beside_a_capped_budget(capped):
    results, markdown, page = capped
    quick_md, quick_page = _section(markdown, "quick"), _section(page, "quick")
    assert "claim" not in quick_md.split("\n\n")[1]  # the table itself: no claim column, no claim cell
    assert 'class="claim"' not in quick_page and ">claim:" not in quick_page
    assert "2 of each recipe's epochs" in quick_md.splitlines()[0] and "2 of each recipe&#x27;s epochs" in quick_page
    assert f"| `{A}` |" in quick_md and "| 2/50 |" in quick_md  # epochs: run / the report's
    assert not (results / "plots" / "claimed_vs_reproduced_quick_synth-1a2b3c4d.png").exists()


def test_readme_answer_sets_each_claim_beside_the_own_budget_number_of_its_split(capped):
    """The README's answer: A's val claims beside its full runs' val numbers (0.28, not test's 0.22), never
    beside the quick runs; a recipe with no full run says what it would cost."""
    results, _, _ = capped
    records = load_records(results)
    answer = report.README_SECTIONS["answer"](records, leaderboard(records, report.registry_facts()))
    row = next(line for line in answer.splitlines() if line.startswith(f"| `{A}` |"))
    assert "val exact: 30.13% → 28.0 ± 0.0%" in row and "| 2/2 |" in row
    assert "22.0" not in row  # the test split's number stands beside no val claim
    assert "| `r002_resnet50` | val exact: 94.92% → —;" in answer and "not run:" in answer


def test_readme_answer_says_where_each_claim_stands_against_the_seeds(tmp_path):
    """Each claim against the 95% t-interval of the seeds' mean: inside it, outside it (the mean lower or
    higher), or no interval with one seed."""
    for seed, val in enumerate((0.25, 0.30, 0.35)):  # val exact 30.0 ± 12.4%; val MAE (1 - exact) 0.70 ± 0.12
        write_record(tmp_path, make_record(A, seed, val=val, claimed=_claims(A), epochs_run=50,
                                           config={"name": A, "epochs": 50, "train_size": 24_000, "members": 1}))
    write_record(tmp_path, make_record("r003_convnet4", 0, test=0.05, claimed=_claims("r003_convnet4"), epochs_run=50,
                                       config={"name": "r003_convnet4", "epochs": 50, "members": 1}))  # fmt: skip
    records = load_records(tmp_path)
    answer = report.README_SECTIONS["answer"](records, leaderboard(records, report.registry_facts()))
    row = next(line for line in answer.splitlines() if line.startswith(f"| `{A}` |"))
    assert "val exact: 30.13% → 30.0 ± 12.4% (the claim is inside the 95% CI)" in row
    assert "val MAE: 1.12 → 0.700 (measured lower: the claim is outside the 95% CI)" in row
    assert "test exact: 10% → 5.0% (one seed: no interval yet)" in answer


def test_own_budget_claims_stand_beside_the_same_split(capped):
    _, markdown, page = capped
    full = _section(markdown, "full")
    header = [c.strip() for c in next(line for line in full.splitlines() if line.startswith("| # |")).strip("|").split("|")]
    row = [c.strip() for c in next(line for line in full.splitlines() if f"| `{A}` |" in line).strip("|").split("|")]
    cells = dict(zip(header, row))
    # report 002's claims are on its validation split: beside this benchmark's val numbers, not test
    assert header[header.index("val exact % (95% CI)") + 1] == "claim: val exact"
    assert cells["claim: val exact"] == "val 30.13%" and cells["val exact % (95% CI)"].startswith("28.0 ±")
    assert cells["exact % (95% CI)"].startswith("22.0 ±") and cells["epochs"] == "50/50"
    full_page = _section(page, "full")
    assert 'class="claim"' in full_page and "claim: val exact</th>" in full_page


def test_time_to_accuracy_from_a_hand_built_history(tmp_path):
    def history(exacts, seconds):
        return [{"epoch": e, "train_loss": 1.0, "val_loss": 1.0, "val_exact": x, "val_within_one": x, "lr": 1e-3,
                 "seconds": s} for e, (x, s) in enumerate(zip(exacts, seconds), start=1)]  # fmt: skip

    first = history([0.2, 0.55, 0.8, 0.95], [10.0, 20.0, 30.0, 40.0])
    second = history([0.6, 0.7, 0.8, 0.85], [5.0, 5.0, 5.0, 5.0])
    assert first_reached(first, 0.5) == (2, 30.0) and first_reached(first, 0.9) == (4, 100.0)
    assert first_reached(second, 0.9) is None
    for seed, h in enumerate([first, second]):
        write_record(tmp_path, make_record(A, seed, history=h, seeds_requested=(0, 1)))
    report.write_report(tmp_path)
    row = pd.read_csv(tmp_path / "leaderboard.csv").set_index("recipe").loc[A]
    assert (row["epochs_to_50"], row["seconds_to_50"], row["reached_50"]) == (1.5, 17.5, 2)  # (2+1)/2, (30+5)/2
    assert (row["epochs_to_90"], row["seconds_to_90"], row["reached_90"]) == (4, 100.0, 1)
    line = next(line for line in (tmp_path / "leaderboard.md").read_text().splitlines() if f"| `{A}` |" in line)
    assert "| 1.5 ep · 18 s |" in line and "| 4 ep · 100 s (1 of 2 seeds) |" in line
    page = (tmp_path / "index.html").read_text()
    assert "to 90%: 4 ep · 100 s (1 of 2 seeds)" in page  # the detail view
    assert "against training time" in page  # the table's curves, all recipes in one plot


def test_full_table_lists_every_registry_recipe_with_its_measured_cost(tmp_path):
    """A recipe with no full run is a row saying so, its time per seed scaled from its own measured
    epochs on each device; a device with no run of it says that; devices share one table."""
    write_record(tmp_path, make_record(A, 0, seeds_requested=(0,)))  # full, on "cpu"
    write_record(tmp_path, make_record("ours_digitsum", 0, seeds_requested=(0,), device="NVIDIA H200"))
    # r003_convnet4 measured at the quick budget only: 2 epochs in 20 s -> its own 50 epochs in 500 s
    write_record(tmp_path, make_record("r003_convnet4", 0, budget="quick", epochs_run=2, train_seconds=20.0,
                                       config={"name": "r003_convnet4", "epochs": 2, "members": 1}))  # fmt: skip
    # r004_multilabel_transfer: its 50-epoch pre-training stage costs time too -> 100 epochs in 1,000 s
    write_record(tmp_path, make_record("r004_multilabel_transfer", 0, budget="quick", epochs_run=2, train_seconds=20.0,
                                       config={"name": "r004_multilabel_transfer", "epochs": 2, "members": 1}))  # fmt: skip
    # r000_seresnet: a CPU run at the full budget left it out, noting its estimate (a few timed steps)
    write_estimate(tmp_path, "full", DATASET_ID, "r000_seresnet", 7200.0, "cpu")
    report.write_report(tmp_path)
    for text in ((tmp_path / "leaderboard.md").read_text(), (tmp_path / "index.html").read_text()):
        full = _section(text, "full")
        assert "about 2.0 h a seed on cpu (from a few timed steps)" in full
        for name in list_recipes():
            assert name in full, name
        assert "about 16.7 min a seed on cpu" in full  # r004: pre-training epochs counted
        assert "about 8.3 min a seed on cpu" in full and "time not measured on NVIDIA H200" in full
        assert "NVIDIA H200" in full and f"{A}" in full  # both devices' rows in the one table
    board = leaderboard(load_records(tmp_path), report.registry_facts())
    full = board[board["budget"] == "full"]
    assert set(full["recipe"]) == set(list_recipes())
    assert (full.loc[full["not_run"] != "", "n_seeds"] == 0).all()


def _history(seconds: list[float]) -> list[dict]:
    return [{"epoch": e, "train_loss": 1.0, "val_loss": 1.0, "val_exact": 0.1, "val_within_one": 0.3, "lr": 1e-3,
             "seconds": t} for e, t in enumerate(seconds, 1)]  # fmt: skip


def test_train_time_counts_each_epoch_at_the_median_and_a_timed_pretraining_stage(tmp_path):
    """A machine paused during one epoch does not inflate a row's train time (the record keeps its wall
    time); a record that times its pre-training stage has those epochs counted in its cost per epoch and
    in its time to accuracy."""
    paused = _history([10.0] * 4 + [1000.0] + [10.0] * 5)  # epoch 5 stopped (SIGSTOP) for 990 s
    write_record(tmp_path, make_record(A, 0, seeds_requested=(0,), epochs_run=10, train_seconds=1090.0,
                                       history=paused))  # fmt: skip
    # r004 at the quick budget, both stages timed: 2 + 2 epochs in 40 s -> its own 50 + 50 epochs in 1,000 s
    second = _history([10.0] * 2)
    second[1]["val_exact"] = 0.6  # 50% reached after both stages' 4 epochs: 40 s
    stage = make_record("r004_multilabel_transfer", 0, budget="quick", epochs_run=2, train_seconds=40.0,
                        config={"name": "r004_multilabel_transfer", "epochs": 2, "members": 1}, history=second)
    write_record(tmp_path, stage | {"pretrain": {"train_seconds": 20.0, "history": _history([10.0] * 2)}})
    report.write_report(tmp_path)
    board = leaderboard(load_records(tmp_path), report.registry_facts())
    row = board[(board["recipe"] == A) & (board["budget"] == "full")].iloc[0]
    assert row["train_seconds"] == 1090.0 and row["steady_seconds"] == pytest.approx(100.0)
    for text in ((tmp_path / "leaderboard.md").read_text(), (tmp_path / "index.html").read_text()):
        full = _section(text, "full")
        assert "100 s" in full and "18.2 min" not in full
        assert "about 16.7 min a seed on cpu" in full  # not 33.3 min: 40 s were four epochs, not two
        assert "2 ep · 40 s" in _section(text, "quick")  # to 50%: the pre-training stage's 20 s first


def test_committed_readme_tables_are_what_report_writes():
    """The result tables of the README and of every docs/*.md with markers are written from the committed records,
    never typed in; each section is in one of them, and the README holds the answer."""
    root = report.REPO_README.parent
    records = load_records(root / "results")
    notes = read_estimates(root / "results")  # the CPU's estimate notes, as report reads them
    board = leaderboard(records, report.registry_facts(), notes)
    docs = report.doc_files()
    marked = [path for path in [root / "README.md", *(root / "docs").glob("*.md")]
              if report.MARKER.search(path.read_text(encoding="utf-8"))]  # fmt: skip
    assert sorted(marked) == sorted(docs)  # report rewrites every file with a marker
    texts = {path: path.read_text(encoding="utf-8") for path in docs}
    for path, text in texts.items():
        assert report.readme_text(text, records, board) == text, path
    for name in report.README_SECTIONS:
        filled = f"<!-- report:{name} -->\n([^|\n].*\n\n)?\\|"  # in a file, filled: a table
        assert any(re.search(filled, text) for text in texts.values()), name
    assert "<!-- report:answer -->" in texts[report.REPO_README]


def test_readme_marker_of_no_section_is_a_one_line_error():
    records = pd.DataFrame()
    with pytest.raises(report.BenchError, match="report:nope: no such section"):
        report.readme_text("<!-- report:nope -->\nold\n<!-- /report:nope -->\n", records, records)


def test_test_time_table_shows_each_cpu_and_command():
    run = {"cpu": "EPYC, AVX512, float32", "threads": 2, "command": "pytest", "passed": 412, "seconds": 690.0,
           "slowest": [{"test": "tests/test_gate.py::test_a", "seconds": 120.4}, {"test": "tests/x.py::b", "seconds": 9.6}]}
    table = report.test_time_table({"runs": {"k": run}})
    assert "| EPYC, AVX512, float32 | 2 | `pytest` | 412 | 11.5 min | test_a 120 s; b 10 s |" in table


EMA = "r003_resnet50_ema"  # report 003 claims ~90% test exact for an ImageNet-pretrained ResNet-50 with EMA


@pytest.mark.parametrize("loaded", [False, True], ids=["from scratch", "ImageNet weights loaded"])
def test_a_pretrained_recipes_claim_stands_only_beside_a_run_that_loaded_the_weights(tmp_path, loaded):
    """A run whose record says `pretrained: unavailable` trained from scratch: a different method from the
    report's, so no view sets the report's claim against it (no verdict, no claimed number, no plot); a run
    that loaded ImageNet weights (`--weights`) is compared as usual."""
    status = "imagenet" if loaded else "unavailable"
    for seed, test in enumerate((0.30, 0.32, 0.34)):
        write_record(tmp_path, make_record(EMA, seed, test=test, pretrained=status, epochs_run=50, claimed=_claims(EMA),
                                           config={"name": EMA, "epochs": 50, "train_size": 8_000, "members": 1,
                                                   "pretrained": "imagenet"}))  # fmt: skip
    report.write_report(tmp_path)
    records = load_records(tmp_path)
    board = leaderboard(records, report.registry_facts())
    answer = report.README_SECTIONS["answer"](records, board)
    answer_row = next(line for line in answer.splitlines() if line.startswith(f"| `{EMA}` |"))
    markdown = _section((tmp_path / "leaderboard.md").read_text(), "full")
    md_row = next(line for line in markdown.splitlines() if f"| `{EMA}` |" in line)
    page_row = re.search(rf'<tr data-recipe="{EMA}">.*?</tr>', (tmp_path / "index.html").read_text()).group(0)
    csv = pd.read_csv(tmp_path / "leaderboard.csv").set_index("recipe").loc[EMA]
    plot = tmp_path / "plots" / f"claimed_vs_reproduced_full_{DATASET_ID}.png"
    said = "not comparable: the report started from ImageNet weights, this run from scratch"
    if loaded:
        assert "test exact: 90% → 32.0 ± 5.0% (measured lower: the claim is outside the 95% CI)" in answer_row
        assert said not in md_row + page_row + answer_row and "| test 90% (approximately) |" in md_row
        assert csv["claimed_exact"] == 0.9 and plot.exists()
    else:
        assert f"test exact: 90% → 32.0 ± 5.0% ({said})" in answer_row and "outside" not in answer_row
        assert f"| {said} |" in md_row and "90%" not in md_row  # the claim's place says why, the number is gone
        assert said in page_row and "claim: 90%" not in page_row and "outside the 95% CI" not in page_row
        assert math.isnan(csv["claimed_exact"]) and csv["claimed"].startswith(said)
        assert not plot.exists()  # the only exact claim of the table is of another method: nothing to plot


def test_a_capped_row_has_no_claimed_numbers_in_the_csv(capped):
    """The CSV's claim columns are as empty as the tables' claim cells beside a capped run."""
    results, _, _ = capped
    csv = pd.read_csv(results / "leaderboard.csv")
    quick, full = (csv[(csv["recipe"] == A) & (csv["budget"] == budget)].iloc[0] for budget in ("quick", "full"))
    assert quick[["claimed", "claimed_split", *(f"claimed_{m}" for m in CLAIM_NAMES)]].isna().all()
    assert (full["claimed_exact"], full["claimed_split"]) == (0.30133, "val")


@pytest.mark.parametrize("lost", [math.nan, math.inf], ids=["NaN", "inf"])
def test_a_claim_stands_against_the_seeds_with_a_finite_value(tmp_path, lost):
    """val MSE raw 2.7, 2.9 and a seed with no finite value (a diverged run): the mean of the two and its 95%
    interval over two seeds (± 1.27), not over three (± 0.35), so the claim 2.32 is inside it; the cell says so."""
    for seed, mse_raw in enumerate((2.7, 2.9, lost)):
        write_record(tmp_path, make_record(A, seed, val=split_metrics(0.3, mse_raw=mse_raw), claimed=_claims(A),
                                           epochs_run=50, config=OWN_A))  # fmt: skip
    records = load_records(tmp_path)
    board = leaderboard(records, report.registry_facts())
    answer = report.README_SECTIONS["answer"](records, board)
    assert "val MSE raw: 2.32 → 2.800 (2 of 3 seeds: 1 not finite) (the claim is inside the 95% CI)" in answer
    cells = _row_cells(_section(report.markdown(board), "full"), f"| 1 | `{A}` |")
    assert cells["val MSE raw"] == "2.800 (2 of 3 seeds: 1 not finite)"
    assert cells["val exact % (95% CI)"] == "30.0 ± 0.0"  # every seed's exact is finite: no note


def test_a_test_claim_on_data_without_a_test_split_says_so(tmp_path):
    """Course data has no test split: a test claim has nothing of its kind to stand against, which it says
    (not "one seed", not "no finite value")."""
    own = get_recipe(R50)
    for seed in range(3):
        write_record(tmp_path, make_record(R50, seed, test=None, claimed=_claims(R50), epochs_run=own.epochs,
                                           config={"name": R50, "epochs": own.epochs, "train_size": own.train_size,
                                                   "members": 1}))  # fmt: skip
    row = leaderboard(load_records(tmp_path), report.registry_facts()).iloc[0]
    (claim,) = row["claims"]
    assert claim["split"] == "test" and verdict(row, claim) == "this data has no test split"


EMA_CONFIG = {"name": EMA, "epochs": 50, "train_size": 8_000, "members": 1, "pretrained": "imagenet"}


def test_seeds_with_and_without_imagenet_weights_are_two_labelled_rows(tmp_path, monkeypatch):
    """Seeds of a pretrained recipe that loaded the weights and seeds that could not are two methods: two rows,
    labelled in the recipe cell; the report's claim stands beside the loaded row alone, in every view."""
    for seed, (test, status) in enumerate([(0.30, "imagenet"), (0.34, "imagenet"), (0.05, "unavailable")]):
        write_record(tmp_path, make_record(EMA, seed, test=test, pretrained=status, epochs_run=50, claimed=_claims(EMA),
                                           config=EMA_CONFIG))  # fmt: skip
    plotted = {}
    claimed_plot = plots.PLOTS["claimed_vs_reproduced"]
    monkeypatch.setitem(plots.PLOTS, "claimed_vs_reproduced", lambda rows, runs, where: plotted.update(
        rows=list(plots._claim_rows(rows)["recipe"]), runs=sorted(runs["recipe"])) or claimed_plot(rows, runs, where))
    report.write_report(tmp_path)
    loaded, scratch = f"{EMA} (ImageNet weights loaded)", f"{EMA} (from scratch: ImageNet weights unavailable)"
    said = "not comparable: the report started from ImageNet weights, this run from scratch"
    full = _section((tmp_path / "leaderboard.md").read_text(), "full")
    assert _row_cells(full, f"| 1 | `{EMA}` (ImageNet weights loaded) |")["claim: test exact"] == "test 90% (approximately)"
    cells = _row_cells(full, f"| 2 | `{EMA}` (from scratch: ImageNet weights unavailable) |")
    assert cells["claim: test exact"] == said and cells["exact % (95% CI)"] == "5.0 ± n/a"
    csv = pd.read_csv(tmp_path / "leaderboard.csv").set_index(["recipe", "weights"]).loc[EMA]
    assert list(csv["n_seeds"]) == [2, 1] and csv.loc["imagenet", "claimed_exact"] == 0.9
    assert math.isnan(csv.loc["unavailable", "claimed_exact"]) and csv.loc["unavailable", "claimed"].startswith(said)
    page = (tmp_path / "index.html").read_text()
    rows = {re.search(r'<button class="open"[^>]*>([^<]*)</button>', r).group(1): r
            for r in re.findall(rf'<tr data-recipe="{EMA}">.*?</tr>', page)}  # fmt: skip
    assert set(rows) == {loaded, scratch}
    assert "claim: 90%" in rows[loaded] and said not in rows[loaded] and said in rows[scratch]
    records = load_records(tmp_path)
    answer = report.README_SECTIONS["answer"](records, leaderboard(records, report.registry_facts()))
    assert (f"| `{EMA}` (ImageNet weights loaded) | test exact: 90% → 32.0 ± 25.4% (measured lower: the claim is "
            "outside the 95% CI) | 2/3 |") in answer
    assert f"| `{EMA}` (from scratch: ImageNet weights unavailable) | test exact: 90% → 5.0% ({said}) | 1/3 |" in answer
    assert plotted == {"rows": [loaded], "runs": [loaded, loaded, scratch]}  # the claim beside the loaded seeds alone


def test_readme_seed_tables_use_the_current_records_of_one_dataset(tmp_path):
    """The README's `quick`, `ours-quick` and `ours-full` tables: the newest code version's seeds, of one dataset."""
    for budget in ("quick", "full"):
        for version in ("0.1.0", "0.2.0"):
            for seed in (0, 1):
                write_record(tmp_path, make_record("ours_digitsum", seed, budget=budget, code_version=version,
                                                   seeds_requested=(0, 1)), name=f"seed{seed}-{version}.json")
        write_record(tmp_path, make_record("ours_digitsum", 2, budget=budget, dataset_id="synth-0000old0",
                                           finished="2026-11-01T00:00:00+00:00"))  # an older generator's data
    records = load_records(tmp_path)
    board = leaderboard(records, report.registry_facts())
    quick = report.README_SECTIONS["quick"](records, board)
    assert [line for line in quick.splitlines() if "`ours_digitsum`" in line][0].split(" | ")[3] == "0, 1"
    assert quick.count("`ours_digitsum`") == 1
    for name in ("ours-quick", "ours-full"):
        assert report.README_SECTIONS[name](records, board).splitlines()[0] == "| seed | 0 | 1 |", name


def test_readme_answer_is_of_one_dataset_and_names_it(tmp_path):
    """After a generator version bump the built-in data has a new id: the answer lists each recipe once, from the
    newest synthetic dataset, and says which."""
    write_record(tmp_path, make_record(A, 0, test=0.2, dataset_id="synth-0000old0", finished="2026-11-01T00:00:00+00:00"))
    write_record(tmp_path, make_record(A, 0, test=0.4))
    records = load_records(tmp_path)
    answer = report.README_SECTIONS["answer"](records, leaderboard(records, report.registry_facts()))
    assert f"(`{DATASET_ID}`)" in answer.splitlines()[0] and "synth-0000old0" not in answer
    assert answer.count(f"| `{A}` |") == 1 and answer.count("| `r000_seresnet` |") == 1


def test_a_fraction_claim_outside_0_to_1_is_refused_naming_its_recipe(monkeypatch):
    """93.5 meant as a percentage would read as 'measured lower' beside any accuracy: refused when made."""
    with pytest.raises(BenchError, match=r"^claim of exact = 93\.5: .*0\.\.1"):
        Claim("exact", 93.5, "val")
    with pytest.raises(BenchError, match="claim of within_one = -0.1"):
        Claim("within_one", -0.1, "test")
    assert Claim("mse_raw", 2.3, "val").value == 2.3  # an error, not a fraction: above 1 is fine
    monkeypatch.setitem(recipes._REGISTRY, "bad_claim", lambda: Claim("exact", 93.5, "val"))
    with pytest.raises(BenchError, match=r"^recipe bad_claim: claim of exact = 93\.5"):
        get_recipe("bad_claim")
