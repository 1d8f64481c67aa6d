"""A cell's Optuna trial record: the names of the user attributes lossbench writes on a trial, and
how they are read back. What tracking.py is for MLflow, this module is for Optuna.

A trial of a cell carries:
- its cell: the params `loss` and `lambda`, the attribute `seed` (and `loss`, `lambda` again);
- `QUEUED` (queued by `queue.enqueue`: the trial is one of the grid's), `RETRY_OF` (the trial
  it retries), `SKIPPED` (why a trial that reached a worker did not run its cell);
- `RUN_ID` (its MLflow child run), the worker (`liveness.Worker` attributes);
- when it ends: `METRIC` + key for each final metric, `SETTING` + key for each setting a metric
  depends on (also the MLflow tags and the results frame's columns), `FAIL_REASON` when it failed
  (a final one starts with `tracking.FINAL_ERRORS`' prefix), `BEST` and `HEALTH` while it trains.
This module imports nothing heavy: the statistics read `SETTING` from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

QUEUED = "queued"
RETRY_OF = "retry_of"
SKIPPED = "skipped"
RUN_ID = "mlflow_run_id"
FAIL_REASON = "fail_reason"
BEST = "best"  # {"step", "value"} of the objective at the trial's best periodic evaluation
HEALTH = "health"  # {kind: warning} of lossbench.health, updated while the cell trains
METRIC = "metric."  # prefix of a trial's final metrics
SETTING = "setting."  # prefix of the settings its metrics depend on (MLflow tags, result columns too)
#: Attributes linking a trial to an earlier one, copied to its MLflow run's tags.
LINKS = (RETRY_OF,)


def metrics(attrs: Mapping[str, Any]) -> dict[str, float]:
    """A trial's final metrics from its user attributes, keyed without the prefix."""
    return {k.removeprefix(METRIC): v for k, v in attrs.items() if k.startswith(METRIC)}


def settings(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's settings from its user attributes, keyed WITH the `SETTING` prefix (as tags and
    result columns are named)."""
    return {k: v for k, v in attrs.items() if k.startswith(SETTING)}
