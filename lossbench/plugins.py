"""Entry-point plugins: the loading rules shared by the loss and metric registries.

Each entry point of a group is loaded once. A plugin that fails to import, is not the kind of object
the group expects, or claims a name that is already taken (by a built-in or another plugin) never
breaks the others: its name maps to an error message instead, which the registry raises as a
PluginError when the name is asked for. A taken name is not resolved silently either way, so a name
in a results table always means one thing.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Plugins:
    """What one entry-point group provides."""

    objects: dict[str, Any]  # name -> the loaded object
    origins: dict[str, str]  # name -> "plugin entry point 'x' (pkg.mod:X) of distribution my-dist 1.0"
    errors: dict[str, str]  # name -> why it cannot be used


def describe(ep: importlib.metadata.EntryPoint) -> str:
    """The entry point and its distribution, for messages."""
    dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else "an unknown distribution"
    return f"plugin entry point {ep.name!r} ({ep.value}) of distribution {dist}"


def load_plugins(
    group: str, kind: str, builtin: Collection[str], check: Callable[[str, Any, str], str | None]
) -> Plugins:
    """Load the entry points of `group`; `kind` names what they provide ("loss", "metric").

    `check(name, obj, where)` returns why `obj` cannot serve as `name` (None when it can) and may
    finish it (e.g. set its name). Names in `builtin` cannot be claimed by a plugin.
    """
    objects: dict[str, Any] = {}
    origins: dict[str, str] = {}
    errors: dict[str, str] = {}
    for ep in importlib.metadata.entry_points(group=group):
        where = describe(ep)
        if ep.name in builtin or ep.name in objects or ep.name in errors:
            other = f"the built-in {kind}" if ep.name in builtin else origins.get(ep.name, "another plugin")
            errors[ep.name] = (
                f"{kind} name {ep.name!r} is claimed by {where} and by {other}; "
                "uninstall one of them or rename the entry point"
            )
            objects.pop(ep.name, None)
            continue
        try:
            obj = ep.load()
        except Exception as e:  # a broken plugin must not break the others
            errors[ep.name] = f"{where} failed to import: {type(e).__name__}: {e}"
            continue
        problem = check(ep.name, obj, where)
        if problem:
            errors[ep.name] = problem
            continue
        objects[ep.name] = obj
        origins[ep.name] = where
    return Plugins(objects, origins, errors)
