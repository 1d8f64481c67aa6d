"""Random numbers drawn on the host from a seeded CPU generator and used on the training device.

A `Draw` describes one call `torch.randn/rand/randint(..., generator=rng)`; it is made on the CPU
exactly so, in order, whatever the device, so a seed gives the same numbers everywhere. `Draws` makes
every draw of one plan (e.g. a generator step: z and the augmentation parameters) at once into one
float32 buffer, page-locked on CUDA, and moves it to the device with one non-blocking copy; consumers
then `take` their slices in the planned order. Integer draws are stored as float32, exact for
|value| < 2**24 (image coordinates).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Draw:
    """One CPU draw: `kind` "randn", "rand" or "randint" (values in [low, high)) of `shape`."""

    kind: str
    shape: tuple[int, ...]
    low: int = 0
    high: int = 0

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def sample(self, rng: torch.Generator) -> torch.Tensor:
        """The draw, made on the CPU from `rng` (advances it)."""
        if self.kind == "randint":
            return torch.randint(self.low, self.high, self.shape, generator=rng)
        return getattr(torch, self.kind)(self.shape, generator=rng)


def to_device(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`host` (a CPU tensor) on `device`: page-locked and copied without blocking on CUDA."""
    if device.type == "cuda" and not host.is_pinned():
        host = host.pin_memory()
    return host.to(device, non_blocking=True)


class Draws:
    """The draws of `plan` made from `rng` now, on `device` after one copy; `take` them in order."""

    def __init__(self, plan: Sequence[Draw], rng: torch.Generator, device: torch.device) -> None:
        self.plan, self.pos, self.offset = tuple(plan), 0, 0
        host = torch.empty(sum(d.numel for d in plan), pin_memory=device.type == "cuda")
        start = 0
        for draw in plan:
            host[start : start + draw.numel] = draw.sample(rng).view(-1)
            start += draw.numel
        self.values = to_device(host, device)

    def take(self, draw: Draw) -> torch.Tensor:
        """The next planned values (float32 of `draw.shape` on the device); `draw` must be the next in
        the plan (RuntimeError otherwise: the consumer and the plan disagree)."""
        if self.pos >= len(self.plan) or self.plan[self.pos] != draw:
            expected = self.plan[self.pos] if self.pos < len(self.plan) else "nothing"
            raise RuntimeError(f"random draw {draw} taken out of plan order (expected {expected})")
        self.pos += 1
        self.offset += draw.numel
        return self.values[self.offset - draw.numel : self.offset].view(draw.shape)
