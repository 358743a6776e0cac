"""Every network of the benchmark: the reports' own models, torchvision/timm builders, and ours.

Input to every model: (B,1,40,168) float, normalised as (x/255 - 0.0607)/0.2194 (the runner
does it). Output by head: "regression" (B,) | "sum37" (B,37) logits | "digits4" (B,4,10)
logits, digits left to right | "multilabel30" (B,30) logits (no sigmoid: the loss applies
it inside BCEWithLogits, the same maths as the report's Sigmoid + BCELoss).

Recipes name the zero-argument builders below (`se_resnet_000`, `resnet50_regression`, ...):
a named function keeps the recipe's `model` field readable in records, where a lambda or a
partial would print as an address.

`create` builds a recipe's model and loads ImageNet weights where the recipe uses them,
from a local file only: nothing here touches the network.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torch.utils.flop_counter import FlopCounterMode
from torchvision.ops import SqueezeExcitation

from ..data import COURSE_MEAN, COURSE_STD, HEIGHT, WIDTH
from ..errors import BenchError

HEAD_OUTPUTS = {"regression": 1, "sum37": 37, "digits4": 40, "multilabel30": 30}


def head_layer(in_features: int, head: str, hidden: int | None = None, dropout: float = 0.0) -> nn.Sequential:
    """Linear (or Linear-ReLU-[Dropout]-Linear) to the head's outputs, shaped as the head promises."""
    out = HEAD_OUTPUTS[head]
    if hidden is None:
        layers: list[nn.Module] = [nn.Linear(in_features, out)]
    else:
        layers = [nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out)]
    if head == "regression":
        layers.append(nn.Flatten(0))  # (B,1) -> (B,)
    if head == "digits4":
        # four 10-way heads on the same features are one Linear with 40 outputs, read as (4,10)
        layers.append(nn.Unflatten(1, (4, 10)))
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------------------
# The residual block shared by report 000's SE-ResNet and ours
# ----------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    """Two 3x3 conv+BN and a shortcut; with `se`, squeeze-and-excitation on the residual
    branch before the addition (Hu et al. 2017). Any 2-D stride."""

    def __init__(self, cin: int, cout: int, stride: int | tuple[int, int] = 1, se: bool = False):
        super().__init__()
        self.branch = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
            SqueezeExcitation(cout, max(cout // 16, 1)) if se else nn.Identity(),
        )
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:  # projection shortcut (ResNet option B)
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.branch(x) + self.shortcut(x))


# ----------------------------------------------------------------------------------------
# Report 000: SE-ResNet, written out because the report's layout is its own
# ----------------------------------------------------------------------------------------
class SEResNet(nn.Module):
    """Report 000: 3x3 stem, four residual stages of SE basic blocks, GAP, FC -> 1.

    The report names no widths or depth. We use the layout most often copied for small
    images (the CIFAR ResNet-18 / SENet18 of kuangliu/pytorch-cifar): a stride-1 3x3 stem
    with no max-pool, widths 64/128/256/512, two blocks per stage, strides 1/2/2/2.
    """

    def __init__(self, widths: tuple[int, ...] = (64, 128, 256, 512), blocks: int = 2, head: str = "regression"):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(inplace=True))
        stages, cin = [], widths[0]
        for i, w in enumerate(widths):
            for j in range(blocks):
                stages.append(BasicBlock(cin, w, stride=2 if i > 0 and j == 0 else 1, se=True))
                cin = w
        self.stages = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = head_layer(cin, head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.stages(self.stem(x))))


# ----------------------------------------------------------------------------------------
# Report 002: "Advanced CNN" with spatial attention (layers exactly as listed in the report)
# ----------------------------------------------------------------------------------------
class AttentionCNN(nn.Module):
    """Report 002: 3 conv+BN+ReLU (32/64/128, two max-pools), 1x1 conv+sigmoid attention, GAP, FC 128-256-128-1."""

    def __init__(self):
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(*block(1, 32), nn.MaxPool2d(2), *block(32, 64), nn.MaxPool2d(2), *block(64, 128))
        self.attention = nn.Sequential(nn.Conv2d(128, 1, 1), nn.Sigmoid())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Sequential(
            nn.Linear(128, 256), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(256, 128), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(128, 1), nn.Flatten(0),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        return self.fc(self.pool(f * self.attention(f)))


# ----------------------------------------------------------------------------------------
# Report 003: the baseline 4-layer ConvNet
# ----------------------------------------------------------------------------------------
def convnet4_003() -> nn.Module:
    """Report 003's baseline: Conv, Pool, Conv, Pool, Flatten, Dense, Dense -> 37 logits.

    The report names the layers in Keras terms (Conv2D, MaxPooling2D, Dense) and no sizes;
    we take the Keras tutorial defaults: 32 then 64 3x3 filters with 'valid' padding, 2x2
    pools, Dense(128, ReLU). 40x168 -> 38x166 -> 19x83 -> 17x81 -> 8x40, so 64*8*40 = 20480 features.
    """
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 8 * 40, 128), nn.ReLU(), nn.Linear(128, 37),
    )


# ----------------------------------------------------------------------------------------
# Report 004: MultiLabelCNN and SumOfDigitsPredictor (the report's code; conv stack = `features`)
# ----------------------------------------------------------------------------------------
def _features_004() -> nn.Sequential:
    """The report's conv stack (Conv, ReLU, BN, MaxPool x4): 40x168 -> 256 x 2 x 10 = 5120 features."""
    layers: list[nn.Module] = []
    for cin, cout, k in ((1, 32, 5), (32, 64, 3), (64, 128, 3), (128, 256, 3)):
        layers += [nn.Conv2d(cin, cout, k, 1, k // 2), nn.ReLU(), nn.BatchNorm2d(cout), nn.MaxPool2d(2, 2)]
    return nn.Sequential(*layers)


class MultiLabelCNN(nn.Module):
    """Report 004, stage 1: conv stack, FC 5120-128 (ReLU, dropout 0.5) -128-30 logits."""

    def __init__(self):
        super().__init__()
        self.features = _features_004()  # the report's `conv_layers`; stage 2 copies it
        self.fc = nn.Sequential(nn.Flatten(), *head_layer(5120, "multilabel30", hidden=128, dropout=0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class SumOfDigitsPredictor(nn.Module):
    """Report 004, stage 2: the stage-1 conv stack under a regression head 5120-128 (ReLU, dropout 0.5) -1.

    Built here with a fresh conv stack; the runner copies the trained stage-1 `features` in.
    """

    def __init__(self):
        super().__init__()
        self.features = _features_004()
        self.sum_head = nn.Sequential(nn.Flatten(), *head_layer(5120, "regression", hidden=128, dropout=0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sum_head(self.features(x))


# ----------------------------------------------------------------------------------------
# Ours: a compact CNN that keeps the horizontal axis and reads four digits left to right
# ----------------------------------------------------------------------------------------
class DigitSlots(nn.Module):
    """Four left-to-right slots read from a row of column features, by quarters of a "digit mass".

    Each column gets a mass m(w) in (0, 1). Laid end to end, the columns' masses fill
    [0, 4] (normalised per image); slot k takes each column in proportion to how much of
    that column's share falls in [k, k+1], and averages its features. If the mass is one
    unit per digit, slot k reads exactly the k-th digit from the left, wherever the digits
    sit and whatever the gaps. The mass starts as "this column has ink" (so the slots
    start as the four quarters of the inked columns, not of the canvas, whose right part
    is sometimes empty) and learns from there. One classifier serves all four slots, so
    every digit trains it. The LayerNorm before it shortens the plateau that learning from
    sums alone starts with (an ablation on our CPU runs, not re-measured by any command here).
    """

    def __init__(self, channels: int, dropout: float, hidden: int = 0):
        super().__init__()
        self.mass = nn.Conv1d(channels, 1, 1)
        nn.init.zeros_(self.mass.weight)  # at first the mass is the ink alone: sigmoid(6*ink - 3)
        nn.init.constant_(self.mass.bias, -3.0)
        self.ink_gain = nn.Parameter(torch.tensor(6.0))
        if hidden:  # a small MLP: LayerNorm, Linear, GELU, dropout, Linear
            self.classify = nn.Sequential(nn.LayerNorm(channels), nn.Linear(channels, hidden), nn.GELU(),
                                          nn.Dropout(dropout), nn.Linear(hidden, 10))
        else:
            self.classify = nn.Sequential(nn.LayerNorm(channels), nn.Dropout(dropout), nn.Linear(channels, 10))

    def forward(self, f: torch.Tensor, ink: torch.Tensor) -> torch.Tensor:
        """Column features f (B,C,W) and column ink (B,W) in 0..1 -> digit logits (B,4,10)."""
        # float32 for the cumsum; the floor keeps an all-black image from dividing by zero
        m = torch.sigmoid(self.mass(f).float().squeeze(1) + self.ink_gain * ink) + 1e-3  # (B, W)
        slots = torch.einsum("bkw,bcw->bkc", slot_weights(m).to(f.dtype), f)
        return self.classify(slots)


def slot_weights(mass: torch.Tensor, slots: int = 4) -> torch.Tensor:
    """(B,W) positive column masses -> (B,slots,W): slot k's share of each column; each slot's row sums to 1.

    The masses, scaled to total `slots`, tile [0, slots]; column w covers [lo_w, hi_w] and
    gives slot k the length of its overlap with [k, k+1].
    """
    c = mass.cumsum(dim=1)
    hi = slots * c / c[:, -1:]
    lo = hi - slots * mass / c[:, -1:]
    k = torch.arange(slots, device=mass.device, dtype=mass.dtype).view(1, slots, 1)
    return (torch.minimum(hi.unsqueeze(1), k + 1) - torch.maximum(lo.unsqueeze(1), k)).clamp(min=0)


class DigitSumNet(nn.Module):
    """Ours: residual trunk -> max over height -> a row of column features -> four digit slots.

    The trunk halves the height three times but the width only twice, so each of the 42
    columns left is 4 px of the image, narrower than a digit; max over height makes the
    features blind to a digit's vertical offset. `DigitSlots` then reads four digits left
    to right. Trained from sums alone (loss "sum_nll"), the digits are learnt only through
    the exact distribution of their sum.
    """

    def __init__(self, widths: tuple[int, int, int, int] = (24, 32, 64, 64), dropout: float = 0.1, hidden: int = 0):
        super().__init__()
        w0, w1, w2, w3 = widths
        self.stem = nn.Sequential(nn.Conv2d(1, w0, 3, 2, 1, bias=False), nn.BatchNorm2d(w0), nn.ReLU(inplace=True))
        self.trunk = nn.Sequential(
            BasicBlock(w0, w1),            # 20 x 84
            BasicBlock(w1, w2, 2),         # 10 x 42
            BasicBlock(w2, w3, (2, 1)),    # 5 x 42
        )
        self.slots = DigitSlots(w3, dropout, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.trunk(self.stem(x)).amax(dim=2)  # (B, C, 42)
        black, white = -COURSE_MEAN / COURSE_STD, (1 - COURSE_MEAN) / COURSE_STD  # pixel 0 and 255, normalised
        ink = (F.adaptive_max_pool2d(x, (1, f.shape[-1])).flatten(1).float() - black) / (white - black)
        return self.slots(f, ink)


# ----------------------------------------------------------------------------------------
# Builders, one per model a recipe names
# ----------------------------------------------------------------------------------------
def se_resnet_000() -> nn.Module:
    """Report 000's SE-ResNet with a regression output."""
    return SEResNet()


def attention_cnn_002() -> nn.Module:
    """Report 002's Advanced CNN."""
    return AttentionCNN()


def multilabel_cnn_004() -> nn.Module:
    """Report 004's MultiLabelCNN (stage 1)."""
    return MultiLabelCNN()


def sum_of_digits_004() -> nn.Module:
    """Report 004's SumOfDigitsPredictor (stage 2)."""
    return SumOfDigitsPredictor()


class Ensemble(nn.Module):
    """The members of a digits4 recipe (`Recipe.members`) scored as one model: the mean of their digit
    log-probabilities (B,4,10), i.e. the normalised geometric mean of their digit distributions."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x).float().log_softmax(-1) for m in self.members]).mean(0)


def digitsum_net() -> nn.Module:
    """Our compact digit-reading network, its digit classifier an MLP (hidden 128, dropout 0.5)."""
    return DigitSumNet(dropout=0.5, hidden=128)


def _tv_resnet(arch: str, head: str, hidden: int | None = None) -> nn.Module:
    """torchvision ResNet with a one-channel conv1 (7x7, stride 2, as the original) and the report's head at `fc`."""
    model = getattr(torchvision.models, arch)(weights=None)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    model.fc = head_layer(model.fc.in_features, head, hidden)
    return model


def resnet50_regression() -> nn.Module:
    """Report 002: ResNet-50, Linear(2048 -> 1)."""
    return _tv_resnet("resnet50", "regression")


def resnet50_mlp_regression() -> nn.Module:
    """Report 004: ResNet-50, MLP 2048-128-1."""
    return _tv_resnet("resnet50", "regression", hidden=128)


def resnet50_sum37() -> nn.Module:
    """Report 003: ResNet-50, 37-way softmax over sums."""
    return _tv_resnet("resnet50", "sum37")


def resnet18_sum37() -> nn.Module:
    """Report 003: ResNet-18, 37-way softmax over sums."""
    return _tv_resnet("resnet18", "sum37")


def resnet50_digits4() -> nn.Module:
    """Report 003: ResNet-50 with four 10-way digit heads."""
    return _tv_resnet("resnet50", "digits4")


def seresnet50_sum37() -> nn.Module:
    """Report 001: timm's SE-ResNet-50 (SE on the residual branch before the addition), 37 logits."""
    return timm.create_model("seresnet50", pretrained=False, in_chans=1, num_classes=37)


# ----------------------------------------------------------------------------------------
# Creation with optional ImageNet weights (local files only)
# ----------------------------------------------------------------------------------------
def imagenet_file(weights: str | Path | None = None) -> Path | None:
    """The ImageNet ResNet-50 checkpoint to use, or None when there is none on this machine.

    Order: the `weights` argument, else $DIGITSUM_IMAGENET_WEIGHTS, else torchvision's own
    cache file for ResNet50_Weights.IMAGENET1K_V1. A file the user names must exist.
    """
    named = weights if weights is not None else os.environ.get("DIGITSUM_IMAGENET_WEIGHTS") or None
    if named is not None:
        path = Path(named).expanduser()
        if not path.is_file():
            raise BenchError(f"{path}: ImageNet weights file not found")
        return path
    url = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    return cached if cached.is_file() else None


def load_imagenet(model: nn.Module, path: Path, conv1: str) -> None:
    """Load a torchvision ResNet checkpoint into `model`, dropping its `fc` and adapting conv1.

    conv1 "sum": the RGB filters summed into one channel (report 004's code); "new": the
    model's freshly initialised one-channel conv1 is kept. Every other key must be present
    with the right shape; a BenchError names the file otherwise.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged file
        raise BenchError(f"{path}: cannot read ImageNet weights ({type(e).__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BenchError(f"{path}: not a state dict of tensors")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    if conv1 == "new":
        state.pop("conv1.weight", None)
    elif "conv1.weight" in state:
        state["conv1.weight"] = state["conv1.weight"].sum(dim=1, keepdim=True)
    own = model.state_dict()
    for k, v in state.items():
        if k not in own or own[k].shape != v.shape:
            want = tuple(own[k].shape) if k in own else "no such key"
            raise BenchError(f"{path}: {k} {tuple(v.shape)} does not fit the model ({want})")
    allowed = {k for k in own if k.startswith("fc.")} | ({"conv1.weight"} if conv1 == "new" else set())
    missing = sorted(set(own) - set(state) - allowed)
    if missing:
        raise BenchError(f"{path}: lacks {len(missing)} model keys, e.g. {missing[0]}")
    model.load_state_dict(state, strict=False)


def create(build: Callable[[], nn.Module], pretrained: str = "none", conv1: str = "sum",
           weights: str | Path | None = None, name: str = "model") -> tuple[nn.Module, str]:
    """`build()`'s model and its weight status: "imagenet", "none" or "unavailable".

    With `pretrained` "imagenet", the ImageNet weights are loaded (`conv1` says how conv1 becomes
    one-channel). "unavailable": this machine has none, so the model trains from scratch; a
    warning naming `name` says so and the status goes into the record.
    """
    model = build()
    if pretrained != "imagenet":
        return model, "none"
    path = imagenet_file(weights)
    if path is None:
        warnings.warn(f"recipe {name}: no ImageNet weights on this machine (pass a file or set "
                      f"DIGITSUM_IMAGENET_WEIGHTS); training from scratch", stacklevel=3)
        return model, "unavailable"
    load_imagenet(model, path, conv1)
    return model, "imagenet"


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def gflops_per_image(model: nn.Module) -> float:
    """Forward GFLOPs for one 1x40x168 image in eval mode, as FlopCounterMode counts them (2 per MAC)."""
    was_training = model.training
    p = next(model.parameters())
    x = torch.zeros(1, 1, HEIGHT, WIDTH, device=p.device, dtype=p.dtype)
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 1e9
