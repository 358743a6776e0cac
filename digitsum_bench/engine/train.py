"""The training loop: inputs and augmentation, optimiser, schedule and EMA, `train_one_epoch`,
`predict`, `evaluate` and `fit`, as plain functions in the torchvision-references style.

The data sits on the device as uint8 (`data.DeviceData`) and batches are sliced there (no
per-sample DataLoader); models and inputs are channels_last (1.3x faster on a 2-core CPU too);
the forward pass runs under bf16 autocast where the device computes it natively
(`devices.autocast`). None of that changes the method: batch size, epochs, loss and optimizer
are the recipe's own.

Determinism: every random stream (data order, augmentation, dropout, labelled-set draws) is
reseeded from (seed, epoch) at the start of each epoch, so a run resumed from its last epoch
checkpoint takes exactly the steps an uninterrupted run takes.
"""

from __future__ import annotations

import copy
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from ..data import COURSE_MEAN, COURSE_STD, DeviceData
from ..errors import BenchError, first_line
from ..registry import losses
from ..registry.recipes import Recipe
from . import metrics
from .checkpoints import check_config, fresh_state, load_pt, recipe_config, save_atomic
from .devices import autocast, synchronize

# ---------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------
# Models and inputs in channels_last: the same maths in another memory layout, 1.3x faster on a
# 2-core CPU and the fast layout on a GPU. Float results differ from the default layout's in the
# last bits, so comparisons of two training paths (tests/test_stacked.py) set both the same way.
CHANNELS_LAST = True
TTA_SHIFTS = (-2, 2)  # columns; two views cost two forward passes, and their average is centred on the image
HISTORY_VAL = 2_000  # per-epoch validation images of a recipe that keeps its last epoch (the curve only)
# Images per forward pass when scoring. On a CPU small batches stay in cache: 64 scores ours_digitsum about twice
# as fast as 512 in float32 on 2 cores (1.5x in bf16; r002_attention_cnn 1.3-1.6x; ResNet-18 alike), with the
# same outputs; a GPU wants large batches.
EVAL_BATCH = {"cpu": 64, "cuda": 512}


def memory_format() -> torch.memory_format:
    return torch.channels_last if CHANNELS_LAST else torch.contiguous_format


def to_input(images: torch.Tensor, channels_last: bool, normalize: str = "course") -> torch.Tensor:
    """uint8 (B,40,168) -> float (B,1,40,168): x/255, then (for "course") minus the course mean, over its std."""
    x = images.unsqueeze(1).float().div_(255)
    if normalize == "course":
        x = x.sub_(COURSE_MEAN).div_(COURSE_STD)
    elif normalize != "unit":
        raise BenchError(f"unknown input normalisation {normalize!r}; known: course, unit")
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def black(normalize: str = "course") -> float:
    """The value of a black pixel after `to_input`'s normalisation."""
    return -COURSE_MEAN / COURSE_STD if normalize == "course" else 0.0


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


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """An independent, reproducible seed for one random stream of one epoch."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1)[0])


# ---------------------------------------------------------------------------------------
# Optimiser, schedule, EMA
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


def make_ema(recipe: Recipe, model: nn.Module) -> AveragedModel | None:
    """The EMA of the model's weights and BatchNorm buffers, updated every step; None without one."""
    if not recipe.ema_decay:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema_decay), use_buffers=True)


def steps_per_epoch(recipe: Recipe, n_train: int) -> int:
    return -(-n_train // recipe.batch_size)


@dataclass
class TrainState:
    """What training carries from step to step and epoch to epoch, as one object: what last.pt holds
    (`save_last`/`resume`)."""

    model: nn.Module  # the weights the optimizer steps (a `stacked.Stack` for a stack of seeds)
    opt: torch.optim.Optimizer  # the recipe's (`make_optimizer`)
    sched: torch.optim.lr_scheduler.LRScheduler | None  # None: a constant learning rate
    ema: AveragedModel | None  # None: the recipe keeps no EMA
    books: dict = field(default_factory=fresh_state)  # epoch, history, best, seconds, engine, legs: last.pt's "state"
    config: dict | None = None  # the recipe's (`recipe_config`), saved in last.pt; `resume` refuses another's

    @property
    def scored(self) -> nn.Module:
        """The model that is validated and selected: the EMA's where the recipe keeps one."""
        return self.ema.module if self.ema is not None else self.model

    @classmethod
    def create(cls, recipe: Recipe, model: nn.Module, device: torch.device, steps: int) -> TrainState:
        """A fresh state for `model`: the recipe's optimizer, schedule over `steps` steps an epoch, and EMA."""
        opt = make_optimizer(recipe, model, device)
        return cls(model, opt, make_scheduler(recipe, opt, steps), make_ema(recipe, model), config=recipe_config(recipe))


def save_last(path: Path, state: TrainState) -> None:
    """The epoch checkpoint a resumed run starts from: model, optimizer, schedule, EMA, bookkeeping and config."""
    save_atomic({"model": state.model.state_dict(), "opt": state.opt.state_dict(),
                 "sched": state.sched.state_dict() if state.sched is not None else None,
                 "ema": state.ema.state_dict() if state.ema is not None else None, "state": state.books,
                 "config": state.config}, path)


def resume(last: Path, state: TrainState, device: torch.device) -> bool:
    """Load an epoch checkpoint (`save_last`) into `state`; False, and `state` as it was, when there is none.
    A checkpoint saved under another config than `state.config` is a BenchError (`checkpoints.check_config`)."""
    if not last.exists():
        return False
    ck = load_pt(last, device)
    if state.config is not None:
        check_config(last, ck.get("config"), state.config)
    try:
        state.model.load_state_dict(ck["model"])
        state.opt.load_state_dict(ck["opt"])
        if device.type != "cuda":  # saved by the graph engine (graphs.make_capturable): capturable kernels are GPU-only
            for group in state.opt.param_groups:
                if group.get("capturable"):
                    group.update(capturable=False, foreach=False)
        if state.sched is not None:
            state.sched.load_state_dict(ck["sched"])
        if state.ema is not None:
            state.ema.load_state_dict(ck["ema"])
        state.books = fresh_state() | ck["state"]  # a checkpoint saved before "engine" was kept lacks it
        return True
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise BenchError(f"{last}: does not resume this recipe ({first_line(e)}); "
                         f"delete it or use --force") from None


# ---------------------------------------------------------------------------------------
# Batches and losses
# ---------------------------------------------------------------------------------------
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


class Batch(NamedTuple):
    """One training step's tensors on the device: what a CUDA graph holds in its static buffers (graphs.py)."""

    x: torch.Tensor  # model inputs: the batch's images, then the step's labelled synthetic images if any
    sums: torch.Tensor  # the batch's sums
    digits: torch.Tensor | None  # the batch's per-digit labels, where the split has them
    aux_digits: torch.Tensor | None  # the synthetic images' digit labels, where the recipe draws them


# Forward, loss, backward and optimizer step on one batch; returns the loss. A step object names its engine for
# the record in `name` (graphs.GraphStep: "graph").
Step = Callable[[Batch], torch.Tensor]


def batch_loss(recipe: Recipe, out: torch.Tensor, batch: Batch) -> torch.Tensor:
    """The recipe's loss on the training batch, plus the per-digit cross-entropy of the synthetic images."""
    n = len(batch.sums)
    loss = losses.compute_loss(recipe.loss, recipe.head, out[:n].float(), batch.sums, batch.digits)
    if batch.aux_digits is not None:
        loss = loss + F.cross_entropy(out[n:].float().flatten(0, 1), batch.aux_digits.flatten(),
                                      label_smoothing=recipe.aux_label_smoothing)
    return loss


class EpochStreams:
    """The random streams of one epoch of one seed: data order, augmentation (dropout is seeded globally)."""

    def __init__(self, split: DeviceData, recipe: Recipe, seed: int, epoch: int, device: torch.device,
                 aux: DeviceData | None):
        order = torch.Generator().manual_seed(epoch_seed(seed, epoch, 0))
        self.aug = torch.Generator(device=device).manual_seed(epoch_seed(seed, epoch, 1))
        self.perm = torch.randperm(len(split), generator=order).to(device)
        self.aux = AuxBatches(aux, recipe, seed, epoch, device) if aux is not None else None

    def inputs(self, split: DeviceData, recipe: Recipe, idx: torch.Tensor, step: int, channels_last: bool):
        """A step's model inputs: its images, normalised, augmented where the recipe says so."""
        x = to_input(batch_images(split, idx, self.aux, step), channels_last, recipe.normalize)
        return augment(x, self.aug, recipe.normalize) if recipe.augment else x

    def batch(self, split: DeviceData, recipe: Recipe, idx: torch.Tensor, step: int, channels_last: bool) -> Batch:
        """A step's inputs (`inputs`) and targets."""
        x = self.inputs(split, recipe, idx, step, channels_last)
        digits = split.digits[idx] if split.digits is not None else None
        aux_digits = self.aux.aux.digits[self.aux.index(step)] if self.aux is not None else None
        return Batch(x, split.sums[idx], digits, aux_digits)

    def batches(self, split: DeviceData, recipe: Recipe, channels_last: bool) -> Iterator[Batch]:
        """The epoch's batches in order, made as they are asked for; the last may be partial."""
        for step, start in enumerate(range(0, len(split), recipe.batch_size)):
            yield self.batch(split, recipe, self.perm[start:start + recipe.batch_size], step, channels_last)


def train_step(model: nn.Module, opt: torch.optim.Optimizer, recipe: Recipe, batch: Batch,
               device: torch.device) -> torch.Tensor:
    """Forward, loss, backward and the optimizer's step on one batch; returns the loss. The one step
    function: eager in `train_one_epoch`, captured as a whole in a CUDA graph by `graphs.py`."""
    with autocast(device):
        out = model(batch.x)
    loss = batch_loss(recipe, out, batch)
    backward_step(loss, opt)
    return loss


def backward_step(loss: torch.Tensor, opt: torch.optim.Optimizer) -> None:
    """Backward and the optimizer's step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def after_step(sched, ema, model: nn.Module) -> None:
    """What follows the optimizer's step, outside any graph: the schedule's step and the EMA's update."""
    if sched is not None:
        sched.step()
    if ema is not None:
        ema.update_parameters(model)


def optimizer_step(loss: torch.Tensor, opt, sched, ema, model: nn.Module) -> None:
    """Backward, the optimizer's step, the schedule's step and the EMA's update."""
    backward_step(loss, opt)
    after_step(sched, ema, model)


# ---------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------
def progress_bar(iterable, progress: bool, **kw) -> tqdm:
    """tqdm's bar where stderr is a terminal; none elsewhere (a file, a SLURM log), where each redraw would
    be a line: there `log_epoch` writes one line per epoch instead."""
    return tqdm(iterable, disable=not (progress and sys.stderr.isatty()), **kw)


def log_epoch(what: str, epoch: int, epochs: int, train_loss: float, val_exact: float | None, seconds: float,
              progress: bool) -> None:
    """One line on stderr per epoch where no bar is drawn (stderr not a terminal)."""
    if progress and not sys.stderr.isatty():
        exact = "—" if val_exact is None else f"{val_exact:.3f}"
        print(f"{what} epoch {epoch}/{epochs}: train loss {train_loss:.3f}, val exact {exact}, {seconds:.0f} s",
              file=sys.stderr, flush=True)


def train_one_epoch(state: TrainState, *, split: DeviceData, recipe: Recipe, seed: int, epoch: int,
                    device: torch.device, progress: bool = False, aux: DeviceData | None = None,
                    engine: Step | None = None) -> float:
    """One pass over the training split; returns the mean training loss.

    With `aux` (the recipe's labelled synthetic set, `recipe.aux_batch` > 0), each batch also
    carries `aux_batch` of its images, whose per-digit cross-entropy is added to the loss.
    `engine` takes each batch's `train_step` where given (a CUDA graph's replay, `graphs.GraphStep`).
    """
    model = state.model
    model.train()
    streams = EpochStreams(split, recipe, seed, epoch, device, aux)
    torch.manual_seed(epoch_seed(seed, epoch, 2))  # dropout
    total, count = torch.zeros((), device=device), 0
    batches = streams.batches(split, recipe, CHANNELS_LAST)
    for batch in progress_bar(batches, progress, total=steps_per_epoch(recipe, len(split)), desc=f"epoch {epoch}",
                              leave=False, unit="batch"):
        loss = engine(batch) if engine is not None else train_step(model, state.opt, recipe, batch, device)
        after_step(state.sched, state.ema, model)
        total += loss.detach() * len(batch.sums)
        count += len(batch.sums)
    return float(total) / count


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, recipe: Recipe, device: torch.device,
            batch: int | None = None) -> torch.Tensor:
    """Raw outputs for all images (float32, on the device), with test-time augmentation if the recipe uses it;
    `batch` images a forward pass (default: EVAL_BATCH of the device)."""
    model.eval()
    batch = batch or EVAL_BATCH.get(device.type, EVAL_BATCH["cuda"])
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
        digits = metrics.predict_digits(out, recipe.head)  # None without a digit head: no digit_accuracy
        known = None if digits is None or split.digits is None else (digits.cpu().numpy(), split.digits.cpu().numpy())
        result = metrics.compute_metrics(pred.cpu().numpy(), split.sums.cpu().numpy(), raw.cpu().numpy(), known)
    loss = None
    if not needs_digits(recipe) or split.digits is not None:
        loss = float(losses.compute_loss(recipe.loss, recipe.head, out, split.sums, split.digits))
    return {**result, "loss": loss}


def history_split(val: DeviceData, recipe: Recipe) -> DeviceData:
    """What each epoch is validated on: all of `val` where the recipe selects an epoch by it, else a
    HISTORY_VAL-image prefix, enough for the training curve (the record's val metrics use all of it)."""
    if recipe.selection != "last" or len(val) <= HISTORY_VAL:
        return val
    return val.head(HISTORY_VAL)


def _selection_score(recipe: Recipe, val: dict) -> float | None:
    """Higher is better; None when the recipe keeps its last epoch."""
    if recipe.selection == "best_val_loss":
        return None if val["loss"] is None else -val["loss"]
    if recipe.selection == "best_val_exact":
        return val["exact"]
    return None


def end_epoch(state: TrainState, *, recipe: Recipe, epoch: int, train_loss: float, step_seconds: float,
              val: DeviceData, device: torch.device, ckpt_dir: Path) -> dict:
    """After an epoch's steps: validate `state.scored`, add the history entry, save last.pt, the checkpoint a
    resumed run starts from, then best.pt where the recipe selects by validation and the epoch is its best
    (in that order: `restore_best` mends an interruption between the two). Returns the val metrics."""
    t0 = time.perf_counter()
    v = evaluate(state.scored, history_split(val, recipe), replace(recipe, tta=False), device)  # one view is enough
    books = state.books
    books["history"].append({"epoch": epoch, "train_loss": train_loss, "val_loss": v["loss"],
                             "val_exact": v.get("exact"), "val_within_one": v.get("within_one"),
                             "lr": float(state.opt.param_groups[0]["lr"]),
                             "seconds": step_seconds + time.perf_counter() - t0})
    books["epoch"] = epoch
    books["train_seconds"] += books["history"][-1]["seconds"]
    books["step_seconds"] += step_seconds
    score = _selection_score(recipe, v)
    improved = score is not None and (books["best_score"] is None or score > books["best_score"])
    if improved:
        books["best_score"], books["best_epoch"] = score, epoch
    save_last(ckpt_dir / "last.pt", state)
    if improved:
        save_best(ckpt_dir / "best.pt", state, recipe.name)
    return v


def save_best(path: Path, state: TrainState, name: str) -> None:
    """best.pt: the scored weights of the books' best epoch, with that epoch and the recipe's name."""
    save_atomic({"recipe": name, "epoch": state.books["best_epoch"], "model": state.scored.state_dict()}, path)


def restore_best(path: Path, state: TrainState, name: str, device: torch.device) -> None:
    """After a resume: where the books' best epoch is the resumed one but best.pt (`path`) is missing or holds
    another epoch (interrupted between `end_epoch`'s two saves), write it from `state`, whose weights are that
    epoch's; a redone epoch (on a GPU, not bitwise) would otherwise leave abandoned weights to be scored."""
    books = state.books
    if books["best_epoch"] != books["epoch"]:  # no best epoch yet (None), or an earlier one
        return
    if not path.exists() or load_pt(path, device).get("epoch") != books["epoch"]:
        save_best(path, state, name)


def start_leg(books: dict, leg: dict | None) -> None:
    """Note in the books that this process trains the run on from its next epoch, under `leg` (git_commit,
    git_dirty, device; None: not noted): a resumed run's record lists its legs where they differ (runner.py)."""
    if leg is not None:
        books["legs"].append({"epoch": books["epoch"] + 1, **leg})


EngineMaker = Callable[..., "Step | None"]  # (model, opt, recipe, train, seed, device, aux) -> a Step, or None: eager


def fit(recipe: Recipe, model: nn.Module, train: DeviceData, val: DeviceData, seed: int, device: torch.device,
        ckpt_dir: Path, progress: bool = True, aux: DeviceData | None = None,
        make_engine: EngineMaker | None = None, leg: dict | None = None) -> tuple[nn.Module, dict]:
    """Train `model` under `recipe`, resuming from `ckpt_dir/last.pt` if a previous attempt left one.

    `make_engine` (`engines.engine_maker`; None: eager) may give a faster step for the run, built
    after the resume so that it starts from the resumed state; its time counts in the run's seconds.
    The record's engine is the one that trained the last epochs: "eager", or the step's `name`.
    `leg` (this process's provenance, `start_leg`) is noted in the books where it trains any epoch.
    Returns the selected model (EMA weights where the recipe uses EMA; best epoch where it
    selects on validation) and a summary: history, selected epoch, seconds, images/s, engine, legs.
    """
    state = TrainState.create(recipe, model, device, steps_per_epoch(recipe, len(train)))
    resume(ckpt_dir / "last.pt", state, device)
    restore_best(ckpt_dir / "best.pt", state, recipe.name, device)
    books, engine = state.books, None
    if books["epoch"] < recipe.epochs:
        start_leg(books, leg)
        t0 = time.perf_counter()
        engine = make_engine(model, state.opt, recipe, train, seed, device, aux) if make_engine is not None else None
        books["train_seconds"] += time.perf_counter() - t0
        books["engine"] = "eager" if engine is None else getattr(engine, "name", "custom")
    bar = progress_bar(range(books["epoch"] + 1, recipe.epochs + 1), progress, desc=recipe.name, unit="epoch",
                       initial=books["epoch"], total=recipe.epochs, leave=False)
    for epoch in bar:
        t0 = time.perf_counter()
        train_loss = train_one_epoch(state, split=train, recipe=recipe, seed=seed, epoch=epoch, device=device,
                                     progress=progress, aux=aux, engine=engine)
        synchronize(device)
        v = end_epoch(state, recipe=recipe, epoch=epoch, train_loss=train_loss, step_seconds=time.perf_counter() - t0,
                      val=val, device=device, ckpt_dir=ckpt_dir)
        bar.set_postfix(loss=f"{train_loss:.3f}", val_exact=f"{v.get('exact', float('nan')):.3f}")
        log_epoch(recipe.name, epoch, recipe.epochs, train_loss, v.get("exact"), books["history"][-1]["seconds"],
                  progress)
    return select(state.scored, books, ckpt_dir, device), summarise(books, recipe, len(train))


def select(scored: nn.Module, state: dict, ckpt_dir: Path, device: torch.device) -> nn.Module:
    """The model a run scores: `scored` (raw or EMA weights), or its best epoch's weights where it selected one."""
    if state["best_epoch"] is None:
        return scored
    selected = copy.deepcopy(scored)
    selected.load_state_dict(load_pt(ckpt_dir / "best.pt", device)["model"])
    return selected


def summarise(state: dict, recipe: Recipe, n_train: int) -> dict:
    """A finished run's summary for its record: history, selected epoch, seconds, images/s, engine, legs."""
    return {"history": state["history"], "selected_epoch": state["best_epoch"] or state["epoch"],
            "train_seconds": state["train_seconds"],
            "images_per_s": n_train * recipe.epochs / max(state["step_seconds"], 1e-9),
            "engine": state.get("engine", "eager"), "legs": state["legs"]}
