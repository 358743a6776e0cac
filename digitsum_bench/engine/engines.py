"""The training engines, in one place: how a run's training steps are executed (`--engine`).

An engine never changes the method: every one runs `train.train_step`, and `train.fit` records which
one trained (the record's `engine`). A maker builds a run's step from its model and optimizer after
the resume (`train.EngineMaker`); None means eager, `train_step` called as it is on each batch.
"""

from __future__ import annotations

import torch

from ..errors import BenchError
from . import graphs
from .train import EngineMaker

ENGINES: dict[str, EngineMaker | None] = {
    "eager": None,  # train.train_step on every batch: any device
    "graph": graphs.graph_step,  # the step captured as one CUDA graph, checked against eager first (graphs.py)
    # "compile" (a torch.compile'd step) would go here
}


def engine_names() -> tuple[str, ...]:
    """What `--engine` accepts: "auto" (graph on a CUDA GPU, else eager), then every engine."""
    return ("auto", *ENGINES)


def check_engine(name: str) -> None:
    """A one-line BenchError for a name that is no engine, listing the names."""
    if name not in engine_names():
        raise BenchError(f"--engine {name!r}: no such engine; known: {', '.join(engine_names())}")


def engine_maker(name: str, device: torch.device) -> EngineMaker | None:
    """The maker of a run's step for `--engine name` on `device` (None: eager).

    "auto" is the graph engine on a CUDA device (which checks itself and falls back to eager with
    a warning) and eager elsewhere; "graph" elsewhere is a BenchError, before any training.
    """
    check_engine(name)
    if name == "auto":
        return ENGINES["graph"] if device.type == "cuda" else None
    if name == "graph" and device.type != "cuda":
        raise BenchError(f"--engine graph needs a CUDA GPU; this run's device is {device.type} "
                         f"(use --engine auto or eager)")
    return ENGINES[name]


def check_stack_engine(name: str) -> None:
    """A stack of seeds (`stacked.py`) trains eagerly under vmap with "auto" and "eager"; "graph" is a
    BenchError, since a stack is not captured (its vmap already launches one kernel a layer for all seeds)."""
    check_engine(name)
    if name == "graph":
        raise BenchError("--engine graph does not train a stack of seeds (vmap is not captured); "
                         "use --engine auto or eager with --stack-seeds")
