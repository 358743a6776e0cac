"""The registry: every report's method as one recipe, made by one decorated function.

A recipe is a frozen dataclass that states everything the method is. Its name is the
registry key, the CLI name and the leaderboard row. The registry is a dict and three
functions (`register`, `get_recipe`, `list_recipes`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch.nn as nn

from .errors import BenchError

Head = Literal["regression", "sum37", "digits4", "multilabel30"]
Loss = Literal["mse", "focal_l1", "ce", "sum_nll", "bce"]


@dataclass(frozen=True)
class Claim:
    """A number a report claims; always shown as a claim, never as a measurement."""

    metric: Literal["exact", "within_one", "mse", "mae"]  # accuracies as fractions 0..1
    value: float
    split: Literal["val", "test"]  # the split of the course data the report quoted it on
    note: str = ""  # e.g. "after 87 epochs", "approximately"


@dataclass(frozen=True)
class Recipe:
    """One method, exactly as its report trains it."""

    name: str  # registry key, CLI name and leaderboard row
    report: str  # "000".."004", or "ours"
    method: str  # the report's own name for the method
    model: Callable[[], nn.Module]  # builds the network from scratch (models.py / torchvision / timm)
    head: Head  # output: (B,) sum | (B,37) logits | (B,4,10) digit logits | (B,30) multi-label logits
    loss: Loss  # training loss on that head
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-3  # peak learning rate (OneCycle's max_lr)
    weight_decay: float = 0.0  # as the optimizer applies it (L2 for Adam, decoupled for AdamW)
    schedule: Literal["constant", "onecycle"] = "constant"  # learning-rate schedule over all epochs
    epochs: int = 50
    batch_size: int = 32
    ema_decay: float | None = None  # EMA of weights, updated every step; evaluated instead of raw weights
    data: Literal["synth", "synth003"] = "synth"  # training source; val/test come from the benchmark data
    train_size: int = 24_000  # training images (course data: 80% of 30,000)
    val_size: int = 6_000  # validation images, same digit pool as train
    pretrained: Literal["none", "imagenet"] = "none"  # backbone initialisation the report used
    conv1: Literal["sum", "new"] = "sum"  # how an ImageNet conv1 becomes one-channel: sum RGB, or fresh init
    selection: Literal["last", "best_val_loss", "best_val_exact"] = "last"  # which epoch's weights are scored
    augment: bool = False  # random shift/scale of each training batch (ours only; the reports used none)
    tta: bool = False  # test-time augmentation: average outputs over shifted copies
    decode: Literal["sum_of_digits", "most_likely_sum"] = "sum_of_digits"  # digits4 head -> predicted sum
    pretrain: Recipe | None = None  # a first stage whose `features` module this recipe's model reuses
    claimed: tuple[Claim, ...] = ()  # the report's numbers, on the course data
    assumptions: tuple[str, ...] = ()  # choices made where the report was silent

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.train_size < 1:
            raise BenchError(f"recipe {self.name}: epochs, batch_size and train_size must be positive")


_REGISTRY: dict[str, Callable[[], Recipe]] = {}


def register(fn: Callable[[], Recipe]) -> Callable[[], Recipe]:
    """Decorator: the function's name is the recipe's name and registry key."""
    if fn.__name__ in _REGISTRY:
        raise BenchError(f"recipe {fn.__name__} is registered twice")
    _REGISTRY[fn.__name__] = fn
    return fn


def get_recipe(name: str) -> Recipe:
    """The recipe called `name`; a BenchError names the known ones otherwise."""
    if name not in _REGISTRY:
        raise BenchError(f"unknown recipe {name!r}; known: {', '.join(list_recipes())}")
    recipe = _REGISTRY[name]()
    assert recipe.name == name, f"recipe function {name} returns a recipe named {recipe.name}"
    return recipe


def list_recipes() -> list[str]:
    """All recipe names, in registration order (reports first, ours last)."""
    return list(_REGISTRY)


# ----------------------------------------------------------------------------------------
# The recipes. One function each; the function name is the recipe name.
# ----------------------------------------------------------------------------------------
