"""Budgets: how much of a recipe a run trains (`full`, `quick`, `ci`, `smoke`).

No torch here: the reporting step reads the budget names and which of them are checks only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..errors import BenchError

if TYPE_CHECKING:
    from .recipes import Recipe


@dataclass(frozen=True)
class Budget:
    """How much of a recipe to run. `None` keeps the recipe's own value."""

    name: str
    max_epochs: int | None  # cap on epochs (OneCycle then spans the capped epochs)
    max_train: int | None  # cap on training images
    max_val: int | None  # cap on validation images
    test_size: int  # images of the shared test split (a prefix of the full 10,000)
    max_members: int | None = None  # cap on an ensemble recipe's members (Recipe.members)
    max_aux_batch: int | None = None  # cap on the labelled synthetic images added to each step (Recipe.aux_batch)


BUDGETS = {
    # each report's own epochs, batch size and data size, every ensemble member; the full 10,000-image test split
    "full": Budget("full", None, None, None, 10_000),
    # all of the data, at most 2 epochs, one model: minutes per small recipe on 2 CPU cores, and they learn
    "quick": Budget("quick", 2, None, None, 10_000, max_members=1),
    # the CI accuracy gate's budget: one epoch, 2,000 validation images, the full test split, one model, at most 16
    # labelled synthetic images per step (ours_digitsum: 64 + 16 instead of 64 + 48 images a step, 0.62x the
    # float32 step time on 2 cores, and still >= 80% test exact)
    "ci": Budget("ci", 1, None, 2_000, 10_000, max_members=1, max_aux_batch=16),
    # seconds per recipe on a CPU: checks that everything runs (ensembles too), measures nothing useful
    "smoke": Budget("smoke", 1, 64, 32, 64),
}
BUDGET_NAMES = tuple(BUDGETS)  # in the order the leaderboard shows their tables
# Budgets whose accuracies mean nothing: reported apart from the leaderboard, never ranked.
CHECK_ONLY = ("smoke",)


def get_budget(name: str) -> Budget:
    """The budget called `name`; a BenchError naming the choices for any other name."""
    if name not in BUDGETS:
        raise BenchError(f"unknown budget {name!r}; choose from {', '.join(BUDGETS)}")
    return BUDGETS[name]


def apply_budget(recipe: Recipe, budget: Budget | str) -> Recipe:
    """The recipe as run under `budget` (a Budget, or its name; the record stores this version)."""
    b = budget if isinstance(budget, Budget) else get_budget(budget)

    def cap(value: int, limit: int | None) -> int:
        return value if limit is None else min(value, limit)

    return replace(
        recipe,
        epochs=cap(recipe.epochs, b.max_epochs),
        train_size=cap(recipe.train_size, b.max_train),
        val_size=cap(recipe.val_size, b.max_val),
        aux_size=cap(recipe.aux_size, b.max_train),
        members=cap(recipe.members, b.max_members),
        aux_batch=cap(recipe.aux_batch, b.max_aux_batch),
        pretrain=apply_budget(recipe.pretrain, b) if recipe.pretrain else None,
    )


def budget_cap(budget: str) -> str:
    """What a budget cuts from each recipe, for a table's heading: '2 of each recipe's epochs, one model;
    no claims beside it'; '' for `full` (each report's own budget) and unknown budgets."""
    b = BUDGETS.get(budget)
    if b is None or budget == "full":
        return ""
    cuts = [f"{b.max_epochs} of each recipe's epochs" if b.max_epochs else "",
            f"at most {b.max_train:,} training images" if b.max_train else "",
            f"{b.max_val:,} validation images" if b.max_val else "", "one model" if b.max_members == 1 else "",
            f"at most {b.max_aux_batch} labelled synthetic images a step" if b.max_aux_batch else ""]
    return "capped: " + ", ".join(c for c in cuts if c) + "; the reports' claims are not shown beside it"
