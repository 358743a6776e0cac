"""Each recipe does what its report says: stage-1 data, normalisation, report 003's settings, honest assumptions."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import torch

from digitsum_bench import data
from digitsum_bench.cli import main
from digitsum_bench.engine import runner, train
from digitsum_bench.engine.runner import RunOptions
from digitsum_bench.registry.recipes import get_recipe, list_recipes

REPORT_RECIPES = [n for n in list_recipes() if get_recipe(n).report[:3] in {"000", "001", "002", "003", "004"}]


@pytest.fixture
def course_folder(tmp_path):
    """Course-style files: data0.npy (uint8 images) + lab0.npy (uint8 sums), no digit labels."""
    folder = tmp_path / "course"
    folder.mkdir()
    images = data.load_synth("synth", "test", 120, seed=0)
    np.save(folder / "data0.npy", images.images)
    np.save(folder / "lab0.npy", images.sums.astype(np.uint8))
    return folder


def test_r004_transfer_runs_on_course_files_with_sums_only(course_folder, tmp_path, capsys):
    results = tmp_path / "results"
    assert main(["run", "--recipe", "r004_multilabel_transfer", "--budget", "smoke", "--device", "cpu",
                 "--data", str(course_folder), "--results", str(results), "--no-report"]) == 0
    record = json.loads(next(results.glob("records/smoke/course-*/r004_multilabel_transfer/seed0.json")).read_text())
    assert record["metrics"]["test"] is None and record["metrics"]["val"]["n"] > 0
    assert list(results.glob("checkpoints/smoke/course-*/r004_multilabel_transfer/seed0/stage1.pt"))


def test_r004_stage1_trains_on_its_own_images(monkeypatch, tmp_path):
    """Stage 1 gets a separate synthetic set (own seed and size, train/val digit pool), not stage 2's images."""
    seen = {}
    real = runner.fit

    def spy(*a, **k):
        arguments = inspect.signature(real).bind(*a, **k).arguments
        seen[arguments["recipe"].name] = arguments["train"]
        return real(*a, **k)

    monkeypatch.setattr(runner, "fit", spy)
    runner.run_one("r004_multilabel_transfer", 0, RunOptions(budget="smoke", results=tmp_path, device="cpu", progress=False))
    stage1, stage2 = seen["r004_multilabel_cnn"], seen["r004_multilabel_transfer"]
    assert stage1.digits is not None
    assert not any(torch.equal(a, b) for a in stage1.images for b in stage2.images)
    stage = get_recipe("r004_multilabel_transfer").pretrain
    assert stage.data_seed not in (None, 0) and stage.train_size == 24_000
    pool = data._pools(data.mnist_digits()[1], "train")
    own = data.load_synth("synth", "train", 64, stage.data_seed)
    assert np.isin(own.instances, np.concatenate(pool)).all()  # never a test-pool digit
    assert any("24,000" in a and "separate dataset" in a for a in stage.assumptions)


def test_normalisation_is_a_recipe_field_set_as_each_report_says():
    x = torch.tensor([[[0, 255] * 84] * 40], dtype=torch.uint8)
    assert train.to_input(x, False, "unit").unique().tolist() == [0.0, 1.0]
    course = train.to_input(x, False, "course")
    assert course.min().item() == pytest.approx(train.black("course"))
    for name in REPORT_RECIPES:
        recipe = get_recipe(name)
        if recipe.report.startswith("002"):
            assert recipe.normalize == "unit", name  # 'normalized by dividing by 255'
        else:
            assert recipe.normalize == "course", name
            assert any("normalis" in a and "does not say" in a for a in recipe.assumptions), name


def test_predict_feeds_the_recipe_normalisation():
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x):
            seen.append(x.clone())
            return x.mean(dim=(1, 2, 3))

    images = torch.full((2, 40, 168), 255, dtype=torch.uint8)
    train.predict(Spy(), images, get_recipe("r002_attention_cnn"), torch.device("cpu"))
    train.predict(Spy(), images, get_recipe("r000_seresnet"), torch.device("cpu"))
    assert seen[0].max().item() == 1.0  # x/255
    assert seen[1].max().item() == pytest.approx((1 - data.COURSE_MEAN) / data.COURSE_STD)


def test_report_003_settings_read_one_way():
    """Section 6 holds for all of report 003's recipes: weight decay 1e-4 everywhere, EMA only where named."""
    for name in [n for n in list_recipes() if get_recipe(n).report == "003"]:
        recipe = get_recipe(name)
        assert (recipe.optimizer, recipe.weight_decay) == ("adam", 1e-4), name
        assert recipe.ema_decay == (0.99 if name == "r003_resnet50_ema" else None), name
        assert any("The following hyperparameters were used in our experiments" in a for a in recipe.assumptions)


def test_assumptions_claim_no_more_than_the_reports_say():
    r000 = " ".join(get_recipe("r000_seresnet").assumptions)
    assert "PyTorch defaults" not in r000 and "no default" in r000  # OneCycleLR's max_lr has none
    selection = next(a for a in get_recipe("r002_resnet50").assumptions if "best-val-loss" in a)
    assert "Advanced CNN" in selection and "silent" in selection


def test_ours_assumptions_state_every_choice_beyond_the_sums():
    """ours_digitsum lists its augmentation, why it has no test-time augmentation, and where its digit labels come from."""
    ours = get_recipe("ours_digitsum")
    text = " ".join(ours.assumptions)
    assert ours.augment and "augmentation of every training batch" in text
    assert not ours.tta and "no test-time augmentation" in text
    assert ours.aux_label_smoothing and f"label smoothing {ours.aux_label_smoothing}" in text
    assert ours.aux_batch and "never the training images themselves" in text and "never the test pool" in text


def test_mse_claims_are_of_raw_outputs():
    """Report 002's and 004's MSE claims are of unrounded outputs: they are mse_raw claims."""
    for name in ("r002_attention_cnn", "r002_resnet50", "r004_resnet50_mlp", "r004_multilabel_transfer"):
        metrics = {c.metric for c in get_recipe(name).claimed}
        assert "mse_raw" in metrics and "mse" not in metrics, name


def test_records_carry_mse_raw(tiny_recipe, tmp_path):
    rec = runner.run_one("tiny_test", 0, RunOptions(budget="smoke", results=tmp_path, device="cpu", progress=False))
    for split in ("val", "test"):
        m = rec["metrics"][split]
        assert m["mse_raw"] >= 0 and m["mse_raw"] != m["mse"]  # a regression output is never exactly integer


def test_list_says_how_flops_are_counted(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "multiply-add" in out and "8.18" in out


# ---------------------------------------------------------------------------- issue 20: the unlisted ordinary choices


@pytest.mark.parametrize("name", list_recipes())
def test_ordinary_choices_are_listed_where_the_fields_make_them(name):
    """What a recipe's fields do that its report did not say is in its assumptions (read from the fields)."""
    from digitsum_bench.registry import recipes

    r = get_recipe(name)
    said = " | ".join(r.assumptions)
    if r.head == "regression":
        assert recipes.CLAMP_0_36 in said
    if r.ema_decay:
        assert recipes.EMA_BUFFERS in said
    if r.schedule == "onecycle":
        assert recipes.ONECYCLE in said
    if r.schedule == "constant" and r.report != "ours":
        assert recipes.CONSTANT_LR in said


def test_the_listed_choices_are_what_the_code_does():
    """The stated OneCycle settings, EMA of BatchNorm buffers and clamping are the training code's own."""
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    recipe = get_recipe("r000_seresnet")
    opt = train.make_optimizer(recipe, model, torch.device("cpu"))
    sched = train.make_scheduler(recipe, opt, steps_per_epoch=10)
    assert (sched._anneal_func_type, sched.cycle_momentum) == ("cos", True)
    group = opt.param_groups[0]
    assert group["lr"] == pytest.approx(recipe.lr / 25) and group["betas"][0] == pytest.approx(0.95)
    assert sched._schedule_phases[0]["end_step"] == pytest.approx(0.3 * 10 * recipe.epochs - 1)
    assert group["min_lr"] == pytest.approx(recipe.lr / 25 / 1e4)
    ema = train.make_ema(get_recipe("r003_resnet50_ema"), model)
    assert ema.use_buffers
    from digitsum_bench.engine.metrics import predict_sums

    assert predict_sums(torch.tensor([-2.6, 40.2, 7.4]), "regression").tolist() == [0, 36, 7]
    assert get_recipe("r003_convnet4").model()(torch.zeros(1, 1, 40, 168)).shape == (1, 37)


def test_r003_claims_are_filed_under_their_evidence():
    """ResNet-18's only evidence is section 5.1 and Figure 3, which plots validation accuracy; the quote is whole."""
    (claim,) = get_recipe("r003_resnet18_scratch").claimed
    assert (claim.split, claim.value) == ("val", None)
    assert "unable to learn effectively, achieving very low accuracy" in claim.note


def test_r003_synth_digits_states_its_source_and_generator():
    """The digit source (the training pool: how many digits, how often each is used) and the generator's
    magnitudes, checked against data.py's own numbers."""
    import math

    r = get_recipe("r003_resnet50_synth_digits")
    said = " | ".join(r.assumptions)
    pool = len(data.pool_digits("train")[0])
    assert f"{pool:,} training-pool digits" in said and f"about {r.train_size * 4 // pool} times" in said
    assert f"+-{math.degrees(2 * math.atan(data.ROTATION_TAN)):.0f} deg" in said
    assert f"{data.SCALE_003[0]}-{data.SCALE_003[1]}" in said and f"std {data.NOISE_003 / 255:g} x 255" in said
    assert f"{data.HEIGHT}x{data.CELL_W} cell" in said and "--source DIR" in said
