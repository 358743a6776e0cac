"""Model plumbing: FLOP/parameter counts, ImageNet weight loading, the report-004 stage handover."""

import os
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torchvision

from digitsum_bench.errors import BenchError
from digitsum_bench.registry import models
from digitsum_bench.registry.recipes import get_recipe

CACHE_NAME = os.path.basename(torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url)


# ----------------------------------------------------------------------------------------
# Counting
# ----------------------------------------------------------------------------------------
def tiny() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 40 * 168, 2))


def test_count_params_by_hand():
    # conv: 4*1*3*3 weights + 4 biases; linear: 26880*2 weights + 2 biases
    assert models.count_params(tiny()) == 40 + 53_762


def test_gflops_by_hand_and_mode_restored():
    model = tiny().train()
    # conv: 2 * (4*40*168 outputs) * (1*3*3 MACs each); linear: 2 * 26880 * 2; biases are not counted
    expected = 2 * 4 * 40 * 168 * 9 + 2 * 26880 * 2
    assert models.gflops_per_image(model) == pytest.approx(expected / 1e9)
    assert model.training


@pytest.mark.parametrize("build", [models.attention_cnn_002, models.multilabel_cnn_004, models.digitsum_net])
def test_small_models_run_channels_last_under_bf16(build):
    model = build().to(memory_format=torch.channels_last)
    x = torch.randn(2, 1, 40, 168).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.shape[0] == 2 and torch.isfinite(out.float()).all()


def test_report_004_stages_share_the_conv_stack():
    stage1, stage2 = models.multilabel_cnn_004(), models.sum_of_digits_004()
    stage2.features.load_state_dict(stage1.features.state_dict())  # what the runner does
    x = torch.randn(2, 1, 40, 168)
    stage1.eval(), stage2.eval()
    torch.testing.assert_close(stage1.features(x), stage2.features(x))
    assert stage1.features(x).flatten(1).shape == (2, 5120)  # the report's FC input size


def test_ours_is_a_fraction_of_resnet50():
    ours = models.gflops_per_image(models.digitsum_net())
    assert ours < 0.35 * models.gflops_per_image(models.resnet50_regression())


# ----------------------------------------------------------------------------------------
# ImageNet weights (fake torchvision-resnet50-shaped files; nothing is downloaded)
# ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fake_weights(tmp_path_factory) -> tuple[Path, dict]:
    """A torchvision ResNet-50 state dict (3-channel conv1, 1000-way fc) of random tensors."""
    torch.manual_seed(123)
    state = {k: torch.randn_like(v.float()).to(v.dtype) if v.is_floating_point() else v
             for k, v in torchvision.models.resnet50(weights=None).state_dict().items()}
    path = tmp_path_factory.mktemp("weights") / "resnet50_fake.pth"
    torch.save(state, path)
    return path, state


@pytest.fixture
def no_cache(tmp_path, monkeypatch) -> Path:
    """An empty torch hub dir and no env var: the machine has no ImageNet weights."""
    monkeypatch.delenv("DIGITSUM_IMAGENET_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_sum_conv1_loads_file_and_sums_rgb(fake_weights, no_cache):
    path, state = fake_weights
    model, status = get_recipe("r004_resnet50_mlp").create_model(weights=path)
    assert status == "imagenet"
    own = model.state_dict()
    torch.testing.assert_close(own["layer3.2.conv2.weight"], state["layer3.2.conv2.weight"])
    torch.testing.assert_close(own["bn1.running_var"], state["bn1.running_var"])
    torch.testing.assert_close(own["conv1.weight"], state["conv1.weight"].sum(dim=1, keepdim=True))
    assert own["fc.0.weight"].shape == (128, 2048)  # the report's head, not the file's fc


def test_new_conv1_keeps_fresh_init(fake_weights, no_cache):
    path, state = fake_weights
    recipe = get_recipe("r002_resnet50")
    torch.manual_seed(7)
    model, status = recipe.create_model(weights=str(path))
    torch.manual_seed(7)
    fresh = recipe.model()
    assert status == "imagenet"
    torch.testing.assert_close(model.conv1.weight, fresh.conv1.weight)
    torch.testing.assert_close(model.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])


def test_env_var_then_torchvision_cache(fake_weights, no_cache, monkeypatch):
    path, state = fake_weights
    monkeypatch.setenv("DIGITSUM_IMAGENET_WEIGHTS", str(path))
    assert get_recipe("r003_resnet50_ema").create_model()[1] == "imagenet"
    monkeypatch.delenv("DIGITSUM_IMAGENET_WEIGHTS")
    (no_cache / "checkpoints").mkdir(parents=True)
    (no_cache / "checkpoints" / CACHE_NAME).symlink_to(path)
    model, status = get_recipe("r003_resnet50_ema").create_model()
    assert status == "imagenet"
    torch.testing.assert_close(model.layer4[0].bn1.weight, state["layer4.0.bn1.weight"])


def test_no_weights_trains_from_scratch_with_a_warning(no_cache):
    with pytest.warns(UserWarning, match="r002_resnet50: no ImageNet weights"):
        model, status = get_recipe("r002_resnet50").create_model()
    assert status == "unavailable" and isinstance(model, torchvision.models.ResNet)


def test_recipe_without_pretraining_reports_none(fake_weights):
    assert get_recipe("r003_resnet50_scratch").create_model(weights=fake_weights[0])[1] == "none"


def test_corrupt_file_is_named(tmp_path, no_cache):
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(BenchError, match=r"broken\.pth: cannot read ImageNet weights"):
        get_recipe("r004_resnet50_mlp").create_model(weights=bad)


def test_wrong_shapes_are_named(tmp_path, no_cache):
    wrong = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), wrong)
    with pytest.raises(BenchError, match=r"resnet18\.pth: layer1\.0\.conv1\.weight .* does not fit"):
        get_recipe("r004_resnet50_mlp").create_model(weights=wrong)


def test_missing_keys_are_named(tmp_path, fake_weights, no_cache):
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in fake_weights[1].items() if not k.startswith("layer4")}, partial)
    with pytest.raises(BenchError, match=r"partial\.pth: lacks \d+ model keys, e\.g\. layer4"):
        get_recipe("r004_resnet50_mlp").create_model(weights=partial)


def test_named_file_that_does_not_exist(tmp_path, no_cache):
    with pytest.raises(BenchError, match=r"nowhere\.pth: ImageNet weights file not found"):
        get_recipe("r004_resnet50_mlp").create_model(weights=tmp_path / "nowhere.pth")


# ----------------------------------------------------------------------------------------
# Our model's slots
# ----------------------------------------------------------------------------------------
def test_slot_weights_by_hand():
    w = models.slot_weights(torch.tensor([[1.0] * 8, [2.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                                          [1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0]]))
    assert w.shape == (3, 4, 8)
    torch.testing.assert_close(w.sum(dim=2), torch.ones(3, 4))
    # equal masses: slot k is the mean of columns 2k and 2k+1
    torch.testing.assert_close(w[0], torch.eye(4).repeat_interleave(2, dim=1) / 2)
    # a double mass on column 0 feeds slots 0 and 1; columns 1 and 2 feed slots 2 and 3
    assert w[1].argmax(dim=1).tolist() == [0, 0, 1, 2] and w[1].max(dim=1).values.tolist() == [1, 1, 1, 1]
    # four separated unit masses (four digits with gaps): slot k reads exactly the k-th from the left
    assert w[2].argmax(dim=1).tolist() == [0, 3, 5, 7] and w[2].max(dim=1).values.tolist() == [1, 1, 1, 1]


def test_ours_reads_digits_left_to_right_from_ink_at_start(monkeypatch):
    # at initialisation the slots split the inked columns into quarters: with four white blocks
    # and an empty right part, slot k looks mostly at block k (blank columns keep a small mass)
    seen = []
    real = models.slot_weights
    monkeypatch.setattr(models, "slot_weights", lambda m: seen.append(real(m)) or seen[-1])
    x = torch.full((1, 1, 40, 168), -0.0607 / 0.2194)  # black
    for k in range(4):
        x[..., 10:30, 8 + 24 * k:24 + 24 * k] = (1 - 0.0607) / 0.2194  # white: 4-px columns 2-5, 8-11, 14-17, 20-23
    models.digitsum_net().eval()(x)
    w = seen[0][0]
    share = torch.stack([w[:, 2 + 6 * b:6 + 6 * b].sum(dim=1) for b in range(4)], dim=1)  # (slot, block)
    assert share.argmax(dim=1).tolist() == [0, 1, 2, 3]
    assert share.diagonal().min() > 0.75
