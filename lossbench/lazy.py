"""Modules imported on first use, so that validation and `--help` run before torch is loaded."""

from __future__ import annotations

import importlib
from typing import Any


class LazyModule:
    """Stands for the module `name`, imported on the first attribute access (then a dict look-up).

    Used at the top of modules whose names must be importable without torch, e.g. the losses, whose
    hyper-parameters are checked before any training starts: `torch = LazyModule("torch")`.
    Annotations need no import (`from __future__ import annotations`)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"
