"""`lossbench evaluate` on the command line: a checkpoint or a folder of images; one-line errors."""

from __future__ import annotations

import json

import pytest
from conftest import assert_one_line_error
from PIL import Image

from lossbench.cli import main
from lossbench.config import TrainConfig
from lossbench.data import load_dataset
from lossbench.metrics.extractors import TINY
from lossbench.training.train import CHECKPOINT, train

R = 32


@pytest.fixture(scope="module")
def fake_dir(tmp_path_factory):
    """A folder of 30 PNG phantoms (seed 0), standing in for generated images."""
    folder = tmp_path_factory.mktemp("fakes")
    for i, image in enumerate(load_dataset("phantom:30", R).images):
        Image.fromarray(image[0].numpy()).save(folder / f"{i:03d}.png")
    return folder


def run_json(capsys, *args: str) -> dict:
    assert main(["evaluate", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_evaluate_a_folder_as_json(fake_dir, tmp_path, capsys):
    common = ["--fake", str(fake_dir), "--data", "phantom:60", "--resolution", str(R), "--extractor", TINY]
    common += ["--cache-dir", str(tmp_path), "--n-pairs", "10"]
    out = run_json(capsys, *common, "--metrics", "fid,kid,msssim,swd")
    assert set(out["metrics"]) >= {"fid", "kid", "kid_std", "msssim_ff", "msssim_rr", "swd"}
    s = out["settings"]
    assert (s["fid_extractor"], s["n_fake"], s["n_real"], s["kid_subset_size"]) == (TINY, 30, 60, 30)
    assert (s["msssim_mode"], s["weights"]) == ("ssim", "none")
    assert out["provenance"] == {"fid_cache": "miss", "msssim_rr_cache": "miss"}
    assert not any("cache" in k for k in s)  # every setting is something a number depends on
    # the folder holds the first 30 phantoms of the same dataset: their FID is small, not zero
    assert 0 < out["metrics"]["fid"] < 1

    again = run_json(capsys, *common, "--metrics", "fid,lpips", "--random-weights")
    assert again["provenance"]["fid_cache"] == "hit" and again["metrics"]["fid"] == out["metrics"]["fid"]
    assert again["settings"]["weights"] == "random"


def test_evaluate_a_checkpoint(tmp_path, capsys):
    config = TrainConfig(steps=1, batch_size=8, g_width=8, d_width=8, lam=0.0, checkpoint_every=1, z_dim=16)
    train(load_dataset("phantom:16", R), config, tmp_path / "run")
    out = run_json(
        capsys,
        *("--checkpoint", str(tmp_path / "run" / CHECKPOINT), "--data", "phantom:16", "--n-fake", "12"),
        *("--metrics", "fid,msssim", "--extractor", TINY, "--cache-dir", str(tmp_path / "cache")),
    )
    assert out["settings"]["n_fake"] == 12 and out["settings"]["resolution"] == R
    assert out["metrics"]["fid"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "weights-inception-2015-12-05-6726825d.pth"),  # the default extractor, weights absent
        (["--metrics", "fid,ssim"], "unknown metric 'ssim'"),
        (["--extractor", "nope"], "unknown feature extractor 'nope'"),
        (["--resolution", "48"], "resolution 48"),
        (["--checkpoint", "missing.pt"], "exactly one of"),
        (["--n-fake", "1"], "n_fake must be at least 2"),
    ],
)
def test_bad_input_is_one_line_exit_2(fake_dir, args, message, capsys):
    code = main(["evaluate", "--fake", str(fake_dir), "--data", "phantom:20", "--resolution", str(R), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert_one_line_error(err, message)


def test_missing_checkpoint_is_one_line_exit_2(tmp_path, capsys):
    assert main(["evaluate", "--checkpoint", str(tmp_path / "none.pt"), "--data", "phantom:20"]) == 2
    assert "none.pt" in capsys.readouterr().err
