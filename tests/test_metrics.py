"""Evaluation metrics: parity with torch-fidelity, lpips and pytorch-msssim called directly; sanity; cache."""

from __future__ import annotations

import math
from pathlib import Path

import lpips
import numpy as np
import pytest
import torch
import torch_fidelity
import torchvision
from pytorch_msssim import ms_ssim, ssim
from scipy.stats import wasserstein_distance
from test_weights import trust_file
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from lossbench.config import EvalConfig
from lossbench.data import ImageDataset, fingerprint, load_dataset
from lossbench.errors import ConfigError, MissingWeightsError
from lossbench.images import generate_images
from lossbench.metrics import EvalResult, evaluate
from lossbench.metrics import cache as cache_lib
from lossbench.metrics.diversity import (
    load_lpips,
    lpips_score,
    mean_std,
    msssim_score,
    msssim_window,
    pair_values,
    random_pairs,
)
from lossbench.metrics.extractors import TINY, register_extractors
from lossbench.metrics.fidelity import extract_features, load_extractor
from lossbench.metrics.swd import sliced_wasserstein
from lossbench.models.dgan import Generator

R = 32


def as_dataset(images: torch.Tensor) -> ImageDataset:
    """An ImageDataset around a uint8 tensor, with the data layer's fingerprint."""
    labels = torch.zeros(len(images), dtype=torch.int64)
    return ImageDataset(images, labels, ("all",), fingerprint(images, labels, ("all",)), "test")


def noise(n: int, resolution: int = R, seed: int = 1) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, 1, resolution, resolution), generator=torch.Generator().manual_seed(seed)
    ).to(torch.uint8)


@pytest.fixture(scope="module")
def phantom() -> ImageDataset:
    return load_dataset("phantom:160", R)


def tiny_config(tmp_path, **kw) -> EvalConfig:
    base = dict(feature_extractor=TINY, prc_extractor=TINY, cache_dir=str(tmp_path / "cache"), kid_subsets=20)
    return EvalConfig(**{**base, **kw})


class RGBDataset(torch.utils.data.Dataset):
    """Images as torch-fidelity wants them: uint8 3×H×W, grayscale repeated."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images.repeat(1, 3, 1, 1)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


# --- FID / KID / precision-recall -------------------------------------------------------------------------


def test_tiny_extractor_registration_is_idempotent():
    register_extractors()
    register_extractors()
    assert FEATURE_EXTRACTORS_REGISTRY[TINY].__name__ == "TinyExtractor"


def test_fid_kid_pr_equal_torch_fidelity_calculate_metrics(phantom, tmp_path):
    fakes = phantom.images[:70].flip(-1)  # mirrored subset: close to, not equal to, the reals
    result = evaluate(fakes, phantom, tiny_config(tmp_path, metrics=("fid", "kid", "pr"), seed=7))
    ref = torch_fidelity.calculate_metrics(
        input1=RGBDataset(fakes),
        input2=RGBDataset(phantom.images),
        fid=True,
        kid=True,
        prc=True,
        feature_extractor=TINY,
        kid_subset_size=70,
        kid_subsets=20,
        rng_seed=7,
        cuda=False,
        save_cpu_ram=True,
        cache=False,
        verbose=False,
    )
    m = result.metrics
    assert m["fid"] > 0
    pairs = [
        ("fid", "frechet_inception_distance"),
        ("kid", "kernel_inception_distance_mean"),
        ("kid_std", "kernel_inception_distance_std"),
        ("precision", "precision"),
        ("recall", "recall"),
    ]
    for ours, theirs in pairs:
        assert math.isclose(m[ours], ref[theirs], rel_tol=1e-6), (ours, m[ours], ref[theirs])
    s = result.settings
    assert (s["fid_extractor"], s["fid_layer"], s["fid_feature_dim"], s["fid_weights"]) == (
        TINY,
        "128",
        128,
        "none",
    )
    assert (s["kid_subset_size"], s["kid_subsets"], s["n_real"], s["n_fake"]) == (70, 20, 160, 70)
    assert s["weights"] == "none"
    assert result.fake_features.shape == (70, 128) and result.real_features.shape == (160, 128)


def test_fid_of_a_resample_is_far_below_fid_of_noise(phantom, tmp_path):
    config = tiny_config(tmp_path, metrics=("fid", "kid"))
    resample = load_dataset("phantom:240", R).images[160:]  # same distribution, other images
    fid_same = evaluate(resample, phantom, config).metrics
    fid_noise = evaluate(noise(80), phantom, config).metrics
    assert fid_same["fid"] * 20 < fid_noise["fid"]
    assert fid_same["kid"] * 20 < fid_noise["kid"]


def test_kid_subset_defaults_to_the_smaller_side_and_oversize_is_refused(phantom, tmp_path):
    result = evaluate(noise(30), phantom, tiny_config(tmp_path, metrics=("kid",)))
    assert result.settings["kid_subset_size"] == 30 and "fid" not in result.metrics
    with pytest.raises(ConfigError, match="kid_subset_size 50"):
        evaluate(noise(30), phantom, tiny_config(tmp_path, metrics=("kid",), kid_subset_size=50))


def test_an_extractor_registered_at_run_time_is_usable(phantom, tmp_path):
    class MeanExtractor(FeatureExtractorBase):
        def __init__(self, name, features_list, **kwargs):
            super().__init__(name, features_list)

        @staticmethod
        def get_provided_features_list():
            return ("4",)

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return "4"

        def forward(self, x):
            return (torch.nn.functional.adaptive_avg_pool2d(x.float(), 2).mean(1).flatten(1),)

    if "test-mean4" not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor("test-mean4", MeanExtractor)
    result = evaluate(
        noise(40), phantom, tiny_config(tmp_path, metrics=("fid",), feature_extractor="test-mean4")
    )
    assert result.settings["fid_extractor"] == "test-mean4" and result.settings["fid_feature_dim"] == 4
    assert result.metrics["fid"] > 0


def test_missing_inception_weights_and_unknown_names_are_one_line_errors(phantom, tmp_path):
    with pytest.raises(MissingWeightsError, match="weights-inception-2015-12-05-6726825d.pth") as e:
        evaluate(noise(10), phantom, EvalConfig(metrics=("fid",), cache_dir=str(tmp_path)))
    assert "\n" not in str(e.value) and TINY in str(e.value)
    with pytest.raises(ConfigError, match="unknown feature extractor 'nope'"):
        load_extractor("nope")
    with pytest.raises(ConfigError, match="unknown metric 'ssim'"):
        evaluate(noise(10), phantom, tiny_config(tmp_path, metrics=("ssim",)))
    with pytest.raises(ConfigError, match="uint8 tensor"):
        evaluate(noise(10, resolution=64), phantom, tiny_config(tmp_path, metrics=("fid",)))


# --- real-feature cache -------------------------------------------------------------------------------------


def test_real_features_are_cached_and_a_changed_dataset_misses(phantom, tmp_path):
    config = tiny_config(tmp_path, metrics=("fid",))
    first = evaluate(noise(20), phantom, config)
    second = evaluate(noise(20), phantom, config)
    assert (first.provenance["fid_cache"], second.provenance["fid_cache"]) == ("miss", "hit")
    np.testing.assert_array_equal(first.real_features, second.real_features)
    assert first.metrics == second.metrics

    changed = phantom.images.clone()
    changed[0] = 255 - changed[0]
    third = evaluate(noise(20), as_dataset(changed), config)
    assert third.provenance["fid_cache"] == "miss"
    ext = load_extractor(TINY)
    np.testing.assert_array_equal(third.real_features, extract_features(ext, changed).numpy())


def test_a_truncated_or_foreign_cache_file_is_recomputed(tmp_path):
    key = {"kind": "features", "dataset": "abc"}
    calls = []

    def compute():
        calls.append(1)
        return torch.arange(6.0).reshape(2, 3)

    value, hit = cache_lib.cached(tmp_path, key, compute)
    path = cache_lib.entry_path(tmp_path, key)
    left = sorted(tmp_path.iterdir())  # no temp file left behind; the entry's lock file stays
    assert not hit and path.is_file() and left == [path, path.with_name(f"{path.name}.lock")]
    again, hit = cache_lib.cached(tmp_path, key, compute)
    assert hit and torch.equal(again, value) and len(calls) == 1

    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.warns(UserWarning, match="unreadable"):
        again, hit = cache_lib.cached(tmp_path, key, compute)
    assert not hit and len(calls) == 2 and torch.equal(again, value)
    assert cache_lib.cached(tmp_path, key, compute)[1]  # rewritten whole

    torch.save({"key": "{}", "value": torch.zeros(1)}, path)  # another entry's content under this name
    with pytest.warns(UserWarning, match="another entry"):
        assert torch.equal(cache_lib.cached(tmp_path, key, compute)[0], value)
    assert len(calls) == 3


# --- LPIPS ----------------------------------------------------------------------------------------


@pytest.fixture
def alexnet_dir(tmp_path, monkeypatch):
    """A weights folder holding a (random) torchvision AlexNet state_dict under the real file name,
    its digest standing in for the published one."""
    torch.manual_seed(3)
    features = torchvision.models.alexnet().features.state_dict()
    folder = tmp_path / "weights"
    folder.mkdir()
    torch.save({f"features.{k}": v for k, v in features.items()}, folder / "alexnet-owt-7be5be79.pth")
    trust_file(monkeypatch, "alexnet", folder / "alexnet-owt-7be5be79.pth")
    return folder


def test_lpips_equals_lpips_package_with_the_same_alexnet_file(phantom, alexnet_dir, monkeypatch):
    model, label = load_lpips(alexnet_dir)
    assert label == "alexnet-owt-7be5be79.pth"
    images = phantom.images[:40]
    mean, std = mean_std(pair_values(lpips_score(model), images, 12, seed=5))
    random_model, _ = load_lpips(random_weights=True)
    assert not math.isclose(
        pair_values(lpips_score(random_model), images, 12, seed=5).mean().item(), mean, rel_tol=1e-3
    )

    # Reference: lpips slices torchvision's alexnet() itself; here alexnet() returns the file's weights.
    state = torch.load(alexnet_dir / "alexnet-owt-7be5be79.pth")
    make_alexnet = torchvision.models.alexnet

    def alexnet(**kwargs):
        net = make_alexnet()
        net.load_state_dict({**net.state_dict(), **state})
        return net

    monkeypatch.setattr(lpips.pretrained_networks.tv, "alexnet", alexnet)
    ref_model = lpips.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False).eval()
    a, b = random_pairs(40, 12, seed=5)
    x = images.float().repeat(1, 3, 1, 1) / 127.5 - 1
    with torch.no_grad():
        ref = ref_model(x[a], x[b]).flatten().double()
    assert math.isclose(mean, ref.mean().item(), rel_tol=1e-6)
    assert math.isclose(std, ref.std(correction=0).item(), rel_tol=1e-5)


def test_lpips_of_identical_pairs_is_zero_and_weights_are_never_silently_random(phantom):
    with pytest.raises(MissingWeightsError, match="alexnet-owt-7be5be79.pth"):
        load_lpips()
    model, label = load_lpips(random_weights=True, seed=0)
    assert label == "random(seed=0)"
    x = phantom.images[:8]
    with torch.no_grad():
        assert lpips_score(model)(x, x).abs().max().item() < 1e-7
        assert lpips_score(model)(x, x.flip(0)).min().item() > 0


def test_random_lpips_is_tagged_in_the_result(phantom, tmp_path):
    result = evaluate(
        noise(20), phantom, tiny_config(tmp_path, metrics=("lpips",), random_weights=True, n_pairs=6)
    )
    s = result.settings
    assert (s["lpips_weights"], s["weights"], s["n_pairs"]) == ("random(seed=0)", "random", 6)
    assert set(result.metrics) == {"lpips_ff", "lpips_ff_std", "lpips_rr", "lpips_rr_std"}
    assert result.metrics["lpips_ff"] > result.metrics["lpips_rr"] > 0  # noise is more diverse than phantoms


# --- MS-SSIM --------------------------------------------------------------------------------------


def test_msssim_window_is_the_largest_that_fits_the_pyramid():
    assert [msssim_window(r) for r in (32, 64, 128, 256, 512)] == [
        ("ssim", 11),
        ("ms-ssim", 3),
        ("ms-ssim", 7),
        ("ms-ssim", 11),
        ("ms-ssim", 11),
    ]
    for r in (64, 80, 128, 160):  # the window fits; the next odd one trips pytorch-msssim's own check
        x = torch.rand(1, 1, r, r)
        win = msssim_window(r)[1]
        assert ms_ssim(x, x, data_range=1, win_size=win) > 0.99
        with pytest.raises(AssertionError):
            ms_ssim(x, x, data_range=1, win_size=win + 2)
    with pytest.raises(AssertionError):
        ms_ssim(torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32), data_range=1, win_size=3)


@pytest.mark.parametrize("resolution", [32, 64])
def test_msssim_equals_pytorch_msssim_called_directly(resolution):
    images = load_dataset("phantom:30", resolution).images
    mean, std = mean_std(pair_values(msssim_score(resolution), images, 10, seed=2, batch_size=4))
    a, b = random_pairs(30, 10, seed=2)
    x = images.float()
    if resolution == 64:
        ref = ms_ssim(x[a], x[b], data_range=255, win_size=3, size_average=False)
    else:
        ref = ssim(x[a], x[b], data_range=255, win_size=11, size_average=False)
    ref = ref.double()
    assert math.isclose(mean, ref.mean().item(), rel_tol=1e-6)
    assert math.isclose(std, ref.std(correction=0).item(), rel_tol=1e-5)


def test_msssim_of_identical_images_is_one(phantom):
    for x in (phantom.images[:6], load_dataset("phantom:6", 64).images):  # SSIM at 32, MS-SSIM at 64
        score = msssim_score(x.shape[-1])(x, x)
        assert torch.allclose(score, torch.ones(6), atol=1e-6)
        assert (msssim_score(x.shape[-1])(x, x.flip(0)) < 0.99).all()


def test_pairs_are_disjoint_seeded_and_bounded():
    a, b = random_pairs(21, 10, seed=4)
    assert len(set(a.tolist()) | set(b.tolist())) == 20
    assert torch.equal(torch.cat(random_pairs(21, 10, seed=4)), torch.cat([a, b]))
    assert not torch.equal(torch.cat(random_pairs(21, 10, seed=5)), torch.cat([a, b]))
    with pytest.raises(ValueError):
        random_pairs(21, 11, seed=4)


def test_diversity_ranks_noise_above_phantoms_and_records_the_mode(phantom, tmp_path):
    config = tiny_config(tmp_path, metrics=("msssim",), n_pairs=1000)
    result = evaluate(noise(40), phantom, config)
    m, s = result.metrics, result.settings
    assert (s["msssim_mode"], s["msssim_win_size"], s["n_pairs"]) == ("ssim", 11, 20)
    assert m["msssim_ff"] < m["msssim_rr"]  # noise pairs are less alike than phantom pairs
    assert evaluate(noise(40), phantom, config).metrics == m


# --- sliced Wasserstein ---------------------------------------------------------------------------


def test_swd_of_one_pixel_images_is_the_1d_wasserstein_distance():
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (50, 1, 1, 1), generator=gen).to(torch.uint8)
    y = torch.randint(0, 128, (50, 1, 1, 1), generator=gen).to(torch.uint8)
    ref = wasserstein_distance(x.flatten().numpy() / 255, y.flatten().numpy() / 255)
    assert math.isclose(sliced_wasserstein(x, y, directions=8), ref, rel_tol=1e-9)


def test_swd_is_zero_on_identical_sets_and_ranks_noise_far(phantom):
    resample = load_dataset("phantom:240", R).images[160:]
    assert sliced_wasserstein(phantom.images, phantom.images) == 0
    assert 3 * sliced_wasserstein(resample, phantom.images) < sliced_wasserstein(noise(80), phantom.images)


# --- evaluate() on a generator --------------------------------------------------------------------


def test_evaluate_a_generator_is_seeded_and_reproducible(phantom, tmp_path):
    torch.manual_seed(0)
    G = Generator(R, z_dim=16, width=8)
    config = tiny_config(tmp_path, metrics=("fid", "kid", "msssim", "swd"), n_fake=24, seed=3, n_pairs=8)
    first = evaluate(G, phantom, config)
    assert isinstance(first, EvalResult) and first.settings["n_fake"] == 24
    fakes = generate_images(G, 24, seed=3)
    np.testing.assert_array_equal(first.fake_features, extract_features(load_extractor(TINY), fakes).numpy())
    assert evaluate(fakes, phantom, config).metrics == first.metrics
    assert evaluate(G, phantom, config).metrics == first.metrics
    assert set(first.timings) >= {"generate", "real_features", "fake_features", "fid", "kid", "msssim", "swd"}


# --- the registry -------------------------------------------------------------------------------------------


def test_each_key_of_a_metric_that_declares_its_own_description_says_what_it_alone_measures():
    from lossbench.metrics import DIRECTIONS, metric_description
    from lossbench.metrics.registry import extractor_key

    assert "trained on synthetic images only" in metric_description("cas")
    assert "minus one trained on real only" in metric_description("utility_gain")
    assert "pixel space" in metric_description("authenticity_pixel")
    assert "the FID extractor's space" in metric_description(extractor_key("authenticity_feat", "tiny"))
    assert metric_description("fid") == "Fréchet distance of extractor features (torch-fidelity)"
    assert metric_description("not-a-metric") == ""
    texts = [metric_description(k) for k in DIRECTIONS]
    assert all(texts) and len(set(texts)) == len(texts)  # no two result keys read the same


def test_registry_names_aliases_and_directions():
    from lossbench.metrics import (
        ALIASES,
        DIRECTIONS,
        available_metrics,
        get_metric,
        metric_key,
        resolve_metrics,
    )

    assert available_metrics() == ["fid", "kid", "lpips", "msssim", "pr", "dc", "copy", "swd", "utility"]
    assert dict(DIRECTIONS) == {
        "fid": "min",
        "kid": "min",
        "lpips_ff": "max",
        "msssim_ff": "min",
        "precision": "max",
        "recall": "max",
        "density": "max",
        "coverage": "max",
        "authenticity_feat": "max",
        "authenticity_pixel": "max",
        "swd": "min",
        "utility_gain": "max",
        "cas": "max",
    }
    assert dict(ALIASES) == {
        "lpips": "lpips_ff",
        "msssim": "msssim_ff",
        "pr": "precision",
        "dc": "density",
        "density_coverage": "density",
        "copy": "authenticity_feat",
        "utility": "utility_gain",
    }
    assert (metric_key("lpips"), metric_key("fid"), metric_key("kid_std")) == ("lpips_ff", "fid", "kid_std")
    assert resolve_metrics(["recall", "lpips_ff", "precision", "fid", "pr", "lpips"]) == (
        "pr",
        "lpips",
        "fid",
    )
    assert get_metric("kid").auxiliary == ("kid_std", "kid_se") and "kid_std" not in DIRECTIONS
    with pytest.raises(TypeError):
        DIRECTIONS["fid"] = "max"  # read-only


@pytest.mark.parametrize("name", ["fdi", "kid_std"])
def test_unknown_metric_is_a_one_line_error_listing_the_choices(name):
    from lossbench.metrics import resolve_metrics

    with pytest.raises(ConfigError) as e:
        resolve_metrics(["fid", name])
    assert str(e.value) == (
        f"unknown metric {name!r} (choose from fid, kid, lpips, msssim, pr, dc, copy, swd, utility)"
    )


@pytest.mark.parametrize(
    "config, expected",
    [
        (EvalConfig(), ["inception-v3-compat", "alexnet"]),
        (EvalConfig(random_weights=True), ["inception-v3-compat"]),
        (EvalConfig(metrics=("kid", "fid", "msssim", "swd")), ["inception-v3-compat"]),
        (EvalConfig(metrics=("pr", "fid"), prc_extractor="inception-v3-compat"), ["inception-v3-compat"]),
        (EvalConfig(metrics=("recall", "lpips")), ["vgg16", "alexnet"]),
        (EvalConfig(metrics=("fid", "pr", "lpips"), feature_extractor=TINY, prc_extractor=TINY), ["alexnet"]),
    ],
)
def test_required_weights_follow_the_metrics_and_the_config(config, expected):
    from lossbench.metrics import required_weights
    from lossbench.weights import WEIGHTS

    assert required_weights(config) == expected and set(expected) <= set(WEIGHTS)


def test_from_lossbench_metrics_import_evaluate_gives_the_function():
    from lossbench.metrics import EvalResult as Result
    from lossbench.metrics import evaluate as evaluate_fn

    assert callable(evaluate_fn) and evaluate_fn is evaluate and Result is EvalResult
    assert evaluate_fn.__name__ == "evaluate"


def test_importing_lossbench_metrics_loads_no_heavy_library():
    import subprocess
    import sys

    code = (
        "import sys, lossbench.metrics as m, lossbench.metrics.registry\n"
        "assert m.DIRECTIONS['fid'] == 'min' and m.available_metrics()\n"
        "heavy = {'torch', 'torch_fidelity', 'lpips', 'numpy'}\n"
        "print(sorted({k.split('.')[0] for k in sys.modules} & heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_metric_registered_at_run_time_is_computed_by_evaluate(phantom, tmp_path, monkeypatch):
    from lossbench.errors import PluginError
    from lossbench.metrics import DIRECTIONS, register_metric, registry

    monkeypatch.setattr(registry, "_REGISTERED", dict(registry._REGISTERED))

    @register_metric("dark", keys={"dark_share": "max"}, aliases=("darkness",))
    def dark(state):
        return {"dark_share": (state.fakes < 128).double().mean().item()}

    assert DIRECTIONS["dark_share"] == "max" and registry.origin("darkness") == f"registered by {__name__}"
    fakes = torch.zeros(4, 1, R, R, dtype=torch.uint8)
    fakes[:1] = 255
    result = evaluate(fakes, phantom, tiny_config(tmp_path, metrics=("darkness",)))
    assert result.metrics == {"dark_share": 0.75} and "dark" in result.timings

    with pytest.raises(ValueError, match="metric 'fid2': 'fid' is already taken by metric 'fid'"):
        register_metric("fid2", keys={"fid": "min"}, compute=dark)
    register_metric("leaky", keys={"leaky": "min"}, compute=lambda state: {"leaky": 0.0, "extra": 1.0})
    with pytest.raises(PluginError, match=r"metric 'leaky' returned undeclared keys \['extra'\]"):
        evaluate(fakes, phantom, tiny_config(tmp_path, metrics=("leaky",)))
    with pytest.raises(ValueError, match="directions must be 'min' or 'max'"):
        register_metric("bad", keys={"bad": "lower"}, compute=dark)


def test_settings_hold_what_numbers_depend_on_and_provenance_the_cache_hits(phantom, tmp_path):
    config = tiny_config(tmp_path, metrics=("fid", "pr", "msssim"))
    first, second = (evaluate(phantom.images[:40], phantom, config) for _ in range(2))
    assert first.provenance == {"fid_cache": "miss", "prc_cache": "miss", "msssim_rr_cache": "miss"}
    assert set(second.provenance.values()) == {"hit"}
    assert first.settings == second.settings and first.metrics == second.metrics
    assert not any("cache" in key for key in first.settings)


def test_the_metric_table_in_docs_matches_the_registry():
    """docs/metrics.md's table is written by hand: every built-in metric has its row, with its
    primary key among the result keys and the direction the registry declares (issue #27)."""
    import re

    from lossbench.metrics import DIRECTIONS, available_metrics, get_metric

    doc = (Path(__file__).resolve().parents[1] / "docs" / "metrics.md").read_text()
    rows = {}
    for line in doc.splitlines():
        if m := re.match(r"\| `(\w+)` \| (.+?) \| (\w+)", line):
            rows[m.group(1)] = (m.group(2), m.group(3))
    assert set(rows) == set(available_metrics())
    for name, (keys, better) in rows.items():
        primary = next(iter(get_metric(name).keys))
        assert f"`{primary}`" in keys, name
        assert better == {"min": "lower", "max": "higher"}[DIRECTIONS[primary]], name


def test_workers_missing_a_cache_entry_at_once_compute_it_once(tmp_path):
    """Two workers missing the same entry together used to both compute it (the utility judge's real
    arm: ~15 min each); the lock beside the entry makes the second wait and read the first's."""
    import threading
    import time

    from lossbench.metrics import cache

    calls = []

    def compute():
        calls.append(1)
        time.sleep(0.5)
        return torch.arange(3.0)

    results = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.cached(tmp_path, {"k": 1}, compute)))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert sorted(hit for _, hit in results) == [False, True]
    assert all(torch.equal(value, torch.arange(3.0)) for value, _ in results)
