"""Decoding image files into square grayscale uint8 arrays, in parallel.

Conventions: every image becomes one 8-bit gray channel (PIL's ITU-R 601-2 luma for colour images,
16-bit images scaled by 1/257); the shorter side is resized to R with an antialiasing Lanczos filter
and the centre R×R square is kept. Resizing and cropping are done in one step (PIL's `resize(box=)`),
the exact continuous form of "resize the shorter side to R, then centre-crop": no intermediate size
is rounded to whole pixels, so the crop is centred to sub-pixel accuracy.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

# What PIL raises for a file that is not a readable image (truncated, corrupt, unknown format).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def to_gray(image: Image.Image) -> Image.Image:
    """`image` as 8-bit grayscale ('L')."""
    if image.mode.startswith("I;16"):
        return Image.fromarray((np.asarray(image, dtype=np.float32) / 257.0).round().astype(np.uint8))
    return image if image.mode == "L" else image.convert("L")


def square_resize(image: Image.Image, resolution: int) -> Image.Image:
    """Resize the shorter side to `resolution` (Lanczos, antialiased) and keep the centre square."""
    w, h = image.size
    s = min(w, h)
    box = ((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2)
    return image.resize((resolution, resolution), Image.Resampling.LANCZOS, box=box)


def decode(path: Path, resolution: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The image at `path` as an R×R uint8 array, and its original (width, height).

    Raises one of DECODE_ERRORS when the file is truncated, corrupt or not an image.
    """
    with Image.open(path) as image:
        size = image.size
        image.draft("L", (resolution, resolution))  # JPEG only: decode at 1/2, 1/4 or 1/8 scale if >= R
        return np.asarray(square_resize(to_gray(image), resolution)), size


def decode_all(
    paths: Sequence[Path], resolution: int, workers: int | None = None
) -> list[tuple[np.ndarray, tuple[int, int]] | str]:
    """Decode `paths` in a thread pool; per file, (array, original size) or the reason it failed."""

    def one(path: Path) -> tuple[np.ndarray, tuple[int, int]] | str:
        try:
            return decode(path, resolution)
        except DECODE_ERRORS as e:
            return f"cannot decode ({type(e).__name__}: {e})"

    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, paths))
