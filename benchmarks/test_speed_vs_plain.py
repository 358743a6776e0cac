"""This suite's runner vs a plain PyTorch loop in the reports' style, side by side on one device.

    pytest benchmarks/test_speed_vs_plain.py -s     # prints the table; on a GPU also writes results/perf.csv

For each model: the plain loop (DataLoader over a TensorDataset, fp32, batch 32, Adam), the
runner at the report's batch size, and the runner at a large batch (a variant recipe that
changes the method, named as such). Goals on a GPU: >=5x at the report's batch size, >=20x
at the large batch. MFU is training FLOPs/s over the GPU's bf16 peak.
"""

from __future__ import annotations

import csv
import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest
import torch

from digitsum_bench import models
from digitsum_bench.recipes import get_recipe

from speed import mfu, plain_images_per_s, runner_images_per_s

CASES = [  # (report recipe, large-batch variant)
    ("r002_resnet50", "r002_resnet50_bs512"),
    ("r002_attention_cnn", None),
]
PERF_CSV = Path(os.environ.get("DIGITSUM_PERF_CSV", Path(__file__).resolve().parent.parent / "results" / "perf.csv"))
ROWS: list[dict] = []


@pytest.fixture(scope="module", autouse=True)
def write_table(device):
    yield
    if not ROWS:
        return
    for r in ROWS:
        print(f"{r['model']:<22} {r['variant']:<26} bs {r['batch_size']:>4}  {r['images_per_s']:>9.1f} img/s  "
              f"x{r['speedup_vs_plain']:.1f}  MFU {r['mfu']}")
    if device.type == "cuda" or os.environ.get("DIGITSUM_PERF_CSV"):
        PERF_CSV.parent.mkdir(parents=True, exist_ok=True)
        with open(PERF_CSV, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(ROWS[0]))
            w.writeheader()
            w.writerows(ROWS)


def _row(model: str, variant: str, bs: int, ips: float, plain: float, gflops: float, device) -> dict:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or "unknown"
    util = mfu(gflops, ips, device)
    return {"model": model, "variant": variant, "batch_size": bs, "images_per_s": round(ips, 1),
            "speedup_vs_plain": round(ips / plain, 2), "mfu": "" if util is None else round(util, 4),
            "gflops_per_image": round(gflops, 4),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "commit": commit,
            "measured": datetime.now(timezone.utc).isoformat(timespec="seconds")}


@pytest.mark.parametrize("name,large", CASES)
def test_runner_vs_plain(name, large, device, steps):
    recipe = get_recipe(name)
    torch.manual_seed(0)
    net = recipe.model()
    gflops = models.gflops_per_image(net)
    plain = plain_images_per_s(net, device, steps, batch_size=32)
    ROWS.append(_row(name, "plain loop (reports' style)", 32, plain, plain, gflops, device))
    ips = runner_images_per_s(recipe, device, steps)
    ROWS.append(_row(name, "runner, report batch size", recipe.batch_size, ips, plain, gflops, device))
    if large:
        big = get_recipe(large)
        big_ips = runner_images_per_s(big, device, max(2, steps // 4), compile=device.type == "cuda")
        ROWS.append(_row(name, f"runner, {large}", big.batch_size, big_ips, plain, gflops, device))
    assert ips > 0 and plain > 0
