"""The grid and the study's identity: cells (loss, λ, seed), what a study's results depend on, and
the training config of one cell."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lossbench import tracking
from lossbench.config import StudyConfig, TrainConfig, to_dict
from lossbench.errors import ConfigError

# Fields that do not change what a study computes; they may differ between a run and its resumption.
_RUN_ONLY = {"workers", "devices", "storage", "tracking_uri"}
_RUN_ONLY_TRAIN = {"loss", "lam", "seed", "loss_params", "device", "progress", "weights_dir"}
_RUN_ONLY_EVAL = {"cache_dir", "weights_dir"}


@dataclass(frozen=True, order=True)
class Cell:
    """One point of the grid."""

    loss: str
    lam: float
    seed: int

    @property
    def key(self) -> str:
        """File-system name, e.g. `wgangp_lam0.5_seed0`."""
        return f"{self.loss}_lam{self.lam:g}_seed{self.seed}"

    def __str__(self) -> str:
        return f"{self.loss} λ={self.lam:g} seed {self.seed}"


def cells_of(losses: Sequence[str], lambdas: Sequence[float], seeds: Sequence[int]) -> list[Cell]:
    """The full factorial grid of these axes, loss-major."""
    return [Cell(loss, float(lam), int(seed)) for loss in losses for lam in lambdas for seed in seeds]


def grid_cells(config: StudyConfig) -> list[Cell]:
    """The cells of the study's grid, loss-major."""
    return cells_of(config.losses, config.lambdas, config.seeds)


def identity(config: StudyConfig, fingerprint: str) -> dict[str, Any]:
    """What a study's results depend on, as JSON values (the data by content, not by path)."""
    ident = {k: v for k, v in to_dict(config).items() if k not in _RUN_ONLY}
    ident["train"] = {k: v for k, v in ident["train"].items() if k not in _RUN_ONLY_TRAIN}
    ident["eval"] = {k: v for k, v in ident["eval"].items() if k not in _RUN_ONLY_EVAL}
    ident["data"] = {k: v for k, v in ident["data"].items() if k != "spec"} | {"fingerprint": fingerprint}
    return json.loads(json.dumps(ident))


def check_identity(stored: dict[str, Any], current: dict[str, Any], name: str) -> None:
    """ConfigError naming (up to three) settings that differ from those the study was created with."""
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
