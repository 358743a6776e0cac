"""Benchmarks run on a GPU when there is one, else on the CPU (with fewer steps)."""

import pytest
import torch


@pytest.fixture(scope="session")
def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(scope="session")
def steps(device) -> int:
    """Training steps per timed round: enough to amortise launch overhead on a GPU, seconds on a CPU."""
    return 50 if device.type == "cuda" else 2
