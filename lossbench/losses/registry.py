"""The loss registry: in-tree losses by decorator, third-party losses by entry point.

In-tree losses register with `@register_loss("name")`. A third-party distribution exposes a loss
class (a subclass of `AdversarialLoss`, or any class with `n_critic`, `discriminator_loss`,
`generator_loss` and `params`) in the entry-point group `lossbench.losses`; the entry point's name
is the loss's name (and is set as the class's `name` attribute):

    [project.entry-points."lossbench.losses"]
    rahinge = "my_package.losses:RaHinge"

Plugins are loaded lazily, once, on the first look-up. A plugin that fails to import, is not a
loss class, or registers a name that is already taken (by a built-in or another plugin) never
breaks the other losses: asking for its name raises a PluginError naming the entry point and its
distribution, and `problems()` lists it for `lossbench losses list`. A taken name is not resolved
silently either way, so a name in a results table always means one formula.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from lossbench.errors import ConfigError, PluginError, UnknownLossError
from lossbench.losses.base import AdversarialLoss
from lossbench.plugins import Plugins, load_plugins

ENTRY_POINT_GROUP = "lossbench.losses"
_METHODS = ("discriminator_loss", "generator_loss", "params")

_BUILTIN: dict[str, type] = {}


def register_loss(name: str) -> Callable[[type], type]:
    """Class decorator: register an in-tree loss under `name` (also set as its `name` attribute)."""

    def decorate(cls: type) -> type:
        if name in _BUILTIN:
            raise ValueError(f"loss {name!r} is registered twice ({_BUILTIN[name]} and {cls})")
        cls.name = name
        _BUILTIN[name] = cls
        return cls

    return decorate


def _check(name: str, cls: object, where: str) -> str | None:
    """Why `cls` cannot be the loss `name` (None when it can; then its `name` is set)."""
    missing = [m for m in _METHODS if not callable(getattr(cls, m, None))]
    if not inspect.isclass(cls) or missing:
        what = f"lacks {', '.join(missing)}" if inspect.isclass(cls) else f"is a {type(cls).__name__}"
        return f"{where} is not a loss class ({what}); subclass lossbench.losses.AdversarialLoss"
    if vars(cls).get("name", name) != name:
        return f"{where} names a class whose name is {cls.name!r}; make the two agree"
    cls.name = name
    return None


@functools.cache
def _plugins() -> Plugins:
    return load_plugins(ENTRY_POINT_GROUP, "loss", _BUILTIN, _check)


def clear_plugin_cache() -> None:
    """Forget the loaded plugins; the next look-up reads the entry points again (for tests)."""
    _plugins.cache_clear()


def available_losses() -> list[str]:
    """Sorted names that `get_loss` accepts: the built-in losses and the working plugins."""
    plugins = _plugins()
    names = (set(_BUILTIN) | set(plugins.objects)) - set(plugins.errors)
    return sorted(names)


def problems() -> dict[str, str]:
    """Plugin problems by loss name (failed import, name clash, not a loss class); empty when none."""
    return dict(_plugins().errors)


def loss_class(name: str) -> type:
    """The class registered under `name`; PluginError or UnknownLossError when there is none."""
    plugins = _plugins()
    if name in plugins.errors:
        raise PluginError(plugins.errors[name])
    cls = _BUILTIN.get(name) or plugins.objects.get(name)
    if cls is None:
        raise UnknownLossError(f"unknown loss {name!r}; available: {', '.join(available_losses())}")
    return cls


def origin(name: str) -> str:
    """'built-in' or the plugin's entry point and distribution."""
    loss_class(name)
    return "built-in" if name in _BUILTIN else _plugins().origins[name]


def defaults(name: str) -> dict[str, Any]:
    """The hyper-parameters `get_loss(name, ...)` accepts, with their defaults (None if required)."""
    return {
        p.name: None if p.default is inspect.Parameter.empty else p.default
        for p in _keyword_parameters(loss_class(name))
    }


def _keyword_parameters(cls: type) -> list[inspect.Parameter]:
    sig = inspect.signature(cls)
    return [p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def get_loss(name: str, **params: Any) -> AdversarialLoss:
    """An instance of the loss `name` with hyper-parameters `params` (the rest take their defaults).

    Raises UnknownLossError for an unknown name, PluginError for a broken or clashing plugin, and
    ConfigError for a hyper-parameter the loss does not have or a value it rejects.
    """
    cls = loss_class(name)
    sig = inspect.signature(cls)
    if not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        valid = [p.name for p in _keyword_parameters(cls)]
        unknown = sorted(set(params) - set(valid))
        if unknown:
            raise ConfigError(
                f"loss {name!r} has no parameter {', '.join(unknown)}; "
                f"valid: {', '.join(valid) if valid else 'none'}"
            )
    try:
        loss = cls(**params)
    except ConfigError as e:
        raise ConfigError(f"loss {name!r}: {e}") from None
    except TypeError as e:  # e.g. a required parameter of a plugin loss that was not given
        raise ConfigError(f"loss {name!r} cannot be built from {params}: {e}") from None
    n_critic = getattr(loss, "n_critic", None)
    if not isinstance(n_critic, int) or n_critic < 1:
        raise PluginError(f"loss {name!r} has n_critic {n_critic!r}; it must be an integer >= 1")
    return loss
