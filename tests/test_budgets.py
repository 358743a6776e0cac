"""Budgets, runs left out on a CPU, the quick-start comparison, TTA without wrap-around, the labelled synthetic set."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn as nn
from record_factory import make_record, write_record

from digitsum_bench import data, launch, report, store, train
from digitsum_bench.errors import BenchError
from digitsum_bench.recipes import get_recipe
from digitsum_bench.store import read_estimates


def test_quick_budget_keeps_all_data_and_caps_epochs():
    for name in ("r002_attention_cnn", "r003_convnet4", "ours_digitsum", "r004_multilabel_transfer"):
        own, quick = get_recipe(name), train.apply_budget(get_recipe(name), "quick")
        assert (quick.train_size, quick.val_size) == (own.train_size, own.val_size)  # the full pools
        assert quick.epochs == min(own.epochs, 2)
    assert train.BUDGETS["quick"].test_size == 10_000
    stage1 = train.apply_budget(get_recipe("r004_multilabel_transfer"), "quick").pretrain
    assert stage1.epochs == 2  # a pre-training stage is capped too


def test_ci_budget_is_one_epoch_of_all_training_images():
    ci = train.apply_budget(get_recipe("ours_digitsum"), "ci")
    assert (ci.epochs, ci.train_size, ci.val_size) == (1, 24_000, 2_000)
    assert train.BUDGETS["ci"].test_size == 10_000


def test_slow_recipes_are_left_out_on_a_cpu_and_listed(variant, tmp_path, monkeypatch, capsys):
    fast, slow = variant("tiny_fast"), variant("tiny_slow")
    monkeypatch.setattr(launch, "estimate", lambda name, budget, device: 7200.0 if name == slow else 5.0)
    failures = launch.launch([fast, slow], [0], budget="full", data="synth", results=tmp_path, device="cpu",
                             cpu_limit=30)
    assert failures == 0
    assert "skip tiny_slow: estimated 2h00m per seed" in capsys.readouterr().out
    records = report.load_records(tmp_path)
    assert set(records["recipe"]) == {fast}
    notes = read_estimates(tmp_path)
    assert [(n["recipe"], n["budget"], n["estimated_seconds"]) for n in notes] == [(slow, "full", 7200)]
    report.write_report(tmp_path)
    md = (tmp_path / "leaderboard.md").read_text()
    assert "Needs a GPU at the `full` budget" in md and f"`{slow}`: about 2.0 h" in md

    # --cpu-limit 0 runs it after all; a measured recipe is no longer listed as needing a GPU
    launch.launch([slow], [0], budget="full", data="synth", results=tmp_path, device="cpu", cpu_limit=0)
    assert set(report.load_records(tmp_path)["recipe"]) == {fast, slow}
    report.write_report(tmp_path)
    assert "Needs a GPU" not in (tmp_path / "leaderboard.md").read_text()


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


class Capture(nn.Module):
    """Returns zeros and keeps every input it sees."""

    def __init__(self):
        super().__init__()
        self.seen = []
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        self.seen.append(x.clone())
        return torch.zeros(x.shape[0]) + self.w


def test_tta_shifts_fill_with_black_and_never_wrap_around():
    images = torch.zeros(2, data.HEIGHT, data.WIDTH, dtype=torch.uint8)
    images[:, :, -2:] = 255  # ink only in the two right-most columns
    model = Capture()
    train.predict(model, images, replace(get_recipe("ours_digitsum"), tta=True), torch.device("cpu"))
    black = train.black("course")
    assert len(model.seen) == len(train.TTA_SHIFTS) == 2
    for view in model.seen:
        assert torch.allclose(view[..., :2], torch.tensor(black))  # nothing wrapped around to the left edge
    blank = [bool(torch.allclose(v, torch.tensor(black))) for v in model.seen]
    assert sum(blank) == 1  # shifted right by 2, the ink left the canvas and did not come back
    left = [v for v in model.seen if torch.allclose(v[..., -2:], torch.tensor(black)) and v.max() > black]
    assert len(left) == 1 and left[0][..., -4:-2].min() > black  # shifted left by 2: the ink moved, black behind it


def test_labelled_synthetic_set_is_separate_from_the_training_images():
    recipe = replace(train.apply_budget(get_recipe("ours_digitsum"), "smoke"), aux_size=256, aux_distort=0)
    assert recipe.aux_batch > 0
    aux = train.load_aux(recipe, torch.device("cpu"))
    assert len(aux) == 256 and aux.digits is not None
    training = data.load_synth("synth", "train", 256, 0)
    assert not np.array_equal(aux.images.numpy(), training.images)  # other compositions than the training images
    made = data.load_synth("synth", "train", 256, 1)  # seed 1 of the training digit pool, never the test pool
    assert np.array_equal(made.images, aux.images.numpy())
    test_pool = set(data.load_synth("synth", "test", 256, 0).instances.ravel())
    assert not test_pool & set(made.instances.ravel())
    assert train.load_aux(replace(recipe, aux_batch=0), torch.device("cpu")) is None


def test_distorted_labelled_set_draws_only_on_the_training_pool_and_is_reproducible():
    recipe = replace(train.apply_budget(get_recipe("ours_digitsum"), "smoke"), aux_size=512)
    assert recipe.aux_distort == 4
    aux = train.aux_set(recipe)
    assert train.aux_set(recipe) is aux  # made once per process, shared by every seed of a run
    train._distorted_aux_set.cache_clear()
    again = train.aux_set(recipe)  # made anew: the same images
    assert again is not aux
    assert len(aux) == 512 and np.array_equal(aux.images, again.images) and np.array_equal(aux.digits, again.digits)
    assert not np.array_equal(aux.images, train.aux_set(replace(recipe, aux_distort=0)).images)
    train_pool = data.pool_digits("train")[2]
    assert set(aux.instances.ravel()) <= set(train_pool)  # source indices of the digits, distorted or not
    assert not set(aux.instances.ravel()) & set(data.pool_digits("test")[2])
    source_labels = data.mnist_digits()[1]
    assert np.array_equal(source_labels[aux.instances], aux.digits)  # each copy keeps its digit's label


def test_distorted_digits_resample_the_digit_and_do_nothing_at_zero_strength():
    digits = torch.from_numpy(data.pool_digits("train")[0][:64])
    same = train.distort_digits(digits, torch.Generator().manual_seed(0), rotation=0, shear=0, zoom=0, elastic=0,
                                stroke=0)
    assert same.dtype == torch.uint8 and torch.equal(same, torch.where(digits < 8, 0, digits))
    a = train.distort_digits(digits, torch.Generator().manual_seed(0))
    b = train.distort_digits(digits, torch.Generator().manual_seed(0))
    c = train.distort_digits(digits, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    moved = (a.float() - digits.float()).abs().mean((1, 2)) / digits.float().mean((1, 2))
    assert (moved > 0.05).all()  # every digit is reshaped
    ink = a.float().sum((1, 2)) / digits.float().sum((1, 2))
    assert ((ink > 0.4) & (ink < 2)).all()  # mild: no digit vanishes or blots out (measured 0.58-1.64)


def test_aux_images_enter_the_loss(monkeypatch):
    recipe = replace(train.apply_budget(get_recipe("ours_digitsum"), "smoke"), aux_size=64, batch_size=8, aux_batch=4)
    split = train.random_split(16, "cpu")
    seen = []
    real = train.to_input
    monkeypatch.setattr(train, "to_input", lambda images, *a: seen.append(len(images)) or real(images, *a))

    def one_epoch(aux):
        torch.manual_seed(0)
        model = recipe.model()
        opt = train.make_optimizer(recipe, model, torch.device("cpu"))
        return train.train_one_epoch(model, opt, None, None, split, recipe, 0, 1, torch.device("cpu"), aux=aux)

    with_aux = one_epoch(train.load_aux(recipe, torch.device("cpu")))
    assert seen == [12, 12]  # 8 training images + 4 labelled synthetic ones per step
    seen.clear()
    without = one_epoch(None)
    assert seen == [8, 8] and with_aux != without


class TinyDigits(nn.Module):
    """Four digit slots from a few hundred parameters: a digits4 head for ensemble runs."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(), nn.BatchNorm2d(8),
                                      nn.AdaptiveAvgPool2d((1, 4)), nn.Flatten(1))
        self.classify = nn.Linear(8, 10)

    def forward(self, x):
        return self.classify(self.features(x).view(len(x), 8, 4).transpose(1, 2))


def digit_variant(variant, name: str, members: int) -> str:
    return variant(name, model=TinyDigits, head="digits4", loss="sum_nll", decode="most_likely_sum",
                   members=members, selection="last")


def test_budgets_cap_ensemble_members():
    ours = get_recipe("ours_digitsum")
    assert ours.members == 5
    assert train.apply_budget(ours, "full").members == train.apply_budget(ours, "smoke").members == 5
    assert train.apply_budget(ours, "quick").members == train.apply_budget(ours, "ci").members == 1
    with pytest.raises(BenchError, match="members must be 1, or more with a digits4 head"):
        replace(get_recipe("r003_convnet4"), members=2)


def test_an_ensemble_is_scored_as_the_mean_of_its_members_log_probabilities(variant, tmp_path):
    ensemble, single = digit_variant(variant, "tiny_ensemble", 2), digit_variant(variant, "tiny_single", 1)
    rec = train.run_one(ensemble, 0, budget="full", results=tmp_path, device="cpu", progress=False)
    one = train.run_one(single, 0, budget="full", results=tmp_path, device="cpu", progress=False)
    assert [m["seed"] for m in rec["members"]] == [0, train.member_seed(0, 1)] and train.member_seed(0, 1) != 0
    member0 = rec["members"][0]["test"]
    assert member0 == {k: one["metrics"]["test"][k] for k in member0}  # member 0 is the run of seed 0
    assert rec["members"][0]["test"] != rec["members"][1]["test"]
    assert rec["gflops"] == pytest.approx(2 * one["gflops"]) and rec["params_m"] == pytest.approx(2 * one["params_m"])

    cpu = torch.device("cpu")
    model, recipe = train.load_checkpoint(store.RunKey(ensemble, 0, "full", rec["dataset_id"]).checkpoint_dir(tmp_path)
                                          / "final.pt", cpu)
    assert len(model.members) == 2
    x = torch.randn(3, 1, 40, 168)
    model.eval()
    assert torch.allclose(model(x), (model.members[0](x).log_softmax(-1) + model.members[1](x).log_softmax(-1)) / 2)
    test = train.DeviceData.from_numpy(train.load_data(recipe, "full", "synth").test, cpu)
    assert train.evaluate(model, test, recipe, cpu)["exact"] == pytest.approx(rec["metrics"]["test"]["exact"], abs=2e-3)


def test_an_interrupted_ensemble_resumes_at_the_member_it_reached(variant, tmp_path, monkeypatch):
    name = digit_variant(variant, "tiny_ensemble", 2)
    real_fit, real_epoch = train.fit, train.train_one_epoch

    def stop_at_member_1(recipe, model, split, val, seed, *a, **k):
        if seed != 0:
            raise KeyboardInterrupt
        return real_fit(recipe, model, split, val, seed, *a, **k)

    monkeypatch.setattr(train, "fit", stop_at_member_1)
    with pytest.raises(KeyboardInterrupt):
        train.run_one(name, 0, budget="full", results=tmp_path, device="cpu", progress=False)
    monkeypatch.setattr(train, "fit", real_fit)
    trained = []  # (seed, epoch) of every epoch the second attempt trains
    monkeypatch.setattr(train, "train_one_epoch", lambda *a, **k: trained.append(a[6:8]) or real_epoch(*a, **k))
    rec = train.run_one(name, 0, budget="full", results=tmp_path, device="cpu", progress=False)
    assert trained == [(train.member_seed(0, 1), epoch) for epoch in (1, 2, 3)]  # member 0 was finished: not retrained
    assert len(rec["members"]) == 2
