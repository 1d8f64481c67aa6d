"""Pretrained weight files: published digests, verification before every load, and no file can run
code (torch-fidelity's extractors included). Tests use small generated files, never real weights."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
from pathlib import Path

import pytest
import torch
from conftest import assert_one_line_error
from PIL import Image
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from lossbench import weights
from lossbench.cli import main
from lossbench.data import load_dataset
from lossbench.errors import MissingWeightsError, WeightsDigestError
from lossbench.metrics.fidelity import extract_features, load_extractor

INCEPTION = weights.WEIGHTS["inception-v3-compat"].filename


def trust_file(monkeypatch: pytest.MonkeyPatch, key: str, path: Path) -> None:
    """Make the file at `path` the published file `key` for this test (its digest in the table)."""
    entry = weights.WEIGHTS[key]
    monkeypatch.setitem(weights.WEIGHTS, key, dataclasses.replace(entry, sha256=weights.file_sha256(path)))


class _WritesMarker:
    """Unpickling this runs code: it creates the file `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def crafted(folder: Path, filename: str, marker: Path) -> Path:
    """A weight file under the real name whose unpickling creates `marker`."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"features.0.weight": _WritesMarker(marker)}, folder / filename)
    return folder / filename


def test_every_known_file_has_its_full_published_sha256_matching_its_name():
    for entry in weights.WEIGHTS.values():
        assert len(entry.sha256) == 64 and int(entry.sha256, 16) >= 0
        prefix = entry.filename.rsplit("-", 1)[1].split(".")[0]
        assert len(prefix) == 8 and entry.sha256.startswith(prefix), entry.filename


def test_the_pickle_in_these_tests_does_run_code_when_unpickled(tmp_path):
    """The control: what torch-fidelity's own torch.load(weights_only=False) would do with it."""
    path = crafted(tmp_path, INCEPTION, tmp_path / "marker")
    torch.load(path, weights_only=False)
    assert (tmp_path / "marker").exists()


def test_digest_is_checked_once_per_path_size_and_mtime(tmp_path, monkeypatch):
    path = tmp_path / "w.pth"
    path.write_bytes(b"a" * 1000)
    calls = []
    real = hashlib.sha256
    monkeypatch.setattr(hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
    assert weights.file_sha256(path) == real(b"a" * 1000).hexdigest()
    assert weights.file_sha256(path) == real(b"a" * 1000).hexdigest() and len(calls) == 1
    path.write_bytes(b"b" * 1000)
    os.utime(path, ns=(1, 1))  # a new mtime: hashed again
    assert weights.file_sha256(path) == real(b"b" * 1000).hexdigest() and len(calls) == 2


def test_wrong_digest_is_one_line_naming_file_expected_and_found(tmp_path):
    path = tmp_path / INCEPTION
    path.write_bytes(b"not the inception weights")
    with pytest.raises(WeightsDigestError) as e:
        weights.find_weights("inception-v3-compat", tmp_path)
    message = str(e.value)
    assert str(path) in message and "\n" not in message
    assert weights.WEIGHTS["inception-v3-compat"].sha256 in message
    assert hashlib.sha256(b"not the inception weights").hexdigest() in message


@pytest.mark.parametrize("extractor", ["inception-v3-compat", "vgg16"])
@pytest.mark.parametrize("digest", ["published", "matching"])
def test_crafted_pickle_never_runs_through_load_extractor(tmp_path, monkeypatch, extractor, digest):
    """A wrong digest stops it before any load; with its digest in the table, unpickling refuses it."""
    key = extractor
    path = crafted(tmp_path / "w", weights.WEIGHTS[key].filename, tmp_path / "marker")
    if digest == "matching":
        trust_file(monkeypatch, key, path)
    with pytest.raises(WeightsDigestError, match="sha256" if digest == "published" else "plain state dict"):
        load_extractor(extractor, "fid" if extractor != "vgg16" else "prc", weights_dir=tmp_path / "w")
    assert not (tmp_path / "marker").exists()


@pytest.mark.parametrize("digest", ["published", "matching"])
def test_crafted_pickle_never_runs_through_lossbench_evaluate(tmp_path, monkeypatch, capsys, digest):
    fakes = tmp_path / "fakes"
    fakes.mkdir()
    for i, image in enumerate(load_dataset("phantom:12", 32).images):
        Image.fromarray(image[0].numpy()).save(fakes / f"{i:03d}.png")
    path = crafted(tmp_path / "w", INCEPTION, tmp_path / "marker")
    if digest == "matching":
        trust_file(monkeypatch, "inception-v3-compat", path)
    argv = ["evaluate", "--fake", str(fakes), "--data", "phantom:12", "--resolution", "32"]
    code = main([*argv, "--metrics", "fid", "--weights-dir", str(tmp_path / "w")])
    err = capsys.readouterr().err
    assert code == 2
    assert_one_line_error(err, INCEPTION)
    assert not (tmp_path / "marker").exists()


@pytest.mark.parametrize("digest", ["published", "matching"])
def test_crafted_pickle_is_refused_by_weights_import(tmp_path, monkeypatch, capsys, digest):
    path = crafted(tmp_path / "src", INCEPTION, tmp_path / "marker")
    if digest == "matching":
        trust_file(monkeypatch, "inception-v3-compat", path)
    code = main(["weights", "import", str(tmp_path / "src"), "--dest", str(tmp_path / "dest")])
    err = capsys.readouterr().err
    assert code == 2
    assert_one_line_error(err, INCEPTION)
    assert not (tmp_path / "marker").exists() and not (tmp_path / "dest" / INCEPTION).exists()


def test_import_copies_verified_files(tmp_path, monkeypatch):
    path = tmp_path / "src" / "sub" / weights.WEIGHTS["alexnet"].filename
    path.parent.mkdir(parents=True)
    torch.save({"features.0.weight": torch.ones(2)}, path)
    trust_file(monkeypatch, "alexnet", path)
    assert weights.import_weights(tmp_path / "src", tmp_path / "dest") == [tmp_path / "dest" / path.name]
    assert (tmp_path / "dest" / path.name).read_bytes() == path.read_bytes()


class _ShapesOnly(FeatureExtractorInceptionV3):
    """torch-fidelity's Inception without weights (meta device only): for its state dict's shapes."""

    def load_state_dict(self, *args, **kwargs):
        return None


def test_inception_is_torch_fidelitys_own_with_the_files_weights(tmp_path, monkeypatch):
    """A random Inception state dict (the real file's keys and shapes, ~95 MB) through lossbench's
    loader gives the very features torch-fidelity computes when it loads the same file itself."""
    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    with torch.device("meta"):
        shapes = _ShapesOnly("x", ["2048"], feature_extractor_weights_path=empty).state_dict()
    g = torch.Generator().manual_seed(0)
    state = {k: (torch.rand(v.shape, generator=g) * 0.1).to(v.dtype) for k, v in shapes.items()}
    path = tmp_path / INCEPTION
    torch.save(state, path)
    trust_file(monkeypatch, "inception-v3-compat", path)

    extractor = load_extractor("inception-v3-compat", weights_dir=tmp_path)
    images = load_dataset("phantom:2", 32).images
    ours = extract_features(extractor, images)
    reference = FeatureExtractorInceptionV3("ref", ["2048"], feature_extractor_weights_path=str(path)).eval()
    with torch.no_grad():
        theirs = reference(images.repeat(1, 3, 1, 1))[0]
    assert ours.shape == (2, 2048) and torch.equal(ours, theirs)
    assert not any(t.is_meta for t in [*extractor.module.parameters(), *extractor.module.buffers()])


def test_status_reports_a_wrong_digest(tmp_path, capsys):
    (tmp_path / INCEPTION).write_bytes(b"not the inception weights")
    assert main(["weights", "status", "--weights-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "wrong" in out and "missing" in out


def test_fetch_downloads_through_torch_hub_and_checks_the_digest(tmp_path, monkeypatch, capsys):
    """A file:// URL goes through torch.hub's real downloader and its sha256 check, offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    source = tmp_path / "served" / "alexnet-owt-7be5be79.pth"
    source.parent.mkdir()
    torch.save({"w": torch.zeros(2)}, source)
    entry = dataclasses.replace(weights.WEIGHTS["alexnet"], source=source.as_uri())
    monkeypatch.setitem(weights.WEIGHTS, "alexnet", dataclasses.replace(entry, sha256="0" * 64))
    dest = tmp_path / "dest"
    with pytest.raises(MissingWeightsError, match="invalid hash value"):  # torch.hub's own check
        weights.fetch_weights(["alexnet"], dest)
    assert not (dest / source.name).exists()  # a wrong digest keeps nothing
    assert main(["weights", "fetch", "--all", "--dest", str(dest)]) == 2  # offline
    captured = capsys.readouterr()
    missing = [line for line in captured.err.splitlines() if line.startswith("missing: ")]
    assert len(missing) == len(weights.WEIGHTS)  # each file, name and full URL
    assert "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION in captured.err
    trust_file(monkeypatch, "alexnet", source)
    monkeypatch.setitem(
        weights.WEIGHTS, "alexnet", dataclasses.replace(weights.WEIGHTS["alexnet"], source=source.as_uri())
    )
    fetched = weights.fetch_weights(["alexnet"], dest)
    assert [(e.key, p, new) for e, p, new in fetched] == [("alexnet", dest / source.name, True)]
    assert weights.file_sha256(dest / source.name) == weights.WEIGHTS["alexnet"].sha256
    assert weights.fetch_weights(["alexnet"], dest)[0][2] is False  # present: not downloaded again


def test_status_prints_missing_files_with_full_urls(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.delenv("LOSSBENCH_WEIGHTS", raising=False)
    assert main(["weights", "status"]) == 0
    out = capsys.readouterr().out
    for entry in weights.WEIGHTS.values():
        assert f"missing: {entry.filename}  {entry.source}\n" in out


def test_study_names_every_missing_file_at_once_and_points_to_the_demo(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.delenv("LOSSBENCH_WEIGHTS", raising=False)
    args = ["study", "--data", "phantom:8", "--root", str(tmp_path / "runs"), "--weights-dir", str(tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err, "3 pretrained weight file(s) missing")
    for key in ("vgg16", "inception-v3-compat", "alexnet"):
        assert weights.WEIGHTS[key].source in err
    assert "lossbench weights fetch" in err and "--preset tiny" in err
    assert not (tmp_path / "runs").exists()
