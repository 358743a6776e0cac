"""Checkpoints: the one safe loader, atomic saves, resuming a run, and loading a finished model.

Every checkpoint is read with `torch.load(weights_only=True)` (`load_pt`): tensors and plain data
only, so that a file copied from another machine can never run code. A run's folder holds
`last.pt` (model, optimizer, schedule, EMA and bookkeeping after the last finished epoch, and the
recipe's config: what a resumed run starts from, refused under another config), `best.pt` (with its
epoch) where the recipe selects an epoch on validation, `stage1.pt` (with its config) for a
pre-training stage, and `final.pt`, the scored model with its recipe's config.
"""

from __future__ import annotations

import re
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import BenchError
from ..registry import models
from ..registry.recipes import Recipe, get_recipe
from ..store import atomic_write, inside, remove



def save_atomic(obj: dict, path: Path, root: Path | None = None) -> None:
    """torch.save through a temporary file: a reader never sees half a checkpoint. With `root`, the results
    folder, a folder linked out of it is refused (`store.atomic_write`)."""
    with atomic_write(path, root) as f:
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


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else ""


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


def clear(ckpt_dir: Path, root: Path) -> None:
    """Delete a run's checkpoints (`--force`: the run starts again from scratch), never a file outside the
    results folder `root` that a linked folder leads to (`store.remove`)."""
    for f in inside(ckpt_dir, root).rglob("*.pt"):
        remove(f, root)


def recipe_config(recipe: Recipe) -> dict:
    """The recipe as JSON-safe data (callables by name): a record's config, and what last.pt, stage1.pt and
    final.pt were trained under (`check_config`)."""
    def clean(v):
        if callable(v):
            return getattr(v, "__name__", repr(v))
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return clean(asdict(replace(recipe, pretrain=None)) | {"pretrain": recipe_config(recipe.pretrain) if recipe.pretrain else None})


def check_config(path: Path, saved: object, config: dict) -> None:
    """A one-line BenchError where the checkpoint `path` was saved under other settings of its recipe than
    `config` (the recipe as run now): resumed, it would train on with the old optimizer, schedule or data while
    the record shows the new config. A checkpoint saved before configs were kept (`saved` None) passes."""
    if saved is None:
        return
    saved, now = _training(saved if isinstance(saved, dict) else {}), _training(config)
    fields = [str(k) for k in dict.fromkeys([*now, *saved]) if saved.get(k) != now.get(k)]
    if fields:
        raise BenchError(f"{path}: saved under other settings of recipe {config.get('name')} "
                         f"({', '.join(fields)}); delete it or use --force")


DESCRIPTIVE = ("report", "method", "claimed", "assumptions")  # words about a recipe: editing them changes no training


def _training(config: dict) -> dict:
    """`config` without its descriptive fields, its pre-training stage's too."""
    kept = {k: v for k, v in config.items() if k not in DESCRIPTIVE}
    if isinstance(kept.get("pretrain"), dict):
        kept["pretrain"] = _training(kept["pretrain"])
    return kept


def fresh_state() -> dict:
    """A run's bookkeeping before its first epoch (`train.TrainState.books`, saved in last.pt as "state").
    "legs": one entry per process that trained the run (`train.start_leg`), for the record's provenance."""
    return {"epoch": 0, "history": [], "best_score": None, "best_epoch": None, "train_seconds": 0.0,
            "step_seconds": 0.0, "engine": "eager", "legs": []}


def checkpoint_epoch(ckpt_dir: Path) -> int:
    """The last finished epoch saved in `ckpt_dir/last.pt` (0 when there is none or it cannot be read)."""
    last = Path(ckpt_dir) / "last.pt"
    if not last.exists():
        return 0
    try:
        return int(load_pt(last)["state"]["epoch"])
    except (BenchError, KeyError, TypeError, ValueError):  # an unreadable checkpoint is retrained from the start
        return 0


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
    config = ck.get("config") or {}
    members = config.get("members", 1) if isinstance(config, dict) else 1  # an ensemble's final.pt (Recipe.members)
    if not (isinstance(members, int) and 1 <= members <= max(recipe.members, 1)):  # models are built before loading
        raise BenchError(f"{path}: config members {str(members)[:20]} is not 1..{max(recipe.members, 1)}, "
                         f"the ensemble size of recipe {name}")
    try:
        model = models.Ensemble([recipe.model() for _ in range(members)]) if members > 1 else recipe.model()
        model.load_state_dict(ck["model"])
    except Exception as e:  # noqa: BLE001 - any mismatch is reported the same way
        raise BenchError(f"{path}: not a digitsum-bench checkpoint of {name} ({type(e).__name__}: {_first_line(e)})") from None
    if not all(t.isfinite().all() for t in model.state_dict().values() if t.is_floating_point()):
        raise BenchError(f"{path}: its weights hold NaN or inf; such a model's scores mean nothing")
    return model.to(device), recipe
