"""Listing the images of a folder by class: every first-level subfolder is a class.

Subfolders are searched recursively; image files lying directly in the root form one more class
named after the root folder. Hidden files and folders (names starting with '.') are ignored; any
other file that is not an image (by suffix) is reported as skipped. Files are sorted by their
path relative to the root, so the order is the same on every filesystem.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lossbench.data.images import IMAGE_SUFFIXES
from lossbench.errors import DataError


@dataclass
class FileList:
    """Image files by class (class names sorted) under `root`, and the files left out with the reason."""

    root: Path
    files: dict[str, list[Path]]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _visible_files(folder: Path) -> list[Path]:
    """Every file under `folder`, recursively, except hidden ones and those in hidden folders."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(s.startswith(".") for s in p.relative_to(folder).parts)
    )


def scan_folder(root: Path, exclude: Callable[[Path], str | None] = lambda path: None) -> FileList:
    """The images under `root` by class; `exclude(path)` returns a reason to leave an image out, or None.

    Raises DataError when `root` is empty or holds no image.
    """
    entries = [p for p in root.iterdir() if not p.name.startswith(".")]
    if not entries:
        raise DataError(f"folder {root} is empty: put images in it, or one subfolder of images per class")
    classes = {p.name: _visible_files(p) for p in entries if p.is_dir()}
    loose = sorted(p for p in entries if p.is_file())
    if loose:
        if root.name in classes:
            raise DataError(
                f"folder {root} holds both loose images and a subfolder named {root.name!r}; "
                "move the loose images into a subfolder of their own"
            )
        classes[root.name] = loose
    found = FileList(root, files={})
    for name in sorted(classes):
        images = []
        for path in classes[name]:
            if path.suffix.lower() in IMAGE_SUFFIXES:
                reason = exclude(path)
            else:
                reason = f"not an image file ({path.suffix or 'no suffix'})"
            if reason:
                found.skipped.append((str(path), reason))
            else:
                images.append(path)
        if images:
            found.files[name] = images
    if not found.files:
        raise DataError(
            f"no images found in {root} (looked for {', '.join(IMAGE_SUFFIXES)}; "
            f"{len(found.skipped)} other files skipped)"
        )
    return found
