"""The device a run trains on and its arithmetic: device choice, determinism, bf16 autocast, the device's name."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from ..errors import BenchError


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


BF16_ENV = "DIGITSUM_BF16"  # "0": a CPU with native bf16 computes in float32, as one without it does


def cpu_bf16_allowed() -> bool:
    """False where $DIGITSUM_BF16 is "0": reproduces on a bf16 CPU what a CPU without bf16 computes
    (its numbers, its time). Unset or "1": bf16 wherever the CPU has it."""
    value = os.environ.get(BF16_ENV, "1")
    if value not in ("0", "1"):
        raise BenchError(f"${BF16_ENV}={value!r}: use 0 (float32) or 1 (bf16 where the CPU computes it natively)")
    return value == "1"


def uses_bf16(device: torch.device) -> bool:
    """Whether the forward pass runs under bf16 autocast: on a GPU, and on a CPU that computes bf16
    natively (AVX512-BF16 or AMX: faster training steps than float32) unless `cpu_bf16_allowed` says
    no. Recorded in the record's device string, since it changes the arithmetic."""
    if device.type == "cpu":
        return cpu_bf16_allowed() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return device.type == "cuda"


def autocast(device: torch.device):
    """The forward pass's precision: bf16 autocast where `uses_bf16`, else float32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_bf16(device))


def synchronize(device: torch.device) -> None:
    """Wait for the GPU's queued work (a no-op on a CPU): before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def cpu_name(device: torch.device) -> str:
    """e.g. "cpu (x86_64, 2 threads, bf16)": the thread count and precision change a CPU run's numbers."""
    precision = ", bf16" if uses_bf16(device) else ""
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads{precision})"


def cpu_model() -> str:
    """The CPU's model name ("AMD EPYC 7B13", "Intel(R) Xeon(R) Processor"), from /proc/cpuinfo where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """The name a record gives its device: the GPU's model, or `cpu_name`."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(device)


def cpu_arithmetic() -> str:
    """The CPU's model, the vector instructions torch's kernels use and the forward pass's precision, e.g.
    "AMD EPYC 7B13, AVX512, bf16": what changes a CPU run's numbers besides the thread count. An AVX2-only
    machine can be reproduced on a bigger one with ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2."""
    precision = "bf16" if uses_bf16(torch.device("cpu")) else "float32"
    return f"{cpu_model()}, {torch.backends.cpu.get_cpu_capability()}, {precision}"
