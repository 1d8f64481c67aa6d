"""`lossbench data inspect|phantom`: what a dataset spec loads to, and writing phantom images."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from lossbench.cli import options
from lossbench.config import DataConfig, check_resolution, parse_name_list
from lossbench.errors import DataError
from lossbench.files import atomic_write, check_file

if TYPE_CHECKING:  # torch and the data package load when a command runs, not for --help
    import torch

    from lossbench.data import ImageDataset
    from lossbench.data.split import Split

data_app = typer.Typer(help="Datasets: inspect a spec, write phantom images.", no_args_is_help=True)

MAX_LISTED = 5  # skipped files listed per reason


def _range(values: torch.Tensor) -> str:
    lo, hi = int(values.min()), int(values.max())
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _report(data: ImageDataset) -> list[str]:
    """Lines describing `data`: source, fingerprint, per-class counts and sizes, skipped files."""
    lines = [
        f"source       {data.source}",
        f"resolution   {data.resolution}",
        f"fingerprint  {data.fingerprint}",
        f"images       {len(data)}",
        f"{'class':<12} {'images':>7}  {'width':>9}  {'height':>9}   (original sizes, px)",
    ]
    for i, name in enumerate(data.class_names):
        mask = data.labels == i
        w = h = "-"
        if data.sizes is not None and mask.any():
            w, h = _range(data.sizes[mask, 0]), _range(data.sizes[mask, 1])
        lines.append(f"{name:<12} {int(mask.sum()):>7}  {w:>9}  {h:>9}")
    by_reason: dict[str, list[str]] = defaultdict(list)
    for path, reason in data.skipped:
        by_reason[reason].append(path)
    lines.append(f"skipped      {len(data.skipped)} files")
    for reason, paths in by_reason.items():
        lines.append(f"  {len(paths)} x {reason}:")
        lines += [f"    {p}" for p in paths[:MAX_LISTED]]
        if len(paths) > MAX_LISTED:
            lines.append(f"    ... and {len(paths) - MAX_LISTED} more")
    return lines


def _split_report(split: Split) -> list[str]:
    """Lines describing a held-out split: settings, both parts' fingerprints and per-class counts,
    and the same-lesion groups found."""
    record = split.record()
    assert split.heldout is not None
    lines = [
        f"holdout      {split.fraction:g} (split seed {split.seed})",
        f"{'class':<12} {'train':>7} {'held-out':>9}",
    ]
    for name in split.train.class_names:
        lines.append(f"{name:<12} {record['train_counts'][name]:>7} {record['heldout_counts'][name]:>9}")
    groups = split.duplicate_groups()
    lines += [
        f"train        {len(split.train)} images, fingerprint {split.train.fingerprint}",
        f"held-out     {len(split.heldout)} images, fingerprint {split.heldout.fingerprint}",
        f"same-lesion groups  {len(groups)} ({record['grouped_images']} images, largest "
        f"{record['largest_group']}; each kept in one part; {record['group_rule']})",
    ]
    mixed = split.mixed_class_groups()
    if mixed:
        lines.append(f"  {len(mixed)} groups across classes, kept in the train part (never held out):")
    lines += ["    " + ", ".join(split.name(i) for i in g) for g in mixed[:MAX_LISTED]]
    if len(mixed) > MAX_LISTED:
        lines.append(f"    ... and {len(mixed) - MAX_LISTED} more")
    return lines


@data_app.command("inspect")
def inspect(
    spec: str = typer.Argument(
        ..., help="'phantom', 'phantom:N', 'busi', a BUSI folder or an image folder (docs/data.md)."
    ),
    resolution: int = typer.Option(
        DataConfig.resolution, "--resolution", "-r", help="Side R of the square images."
    ),
    classes: str | None = options.CLASSES,
    holdout: float | None = options.HOLDOUT,
    split_seed: int | None = options.SPLIT_SEED,
    pairs: Path | None = typer.Option(
        None,
        "--pairs",
        help="With --holdout: write a PNG of the train/held-out pairs closest to being grouped "
        "(each pair side by side, its file names and correlations above it), to check by eye that "
        "no lesion straddles the split.",
    ),
    n_pairs: int = typer.Option(24, "--n-pairs", min=1, help="Pairs in the --pairs PNG."),
) -> None:
    """Load SPEC and print per-class counts, original size ranges, the files skipped and why, and
    with --holdout the split and its same-lesion groups."""
    from lossbench.data.split import load_split

    if pairs is not None:
        if not holdout:
            raise DataError("--pairs shows pairs across a split: give --holdout too")
        pairs = check_file(pairs, "--pairs")
    selected = parse_name_list(classes, "class") if classes is not None else None
    config = DataConfig(spec, resolution, selected, holdout or 0.0, split_seed or 0)
    split = load_split(config)
    for line in _report(split.data) + (_split_report(split) if split.heldout is not None else []):
        typer.echo(line)
    if pairs is not None:
        _write_pairs(split, n_pairs, pairs)
        typer.echo(f"nearest pairs across the split: {pairs}")


def _write_pairs(split: Split, n: int, out: Path) -> None:
    """A PNG of the `n` train/held-out pairs closest to being grouped (lossbench.data.split)."""
    from PIL import Image, ImageDraw

    from lossbench.data.split import nearest_pairs_apart

    side, caption = split.data.resolution, 12
    found = nearest_pairs_apart(split, n)
    canvas = Image.new("L", (max(2 * side, 600), len(found) * (side + caption + 6)), 255)
    draw = ImageDraw.Draw(canvas)
    for k, (i, j, layout, texture) in enumerate(found):
        y = k * (side + caption + 6)
        text = (
            f"layout {layout:.2f} texture {texture:.2f}: {split.name(i)} (train) | {split.name(j)} (held out)"
        )
        draw.text((0, y), text, fill=0)
        for x, index in ((0, i), (side, j)):
            canvas.paste(Image.fromarray(split.data.images[index, 0].numpy()), (x, y + caption))
    try:
        with atomic_write(out) as f:
            canvas.save(f, format="PNG")
    except OSError as e:
        raise DataError(f"cannot write {out}: {e.strerror or e}") from None


@data_app.command("phantom")
def write_phantom(
    out: Path = typer.Argument(..., help="New (or empty) folder; images go to OUT/<class>/<index>.png."),
    n: int = typer.Option(780, "--n", help="Number of images."),
    resolution: int = typer.Option(
        DataConfig.resolution, "--resolution", "-r", help="Side R of the square images."
    ),
    seed: int = typer.Option(0, help="Seed; the same seed gives the same images."),
    grid: Path | None = typer.Option(
        None, help="Grid PNG, 8 images per class (default: OUT-grid.png beside OUT)."
    ),
) -> None:
    """Write N phantom images as PNGs, one subfolder per class, and a grid PNG to look at."""
    import torch
    import torchvision
    from PIL import Image

    from lossbench.data.phantom import PHANTOM_CLASSES, phantom

    resolution = check_resolution(resolution)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out} already exists and is not an empty folder; choose a new output folder")
    images, labels = phantom(n, resolution, seed)
    for name in PHANTOM_CLASSES:
        (out / name).mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(images, labels.tolist(), strict=True)):
        Image.fromarray(image[0].numpy()).save(out / PHANTOM_CLASSES[label] / f"{i:05d}.png")
    grid = grid or out.with_name(out.name + "-grid.png")
    rows = [images[labels == c][:8] for c in range(len(PHANTOM_CLASSES))]
    torchvision.utils.save_image(torch.cat(rows).float() / 255, grid, nrow=8, padding=2)
    counts = ", ".join(f"{int((labels == c).sum())} {name}" for c, name in enumerate(PHANTOM_CLASSES))
    typer.echo(f"wrote {n} images ({counts}) at {resolution}x{resolution} to {out}; grid: {grid}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.add_typer(data_app, name="data")
