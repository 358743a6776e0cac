"""Every registered recipe: its model builds, trains one step on two images, and it says where it comes from."""


import pytest
import torch

from digitsum_bench.claims import claims_text
from digitsum_bench.errors import BenchError
from digitsum_bench.registry import models, recipes
from digitsum_bench.registry.losses import compute_loss
from digitsum_bench.registry.recipes import Claim, Recipe, get_recipe, list_recipes, recipes_table

REPORTS = {"000", "001", "002", "003", "004"}
SHAPES = {"regression": (2,), "sum37": (2, 37), "digits4": (2, 4, 10), "multilabel30": (2, 30)}


@pytest.fixture(autouse=True)
def no_imagenet_weights(tmp_path, monkeypatch):
    """No ImageNet file anywhere: the pretrained recipes build from scratch (and warn)."""
    monkeypatch.delenv("DIGITSUM_IMAGENET_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))


def one_step(recipe: Recipe) -> torch.nn.Module:
    """Build the recipe's model, run forward + backward on two images, check shape and loss."""
    torch.manual_seed(0)
    if recipe.pretrained == "imagenet":
        with pytest.warns(UserWarning, match="no ImageNet weights"):
            model, status = recipe.create_model()
        assert status == "unavailable"
    else:
        model, status = recipe.create_model()
        assert status == "none"
    x = torch.randn(2, 1, 40, 168)
    sums, digits = torch.tensor([13, 30]), torch.tensor([[1, 2, 3, 7], [9, 9, 3, 9]])
    out = model.train()(x)
    assert out.shape == SHAPES[recipe.head]
    loss = compute_loss(recipe.loss, recipe.head, out, sums, digits)
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert models.gflops_per_image(model) > 0  # the leaderboard's compute column
    return model


@pytest.mark.parametrize("name", list_recipes())
def test_recipe_trains_one_step(name):
    recipe = get_recipe(name)
    model = one_step(recipe)
    if recipe.pretrain is not None:  # report 004: stage 1 trains, then its conv stack moves to stage 2
        stage1 = one_step(recipe.pretrain)
        model.features.load_state_dict(stage1.features.state_dict())


@pytest.mark.parametrize("name", list_recipes())
def test_recipe_states_its_origin(name):
    recipe = get_recipe(name)
    assert recipe.name == name
    assert recipe.report  # a report id, "ours", a variant, or a user's own label
    assert recipe.method and recipe.assumptions
    if recipe.report in REPORTS:
        assert recipe.claimed, f"{name} has no claimed numbers"
    for c in recipe.claimed:
        assert c.split in ("val", "test")
        if c.metric in ("exact", "within_one"):
            assert c.value is None or 0 < c.value <= 1  # fractions, not percentages


def test_every_report_method_is_registered():
    names = set(list_recipes())
    assert {"r000_seresnet", "r001_seresnet50", "r002_attention_cnn", "r002_resnet50", "r003_convnet4",
            "r003_resnet50_scratch", "r003_resnet18_scratch", "r003_resnet50_ema", "r003_resnet50_synth_digits",
            "r004_resnet50_mlp", "r004_multilabel_transfer"} <= names
    assert {"ours_digitsum", "r002_resnet50_bs512"} <= names
    assert sorted(get_recipe(n).report for n in names if get_recipe(n).pretrained == "imagenet") \
        == ["002", "002-variant", "003", "004"]


def test_duplicate_name_raises():
    before = dict(recipes._REGISTRY)

    def r000_seresnet() -> Recipe:  # same name as a registered recipe
        raise AssertionError("never called")

    with pytest.raises(BenchError, match="r000_seresnet is registered twice"):
        recipes.register(r000_seresnet)
    assert recipes._REGISTRY == before


def test_unknown_recipe_names_the_known_ones():
    with pytest.raises(BenchError, match="unknown recipe 'r999'; known: r000_seresnet, "):
        get_recipe("r999")


def test_recipes_table():
    rows = {r["name"]: r for r in recipes_table()}
    assert list(rows) == list_recipes()
    r002 = rows["r002_resnet50"]
    assert r002["report"] == "002" and r002["claimed"].startswith("val exact 94.92%, val within-one 98.05%, val MSE raw 0.264 (")
    assert r002["params_m"] == pytest.approx(23.50, abs=0.01)  # torchvision ResNet-50, 1-channel conv1, fc 2048->1
    assert rows["r003_convnet4"]["claimed"] == "test exact 10% (approximately)"
    assert rows["r004_multilabel_transfer"]["claimed"] == "val MSE raw 1 (approximately; its MSE loss)"
    assert rows["ours_digitsum"]["claimed"] == "-"
    assert rows["ours_digitsum"]["gflops"] < 0.2 * r002["gflops"]


def test_claim_text_for_words_without_a_number():
    claims = (Claim("exact", None, "test", "'unable to learn'; no number given"),)
    assert claims_text(claims) == "test exact: 'unable to learn'; no number given"
