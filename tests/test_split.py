"""The held-out split: stratified, deterministic, near-duplicates kept in one part."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error
from typer.testing import CliRunner

from lossbench.cli import app, main
from lossbench.config import DataConfig, TrainConfig
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
    assert "held-out" in result.output and "same-lesion groups" in result.output
    assert main(["data", "inspect", "phantom:40", "-r", "32", "--holdout", "1.5"]) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err, "holdout")


def _sizes_cell(cell, ctx):
    """A stand-in cell whose value encodes the sizes of the parts it was given."""
    from lossbench.study.cell import CellResult

    return CellResult({"swd": 1000.0 * len(ctx.data) + len(ctx.heldout)}, {}, steps=1)


@pytest.mark.slow
def test_study_cells_train_on_the_train_part_only(tmp_path):
    import optuna

    from lossbench.config import StudyConfig
    from lossbench.study import open_storage, run_study

    config = StudyConfig(
        name="split", losses=("bce",), lambdas=(0.0,), seeds=(0,), workers=0, objective="swd",
        data=DataConfig(spec="phantom:40", resolution=32, holdout=0.25), train=TrainConfig(batch_size=8),
    )  # fmt: skip
    config.eval.metrics, config.eval.n_fake = ("swd",), 8
    run_study(config, root=tmp_path, cell_fn=_sizes_cell)
    study = optuna.load_study(study_name="split", storage=open_storage(None, tmp_path))
    ((n_train, n_heldout),) = [divmod(int(t.value), 1000) for t in study.get_trials() if t.value]
    expected = load_split(config.data)
    assert (n_train, n_heldout) == (len(expected.train), len(expected.heldout)) and n_train + n_heldout == 40


# Same-lesion pairs of BUSI, looked at side by side (consecutive frames, calipers moved, one frame
# filed under two classes); the old detector (RMS < 0.15 on 16 px thumbnails) let each straddle a split.
BUSI_SAME_LESION = [
    ("malignant (4)", "malignant (7)", "malignant (8)", "malignant (9)", "malignant (5)"),
    ("benign (230)", "benign (252)"),
    ("benign (237)", "benign (264)"),
    ("benign (404)", "benign (415)"),
    ("benign (406)", "malignant (94)"),
    ("benign (2)", "benign (319)"),
    ("normal (127)", "normal (32)"),
]


def test_busi_same_lesion_images_never_straddle_a_split(busi_dir):
    splits = {
        (r, seed): load_split(DataConfig(f"busi:{busi_dir}", r, holdout=0.2, split_seed=seed))
        for r, seed in ((64, 0), (64, 1), (32, 0))
    }
    for split in splits.values():
        stem = {Path(n).stem: i for i, n in enumerate(split.data.names)}
        for lesion in BUSI_SAME_LESION:
            assert len({split.groups[stem[n]] for n in lesion}) == 1, lesion
            assert len({stem[n] in split.heldout_index for n in lesion}) == 1, lesion
        assert not {i for g in split.mixed_class_groups() for i in g} & set(split.heldout_index.tolist())
        assert split.record()["largest_group"] <= 10  # groups are lesions, not chains of unrelated scans
    # the groups, and so the split, are found at 64 px whatever the run's resolution
    assert np.array_equal(splits[64, 0].heldout_index, splits[32, 0].heldout_index)
    assert not np.array_equal(splits[64, 0].heldout_index, splits[64, 1].heldout_index)


def test_one_split_at_every_resolution_and_mixed_class_groups_stay_in_train():
    at = {r: load_split(DataConfig("phantom:80", r, holdout=0.25, split_seed=3)) for r in (32, 64, 128)}
    assert np.array_equal(at[32].heldout_index, at[64].heldout_index)
    assert np.array_equal(at[128].heldout_index, at[64].heldout_index)
    data, planted = _with_duplicates()
    mixed = planted[2]  # a benign image and its copy filed as malignant
    for seed in range(8):
        split = holdout_split(data, 0.3, seed)
        assert split.mixed_class_groups() == [list(mixed)]
        assert not set(mixed) & set(split.heldout_index.tolist())
        assert split.record()["mixed_class_groups"] == 1
    other = load_dataset("phantom:63", 32)
    with pytest.raises(ValueError, match="reference"):
        holdout_split(data, 0.3, 0, reference=other)


def test_inspect_writes_the_nearest_pairs_apart(tmp_path, capsys):
    out = tmp_path / "pairs.png"
    args = [
        "data",
        "inspect",
        "phantom:40",
        "-r",
        "32",
        "--holdout",
        "0.25",
        "--pairs",
        str(out),
        "--n-pairs",
        "3",
    ]
    assert main(args) == 0
    from PIL import Image

    assert Image.open(out).size[1] == 3 * (32 + 12 + 6)
    capsys.readouterr()
    assert main(["data", "inspect", "phantom:40", "-r", "32", "--pairs", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err, "--holdout")
    for bad in (out / "x.png", tmp_path):  # under a file; a folder
        assert main([*args[:-4], "--pairs", str(bad)]) == 2
        err = capsys.readouterr().err
        assert_one_line_error(err, "--pairs")


def test_nearest_pairs_apart_are_the_closest_across_the_split():
    from lossbench.data.split import (
        LAYOUT_CORR,
        TEXTURE_CORR,
        TEXTURE_MIN_LAYOUT,
        nearest_pairs_apart,
        similarity,
    )

    split = holdout_split(load_dataset("phantom:40", 32), 0.25, 0)
    pairs = nearest_pairs_apart(split, 5)
    layout, texture = similarity(split.data.images)
    held = set(split.heldout_index.tolist())
    lay, tex = layout / LAYOUT_CORR, torch.minimum(texture / TEXTURE_CORR, layout / TEXTURE_MIN_LAYOUT)
    closeness = {(i, j): max(lay[i, j], tex[i, j]) for i in range(40) for j in held if i not in held}
    expected = sorted(closeness, key=lambda p: -closeness[p])[:5]
    assert [(i, j) for i, j, _, _ in pairs] == expected
    assert all(closeness[i, j] < 1 for i, j in expected)  # else they would have been grouped
