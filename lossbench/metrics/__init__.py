"""Evaluation metrics: a registry of declared metrics, and `evaluate()` that runs them.

Each metric is declared once (`lossbench.metrics.registry`; the built-ins in `builtin`): names,
result keys with their better direction, the weights it needs, how it is computed. `DIRECTIONS`
(result key -> "min"/"max") and `ALIASES` are read from the registry, plugins included.

This package stays free of heavy imports (stats and reports read directions without loading
torch): `evaluate`, `evaluate_per_class`, `EvalResult` and `EvalState` are imported from
`evaluation` on first access. The pieces: `fidelity` (FID/KID/PR via torch-fidelity), `diversity`
(LPIPS, MS-SSIM pairs), `swd`, `utility` (downstream classifier),
`cache` (real features on disk), `extractors` (the weight-free `lossbench-tiny` extractor) and
`compute` (the built-ins wired to the shared `EvalState`).
"""

from __future__ import annotations

from typing import Any

from lossbench.metrics import builtin  # noqa: F401  (registers the built-in metrics)
from lossbench.metrics.registry import (
    ALIASES,
    DIRECTIONS,
    Metric,
    available_metrics,
    check_needs,
    get_metric,
    metric_description,
    metric_key,
    metric_range,
    register_metric,
    required_weights,
    resolve_metrics,
    result_details,
)

__all__ = [
    "ALIASES",
    "DIRECTIONS",
    "EvalResult",
    "EvalState",
    "Metric",
    "available_metrics",
    "check_needs",
    "evaluate",
    "evaluate_per_class",
    "get_metric",
    "metric_description",
    "metric_key",
    "metric_range",
    "register_metric",
    "required_weights",
    "resolve_metrics",
    "result_details",
]

_LAZY = ("evaluate", "evaluate_per_class", "EvalResult", "EvalState")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from lossbench.metrics import evaluation

        return getattr(evaluation, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
