"""Held-out evaluation: copy detection both ways, density/coverage parity with prdc, bootstrap SEs,
the domain encoder as an extractor, and the sanity ladder in its space."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lossbench.config import EvalConfig
from lossbench.data import load_dataset
from lossbench.data.split import holdout_split
from lossbench.errors import ConfigError, WeightsDigestError
from lossbench.metrics import DIRECTIONS, evaluate
from lossbench.metrics.coverage import density_coverage
from lossbench.metrics.memorisation import authenticity, data_copying_ct

TINY = "lossbench-tiny"


@pytest.fixture(scope="module")
def split():
    return holdout_split(load_dataset("phantom:160", 32), 0.25, 0)


def _copy_scores(split, fakes, tmp_path) -> dict[str, float]:
    config = EvalConfig(metrics=("copy",), n_fake=len(fakes), feature_extractor=TINY, cache_dir=str(tmp_path))
    return evaluate(fakes, split.train, config, heldout=split.heldout).metrics


def test_copies_are_flagged_and_heldout_images_are_not(split, tmp_path):
    gen = torch.Generator().manual_seed(1)
    train = split.train.images[torch.randperm(len(split.train), generator=gen)[:40]]
    noisy = (train.float() + torch.randn(train.shape, generator=gen) * 3).clamp(0, 255).to(torch.uint8)
    for fakes in (train, noisy):
        s = _copy_scores(split, fakes, tmp_path)
        for space in ("feat", "pixel"):
            assert s[f"ct_{space}"] < -3, (space, s)
            assert s[f"authenticity_{space}"] < 0.2 < s[f"authenticity_heldout_{space}"], (space, s)
    s = _copy_scores(split, train.flip(-1), tmp_path)  # mirrored copies: pixel space is mirror-aware
    assert s["ct_pixel"] < -3 and s["authenticity_pixel"] < 0.2, s
    s = _copy_scores(split, split.heldout.images, tmp_path)
    for space in ("feat", "pixel"):
        assert abs(s[f"ct_{space}"]) < 2.5, (space, s)
        assert s[f"authenticity_{space}"] == s[f"authenticity_heldout_{space}"] > 0.5


def test_copy_detection_needs_a_heldout_part(split, tmp_path):
    """Declared once (`Metric.needs`), checked by `evaluate` before anything runs and by study
    validation; per-class evaluation leaves it out."""
    import dataclasses

    from lossbench.config import DataConfig, StudyConfig, TrainConfig
    from lossbench.metrics import get_metric
    from lossbench.study.definition import validate

    assert get_metric("copy").needs == ("heldout",)
    config = EvalConfig(metrics=("copy",), n_fake=8, feature_extractor=TINY, cache_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="metric 'copy' needs a held-out part"):
        evaluate(split.train.images[:8], split.train, config)
    study = StudyConfig(
        name="c", losses=("hinge",), lambdas=(0.0,), seeds=(0,), objective="authenticity_feat",
        data=DataConfig(spec="phantom:48", resolution=32), train=TrainConfig(perceptual="none"),
        eval=dataclasses.replace(config, cache_dir=None),
    )  # fmt: skip
    with pytest.raises(ConfigError, match="metric 'copy' needs a held-out part: set data.holdout > 0"):
        validate(study)
    validate(dataclasses.replace(study, data=dataclasses.replace(study.data, holdout=0.25)))


def test_authenticity_and_ct_by_hand():
    train = np.array([[0.0], [1.0], [10.0]])  # radii: 1, 1, 9
    assert authenticity(train, np.array([[0.5], [5.0], [10.5], [20.0]])) == 0.5  # 0.5<1, 5>1, 0.5<9, 10>9
    rng = np.random.default_rng(0)
    t, p = rng.normal(size=(200, 2)), rng.normal(size=(100, 2))
    copies = t[:100] + 1e-3
    assert data_copying_ct(t, p, copies, 2) < -5 < data_copying_ct(t, p, rng.normal(size=(100, 2)), 2)


def test_density_coverage_equal_prdc():
    prdc = pytest.importorskip("prdc")
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(120, 16)), rng.normal(0.3, 1.2, size=(90, 16))
    ref = prdc.compute_prdc(real_features=real, fake_features=fake, nearest_k=5)
    density, coverage = density_coverage(torch.from_numpy(fake), torch.from_numpy(real))
    assert density == pytest.approx(ref["density"], abs=1e-6)
    assert coverage == pytest.approx(ref["coverage"], abs=1e-6)
    assert 0 < coverage < 1 and density != 1.0


@pytest.mark.slow
def test_bootstrap_se_shrinks_with_n_fake(split, tmp_path):
    gen = torch.Generator().manual_seed(0)
    pool = load_dataset("phantom:400", 32).images
    ses = []
    for n in (32, 256):
        fakes = pool[torch.randperm(len(pool), generator=gen)[:n]]
        config = EvalConfig(
            metrics=("fid", "kid", "msssim"), n_fake=n, feature_extractor=TINY, n_pairs=n // 2,
            kid_subsets=5, bootstrap=20, cache_dir=str(tmp_path),
        )  # fmt: skip
        result = evaluate(fakes, split.train, config)
        assert result.settings["bootstrap"] == 20
        ses.append(result.metrics)
    for key in ("fid_se", "kid_se", "msssim_ff_se"):
        assert 0 < ses[1][key] < 0.7 * ses[0][key], key


def test_encoder_file_registers_as_extractor_and_ladder_holds(tmp_path):
    """A tiny trained encoder: its sidecar, its digest checked, and the sanity ladder in its space:
    FID(train vs held-out) < FID(train vs blurred held-out) < FID(train vs noise)."""
    from lossbench.metrics.encoder import load_encoder, train_encoder

    split = holdout_split(load_dataset("phantom:96", 32), 0.25, 0)
    path = tmp_path / "enc.pt"
    sidecar = train_encoder(split, path, epochs=2, batch_size=32, seed=0)
    saved = json.loads((tmp_path / "enc.pt.json").read_text())
    assert saved == sidecar and saved["split"]["heldout_fingerprint"] == split.heldout.fingerprint
    assert set(saved["heldout_quality"]) == {"trained", "random_init"}
    held = split.heldout.images
    blurred = F.interpolate(F.avg_pool2d(held.float(), 4), scale_factor=4).round().to(torch.uint8)
    gen = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 256, held.shape, generator=gen, dtype=torch.uint8)
    name = f"encoder:{path}"
    config = EvalConfig(metrics=("fid", "dc"), n_fake=len(held), feature_extractor=name, prc_extractor=name)
    config.cache_dir = str(tmp_path)
    fids = []
    for fakes in (held, blurred, noise):
        result = evaluate(fakes, split.train, config)
        fids.append(result.metrics["fid"])
        assert result.settings["fid_weights"] == f"enc.pt@sha256:{sidecar['sha256'][:16]}"
        assert result.settings["fid_extractor"] == f"encoder-{sidecar['sha256'][:12]}"
    assert fids[0] < fids[1] < fids[2], fids
    both = EvalConfig(
        metrics=("fid", "dc", "lpips"), n_fake=len(held), feature_extractor=TINY, prc_extractor=TINY,
        extra_extractors=(name,), random_weights=True, n_pairs=8,
    )  # fmt: skip
    both.cache_dir = str(tmp_path)
    result = evaluate(held, split.train, both)
    enc = f"encoder-{sidecar['sha256'][:12]}"
    assert result.metrics[f"fid.{enc}"] == pytest.approx(fids[0]) and result.metrics["fid"] != fids[0]
    assert {f"density.{enc}", f"coverage.{enc}", "lpips_ff"} <= set(result.metrics)
    assert "lpips_ff." + enc not in result.metrics and DIRECTIONS[f"fid.{enc}"] == "min"
    assert result.settings["fid_extractor"] == TINY and result.settings[f"fid_extractor.{enc}"] == enc
    copies = EvalConfig(metrics=("copy",), n_fake=len(held), feature_extractor=name, cache_dir=str(tmp_path))
    evaluate(held, split.train, copies, heldout=split.heldout)  # the encoder's own split: accepted
    other = holdout_split(load_dataset("phantom:96", 32), 0.25, 1)  # its held-out images trained the encoder
    with pytest.raises(ConfigError, match="trained on another train part .* split seed 0"):
        evaluate(other.heldout.images, other.train, copies, heldout=other.heldout)
    path.write_bytes(path.read_bytes() + b"x")  # altered file: refused, one line
    with pytest.raises(WeightsDigestError, match="sidecar says"):
        load_encoder(path)


def test_the_encoder_learning_rate_decays_to_zero_along_a_cosine(tmp_path, monkeypatch):
    """Every optimiser step's learning rate: lr at the first, a cosine down to 0 after the last
    (a constant rate leaves the last weights a draw from a noisy trajectory, docs/metrics.md)."""
    from lossbench.metrics.encoder import LR_SCHEDULE, train_encoder

    rates, step = [], torch.optim.AdamW.step

    def record(self, *args, **kwargs):
        rates.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", record)
    split = holdout_split(load_dataset("phantom:49", 32), 0.25, 0)  # 37 train images: batches 16, 16, 5
    sidecar = train_encoder(split, tmp_path / "enc.pt", epochs=2, batch_size=16, lr=1e-3, seed=0)
    total = len(rates)
    assert total == 2 * 3 and sidecar["lr_schedule"] == LR_SCHEDULE
    expected = [0.5e-3 * (1 + math.cos(math.pi * t / total)) for t in range(total)]
    assert rates == pytest.approx(expected)


def test_closest_fakes_panel(split, tmp_path):
    from lossbench.metrics.memorisation import closest_fakes_png

    fakes = torch.cat([split.heldout.images[:6], split.train.images[10:12]])  # two exact copies
    config = EvalConfig(metrics=("copy",), n_fake=8, feature_extractor=TINY, cache_dir=str(tmp_path))
    result = evaluate(fakes, split.train, config, heldout=split.heldout)
    shown, train, dist = result.closest_pairs
    assert dist[:2] == [0.0, 0.0] and torch.equal(shown[:2], train[:2]) and dist[2] > 0
    assert {bytes(x.numpy()) for x in shown[:2]} == {bytes(x.numpy()) for x in fakes[6:]}
    assert closest_fakes_png(shown, train, dist).startswith(b"\x89PNG")


def test_fid_comes_with_what_unseen_real_images_score_at_their_own_count(split, tmp_path):
    from scipy import linalg

    def frechet(a: np.ndarray, b: np.ndarray) -> float:  # the formula by hand
        ma, mb, ca, cb = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        return float(((ma - mb) ** 2).sum() + np.trace(ca + cb - 2 * linalg.sqrtm(ca @ cb).real))

    gen = torch.Generator().manual_seed(3)
    fakes = split.train.images[torch.randperm(len(split.train), generator=gen)[:90]].flip(-1)
    config = EvalConfig(metrics=("fid",), n_fake=90, feature_extractor=TINY, cache_dir=str(tmp_path), seed=5)
    result = evaluate(fakes, split.train, config, heldout=split.heldout)
    n = len(split.heldout)
    pick = torch.randperm(90, generator=torch.Generator().manual_seed(5))[:n].numpy()
    fake_f, real_f = result.fake_features, result.real_features
    assert result.metrics["fid_at_heldout_n"] == pytest.approx(frechet(fake_f[pick], real_f), rel=1e-4)
    alone = evaluate(split.heldout.images, split.train, EvalConfig(**{**vars(config), "n_fake": n}))
    assert result.metrics["fid_heldout"] == pytest.approx(alone.metrics["fid"], rel=1e-9)
    assert result.metrics["fid_heldout"] == pytest.approx(frechet(alone.fake_features, real_f), rel=1e-4)
    assert "fid_heldout" not in evaluate(fakes, split.train, config).metrics  # no held-out part
