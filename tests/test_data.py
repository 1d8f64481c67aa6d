"""The data layer: loaders (BUSI, image folders, phantom), resize/crop, fingerprints, bad input."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_one_line_error
from PIL import Image

from lossbench.cli import main
from lossbench.data import ImageDataset, fingerprint, load_dataset, register_dataset
from lossbench.data.busi import BUSI_ENV
from lossbench.data.images import decode, square_resize
from lossbench.data.phantom import PHANTOM_CLASSES, PHANTOM_COUNTS, phantom, phantom_labels
from lossbench.errors import ConfigError, DataError

RNG = np.random.default_rng(0)


def _png(path: Path, size=(40, 30), value: int | None = None, mode: str = "RGB") -> Path:
    """Write a random (or constant) image of `size` (width, height) to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    data = (
        np.full(shape, value, np.uint8) if value is not None else RNG.integers(0, 256, shape, dtype=np.uint8)
    )
    Image.fromarray(data, mode).save(path)
    return path


def _fake_busi(root: Path) -> Path:
    """A small BUSI-layout tree: 3/2/1 images, each with masks (some with _mask_1, _mask_2)."""
    top = root / "Dataset_BUSI_with_GT"
    for name, n in (("benign", 3), ("malignant", 2), ("normal", 1)):
        for i in range(1, n + 1):
            _png(top / name / f"{name} ({i}).png")
            _png(top / name / f"{name} ({i})_mask.png", value=255)
        _png(top / name / f"{name} (1)_mask_1.png", value=255)
    _png(top / "benign" / "benign (1)_mask_2.png", value=255)
    return root


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    assert_one_line_error(err)
    for needle in needles:
        assert needle in err


# --- BUSI -------------------------------------------------------------------------------------


def test_busi_real_counts_and_no_masks(busi_dir, capsys):
    code, out, _ = _run(capsys, "data", "inspect", str(busi_dir), "--resolution", "32")
    assert code == 0
    counts = {line.split()[0]: int(line.split()[1]) for line in out.splitlines()[5:8]}
    assert counts == {"benign": 437, "malignant": 210, "normal": 133}
    assert "798 x BUSI segmentation mask" in out
    data = load_dataset(str(busi_dir / "Dataset_BUSI_with_GT"), 32)
    assert data.images.shape == (780, 1, 32, 32) and data.images.dtype == torch.uint8
    assert all("_mask" in Path(p).name for p, _ in data.skipped) and len(data.skipped) == 798


def test_busi_masks_excluded_and_layouts(tmp_path):
    root = _fake_busi(tmp_path)
    _png(root / "Dataset_BUSI_with_GT" / "benign" / "masked (1).png")  # not a mask: '_mask' must end the stem
    data = load_dataset(str(root), 32)
    assert data.class_names == ("benign", "malignant", "normal")
    assert torch.bincount(data.labels).tolist() == [4, 2, 1]
    skipped = sorted(Path(p).name for p, _ in data.skipped)
    assert len(skipped) == 6 + 3 + 1 and all("_mask" in s for s in skipped)
    assert data.source == f"busi:{(root / 'Dataset_BUSI_with_GT').resolve()}"
    # the BUSI folder itself, a class folder of it, and a renamed copy give the same images
    assert load_dataset(str(root / "Dataset_BUSI_with_GT"), 32).fingerprint == data.fingerprint
    assert len(load_dataset(str(root / "Dataset_BUSI_with_GT" / "malignant"), 32)) == 2
    renamed = (root / "Dataset_BUSI_with_GT").rename(tmp_path / "my-busi")
    assert load_dataset(str(renamed), 32).fingerprint == data.fingerprint


def test_class_filter_reindexes_labels(tmp_path):
    root = _fake_busi(tmp_path)
    data = load_dataset(str(root), 32, classes=["normal", "benign"])
    assert data.class_names == ("benign", "normal")
    assert data.labels.tolist() == [0, 0, 0, 1]
    full = load_dataset(str(root), 32)
    assert torch.equal(data.images, full.images[full.labels != 1])


def test_loaders_by_prefix_and_busi_discovery(tmp_path, monkeypatch):
    root = _fake_busi(tmp_path)
    data = load_dataset(str(root), 32)
    assert load_dataset(f"busi:{root}", 32).fingerprint == data.fingerprint
    assert load_dataset(f"folder:{root / 'Dataset_BUSI_with_GT'}", 32).source.startswith("folder:")
    monkeypatch.setenv(BUSI_ENV, str(root))
    assert load_dataset("busi", 32).fingerprint == data.fingerprint
    monkeypatch.setenv(BUSI_ENV, str(tmp_path / "absent"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="BUSI not found in .*absent"):
        load_dataset("busi", 32)

    def constant(spec: str, resolution: int, classes) -> ImageDataset:
        n = int(spec.partition(":")[2] or 2)
        images, labels = torch.zeros(n, 1, resolution, resolution, dtype=torch.uint8), torch.zeros(n).long()
        return ImageDataset(images, labels, ("all",), fingerprint(images, labels, ["all"]), spec)

    register_dataset("constant", constant)
    assert len(load_dataset("constant:3", 32)) == 3 and load_dataset("constant", 64).resolution == 64


# --- image folders ------------------------------------------------------------------------------


def test_folder_classes_recursion_and_formats(tmp_path):
    root = tmp_path / "scans"
    _png(root / "a" / "x.png")
    _png(root / "a" / "deep" / "er" / "y.JPG")
    for suffix in ("bmp", "tif", "tiff", "jpeg"):
        _png(root / "b" / f"z.{suffix}")
    _png(root / "loose.png")
    (root / "b" / "notes.txt").write_text("not an image")
    _png(root / "b" / ".hidden.png")
    _png(root / ".cache" / "c.png")
    data = load_dataset(str(root), 32)
    assert data.class_names == ("a", "b", "scans")
    assert torch.bincount(data.labels).tolist() == [2, 4, 1]
    assert data.skipped == [(str(root / "b" / "notes.txt"), "not an image file (.txt)")]
    assert data.source == f"folder:{root.resolve()}"
    assert data.sizes.tolist() == [[40, 30]] * 7


# --- decoding, resize and crop -------------------------------------------------------------------


def test_resize_crop_matches_pil_resize_then_crop(tmp_path):
    # 200x100 -> shorter side 32: 64x32 exactly, centre crop starts at x = 16 (no rounding anywhere)
    path = _png(tmp_path / "wide.png", size=(200, 100))
    got, size = decode(path, 32)
    gray = Image.open(path).convert("L").resize((64, 32), Image.Resampling.LANCZOS)
    expected = np.asarray(gray)[:, 16:48]
    assert size == (200, 100) and got.shape == (32, 32)
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_centre_crop_keeps_centre_and_orientation(tmp_path):
    # wide: white centre square, black sides -> all white after the crop
    wide = np.zeros((100, 300), np.uint8)
    wide[:, 100:200] = 255
    Image.fromarray(wide).save(tmp_path / "wide.png")
    got, _ = decode(tmp_path / "wide.png", 32)
    assert got[:, 4:-4].min() == 255 and got.mean() > 250  # Lanczos rings over ~3 px at the edges
    # tall: dark top half of the centre square, bright bottom half -> rows stay in order
    tall = np.zeros((300, 100), np.uint8)
    tall[150:] = 200
    Image.fromarray(tall).save(tmp_path / "tall.png")
    got, _ = decode(tmp_path / "tall.png", 32)
    assert got[:12].max() <= 1 and got[20:].min() >= 199 and got[:16].mean() < got[16:].mean()


def test_jpeg_reduced_decoding_matches_full_decode(tmp_path):
    yy, xx = np.mgrid[0:512, 0:384]
    smooth = (127 + 100 * np.sin(xx / 40) * np.cos(yy / 55)).astype(np.uint8)
    Image.fromarray(smooth).save(tmp_path / "big.jpg", quality=95)
    got, size = decode(tmp_path / "big.jpg", 32)  # decoded at 1/8 scale (48x64), then resized
    full = np.asarray(square_resize(Image.open(tmp_path / "big.jpg").convert("L"), 32))  # full-size decode
    assert size == (384, 512) and np.abs(got.astype(int) - full.astype(int)).mean() < 1


def test_grayscale_conversion(tmp_path):
    Image.new("RGB", (40, 40), (200, 100, 50)).save(tmp_path / "rgb.png")
    assert np.all(decode(tmp_path / "rgb.png", 32)[0] == round(200 * 0.299 + 100 * 0.587 + 50 * 0.114))
    Image.fromarray(np.full((40, 40), 257 * 100, np.uint16)).save(tmp_path / "deep.png")
    assert np.all(decode(tmp_path / "deep.png", 32)[0] == 100)


def test_truncated_image_is_skipped_with_warning(tmp_path, caplog, capsys):
    root = tmp_path / "imgs"
    for i in range(3):
        _png(root / "c" / f"{i}.png", size=(64, 64))
    bad = root / "c" / "1.png"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    with caplog.at_level(logging.WARNING, logger="lossbench.data"):
        data = load_dataset(str(root), 32)
    assert len(data) == 2
    assert [p for p, _ in data.skipped] == [str(bad)] and "cannot decode" in data.skipped[0][1]
    assert str(bad) in caplog.text
    code, out, _ = _run(capsys, "data", "inspect", str(root), "-r", "32")
    assert code == 0 and str(bad) in out and "cannot decode" in out
    # with every image corrupt there is nothing to load: a one-line error naming a file
    for i in (0, 2):
        (root / "c" / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    code, _, err = _run(capsys, "data", "inspect", str(root), "-r", "32")
    _assert_one_line_error(code, err, "none of the 3 images", "cannot decode", str(root / "c"))


# --- fingerprint ------------------------------------------------------------------------------


def test_fingerprint_covers_content():
    images = torch.randint(0, 256, (4, 1, 32, 32), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 0, 1])
    base = fingerprint(images, labels, ("a", "b"))
    assert base == fingerprint(images.clone(), labels.clone(), ["a", "b"])
    changed = images.clone()
    changed[2, 0, 5, 5] ^= 1
    variants = {
        fingerprint(changed, labels, ("a", "b")),
        fingerprint(images, torch.tensor([0, 1, 1, 1]), ("a", "b")),
        fingerprint(images, labels, ("a", "c")),
        fingerprint(images[:3], labels[:3], ("a", "b")),
    }
    assert base not in variants and len(variants) == 4
    assert len(base) == 64 and int(base, 16) >= 0


# --- phantom ------------------------------------------------------------------------------------


def test_phantom_labels_follow_busi_proportions():
    labels = phantom_labels(780)
    assert np.bincount(labels).tolist() == list(PHANTOM_COUNTS)
    assert np.array_equal(phantom_labels(100), labels[:100])
    counts = np.bincount(phantom_labels(100), minlength=3)
    assert np.all(np.abs(counts - 100 * np.array(PHANTOM_COUNTS) / 780) < 1)


def test_phantom_deterministic_and_prefix_stable():
    a, la = phantom(12, 32, seed=5)
    b, lb = phantom(12, 32, seed=5)
    assert torch.equal(a, b) and torch.equal(la, lb)
    c, _ = phantom(5, 32, seed=5, chunk_pixels=2 * 32 * 32)  # other count, other chunking
    assert torch.equal(c, a[:5])
    d, _ = phantom(12, 32, seed=6)
    assert not torch.equal(a, d)
    spec = load_dataset("phantom:12", 32)
    assert spec.fingerprint == load_dataset("phantom:12", 32).fingerprint
    assert spec.class_names == PHANTOM_CLASSES and torch.equal(spec.images, phantom(12, 32, 0)[0])


def test_phantom_class_structure():
    """Lesion classes hold a dark region mid-depth; malignant ones cast a shadow, benign ones do not."""
    images, labels = phantom(60, 64, seed=0)
    x = images.float()
    band = F.avg_pool2d(x, 8)[:, 0, 2:5]  # 8x8 blocks, rows 16..40 (where lesions sit)
    darkest = band.flatten(1).min(1)
    by_class = [darkest.values[labels == c].median() for c in range(3)]
    assert by_class[0] < 0.5 * by_class[2] and by_class[1] < 0.5 * by_class[2]
    posterior = []
    for i in range(len(x)):
        row, col = divmod(int(darkest.indices[i]), band.shape[-1])
        below = x[i, 0, (row + 3) * 8 : 56]  # from the block under the darkest one to the chest wall
        posterior.append(float(below[:, col * 8 : col * 8 + 8].mean() / below.mean()))
    posterior = torch.tensor(posterior)
    assert posterior[labels == 1].median() < 0.7 < 0.85 < posterior[labels == 0].median()


def test_phantom_cli_writes_loadable_pngs(tmp_path, capsys):
    out = tmp_path / "ph"
    code, text, _ = _run(capsys, "data", "phantom", str(out), "--n", "9", "--resolution", "32", "--seed", "2")
    assert code == 0 and "wrote 9 images" in text
    assert (tmp_path / "ph-grid.png").is_file()
    images, labels = phantom(9, 32, seed=2)
    data = load_dataset(str(out), 32)
    order = torch.argsort(labels, stable=True)  # the folder lists class by class, by index
    assert torch.equal(data.images, images[order]) and torch.equal(data.labels, labels[order])


# --- bad input ------------------------------------------------------------------------------------


def test_bad_input_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("x")
    _png(tmp_path / "one" / "c" / "a.png")
    cases = [
        (["inspect", str(tmp_path / "missing")], ["does not exist", "missing"]),
        (["inspect", str(tmp_path / "one" / "c" / "a.png")], ["is a file"]),
        (["inspect", str(tmp_path / "empty")], ["is empty", "empty"]),
        (["inspect", str(tmp_path / "texts")], ["no images found", "texts"]),
        (["inspect", "phantom", "--resolution", "100"], ["resolution 100"]),
        (["inspect", "phantom", "--resolution", "1024"], ["resolution 1024"]),
        (["inspect", "phantom:10", "--resolution", "16"], ["resolution 16"]),
        (
            ["inspect", "phantom", "--classes", "benign,cyst"],
            ["unknown class 'cyst'", "benign, malignant, normal"],
        ),
        (["inspect", str(tmp_path / "one"), "--classes", "d"], ["unknown class 'd'", "known classes: c"]),
        (["inspect", "phantom:ten"], ["malformed phantom spec"]),
        (["inspect", "phantom:0"], ["malformed phantom spec"]),
        (["phantom", str(tmp_path / "one"), "--n", "2", "-r", "32"], ["not an empty folder"]),
        (["phantom", str(tmp_path / "new"), "--n", "0", "-r", "32"], ["at least 1"]),
        (["phantom", str(tmp_path / "new"), "--n", "2", "-r", "48"], ["resolution 48"]),
    ]
    for argv, needles in cases:
        code, _, err = _run(capsys, "data", *argv)
        _assert_one_line_error(code, err, *needles)


def test_bad_input_api_raises_typed_errors(tmp_path):
    with pytest.raises(ConfigError):
        load_dataset("phantom:4", 96)
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(str(tmp_path / "nope"), 32)
    with pytest.raises(DataError, match="no class selected"):
        load_dataset("phantom:4", 32, classes=())
