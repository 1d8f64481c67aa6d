"""Density and coverage (Naeem, Oh, Uh, Choi & Yoo, ICML 2020), on feature vectors.

Each real point i gets a ball of radius r_i = the distance to its k-th nearest other real point.
- density = (1 / (k·M)) Σ_j #{i : ‖y_j − x_i‖ < r_i}, over the M fakes y_j (about 1 when fakes are
  distributed like reals; above 1 when they crowd dense regions);
- coverage = (1 / N) #{i : some fake lies in the ball of real point i} (in [0, 1]).
Euclidean distances, strict inequality, k = `NEAREST_K` (the paper's 5), as the `prdc` package.
"""

from __future__ import annotations

import torch

NEAREST_K = 5


def density_coverage(fake: torch.Tensor, real: torch.Tensor, k: int = NEAREST_K) -> tuple[float, float]:
    """(density, coverage) of fake features M×D against real features N×D (N > k)."""
    real, fake = real.double(), fake.double()
    radius = torch.cdist(real, real).kthvalue(k + 1, dim=1).values  # k+1: the point itself is first
    inside = torch.cdist(fake, real) < radius[None, :]  # M×N
    density = inside.sum().item() / (k * len(fake))
    coverage = inside.any(0).double().mean().item()
    return density, coverage
