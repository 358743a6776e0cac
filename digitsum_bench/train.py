"""The runner: fixed-seed training of a recipe, resumable, writing one record per run.

Plain functions in the torchvision-references style: `train_one_epoch`, `evaluate`, `fit`,
`run_one`. The data sits on the device as uint8 and batches are sliced there (no per-sample
DataLoader); models and inputs are channels_last (1.3x faster on a 2-core CPU too); the
forward pass runs under bf16 autocast on a GPU (with fused optimizers) and on a CPU that
computes bf16 natively (`uses_bf16`; the record's device says so). None of that changes the
method: batch size, epochs, loss and optimizer are the recipe's own.

Determinism: every random stream (data order, augmentation, dropout) is reseeded from
(seed, epoch) at the start of each epoch, so a run resumed from its last epoch checkpoint
takes exactly the steps an uninterrupted run takes.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import math
import os
import platform
import re
import subprocess
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from . import __version__, losses, metrics, models
from . import data as datamod
from .errors import BenchError
from .recipes import Recipe, get_recipe
from .store import (
    RunKey,
    atomic_write,
    finished_record,
    record_failure,
    run_lock,
    write_json_atomic,
)


# ---------------------------------------------------------------------------------------
# Budgets
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Budget:
    """How much of a recipe to run. `None` keeps the recipe's own value."""

    name: str
    max_epochs: int | None  # cap on epochs (OneCycle then spans the capped epochs)
    max_train: int | None  # cap on training images
    max_val: int | None  # cap on validation images
    test_size: int  # images of the shared test split (a prefix of the full 10,000)
    max_members: int | None = None  # cap on an ensemble recipe's members (Recipe.members)


BUDGETS = {
    # each report's own epochs, batch size and data size, every ensemble member; the full 10,000-image test split
    "full": Budget("full", None, None, None, 10_000),
    # all of the data, at most 2 epochs, one model: minutes per small recipe on 2 CPU cores, and they learn
    "quick": Budget("quick", 2, None, None, 10_000, max_members=1),
    # the CI accuracy gate's budget: one epoch, 2,000 validation images, the full test split, one model
    "ci": Budget("ci", 1, None, 2_000, 10_000, max_members=1),
    # seconds per recipe on a CPU: checks that everything runs (ensembles too), measures nothing useful
    "smoke": Budget("smoke", 1, 64, 32, 64),
}
# Budgets whose accuracies mean nothing: reported apart from the leaderboard, never ranked.
CHECK_ONLY = ("smoke",)


def apply_budget(recipe: Recipe, budget: str) -> Recipe:
    """The recipe as run under `budget` (the record stores this version)."""
    if budget not in BUDGETS:
        raise BenchError(f"unknown budget {budget!r}; choose from {', '.join(BUDGETS)}")
    b = BUDGETS[budget]

    def cap(value: int, limit: int | None) -> int:
        return value if limit is None else min(value, limit)

    return replace(
        recipe,
        epochs=cap(recipe.epochs, b.max_epochs),
        train_size=cap(recipe.train_size, b.max_train),
        val_size=cap(recipe.val_size, b.max_val),
        aux_size=cap(recipe.aux_size, b.max_train),
        members=cap(recipe.members, b.max_members),
        pretrain=apply_budget(recipe.pretrain, budget) if recipe.pretrain else None,
    )


# ---------------------------------------------------------------------------------------
# Data on the device
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceData:
    """One split as device tensors: images uint8 (N,40,168), sums (N,), digits (N,4) or None."""

    images: torch.Tensor
    sums: torch.Tensor
    digits: torch.Tensor | None

    @classmethod
    def from_numpy(cls, d: datamod.DigitSumData, device: torch.device) -> "DeviceData":
        digits = None if d.digits is None else torch.from_numpy(d.digits).to(device)
        return cls(torch.from_numpy(d.images).to(device), torch.from_numpy(d.sums).to(device), digits)

    def __len__(self) -> int:
        return self.images.shape[0]


@functools.lru_cache(maxsize=4)
def _splits(data: str, kind: str, train: int, val: int, test: int) -> datamod.Splits:
    return datamod.load_splits(data, kind, train, val, test, data_seed=0)


def load_data(recipe: Recipe, budget: str, data: str) -> datamod.Splits:
    """The recipe's splits under the budget (data seed 0: the same data for every training seed)."""
    return _splits(data, recipe.data, recipe.train_size, recipe.val_size, BUDGETS[budget].test_size)


# Models and inputs in channels_last: the same maths in another memory layout, 1.3x faster on a
# 2-core CPU and the fast layout on a GPU. Float results differ from the default layout's in the
# last bits, so comparisons of two training paths (tests/test_stacked.py) set both the same way.
CHANNELS_LAST = True


def memory_format() -> torch.memory_format:
    return torch.channels_last if CHANNELS_LAST else torch.contiguous_format


def to_input(images: torch.Tensor, channels_last: bool, normalize: str = "course") -> torch.Tensor:
    """uint8 (B,40,168) -> float (B,1,40,168): x/255, then (for "course") minus the course mean, over its std."""
    x = images.unsqueeze(1).float().div_(255)
    if normalize == "course":
        x = x.sub_(datamod.COURSE_MEAN).div_(datamod.COURSE_STD)
    elif normalize != "unit":
        raise BenchError(f"unknown input normalisation {normalize!r}; known: course, unit")
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def black(normalize: str = "course") -> float:
    """The value of a black pixel after `to_input`'s normalisation."""
    return -datamod.COURSE_MEAN / datamod.COURSE_STD if normalize == "course" else 0.0


def shift(x: torch.Tensor, pixels: int, normalize: str = "course") -> torch.Tensor:
    """Shift images `pixels` columns to the right (left if negative), filling with black (no wrap-around)."""
    if pixels == 0:
        return x
    w = x.shape[-1]
    if pixels > 0:
        return F.pad(x, (pixels, 0), value=black(normalize))[..., :w]
    return F.pad(x, (0, -pixels), value=black(normalize))[..., -pixels:]


def augment(x: torch.Tensor, generator: torch.Generator, normalize: str = "course") -> torch.Tensor:
    """Random per-image scale (0.9..1.1) and shift (±6 px across, ±3 px down) by one affine resample."""
    b, _, h, w = x.shape
    r = torch.rand(b, 3, generator=generator, device=x.device)
    scale = 0.9 + 0.2 * r[:, 0]
    theta = torch.zeros(b, 2, 3, device=x.device)
    theta[:, 0, 0] = 1 / scale
    theta[:, 1, 1] = 1 / scale
    theta[:, 0, 2] = (r[:, 1] - 0.5) * 2 * 6 * 2 / w
    theta[:, 1, 2] = (r[:, 2] - 0.5) * 2 * 3 * 2 / h
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    background = black(normalize)  # fill with black, not with zeros of the normalised scale
    return F.grid_sample(x - background, grid, align_corners=False) + background


def distort_digits(digits: torch.Tensor, generator: torch.Generator, rotation: float = 12.0, shear: float = 0.2,
                   zoom: float = 0.1, elastic: float = 2.0, stroke: float = 0.5) -> torch.Tensor:
    """A new handwriting of each MNIST digit (N,28,28) uint8, by one resample: rotation up to `rotation`
    degrees, shear up to `shear`, scale 1 +- `zoom` (the width a further 1 +- zoom/2), a smooth elastic
    field (Gaussian of sigma 4 px, largest displacement `elastic` px; Simard et al. 2003); then the
    stroke thickened or thinned by up to `stroke` of a 3x3 dilation or erosion."""
    x = digits[:, None].float() / 255
    n = len(x)
    r = torch.rand(n, 5, generator=generator) * 2 - 1
    angle = r[:, 0] * rotation * math.pi / 180
    cos, sin = torch.cos(angle), torch.sin(angle)
    zoom_y = 1 + zoom * r[:, 2]
    zoom_x = zoom_y * (1 + zoom / 2 * r[:, 3])
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos / zoom_x, (shear * r[:, 1] - sin) / zoom_x
    theta[:, 1, 0], theta[:, 1, 1] = sin / zoom_y, cos / zoom_y
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    if elastic:
        field = torch.rand(n * 2, 1, 28, 28, generator=generator) * 2 - 1
        taps = torch.exp(-torch.arange(-12, 13.0) ** 2 / (2 * 4.0 ** 2))
        taps = taps / taps.sum()
        field = F.conv2d(F.pad(field, (12, 12, 0, 0), mode="reflect"), taps.view(1, 1, 1, -1))
        field = F.conv2d(F.pad(field, (0, 0, 12, 12), mode="reflect"), taps.view(1, 1, -1, 1)).view(n, 2, 28, 28)
        field = field / field.flatten(1).abs().amax(1).clamp(min=1e-6).view(n, 1, 1, 1)
        grid = grid + elastic * (2 / 28) * field.permute(0, 2, 3, 1)  # px -> grid units
    y = F.grid_sample(x, grid, align_corners=False)
    if stroke:
        t = stroke * r[:, 4].view(n, 1, 1, 1)
        thicker, thinner = F.max_pool2d(y, 3, 1, 1), -F.max_pool2d(-y, 3, 1, 1)
        y = torch.where(t > 0, y + t * (thicker - y), y - t * (thinner - y))
    y = (y.clamp(0, 1) * 255).round().to(torch.uint8)[:, 0]
    y[y < 8] = 0  # interpolation dust would widen the ink box the composer crops to
    return y


def uses_bf16(device: torch.device) -> bool:
    """Whether the forward pass runs under bf16 autocast: on a GPU, and on a CPU that computes bf16
    natively (AVX512-BF16 or AMX; 1.5x faster training steps on our 2-core EPYC). Recorded in the
    record's device string, since it changes the arithmetic."""
    return device.type == "cuda" or (device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast(device: torch.device):
    """The forward pass's precision: bf16 autocast where `uses_bf16`, else float32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_bf16(device))


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """An independent, reproducible seed for one random stream of one epoch."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1)[0])


# ---------------------------------------------------------------------------------------
# Training and evaluation
# ---------------------------------------------------------------------------------------
def make_optimizer(recipe: Recipe, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """The recipe's optimizer; fused kernels on a GPU (same maths)."""
    extra = {"fused": True} if device.type == "cuda" else {}
    if recipe.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay, **extra)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay, **extra)
    return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=0.9, nesterov=True,
                           weight_decay=recipe.weight_decay, **extra)


def make_scheduler(recipe: Recipe, opt: torch.optim.Optimizer, steps_per_epoch: int):
    """OneCycle over all steps of all epochs, or None for a constant learning rate."""
    if recipe.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, epochs=recipe.epochs,
                                                   steps_per_epoch=steps_per_epoch)
    return None


def needs_digits(recipe: Recipe) -> bool:
    """Whether the recipe's loss uses per-digit labels (not only sums)."""
    return recipe.loss == "bce" or (recipe.loss == "ce" and recipe.head == "digits4")


class AuxBatches:
    """One epoch's draws from a recipe's labelled synthetic set: `aux_batch` images per step, in an
    order of their own (stream 3 of the run's seed and epoch), cycling when the set runs out."""

    def __init__(self, aux: DeviceData, recipe: Recipe, seed: int, epoch: int, device: torch.device):
        order = torch.Generator().manual_seed(epoch_seed(seed, epoch, 3))
        self.aux, self.size = aux, recipe.aux_batch
        self.perm = torch.randperm(len(aux), generator=order).to(device)

    def index(self, step: int) -> torch.Tensor:
        return self.perm[(step * self.size + torch.arange(self.size, device=self.perm.device)) % len(self.aux)]


def batch_images(split: DeviceData, idx: torch.Tensor, aux: AuxBatches | None, step: int) -> torch.Tensor:
    """A step's uint8 images: the training batch, then the step's labelled synthetic images if any."""
    if aux is None:
        return split.images[idx]
    return torch.cat([split.images[idx], aux.aux.images[aux.index(step)]])


def batch_loss(recipe: Recipe, out: torch.Tensor, split: DeviceData, idx: torch.Tensor, aux: AuxBatches | None,
               step: int) -> torch.Tensor:
    """The recipe's loss on the training batch, plus the per-digit cross-entropy of the synthetic images."""
    n = len(idx)
    digits = split.digits[idx] if split.digits is not None else None
    loss = losses.compute_loss(recipe.loss, recipe.head, out[:n].float(), split.sums[idx], digits)
    if aux is not None:
        loss = loss + F.cross_entropy(out[n:].float().flatten(0, 1), aux.aux.digits[aux.index(step)].flatten(),
                                      label_smoothing=recipe.aux_label_smoothing)
    return loss


def train_one_epoch(model, opt, sched, ema, split: DeviceData, recipe: Recipe, seed: int, epoch: int,
                    device: torch.device, progress: bool = False, aux: DeviceData | None = None) -> float:
    """One pass over the training split; returns the mean training loss.

    With `aux` (the recipe's labelled synthetic set, `recipe.aux_batch` > 0), each batch also
    carries `aux_batch` of its images, whose per-digit cross-entropy is added to the loss.
    """
    model.train()
    order = torch.Generator().manual_seed(epoch_seed(seed, epoch, 0))
    aug = torch.Generator(device=device).manual_seed(epoch_seed(seed, epoch, 1))
    torch.manual_seed(epoch_seed(seed, epoch, 2))  # dropout
    perm = torch.randperm(len(split), generator=order).to(device)
    extra = AuxBatches(aux, recipe, seed, epoch, device) if aux is not None else None
    total, count = torch.zeros((), device=device), 0
    batches = range(0, len(split), recipe.batch_size)
    for step, start in enumerate(tqdm(batches, desc=f"epoch {epoch}", leave=False, disable=not progress, unit="batch")):
        idx = perm[start:start + recipe.batch_size]
        x = to_input(batch_images(split, idx, extra, step), CHANNELS_LAST, recipe.normalize)
        if recipe.augment:
            x = augment(x, aug, recipe.normalize)
        with autocast(device):
            out = model(x)
        loss = batch_loss(recipe, out, split, idx, extra, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        if ema is not None:
            ema.update_parameters(model)
        total += loss.detach() * len(idx)
        count += len(idx)
    return float(total) / count


TTA_SHIFTS = (-2, 2)  # columns; two views cost two forward passes, and their average is centred on the image
HISTORY_VAL = 2_000  # per-epoch validation images of a recipe that keeps its last epoch (the curve only)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, recipe: Recipe, device: torch.device,
            batch: int = 512) -> torch.Tensor:
    """Raw outputs for all images (float32, on the device), with test-time augmentation if the recipe uses it."""
    model.eval()
    shifts = TTA_SHIFTS if recipe.tta else (0,)
    outs = []
    for start in range(0, images.shape[0], batch):
        x = to_input(images[start:start + batch], CHANNELS_LAST, recipe.normalize)
        with autocast(device):
            out = sum(model(shift(x, s, recipe.normalize)).float() for s in shifts) / len(shifts)
        outs.append(out)
    return torch.cat(outs)


def evaluate(model: nn.Module, split: DeviceData, recipe: Recipe, device: torch.device) -> dict:
    """Metrics (metrics.compute_metrics) plus the recipe's loss on the split, where it can be computed."""
    out = predict(model, split.images, recipe, device)
    result: dict = {}
    if recipe.head != "multilabel30":
        pred = metrics.predict_sums(out, recipe.head, recipe.decode)
        raw = metrics.expected_sums(out, recipe.head)  # unrounded: the reports' MSE is of these (mse_raw)
        result = metrics.compute_metrics(pred.cpu().numpy(), split.sums.cpu().numpy(), raw.cpu().numpy())
    loss = None
    if not needs_digits(recipe) or split.digits is not None:
        loss = float(losses.compute_loss(recipe.loss, recipe.head, out, split.sums, split.digits))
    return {**result, "loss": loss}


def history_split(val: DeviceData, recipe: Recipe) -> DeviceData:
    """What each epoch is validated on: all of `val` where the recipe selects an epoch by it, else a
    HISTORY_VAL-image prefix, enough for the training curve (the record's val metrics use all of it)."""
    if recipe.selection != "last" or len(val) <= HISTORY_VAL:
        return val
    cut = slice(0, HISTORY_VAL)
    return DeviceData(val.images[cut], val.sums[cut], val.digits[cut] if val.digits is not None else None)


def _selection_score(recipe: Recipe, val: dict) -> float | None:
    """Higher is better; None when the recipe keeps its last epoch."""
    if recipe.selection == "best_val_loss":
        return None if val["loss"] is None else -val["loss"]
    if recipe.selection == "best_val_exact":
        return val["exact"]
    return None


def _save_atomic(obj: dict, path: Path) -> None:
    with atomic_write(path) as f:
        torch.save(obj, f)


def _load_error(e: Exception) -> str:
    """torch.load's reason in one short line (its weights-only message is a paragraph of advice)."""
    text = str(e).replace("\n", " ")
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found:
        return f"it would call {found.group(1)}; only tensors and plain data are loaded"
    if "WeightsUnpickler error" in text or "Weights only load failed" in text:
        return "not plain tensors and data"
    return f"{type(e).__name__}: {text.strip()[:160]}"


def load_pt(path: Path, device: torch.device | str = "cpu") -> dict:
    """A checkpoint read with `weights_only=True`: tensors and plain data only, so that a crafted file
    (results are copied between machines) can never run code. Anything else is a one-line BenchError."""
    try:
        ck = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for refused or damaged files
        raise BenchError(f"{path}: not a digitsum-bench checkpoint, refused ({_load_error(e)})") from None
    if not isinstance(ck, dict):
        raise BenchError(f"{path}: not a digitsum-bench checkpoint (holds {type(ck).__name__}, not a dict)")
    return ck


def fresh_state() -> dict:
    """A run's bookkeeping before its first epoch (saved in last.pt as "state")."""
    return {"epoch": 0, "history": [], "best_score": None, "best_epoch": None, "train_seconds": 0.0,
            "step_seconds": 0.0}


def resume(last: Path, model: nn.Module, opt, sched, ema, device: torch.device) -> dict | None:
    """Load an epoch checkpoint into model, optimizer, schedule and EMA; its state, or None when there is none."""
    if not last.exists():
        return None
    ck = load_pt(last, device)
    try:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        if sched is not None:
            sched.load_state_dict(ck["sched"])
        if ema is not None:
            ema.load_state_dict(ck["ema"])
        return ck["state"]
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise BenchError(f"{last}: does not resume this recipe ({type(e).__name__}: "
                         f"{str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}); "
                         f"delete it or use --force") from None


def end_epoch(recipe: Recipe, epoch: int, train_loss: float, step_seconds: float, scored: nn.Module,
              model: nn.Module, opt, sched, ema, state: dict, val: DeviceData, device: torch.device,
              ckpt_dir: Path) -> dict:
    """After an epoch's steps: validate `scored`, add the history entry, save best.pt (where the recipe
    selects by validation) and last.pt, the checkpoint a resumed run starts from. Returns the val metrics."""
    t0 = time.perf_counter()
    v = evaluate(scored, history_split(val, recipe), replace(recipe, tta=False), device)  # one view is enough
    state["history"].append({"epoch": epoch, "train_loss": train_loss, "val_loss": v["loss"],
                             "val_exact": v.get("exact"), "val_within_one": v.get("within_one"),
                             "lr": opt.param_groups[0]["lr"], "seconds": step_seconds + time.perf_counter() - t0})
    state["epoch"] = epoch
    state["train_seconds"] += state["history"][-1]["seconds"]
    state["step_seconds"] += step_seconds
    score = _selection_score(recipe, v)
    if score is not None and (state["best_score"] is None or score > state["best_score"]):
        state["best_score"], state["best_epoch"] = score, epoch
        _save_atomic({"recipe": recipe.name, "model": scored.state_dict()}, ckpt_dir / "best.pt")
    _save_atomic({"model": model.state_dict(), "opt": opt.state_dict(),
                  "sched": sched.state_dict() if sched is not None else None,
                  "ema": ema.state_dict() if ema is not None else None, "state": state}, ckpt_dir / "last.pt")
    return v


def fit(recipe: Recipe, model: nn.Module, train: DeviceData, val: DeviceData, seed: int, device: torch.device,
        ckpt_dir: Path, progress: bool = True, aux: DeviceData | None = None) -> tuple[nn.Module, dict]:
    """Train `model` under `recipe`, resuming from `ckpt_dir/last.pt` if a previous attempt left one.

    Returns the selected model (EMA weights where the recipe uses EMA; best epoch where it
    selects on validation) and a summary: history, selected epoch, seconds, images/s.
    """
    opt = make_optimizer(recipe, model, device)
    steps = -(-len(train) // recipe.batch_size)
    sched = make_scheduler(recipe, opt, steps)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema_decay), use_buffers=True) \
        if recipe.ema_decay else None
    state = resume(ckpt_dir / "last.pt", model, opt, sched, ema, device) or fresh_state()
    scored = ema.module if ema is not None else model
    bar = tqdm(range(state["epoch"] + 1, recipe.epochs + 1), desc=recipe.name, unit="epoch",
               initial=state["epoch"], total=recipe.epochs, disable=not progress, leave=False)
    for epoch in bar:
        t0 = time.perf_counter()
        train_loss = train_one_epoch(model, opt, sched, ema, train, recipe, seed, epoch, device, progress, aux)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        v = end_epoch(recipe, epoch, train_loss, t1 - t0, scored, model, opt, sched, ema, state, val, device, ckpt_dir)
        bar.set_postfix(loss=f"{train_loss:.3f}", val_exact=f"{v.get('exact', float('nan')):.3f}")
    selected = scored
    if state["best_epoch"] is not None:
        selected = copy.deepcopy(scored)
        selected.load_state_dict(load_pt(ckpt_dir / "best.pt", device)["model"])
    summary = {"history": state["history"], "selected_epoch": state["best_epoch"] or state["epoch"],
               "train_seconds": state["train_seconds"],
               "images_per_s": len(train) * recipe.epochs / max(state["step_seconds"], 1e-9)}
    return selected, summary


# ---------------------------------------------------------------------------------------
# One run: data, model, training, evaluation, record
# ---------------------------------------------------------------------------------------
def resolve_device(device: str) -> torch.device:
    """'auto' picks CUDA when there is a GPU, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda: no CUDA GPU is visible (use --device cpu or auto)")
    if device not in ("cpu", "cuda"):
        raise BenchError(f"--device {device}: choose auto, cpu or cuda")
    return torch.device(device)


def set_deterministic(on: bool) -> None:
    """Bitwise-reproducible GPU runs (slower): deterministic algorithms and cuBLAS workspace."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on)
    torch.backends.cudnn.benchmark = not on
    torch.backends.cudnn.deterministic = on


def cpu_name(device: torch.device) -> str:
    """e.g. "cpu (x86_64, 2 threads, bf16)": the thread count and precision change a CPU run's numbers."""
    precision = ", bf16" if uses_bf16(device) else ""
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads{precision})"


def provenance(device: torch.device) -> dict:
    """Code version, git commit, library versions and device name for a record."""
    import timm
    import torchvision

    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "code_version": __version__,
        "git_commit": git("rev-parse", "HEAD") or "unknown",
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(device),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "timm": timm.__version__, "numpy": np.__version__},
    }


def recipe_config(recipe: Recipe) -> dict:
    """The recipe as JSON-safe data (callables by name)."""
    def clean(v):
        if callable(v):
            return getattr(v, "__name__", repr(v))
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return clean(asdict(replace(recipe, pretrain=None)) | {"pretrain": recipe_config(recipe.pretrain) if recipe.pretrain else None})


def build_model(recipe: Recipe, splits: datamod.Splits, seed: int, device: torch.device, ckpt_dir: Path,
                weights: str | None, progress: bool) -> tuple[nn.Module, str]:
    """The recipe's model, after its pre-training stage where it has one (report 004)."""
    torch.manual_seed(seed)
    model, status = models.create(recipe, weights)
    if recipe.pretrain is not None:
        stage1_file = ckpt_dir / "stage1.pt"
        stage1, _ = models.create(recipe.pretrain, weights)
        stage1 = stage1.to(device, memory_format=memory_format())
        if stage1_file.exists():
            stage1.load_state_dict(load_pt(stage1_file, device)["model"])
        else:
            train, val = _device_splits(recipe.pretrain, pretrain_splits(recipe.pretrain), device)
            stage1, _ = fit(recipe.pretrain, stage1, train, val, seed, device, ckpt_dir / "stage1", progress)
            _save_atomic({"recipe": recipe.pretrain.name, "model": stage1.state_dict()}, stage1_file)
        model.features.load_state_dict(stage1.features.state_dict())
    return model.to(device, memory_format=memory_format()), status


def load_aux(recipe: Recipe, device: torch.device) -> DeviceData | None:
    """The recipe's labelled synthetic set (`aux_set`) on the device, or None."""
    aux = aux_set(recipe)
    return None if aux is None else DeviceData.from_numpy(aux, device)


def aux_set(recipe: Recipe) -> datamod.DigitSumData | None:
    """The recipe's labelled synthetic set: DigitSum-Synth from the training digit pool, data seed 1.

    A different seed from the benchmark's data (seed 0) makes different compositions, so the
    training images' own digit labels are never used, and the test pool never is. With
    `aux_distort` k, it is composed from each training-pool digit and k `distort_digits` copies
    of it (torch seed 1, on the CPU).
    """
    if not recipe.aux_batch:
        return None
    if not recipe.aux_distort:
        return datamod.load_synth("synth", "train", recipe.aux_size, seed=1)
    return _distorted_aux_set(recipe.aux_size, recipe.aux_distort)


@functools.lru_cache(maxsize=1)
def _distorted_aux_set(size: int, distort: int) -> datamod.DigitSumData:
    """`aux_set` with `distort` copies: about 5 s on a CPU, so made once per process and shared by
    every seed of a run (the same on 1 and 2 threads: nothing in it depends on the seed)."""
    digits, labels, index = datamod.pool_digits("train")
    generator = torch.Generator().manual_seed(1)
    copies = [torch.from_numpy(digits)]
    copies += [distort_digits(copies[0], generator) for _ in range(distort)]
    k = distort + 1
    return datamod.compose_synth(torch.cat(copies).numpy(), np.tile(labels, k), np.tile(index, k), size,
                                 seed=1, name=f"DigitSum-Synth from training-pool digits and {k - 1} distorted copies")


def pretrain_splits(stage: Recipe) -> datamod.Splits:
    """A pre-training stage's own data: DigitSum-Synth train/val of its `data_seed`, from the train/val
    digit pool (never the test pool), whatever --data names: report 004 pre-trained "on a separate dataset"."""
    if stage.data_seed is None:
        raise BenchError(f"recipe {stage.name}: a pre-training stage needs its own data_seed")
    train = datamod.load_synth("synth", "train", stage.train_size, stage.data_seed)
    val = datamod.load_synth("synth", "val", stage.val_size, stage.data_seed)
    return datamod.Splits(train, val, None, f"stage-{stage.data_seed}", f"DigitSum-Synth, data seed {stage.data_seed}")


def _device_splits(recipe: Recipe, splits: datamod.Splits, device: torch.device) -> tuple[DeviceData, DeviceData]:
    train, val = DeviceData.from_numpy(splits.train, device), DeviceData.from_numpy(splits.val, device)
    if needs_digits(recipe) and splits.train.digits is None:
        raise BenchError(f"recipe {recipe.name} trains on per-digit labels, which {splits.train.name} does not have")
    return train, val


MAX_SEED = 2**31 - 1  # torch, numpy and every seed derived from it accept 0..2**31-1


def check_seeds(seeds: list[int]) -> None:
    """A BenchError before any work for a seed outside 0..MAX_SEED (it would fail mid-training)."""
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise BenchError(f"--seeds {seed}: a seed is a whole number in 0..{MAX_SEED}")


def run_one(name: str, seed: int, budget: str = "smoke", data: str = "synth", results: Path = Path("results"),
            device: str = "auto", force: bool = False, deterministic: bool = False, weights: str | None = None,
            seeds_requested: list[int] | None = None, progress: bool = True) -> dict | None:
    """Train one (recipe, seed) under a budget and write its record; returns the record.

    A finished record of this code version is returned as it is unless `force`. A run whose
    lock another live process holds is skipped (returns None). A failure leaves a marker for
    `status` and re-raises; nothing half-written is left behind.
    """
    check_seeds([seed])
    recipe = apply_budget(get_recipe(name), budget)
    splits = load_data(recipe, budget, data)
    key = RunKey(name, seed, budget, splits.dataset_id)
    results = Path(results)
    if not force and (done := finished_record(key, results)) is not None:
        return done
    with run_lock(key, results) as mine:
        if not mine:
            tqdm.write(f"skip {name} seed {seed}: another process is running it")
            return None
        try:
            record = _train_and_record(recipe, key, splits, results, device, force, deterministic, weights,
                                       seeds_requested or [seed], progress)
        except KeyboardInterrupt:
            raise
        except BaseException as e:
            record_failure(key, results, e)
            raise
    key.failed_path(results).unlink(missing_ok=True)
    return record


def member_seed(seed: int, k: int) -> int:
    """Ensemble member k's training seed: the run's own seed for member 0, so that a one-member budget
    trains exactly member 0; an independent seed in 0..MAX_SEED for each other member."""
    return seed if k == 0 else int(np.random.SeedSequence([seed, k, 4]).generate_state(1)[0]) & MAX_SEED


def fit_members(recipe: Recipe, splits: datamod.Splits, train: DeviceData, val: DeviceData, test: DeviceData | None,
                seed: int, device: torch.device, ckpt_dir: Path, weights: str | None,
                progress: bool) -> tuple[nn.Module, str, dict]:
    """Build and `fit` each of the recipe's members: the scored model (their `models.Ensemble` when there
    are several), its weight status, and the summary `fit` gives (member 0's history; the seconds and
    images/s of all members).

    Member k > 0 trains with `member_seed(seed, k)` in `ckpt_dir/member{k}`, so an interrupted ensemble
    resumes at the member and epoch it reached. With several members the summary also lists each
    member's seed and its own test metrics, so that a record shows what the ensemble adds.
    """
    aux = load_aux(recipe, device)
    seeds = [member_seed(seed, k) for k in range(recipe.members)]
    fitted, status = [], "none"
    for k, s in enumerate(seeds):
        d = ckpt_dir if k == 0 else ckpt_dir / f"member{k}"
        if len(seeds) > 1 and progress:
            tqdm.write(f"{recipe.name} seed {seed}: member {k + 1} of {len(seeds)} (training seed {s})")
        model, status = build_model(recipe, splits, s, device, d, weights, progress)
        fitted.append(fit(recipe, model, train, val, s, device, d, progress, aux))
    if len(fitted) == 1:
        return fitted[0][0], status, fitted[0][1]
    members = []
    for s, (model, summary) in zip(seeds, fitted):
        alone = None if test is None else evaluate(model, test, recipe, device)
        members.append({"seed": s, "val_exact": summary["history"][-1]["val_exact"],
                        "test": None if alone is None else {m: alone[m] for m in metrics.SUMMARY_KEYS}})
    summaries = [summary for _, summary in fitted]
    summary = {**summaries[0], "train_seconds": sum(x["train_seconds"] for x in summaries),
               "images_per_s": len(summaries) / sum(1 / x["images_per_s"] for x in summaries), "members": members}
    return models.Ensemble([model for model, _ in fitted]), status, summary


def _train_and_record(recipe: Recipe, key: RunKey, splits: datamod.Splits, results: Path, device_name: str,
                      force: bool, deterministic: bool, weights: str | None, seeds_requested: list[int],
                      progress: bool) -> dict:
    device = resolve_device(device_name)
    set_deterministic(deterministic or device.type == "cpu")
    ckpt_dir = key.checkpoint_dir(results)
    if force and ckpt_dir.exists():
        for f in ckpt_dir.rglob("*.pt"):
            f.unlink()
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    train, val = _device_splits(recipe, splits, device)
    test = DeviceData.from_numpy(splits.test, device) if splits.test is not None else None
    selected, status, summary = fit_members(recipe, splits, train, val, test, key.seed, device, ckpt_dir, weights,
                                            progress)
    params_m = models.count_params(selected) / 1e6
    gflops = models.gflops_per_image(copy.deepcopy(selected).cpu().float())
    scores = {"val": evaluate(selected, val, recipe, device),
              "test": evaluate(selected, test, recipe, device) if test is not None else None}
    _save_atomic({"recipe": recipe.name, "config": recipe_config(recipe), "model": selected.state_dict()},
                 ckpt_dir / "final.pt")
    record = {
        "schema": 1, "recipe": recipe.name, "report": recipe.report, "method": recipe.method,
        "seed": key.seed, "seeds_requested": sorted(seeds_requested), "budget": key.budget,
        "dataset_id": key.dataset_id, "dataset": splits.description, **provenance(device),
        "pretrained": status, "params_m": params_m, "gflops": gflops,
        "train_seconds": summary["train_seconds"], "images_per_s": summary["images_per_s"],
        "epochs_run": recipe.epochs, "selected_epoch": summary["selected_epoch"],
        "started": started, "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "config": recipe_config(recipe),
        "claimed": [asdict(c) for c in recipe.claimed],
        "metrics": scores, "history": summary["history"],
        **({"members": summary["members"]} if "members" in summary else {}),
    }
    write_json_atomic(key.record_path(results), record)
    return record


def load_checkpoint(path: str | Path, device: torch.device) -> tuple[nn.Module, Recipe]:
    """A model saved by the runner (final.pt, or best.pt with final.pt beside it) and the recipe that made it.

    Read with `weights_only=True` (`load_pt`): a file from elsewhere can hold only tensors and
    plain data, so it can never run code. Every problem is a one-line BenchError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"{path}: no such checkpoint")
    ck = load_pt(path, device)
    name, named_by = ck.get("recipe"), path
    if name is None:  # a best.pt of an older version: the recipe's name is in final.pt beside it
        named_by = path.with_name("final.pt")
        if not named_by.is_file():
            raise BenchError(f"{path}: names no recipe and has no final.pt beside it")
        name = load_pt(named_by, "cpu").get("recipe")
    if not isinstance(name, str):
        raise BenchError(f"{named_by}: not a digitsum-bench checkpoint (no recipe name in it)")
    try:
        recipe = get_recipe(name)
    except BenchError as e:
        raise BenchError(f"{named_by}: {e}") from None
    try:
        members = (ck.get("config") or {}).get("members", 1)  # an ensemble's final.pt (Recipe.members)
        model = models.Ensemble([recipe.model() for _ in range(members)]) if members > 1 else recipe.model()
        model.load_state_dict(ck["model"])
    except Exception as e:  # noqa: BLE001 - any mismatch is reported the same way
        raise BenchError(f"{path}: not a digitsum-bench checkpoint of {name} "
                         f"({type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''})") from None
    return model.to(device), recipe


def evaluate_file(checkpoint: str | Path, data_path: str | Path, device: str = "auto") -> dict:
    """Score a saved model on a dataset file or folder (course files, .npz)."""
    dev = resolve_device(device)
    model, recipe = load_checkpoint(checkpoint, dev)
    split = DeviceData.from_numpy(datamod.load_path(data_path), dev)
    result = evaluate(model, split, recipe, dev)
    return {"recipe": recipe.name, "checkpoint": str(checkpoint), "data": str(data_path),
            **{k: result[k] for k in (*metrics.SUMMARY_KEYS, "mse_raw", "per_sum")}}


def random_split(n: int, device: torch.device | str, seed: int = 0) -> DeviceData:
    """n random images with digits and their sums, on the device: for timing, where content does not matter."""
    g = torch.Generator().manual_seed(seed)  # its own generator: timing must not move the global RNG
    digits = torch.randint(0, 10, (n, 4), generator=g)
    images = torch.randint(0, 256, (n, datamod.HEIGHT, datamod.WIDTH), generator=g, dtype=torch.uint8)
    return DeviceData(images.to(device), digits.sum(1).to(device), digits.to(device))


@functools.lru_cache(maxsize=64)
def estimate_seconds(recipe: Recipe, device: torch.device, test_size: int = 0, steps: int = 3) -> float:
    """Wall time of a run (training, per-epoch validation, final scoring), from timed steps on random images.

    Times `steps` training steps at the recipe's batch size (after one warm-up step) and one
    forward pass over a 512-image batch, then counts what the run does: every training step of
    every epoch (and of a pre-training stage), a validation pass per epoch, and the final
    validation and test passes with test-time augmentation, all of it once per ensemble member.
    Data generation is not counted (cached after the first run).
    """
    model = recipe.model().to(device, memory_format=memory_format())
    opt = make_optimizer(recipe, model, device)
    n = recipe.batch_size
    aux = random_split(recipe.aux_batch * (steps + 1), device) if recipe.aux_batch else None
    timed = replace(recipe, epochs=1)
    train_one_epoch(model, opt, None, None, random_split(n, device), timed, 0, 0, device, aux=aux)  # warm-up
    t0 = time.perf_counter()
    train_one_epoch(model, opt, None, None, random_split(n * steps, device, seed=1), timed, 0, 1, device, aux=aux)
    _synchronize(device)
    per_step = (time.perf_counter() - t0) / steps
    per_image = _forward_seconds(model, recipe, device)
    views = len(TTA_SHIFTS) if recipe.tta else 1
    train_steps = recipe.epochs * -(-recipe.train_size // n)
    per_epoch = recipe.val_size if recipe.selection != "last" else min(recipe.val_size, HISTORY_VAL)
    scored = recipe.epochs * per_epoch + views * (recipe.val_size + test_size)
    if recipe.members > 1:
        scored += views * test_size  # each member is also scored alone on the test split
    stage1 = estimate_seconds(recipe.pretrain, device, 0, steps) if recipe.pretrain else 0.0
    return recipe.members * (per_step * train_steps + per_image * scored + stage1)


def _forward_seconds(model: nn.Module, recipe: Recipe, device: torch.device, n: int = 256) -> float:
    """Seconds per image of an evaluation forward pass (one view), timed on `n` images after a warm-up."""
    images = random_split(n, device).images
    plain = replace(recipe, tta=False)
    predict(model, images[:32], plain, device)  # warm-up
    t0 = time.perf_counter()
    predict(model, images, plain, device)
    _synchronize(device)
    return (time.perf_counter() - t0) / n


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def format_seconds(s: float) -> str:
    """'42s', '7m', '3h05m', '2d04h'."""
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{s / 60:.0f}m"
    if s < 86400:
        return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"
    return f"{int(s // 86400)}d{int(s % 86400 // 3600):02d}h"
