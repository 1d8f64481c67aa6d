"""The grid and the study's identity: cells (loss, λ, seed), what a study's results depend on, and
the training config of one cell."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lossbench import precision, tracking
from lossbench.config import StudyConfig, TrainConfig, lambda_label, lambda_text, results_identity
from lossbench.errors import ConfigError


@dataclass(frozen=True, order=True)
class Cell:
    """One point of the grid."""

    loss: str
    lam: float
    seed: int

    @property
    def key(self) -> str:
        """File-system name, e.g. `wgangp_lam0.5_seed0`."""
        return f"{self.loss}_lam{lambda_text(self.lam)}_seed{self.seed}"

    def __str__(self) -> str:
        return f"{self.loss} {lambda_label(self.lam)} seed {self.seed}"


def cells_of(losses: Sequence[str], lambdas: Sequence[float], seeds: Sequence[int]) -> list[Cell]:
    """The full factorial grid of these axes, loss-major."""
    return [Cell(loss, float(lam), int(seed)) for loss in losses for lam in lambdas for seed in seeds]


def grid_cells(config: StudyConfig) -> list[Cell]:
    """The cells of the study's grid, loss-major."""
    return cells_of(config.losses, config.lambdas, config.seeds)


def identity(config: StudyConfig, fingerprint: str) -> dict[str, Any]:
    """What a study's results depend on, as JSON values: the RESULT fields of its config (see
    `lossbench.config`), the data by content, not by path, and the precision each of its device types
    trains in on this machine (`lossbench.precision.training_precision`)."""
    ident = results_identity(config)
    ident["data"]["fingerprint"] = fingerprint
    kinds = sorted({device.partition(":")[0] for device in config.devices})
    ident["precision"] = {kind: precision.training_precision(kind, config.train.amp) for kind in kinds}
    return ident


def check_identity(stored: dict[str, Any], current: dict[str, Any], name: str) -> None:
    """ConfigError naming (up to three) settings that differ from those the study was created with.
    A study created before the precision was recorded trained in `precision.legacy_precision`."""
    if "precision" not in stored:
        amp = stored.get("train", {}).get("amp", True)
        stored = {
            **stored,
            "precision": {k: precision.legacy_precision(k, amp) for k in current["precision"]},
        }
    diffs = [
        f"{k}={stored_v} (now {current_v})"
        for k, stored_v in tracking.flatten(stored).items()
        if (current_v := tracking.flatten(current).get(k)) != stored_v
    ]
    if diffs:
        raise ConfigError(
            f"study {name!r} was created with other settings: {'; '.join(diffs[:3])}; "
            "rerun with the same settings to resume, or choose another --name"
        )


def train_config_for(config: StudyConfig, cell: Cell, device: str) -> TrainConfig:
    """The study's training template specialised to one cell and device."""
    return dataclasses.replace(
        config.train,
        loss=cell.loss,
        lam=cell.lam,
        seed=cell.seed,
        loss_params=dict(config.loss_params.get(cell.loss, {})),
        device=device,
        progress=False,
    )
