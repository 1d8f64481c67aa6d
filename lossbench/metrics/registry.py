"""The metric registry: each metric declared once, in-tree by `register_metric`, third-party by entry point.

A declaration (`Metric`) says everything the rest of lossbench needs to know without running it:
the name and aliases accepted in `EvalConfig.metrics`, the result keys with their better direction
("min": lower is better, "max": higher is better), the auxiliary keys reported beside them without
a direction (`kid_std`, `lpips_rr`, ...), the pretrained files it needs (keys of
`lossbench.weights.WEIGHTS`, a function of the EvalConfig), what the evaluation must provide
(`needs`: "heldout", a held-out real part; "conditional", a class-conditional generator; checked
before anything runs), and how it is computed.

`compute` and `prepare` are "module:function" strings imported on first use, or plain callables.
The strings keep this module, and everything that only reads names and directions (stats, report,
the CLI's help), free of torch, torch-fidelity and lpips. `compute(state)` receives the shared
`lossbench.metrics.evaluation.EvalState` and returns {result key: value}; it records the settings
its numbers depend on in `state.settings`. `prepare(state)`, optional, runs for every requested
metric before any fake image is generated: it loads networks, so a missing file fails fast.

Third-party metrics: `register_metric(...)` at import time, or a `Metric` object exposed in the
entry-point group `lossbench.metrics` (the entry point's name is the metric's name), loaded once on
first look-up with the loss registry's rules (`lossbench.plugins`): a broken or clashing plugin
never breaks the others and asking for it raises a PluginError.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lossbench.errors import ConfigError, PluginError
from lossbench.plugins import Plugins, load_plugins

if TYPE_CHECKING:
    from lossbench.config import EvalConfig

ENTRY_POINT_GROUP = "lossbench.metrics"
_DIRECTIONS = ("min", "max")
NEEDS = ("heldout", "conditional")


def _no_weights(config: EvalConfig) -> list[str]:
    return []


@dataclass(frozen=True)
class Metric:
    """One metric's declaration. `keys`: result key -> "min"/"max"; the first is its primary key."""

    name: str
    keys: Mapping[str, str]
    compute: str | Callable[[Any], dict[str, float]]
    aliases: tuple[str, ...] = ()
    auxiliary: tuple[str, ...] = ()
    weights: Callable[[EvalConfig], list[str]] = _no_weights
    prepare: str | Callable[[Any], None] | None = None
    description: str = ""
    key_descriptions: Mapping[str, str] = field(default_factory=dict)  # key -> what it alone measures
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # key -> (low, high) bounds
    extractor_roles: tuple[str, ...] = ()  # "fid"/"prc": feature spaces it computes in (extra extractors)
    needs: tuple[str, ...] = ()  # from NEEDS
    #: Keys it adds to the settings that are per-cell results in text form (per-class recall), not
    #: settings: they may differ between cells, so stats neither lists nor compares them.
    details: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError(f"metric {self.name!r} declares no result keys")
        bad = {k: d for k, d in self.keys.items() if d not in _DIRECTIONS}
        if bad:
            raise ValueError(f"metric {self.name!r}: directions must be 'min' or 'max', got {bad}")
        object.__setattr__(self, "keys", dict(self.keys))
        object.__setattr__(self, "key_descriptions", dict(self.key_descriptions))
        object.__setattr__(self, "ranges", {k: (float(lo), float(hi)) for k, (lo, hi) in self.ranges.items()})
        object.__setattr__(self, "aliases", tuple(self.aliases))
        object.__setattr__(self, "auxiliary", tuple(self.auxiliary))
        object.__setattr__(self, "extractor_roles", tuple(self.extractor_roles))
        object.__setattr__(self, "needs", tuple(self.needs))
        object.__setattr__(self, "details", tuple(self.details))
        if set(self.needs) - set(NEEDS):
            raise ValueError(f"metric {self.name!r}: needs must be among {NEEDS}, got {self.needs}")

    @property
    def names(self) -> tuple[str, ...]:
        """Everything that selects this metric: its name, aliases and directed result keys."""
        return tuple(dict.fromkeys((self.name, *self.aliases, *self.keys)))

    def run(self, state: Any) -> dict[str, float]:
        """`compute(state)`, checked to return only declared keys."""
        out = _resolve(self.compute)(state)
        undeclared = set(out) - set(self.keys) - set(self.auxiliary)
        if undeclared:
            raise PluginError(f"metric {self.name!r} returned undeclared keys {sorted(undeclared)}")
        return out

    def setup(self, state: Any) -> None:
        """`prepare(state)` when the metric has one."""
        if self.prepare is not None:
            _resolve(self.prepare)(state)


def _resolve(target: str | Callable) -> Callable:
    """A callable, or the function named by "package.module:function"."""
    if callable(target):
        return target
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


_REGISTERED: dict[str, Metric] = {}


def register_metric(
    name: str,
    *,
    keys: Mapping[str, str],
    compute: str | Callable | None = None,
    **declaration: Any,
) -> Any:
    """Register a metric (the other fields are `Metric`'s). Without `compute`, a decorator of the
    compute function: `@register_metric("mpd", keys={"mpd": "min"})`. Returns the Metric, or the
    decorated function unchanged. A name, alias or key already taken is a ValueError."""

    def add(fn: str | Callable) -> Metric:
        metric = Metric(name, keys, fn, **declaration)
        owners = _taken(_REGISTERED.values())
        taken = sorted(owners.keys() & (set(metric.names) | set(metric.auxiliary)))
        if taken:
            raise ValueError(f"metric {name!r}: {taken[0]!r} is already taken by metric {owners[taken[0]]!r}")
        _REGISTERED[name] = metric
        return metric

    if compute is None:
        return lambda fn: (add(fn), fn)[1]
    return add(compute)


def _taken(metrics: Any) -> dict[str, str]:
    """Name, alias or key -> the metric it belongs to."""
    return {n: m.name for m in metrics for n in (*m.names, *m.auxiliary)}


def _check(name: str, metric: object, where: str) -> str | None:
    """Why an entry point's object cannot be the metric `name` (None when it can)."""
    if not isinstance(metric, Metric):
        return f"{where} is a {type(metric).__name__}, not a lossbench.metrics.Metric"
    if metric.name != name:
        return f"{where} declares a metric named {metric.name!r}; make the two agree"
    clash = sorted(_taken(_REGISTERED.values()).keys() & (set(metric.names) | set(metric.auxiliary)))
    if clash:
        return f"{where} declares {', '.join(clash)}, already taken by a registered metric"
    return None


@functools.cache
def _plugins() -> Plugins:
    plugins = load_plugins(ENTRY_POINT_GROUP, "metric", _REGISTERED, _check)
    seen: dict[str, str] = {}
    for name, metric in list(plugins.objects.items()):  # two plugins sharing an alias or key
        for n in (*metric.names, *metric.auxiliary):
            if n in seen:
                for culprit in (name, seen[n]):
                    plugins.errors[culprit] = (
                        f"{n!r} is declared by {plugins.origins[name]} and by {plugins.origins[seen[n]]}; "
                        "uninstall one of them"
                    )
            seen[n] = name
    for name in plugins.errors:
        plugins.objects.pop(name, None)
    return plugins


def clear_plugin_cache() -> None:
    """Forget the loaded plugins; the next look-up reads the entry points again (for tests)."""
    _plugins.cache_clear()


def _metrics() -> dict[str, Metric]:
    """Every usable metric by name: registered first (in registration order), then plugins; a name
    claimed twice (e.g. by a built-in and a plugin) is not usable, as for losses."""
    plugins = _plugins()
    return {n: m for n, m in {**_REGISTERED, **plugins.objects}.items() if n not in plugins.errors}


def available_metrics() -> list[str]:
    """The names of the usable metrics, registered first, in declaration order."""
    return list(_metrics())


def problems() -> dict[str, str]:
    """Plugin problems by metric name (failed import, name clash, not a Metric); empty when none."""
    return dict(_plugins().errors)


def origin(name: str) -> str:
    """'built-in', 'registered by MODULE' (register_metric outside lossbench) or the plugin's entry point."""
    metric = get_metric(name)
    plugins = _plugins()
    if metric.name in plugins.origins:
        return plugins.origins[metric.name]
    compute = metric.compute
    module = compute.partition(":")[0] if isinstance(compute, str) else compute.__module__
    return "built-in" if module.startswith("lossbench.") else f"registered by {module}"


def get_metric(name: str) -> Metric:
    """The metric selected by a name, alias or directed result key; one-line error when unknown."""
    errors = _plugins().errors
    if name in errors:
        raise PluginError(errors[name])
    for metric in _metrics().values():
        if name in metric.names:
            return metric
    raise ConfigError(f"unknown metric {name!r} (choose from {', '.join(available_metrics())})")


def resolve_metrics(names: Sequence[str]) -> tuple[str, ...]:
    """The distinct metric names meant by `names`, in order; ConfigError for an unknown name."""
    return tuple(dict.fromkeys(get_metric(n).name for n in names))


def check_needs(names: Sequence[str], *, heldout: bool, conditional: bool) -> None:
    """ConfigError, before anything runs, when a metric among `names` needs what is absent (`needs`):
    a held-out part (`heldout`) or a class-conditional generator (`conditional`)."""
    for name in resolve_metrics(names):
        needs = get_metric(name).needs
        if "heldout" in needs and not heldout:
            raise ConfigError(f"metric {name!r} needs a held-out part: set data.holdout > 0 (--holdout)")
        if "conditional" in needs and not conditional:
            raise ConfigError(
                f"metric {name!r} needs a class-conditional generator: set train.conditional = true"
            )


def required_weights(config: EvalConfig) -> list[str]:
    """Keys of `lossbench.weights.WEIGHTS` that evaluating `config.metrics` under `config` needs."""
    keys = [k for n in resolve_metrics(config.metrics) for k in get_metric(n).weights(config)]
    return list(dict.fromkeys(keys))


EXTRACTOR_SEP = "."


def extractor_key(key: str, extractor: str) -> str:
    """The result key of `key` computed in an extra extractor's space: `fid.encoder-0123456789ab`."""
    return f"{key}{EXTRACTOR_SEP}{extractor}"


class _Directions(Mapping[str, str]):
    """Result key -> "min"/"max" over every usable metric; read-only, always current. A key computed
    in an extra extractor's space (`extractor_key`) has its base key's direction; iteration lists
    the base keys only."""

    def _table(self) -> dict[str, str]:
        return {k: d for m in _metrics().values() for k, d in m.keys.items()}

    def __getitem__(self, key: str) -> str:
        table = self._table()
        return table[key] if key in table else table[key.partition(EXTRACTOR_SEP)[0]]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())

    def __repr__(self) -> str:
        return f"DIRECTIONS({self._table()})"


class _Aliases(Mapping[str, str]):
    """Metric name or alias -> its primary result key, where the two differ (`lpips` -> `lpips_ff`)."""

    def _table(self) -> dict[str, str]:
        metrics = _metrics().values()
        return {
            n: next(iter(m.keys)) for m in metrics for n in (m.name, *m.aliases) if n != next(iter(m.keys))
        }

    def __getitem__(self, key: str) -> str:
        return self._table()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


#: Result key -> "min" when lower is better, "max" when higher is better (plugins included).
DIRECTIONS: Mapping[str, str] = _Directions()

#: Names accepted on the command line (`--objective lpips`) -> the result key they mean.
ALIASES: Mapping[str, str] = _Aliases()


def result_details() -> frozenset[str]:
    """The setting keys every usable metric declares as `details` (per-cell results, not settings)."""
    return frozenset(k for m in _metrics().values() for k in m.details)


def metric_range(key: str) -> tuple[float, float]:
    """The values a result key can take, (low, high); (-inf, inf) when its metric declares none.
    A key computed in an extra extractor's space (`extractor_key`) has its base key's range."""
    base = key.partition(EXTRACTOR_SEP)[0]
    for metric in _metrics().values():
        for k in (key, base):
            if k in metric.ranges:
                return metric.ranges[k]
    return (float("-inf"), float("inf"))


def metric_description(key: str) -> str:
    """What a result key measures: its own description where its metric declares one
    (`key_descriptions`), else the metric's ("" when it declares none)."""
    base = key.partition(EXTRACTOR_SEP)[0]
    for metric in _metrics().values():
        for k in (key, base):
            if k in metric.keys:
                return metric.key_descriptions.get(k) or metric.description
    return ""


def metric_key(name: str) -> str:
    """The result key for a metric name or alias (`lpips` -> `lpips_ff`); other names unchanged."""
    return ALIASES.get(name, name)
