"""The held-out split: stratified, deterministic, near-duplicates kept in one part."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lossbench.cli import app, main
from lossbench.config import DataConfig
from lossbench.data import ImageDataset, fingerprint, load_dataset
from lossbench.data.split import holdout_split, load_split, near_duplicate_groups
from lossbench.errors import ConfigError


def _with_duplicates() -> tuple[ImageDataset, list[tuple[int, int]]]:
    """phantom:60 at 32 px plus planted near-duplicates: an exact copy, a copy with noise, and a copy
    of a benign image filed as malignant."""
    data = load_dataset("phantom:60", 32)
    gen = torch.Generator().manual_seed(0)
    noisy = (data.images[5].float() + torch.randn(data.images[5].shape, generator=gen) * 4).clamp(0, 255)
    extra = torch.stack([data.images[3], noisy.to(torch.uint8), data.images[7]])
    benign = data.class_names.index("benign")
    assert data.labels[7] == benign
    labels = torch.cat([data.labels, torch.tensor([data.labels[3], data.labels[5], 1 - benign])])
    images = torch.cat([data.images, extra])
    planted = [(3, 60), (5, 61), (7, 62)]
    digest = fingerprint(images, labels, data.class_names)
    return ImageDataset(images, labels, data.class_names, digest, "t"), planted


def test_planted_duplicates_are_grouped_and_never_straddle():
    data, planted = _with_duplicates()
    groups = near_duplicate_groups(data.images)
    for a, b in planted:
        assert groups[a] == groups[b]
    assert len(np.unique(groups)) >= 55  # the phantom's own images are not lumped together
    for seed in range(8):
        split = holdout_split(data, 0.3, seed)
        held = {bytes(x.numpy()) for x in split.heldout.images}
        for a, b in planted:
            assert (bytes(data.images[a].numpy()) in held) == (bytes(data.images[b].numpy()) in held)
        assert {tuple(g) for g in split.duplicate_groups()} >= {p for p in planted}


def test_split_is_stratified_deterministic_and_disjoint():
    data = load_dataset("phantom:100", 32)
    a, b, c = holdout_split(data, 0.2, 0), holdout_split(data, 0.2, 0), holdout_split(data, 0.2, 1)
    assert a.heldout.fingerprint == b.heldout.fingerprint and a.train.fingerprint == b.train.fingerprint
    assert a.heldout.fingerprint != c.heldout.fingerprint
    assert len(a.train) + len(a.heldout) == len(data)
    rows = {bytes(x.numpy()) for x in a.train.images}
    assert not rows & {bytes(x.numpy()) for x in a.heldout.images}
    for i in range(len(data.class_names)):
        n = int((data.labels == i).sum())
        assert int((a.heldout.labels == i).sum()) == pytest.approx(0.2 * n, abs=1)
    record = a.record()
    assert record["heldout_fingerprint"] == a.heldout.fingerprint and record["split_seed"] == 0
    assert sum(record["train_counts"].values()) == len(a.train)


def test_no_holdout_and_bad_fraction():
    split = load_split(DataConfig("phantom:20", 32))
    assert split.heldout is None and split.train is split.data
    with pytest.raises(ConfigError, match="holdout"):
        DataConfig("phantom:20", 32, holdout=1.0)
    with pytest.raises(ConfigError, match="empty part"):
        holdout_split(load_dataset("phantom:3", 32), 0.1)


def test_inspect_shows_split(capsys):
    result = CliRunner().invoke(app, ["data", "inspect", "phantom:40", "-r", "32", "--holdout", "0.25"])
    assert result.exit_code == 0, result.output
    assert "held-out" in result.output and "near-duplicate groups" in result.output
    assert main(["data", "inspect", "phantom:40", "-r", "32", "--holdout", "1.5"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and "holdout" in err


def _sizes_cell(cell, ctx):
    """A stand-in cell whose value encodes the sizes of the parts it was given."""
    from lossbench.study.cell import CellResult

    return CellResult({"swd": 1000.0 * len(ctx.data) + len(ctx.heldout)}, {}, steps=1)


def test_study_cells_train_on_the_train_part_only(tmp_path):
    import optuna

    from lossbench.config import StudyConfig
    from lossbench.study import open_storage, run_study

    config = StudyConfig(
        name="split", losses=("bce",), lambdas=(0.0,), seeds=(0,), workers=1, objective="swd",
        data=DataConfig(spec="phantom:40", resolution=32, holdout=0.25),
    )  # fmt: skip
    config.eval.metrics, config.eval.n_fake = ("swd",), 8
    run_study(config, root=tmp_path, cell_fn=_sizes_cell)
    study = optuna.load_study(study_name="split", storage=open_storage(None, tmp_path))
    ((n_train, n_heldout),) = [divmod(int(t.value), 1000) for t in study.get_trials() if t.value]
    expected = load_split(config.data)
    assert (n_train, n_heldout) == (len(expected.train), len(expected.heldout)) and n_train + n_heldout == 40
