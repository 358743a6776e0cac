"""Budgets: what each one caps, runs left out on a CPU, check-only tables, the quick-start comparison."""

from __future__ import annotations

from dataclasses import replace

import pytest
from record_factory import make_record, write_record

from digitsum_bench.engine import launch, plan
from digitsum_bench.engine.runner import RunOptions
from digitsum_bench.errors import BenchError
from digitsum_bench.registry import budgets
from digitsum_bench.registry.recipes import get_recipe
from digitsum_bench.reporting import leaderboard, report
from digitsum_bench.store import read_estimates


def test_quick_budget_keeps_all_data_and_caps_epochs():
    for name in ("r002_attention_cnn", "r003_convnet4", "ours_digitsum", "r004_multilabel_transfer"):
        own, quick = get_recipe(name), budgets.apply_budget(get_recipe(name), "quick")
        assert (quick.train_size, quick.val_size) == (own.train_size, own.val_size)  # the full pools
        assert quick.epochs == min(own.epochs, 2)
    assert budgets.BUDGETS["quick"].test_size == 10_000
    stage1 = budgets.apply_budget(get_recipe("r004_multilabel_transfer"), "quick").pretrain
    assert stage1.epochs == 2  # a pre-training stage is capped too


def test_ci_budget_is_one_epoch_of_all_training_images_with_fewer_labelled_images_a_step():
    own, ci = get_recipe("ours_digitsum"), budgets.apply_budget(get_recipe("ours_digitsum"), "ci")
    assert (ci.epochs, ci.train_size, ci.val_size, ci.members) == (1, 24_000, 2_000, 1)
    assert (own.aux_batch, ci.aux_batch, ci.aux_size, ci.batch_size) == (48, 16, own.aux_size, own.batch_size)
    assert budgets.apply_budget(own, "quick").aux_batch == 48  # only the gate's budget caps it
    assert budgets.BUDGETS["ci"].test_size == 10_000
    assert "at most 16 labelled synthetic images a step" in budgets.budget_cap("ci")


def test_slow_recipes_are_left_out_on_a_cpu_and_listed(variant, tmp_path, monkeypatch, capsys):
    fast, slow = variant("tiny_fast"), variant("tiny_slow")
    monkeypatch.setattr(plan, "estimate_seconds", lambda recipe, *a, **k: 7200.0 if recipe.name == slow else 5.0)
    failures = launch.launch([fast, slow], [0], RunOptions(budget="full", data="synth", results=tmp_path, device="cpu"), cpu_limit=30)
    assert failures == 0
    assert "skip tiny_slow: estimated 2.0 h per seed" in capsys.readouterr().out
    records = leaderboard.load_records(tmp_path)
    assert set(records["recipe"]) == {fast}
    notes = read_estimates(tmp_path)
    assert [(n["recipe"], n["budget"], n["estimated_seconds"]) for n in notes] == [(slow, "full", 7200)]
    report.write_report(tmp_path)
    md = (tmp_path / "leaderboard.md").read_text()
    # the full table lists it as not run, with the estimate its note holds
    row = next(line for line in md.splitlines() if f"| `{slow}` |" in line)
    assert "| not run · ~2.0 h a seed, " in row  # in short; under the table, in full
    listed = next(line for line in md.splitlines() if line.startswith(f"- `{slow}`: "))
    assert "about 2.0 h a seed on cpu" in listed and "(from a few timed steps)" in listed

    # --cpu-limit 0 runs it after all; a measured recipe is no longer listed as needing a GPU
    launch.launch([slow], [0], RunOptions(budget="full", data="synth", results=tmp_path, device="cpu"), cpu_limit=0)
    assert set(leaderboard.load_records(tmp_path)["recipe"]) == {fast, slow}
    report.write_report(tmp_path)
    assert "not run" not in next(line for line in (tmp_path / "leaderboard.md").read_text().splitlines()
                                 if f"| `{slow}` |" in line)


def test_smoke_tables_are_marked_as_checks_not_results(tmp_path):
    write_record(tmp_path, make_record("r003_convnet4", 0, budget="quick", test=0.2))
    write_record(tmp_path, make_record("r003_convnet4", 0, budget="smoke", test=0.1))
    report.write_report(tmp_path)
    md = (tmp_path / "leaderboard.md").read_text()
    assert md.index("budget `quick`") < md.index("budget `smoke`")
    assert "only checks that every recipe runs end to end" in md.split("budget `smoke`")[1]
    assert "only checks" not in md.split("budget `smoke`")[0]


def test_comparison_table_puts_a_new_run_beside_the_committed_rows(tmp_path):
    mine, committed = tmp_path / "mine", tmp_path / "committed"
    write_record(mine, make_record("ours_digitsum", 0, budget="quick", test=0.95))
    for seed, exact in enumerate((0.93, 0.94, 0.95)):
        write_record(committed, make_record("ours_digitsum", seed, budget="quick", test=exact))
    write_record(committed, make_record("r003_convnet4", 0, budget="quick", test=0.10))
    write_record(committed, make_record("r003_convnet4", 0, budget="full", test=0.50))
    report.write_report(committed)
    text = report.comparison_table(mine, committed, "quick")
    lines = text.splitlines()
    assert "quick budget" in lines[0]
    rows = [line.split() for line in lines[2:]]
    assert [r[:4] for r in rows] == [["ours_digitsum", "this", "run", "1"], ["ours_digitsum", "committed", "3", "94.0"],
                                     ["r003_convnet4", "committed", "1", "10.0"]]
    assert "95.0" in lines[2]
    # no committed leaderboard: the new run alone
    assert "committed" not in report.comparison_table(mine, tmp_path / "nowhere", "quick").split("\n", 1)[1]


def test_budgets_cap_ensemble_members():
    ours = get_recipe("ours_digitsum")
    assert ours.members == 5
    assert budgets.apply_budget(ours, "full").members == budgets.apply_budget(ours, "smoke").members == 5
    assert budgets.apply_budget(ours, "quick").members == budgets.apply_budget(ours, "ci").members == 1
    with pytest.raises(BenchError, match="members must be 1, or more with a digits4 head"):
        replace(get_recipe("r003_convnet4"), members=2)


def test_budgets_cap_the_recipe(tiny_recipe):
    from digitsum_bench.registry.recipes import get_recipe

    r = budgets.apply_budget(get_recipe("r002_resnet50"), "smoke")
    assert (r.epochs, r.train_size, r.val_size) == (1, 64, 32)
    full = budgets.apply_budget(get_recipe("r002_resnet50"), "full")
    assert full == get_recipe("r002_resnet50")
    with pytest.raises(BenchError, match="unknown budget"):
        budgets.apply_budget(tiny_recipe, "huge")
