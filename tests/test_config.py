"""Configs: every field declares its role once; types and ranges checked in __post_init__; TOML files
and `--set` overrides parsed in one place."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lossbench import config as cfg
from lossbench.config import (
    CELL,
    ROLES,
    RUN,
    DataConfig,
    EvalConfig,
    ModelConfig,
    RunConfig,
    StudyConfig,
    TrainConfig,
    fields_with_role,
    parse_assignments,
    results_identity,
    with_overrides,
)
from lossbench.errors import ConfigError
from lossbench.study.definition import _PER_CELL, load_study_config
from lossbench.study.definition import with_overrides as study_overrides
from lossbench.training.train import RESUMABLE_CHANGES

CONFIGS = (DataConfig, ModelConfig, TrainConfig, EvalConfig, StudyConfig, RunConfig)


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_field_declares_a_role(cls):
    for f in dataclasses.fields(cls):
        assert f.metadata.get("role") in ROLES, f"{cls.__name__}.{f.name} has no role"
        assert cfg.field_role(cls, f.name) == f.metadata["role"]


def test_augmentation_names_match_lossbench_augment():
    from lossbench.training.augment import POLICIES

    assert cfg.AUGMENTATIONS == POLICIES  # config checks the names, augment applies them in this order


def test_lists_derived_from_the_roles():
    assert _PER_CELL == {"loss", "lam", "seed", "loss_params"} == fields_with_role(TrainConfig, CELL)
    assert {
        "log_every",
        "checkpoint_every",
        "sample_every",
        "device",
        "progress",
        "steps",
    } <= RESUMABLE_CHANGES
    assert not {"lam", "loss", "seed", "batch_size", "lr_g", "amp", "random_weights"} & RESUMABLE_CHANGES
    study_run = {"workers", "devices", "storage", "tracking_uri", "name", "heartbeat_s", "grace_s"}
    assert study_run == fields_with_role(StudyConfig, RUN)


def test_results_identity_keeps_result_fields_only_as_json():
    config = StudyConfig(workers=3, devices=("cpu", "cpu"), storage="x.db")
    ident = results_identity(config)
    assert set(ident) == {"losses", "lambdas", "seeds", "loss_params", "data", "train", "eval"} | {
        "objective",
        "eval_every",
        "curve_metrics",
        "best_metric",
        "threads",  # CPU results depend on the thread count
        "fuse",  # fused cells equal unfused ones up to float rounding only
    }
    assert ident["lambdas"] == [0.5, 3.0, 5.0, 7.0, 10.0] and ident["data"] == {
        "resolution": 128,
        "classes": None,
        "holdout": 0.2,  # studies on real data hold out a part by default
        "split_seed": 0,
    }
    assert (
        "log_every" not in ident["train"] and "loss" not in ident["train"] and "device" not in ident["train"]
    )
    assert ident["train"]["model"] == {"arch": "dgan", "kwargs": {}} and ident["train"]["betas"] == [0.0, 0.9]
    assert "cache_dir" not in ident["eval"] and ident["eval"]["n_fake"] == 1000
    # An independent reference: every non-RUN/CELL field of TrainConfig, by hand from the dataclass.
    by_hand = {f.name for f in dataclasses.fields(TrainConfig) if f.metadata["role"] == "result"}
    assert set(ident["train"]) == by_hand
    same = results_identity(dataclasses.replace(config, workers=1, train=TrainConfig(log_every=99, seed=5)))
    assert same == ident
    assert results_identity(dataclasses.replace(config, train=TrainConfig(steps=7))) != ident


def write(tmp_path, text):
    path = tmp_path / "s.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, message",
    [
        ("[train]\nbatch_size = 1.5\n", "batch_size must be an integer, got 1.5"),
        ('seeds = "01"\n', "seeds must be a list of integers, got '01'"),
        ('losses = "bce"\n', "losses must be a list of strings, got 'bce'"),
        ('lambdas = "abc"\n', "lambdas must be a list of numbers, got 'abc'"),
        ("lambdas = [1, true]\n", "lambdas must be a number, got True"),
        ("seeds = [0, -1]\n", "seeds must be >= 0, got -1"),
        ("[train]\nrandom_weights = 1\n", "random_weights must be true or false, got 1"),
        ('[train]\namp = "yes"\n', "amp must be true or false, got 'yes'"),
        ("[train]\nbetas = [0.5]\n", "betas must be a list of 2 numbers"),
        ('[data]\nclasses = "benign"\n', "classes must be a list of strings, got 'benign'"),
        ('[train]\ncritic_norm = "batchnorm"\n', "critic_norm must be one of none, layernorm"),
        ("[train]\nlog_every = 0\n", "log_every must be at least 1, got 0"),
        ('devices = ["gpu 1"]\n', "unknown device 'gpu 1'"),
        ("[train]\nstepz = 3\n", "unknown key 'stepz' in [train] of"),
    ],
)
def test_toml_type_and_range_errors_are_one_line(tmp_path, text, message):
    with pytest.raises(ConfigError) as info:
        load_study_config(write(tmp_path, text))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_values_are_coerced_to_their_types():
    config = StudyConfig(lambdas=[1, 2.5], seeds=[0, 3], losses=["bce"])
    assert config.lambdas == (1.0, 2.5) and type(config.lambdas[0]) is float
    assert config.seeds == (0, 3) and config.losses == ("bce",)
    assert TrainConfig(betas=[0, 0]).betas == (0.0, 0.0)


def test_devices_checked_against_this_machine(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="'cuda:0' requested but CUDA is not available"):
        TrainConfig(device="cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert TrainConfig(device="cuda:1").device == "cuda:1"
    with pytest.raises(ConfigError, match="'cuda:7' requested but this machine has 2 CUDA device"):
        TrainConfig(device="cuda:7")
    with pytest.raises(ConfigError, match="unknown device 'gpu'"):
        cfg.check_device("gpu")


def test_set_assignments_are_toml_literals():
    parsed = parse_assignments(
        ["train.steps=5", "train.lr_g=1e-3", "data.spec=phantom:24", "train.betas=[0.5, 0.99]"]
    )
    assert parsed == {
        "train.steps": 5,
        "train.lr_g": 1e-3,
        "data.spec": "phantom:24",
        "train.betas": [0.5, 0.99],
    }
    assert parse_assignments(["train.amp=false", 'seeds="01"']) == {"train.amp": False, "seeds": "01"}
    with pytest.raises(ConfigError, match="malformed --set 'steps'"):
        parse_assignments(["steps"])
    # --loss-param reads its values the same way (it read JSON before: 'soft' kept its quotes)
    assert parse_assignments(["mode='soft'", "w=1_000"], "--loss-param") == {"mode": "soft", "w": 1000}
    with pytest.raises(ConfigError, match=r"malformed --loss-param 'w': expected key=value, e.g. w=1$"):
        parse_assignments(["w"], "--loss-param", "w=1")


def test_overrides_name_close_matches_for_unknown_keys():
    run = with_overrides(RunConfig(), {"train.steps": 3, "train.model.arch": "toy", "data.spec": "x"})
    assert (run.train.steps, run.train.model.arch, run.data.spec) == (3, "toy", "x")
    close = r"unknown key 'train.stepz' \(did you mean train.steps\?\)$"
    with pytest.raises(ConfigError, match=close) as info:
        with_overrides(RunConfig(), {"train.stepz": 3})
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="seeds must be a list of integers"):
        with_overrides(StudyConfig(), parse_assignments(['seeds="01"']))
    with pytest.raises(ConfigError, match="unknown key 'train.lam'"):  # per cell: the grid sets it
        study_overrides(StudyConfig(), {"train.lam": 1.0})


def test_every_config_field_says_what_it_is():
    """Issue #27: a field's meaning lives in its metadata (the command line's help is built from it)."""
    from lossbench.config import EvalConfig, ModelConfig, RunConfig

    for cls in (DataConfig, ModelConfig, TrainConfig, EvalConfig, StudyConfig, RunConfig):
        for f in dataclasses.fields(cls):
            text = f.metadata.get("help", "")
            assert text.endswith("."), (cls.__name__, f.name, text)  # a sentence, not a stub
