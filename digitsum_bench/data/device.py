"""Data on the device: one split as tensors that training slices its batches out of, and random data for
timing."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .sets import HEIGHT, WIDTH, DigitSumData


@dataclass(frozen=True)
class DeviceData:
    """One split as device tensors: images uint8 (N,40,168), sums (N,), digits (N,4) or None.

    Training slices its batches out of these (no per-sample DataLoader)."""

    images: torch.Tensor
    sums: torch.Tensor
    digits: torch.Tensor | None

    @classmethod
    def from_numpy(cls, d: DigitSumData, device: torch.device) -> DeviceData:
        digits = None if d.digits is None else torch.from_numpy(d.digits).to(device)
        return cls(torch.from_numpy(d.images).to(device), torch.from_numpy(d.sums).to(device), digits)

    def __len__(self) -> int:
        return self.images.shape[0]

    def head(self, n: int) -> DeviceData:
        """The first `n` images."""
        return DeviceData(self.images[:n], self.sums[:n], None if self.digits is None else self.digits[:n])


def random_split(n: int, device: torch.device | str, seed: int = 0) -> DeviceData:
    """n random images with digits and their sums, on the device: for timing, where content does not matter."""
    g = torch.Generator().manual_seed(seed)  # its own generator: timing must not move the global RNG
    digits = torch.randint(0, 10, (n, 4), generator=g)
    images = torch.randint(0, 256, (n, HEIGHT, WIDTH), generator=g, dtype=torch.uint8)
    return DeviceData(images.to(device), digits.sum(1).to(device), digits.to(device))
