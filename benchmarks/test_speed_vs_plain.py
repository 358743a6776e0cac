"""The runner's engines vs a plain PyTorch loop in the reports' style, side by side in one run on one GPU.

    pytest benchmarks/test_speed_vs_plain.py -s     # on a GPU: prints the table, asserts the goals, adds the rows
                                                    # to results/perf.csv (skipped on a CPU)

For each recipe at its report's batch size: the plain loop (DataLoader over a TensorDataset, fp32,
batch 32, Adam), the runner eager, the runner's graph engine (graphs.py), and runs sharing the
GPU (each at its own batch size): RUNS runs on CUDA streams with a graph each, and SEEDS seeds
trained as one stack (stacked.py). Goals (issue 22): ResNet-50 (report 002) >= 5x the plain loop
with the graph engine and >= 12x in total images/s of the runs sharing the GPU; report 002's
attention CNN and report 003's ConvNet >= 10x (the better of the graph engine alone and the runs
sharing the GPU); one full r002_resnet50 run's training steps inside FULL_RUN_SECONDS.
perf.csv keeps one run's images/s per row: a shared row's total is divided by its `runs`.
"""

from __future__ import annotations

import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest
import torch

from digitsum_bench.engine import engines, perf
from digitsum_bench.registry.recipes import get_recipe

from speed import engine_images_per_s, plain_images_per_s, stacked_images_per_s, streams_images_per_s

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="the goals are a GPU's")

# recipe: (goal of the graph engine alone, goal of the best total: alone or sharing the GPU), over the plain loop
GOALS = {"r002_resnet50": (5.0, 12.0), "r002_attention_cnn": (None, 10.0), "r003_convnet4": (None, 10.0)}
RUNS, SEEDS = 4, 8  # runs on CUDA streams; seeds in one stack
FULL_RUN_SECONDS = 8 * 60  # one command is 9 minutes: a minute left for validation, scoring and start-up
PERF_CSV = Path(os.environ.get("DIGITSUM_PERF_CSV", Path(__file__).resolve().parent.parent / "results" / "perf.csv"))
ROWS: list[dict] = []


@pytest.fixture(scope="module", autouse=True)
def write_table():
    yield
    if ROWS:
        perf.write_perf(PERF_CSV, ROWS)
        print(f"\nadded {len(ROWS)} row(s) to {PERF_CSV}")


def _row(recipe: str, engine: str, batch: int, total: float, plain: float, runs: int = 1) -> dict:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or "unknown"
    print(f"{recipe:<22} {engine:<8} x{runs:<2} bs {batch:>4} {total:>10.1f} img/s in all  x{total / plain:.1f} plain")
    ROWS.append({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "commit": commit,
                 "engine": engine, "recipe": recipe, "batch": batch, "runs": runs,
                 "images_per_s": round(total / runs, 1), "source": "benchmarks/test_speed_vs_plain.py",
                 "measured": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return total / plain


@pytest.mark.parametrize("name", list(GOALS))
def test_engines_vs_plain(name, device, steps):
    recipe = get_recipe(name)
    graph_goal, best_goal = GOALS[name]
    torch.manual_seed(0)
    plain = plain_images_per_s(recipe.model(), device, steps, batch_size=32)
    _row(name, "plain", 32, plain, plain)
    speeds = {engine: engine_images_per_s(recipe, device, steps, engine) for engine in engines.ENGINES}  # all of them
    ratios = {engine: _row(name, engine, recipe.batch_size, ips, plain) for engine, ips in speeds.items()}
    graph_ips, graph = speeds["graph"], ratios["graph"]
    streams = _row(name, "graph", recipe.batch_size, streams_images_per_s(recipe, device, steps, RUNS), plain, RUNS)
    stack = _row(name, "stacked", recipe.batch_size, stacked_images_per_s(recipe, device, steps, SEEDS), plain, SEEDS)
    if graph_goal is not None:
        assert graph >= graph_goal, f"{name}: graph engine x{graph:.1f} the plain loop, goal x{graph_goal}"
        assert max(streams, stack) >= best_goal, f"{name}: runs sharing the GPU x{max(streams, stack):.1f}, goal x{best_goal}"
    assert max(graph, streams, stack) >= best_goal, f"{name}: x{max(graph, streams, stack):.1f} at best, goal x{best_goal}"
    if name == "r002_resnet50":
        seconds = recipe.train_size * recipe.epochs / graph_ips
        assert seconds <= FULL_RUN_SECONDS, f"{name}: a full run's steps take {seconds:.0f} s at {graph_ips:.0f} img/s"
