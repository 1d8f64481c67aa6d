"""Study definitions: TOML files (`studies/*.toml`), command-line overrides, and finding BUSI.

A TOML study file maps one-to-one onto `StudyConfig`: top-level keys are its fields, the tables
`[data]`, `[train]` and `[eval]` are its nested configs, and `[loss_params.<loss>]` holds one loss's
hyper-parameters. The grid axes (losses, lambdas, seeds) are top-level only; `[train]` may not set
`loss`, `lam` or `seed`. Unknown keys are errors. Command-line options override the file.

Data spec "busi" (the study default) means: the BUSI dataset, looked for in `$LOSSBENCH_BUSI`,
`./data/busi`, `../shared/data/busi`, `~/data/busi`, in that order.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

from lossbench.config import DataConfig, EvalConfig, StudyConfig, TrainConfig
from lossbench.errors import ConfigError, DataError

BUSI_ENV = "LOSSBENCH_BUSI"
BUSI_URL = "https://scholar.cu.edu.eg/?q=afahmy/pages/dataset"
_SECTIONS = {"data": DataConfig, "train": TrainConfig, "eval": EvalConfig}
_PER_CELL = ("loss", "lam", "seed", "loss_params")  # set per cell from the grid, never in [train]


def busi_candidates() -> list[Path]:
    """The folders searched for BUSI, in order."""
    places = [Path(os.environ[BUSI_ENV])] if os.environ.get(BUSI_ENV) else []
    places += [Path("data/busi"), Path("../shared/data/busi"), Path("~/data/busi")]
    return [p.expanduser() for p in places]


def find_busi() -> Path:
    """The first BUSI folder found; DataError (one line: where looked, how to get it) otherwise."""
    for place in busi_candidates():
        if place.is_dir():
            return place
    raise DataError(
        f"BUSI not found in {', '.join(str(p) for p in busi_candidates())}; download it from {BUSI_URL} "
        f"(Al-Dhabyani et al. 2020), unpack it to ./data/busi or set {BUSI_ENV}=DIR, "
        "or pass --data phantom to run offline on the built-in phantom"
    )


def resolve_data_spec(spec: str) -> str:
    """`spec` with "busi" replaced by the folder where BUSI was found."""
    return str(find_busi()) if spec == "busi" else spec


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in {where} (known: {', '.join(sorted(allowed))})")


def _build(cls: type, values: Mapping[str, Any], where: str) -> Any:
    try:
        return cls(**values)
    except TypeError as e:
        raise ConfigError(f"bad value in {where}: {e}") from None


def study_config_from_dict(raw: Mapping[str, Any], where: str = "study config") -> StudyConfig:
    """A StudyConfig from nested plain values (a parsed TOML file); ConfigError names a bad key."""
    top = _fields(StudyConfig)
    _check_keys(raw, top, where)
    values = dict(raw)
    for section, cls in _SECTIONS.items():
        table = values.get(section, {})
        if isinstance(table, cls):
            continue
        if not isinstance(table, Mapping):
            raise ConfigError(f"[{section}] in {where} must be a table")
        allowed = _fields(cls) - (set(_PER_CELL) if section == "train" else set())
        _check_keys(table, allowed, f"[{section}] of {where}")
        base = StudyConfig().data if section == "data" else cls()
        values[section] = _build(cls, {**dataclasses.asdict(base), **table}, f"[{section}] of {where}")
    return _build(StudyConfig, values, where)


def load_study_config(path: str | os.PathLike) -> StudyConfig:
    """Read a TOML study file (see the module docstring for its layout)."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"study file {path} does not exist (see studies/ for examples)") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"study file {path} is not valid TOML: {e}") from None
    return study_config_from_dict(raw, str(path))


def with_overrides(config: StudyConfig, overrides: Mapping[str, Any]) -> StudyConfig:
    """A copy of `config` with dotted keys replaced (`"train.steps": 5`, `"losses": (...)`).

    None values are skipped, so unset command-line options leave the file's value in place;
    `loss_params` entries are merged per loss.
    """
    raw: dict[str, Any] = dataclasses.asdict(config)
    for name in _PER_CELL:
        raw["train"].pop(name)
    for key, value in overrides.items():
        if value is None:
            continue
        head, _, rest = key.partition(".")
        if head == "loss_params":
            for loss, params in value.items():
                raw["loss_params"].setdefault(loss, {}).update(params)
        elif rest:
            raw[head][rest] = value
        else:
            raw[head] = value
    return study_config_from_dict(raw, "the options")
