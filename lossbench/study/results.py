"""Reading a study back: the study, its cells with their states, and its results table."""

from __future__ import annotations

import os
from pathlib import Path

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from lossbench.errors import ConfigError, DataError, first_line
from lossbench.study import record
from lossbench.study.grid import Cell, cells_of
from lossbench.study.journal import check_study_named, journal_path
from lossbench.study.queue import cell_states, open_storage, trial_cell

#: The first columns of a results table, before the metrics and the `setting.*` columns.
RESULT_COLUMNS = ["study", "trial", "loss", "lambda", "seed", "state", "run_id"]


def load_study(name: str, storage: str | None = None, root: str | os.PathLike = "mlruns") -> optuna.Study:
    """An existing study; ConfigError (one line) naming the storage and the studies it holds."""
    check_study_named(name, storage, root)
    where = storage or journal_path(storage, root)
    opened = open_storage(storage, root)
    try:
        return optuna.load_study(study_name=name, storage=opened)
    except KeyError:
        names = ", ".join(optuna.get_all_study_names(opened)) or "none"
        raise ConfigError(f"no study named {name!r} in {where} (studies: {names})") from None


def study_cells(study: optuna.Study) -> list[tuple[Cell, str, FrozenTrial | None]]:
    """Every cell of the study's grid (and any other cell tried) with its state and deciding trial."""
    ident = study.user_attrs.get("config", {})
    states = cell_states(study)
    cells = set(states)
    if {"losses", "lambdas", "seeds"} <= ident.keys():
        cells |= set(cells_of(ident["losses"], ident["lambdas"], ident["seeds"]))
    return [(cell, *states.get(cell, ("pending", None))) for cell in sorted(cells)]


def results_frame(name: str, storage: str | None = None, root: str | os.PathLike = "mlruns") -> pd.DataFrame:
    """One row per COMPLETE trial: study, trial, loss, lambda, seed, state, run_id, every metric, then
    the evaluation settings the metrics depend on (`setting.fid_extractor`, `setting.n_fake`, ...).

    Diverged or unfinished cells have no row: statistics treat them as missing."""
    study = load_study(name, storage, root)
    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        cell = trial_cell(t)
        if cell is None or record.SKIPPED in t.user_attrs:
            continue
        row = {
            "study": name,
            "trial": t.number,
            "loss": cell.loss,
            "lambda": cell.lam,
            "seed": cell.seed,
            "state": t.state.name,
            "run_id": t.user_attrs.get(record.RUN_ID),
        }
        row.update(record.metrics(t.user_attrs))
        row.update(record.settings(t.user_attrs))
        rows.append(row)
    frame = pd.DataFrame(rows, columns=list(dict.fromkeys(RESULT_COLUMNS + [k for r in rows for k in r])))
    return frame.sort_values(["loss", "lambda", "seed"], ignore_index=True)


_REASONS = {
    "running": "still running",
    "queued": "queued, not started",
    "pending": "not run yet",
    "pruned": "pruned",
    "failed": "failed",
}


def cell_problems(name: str, storage: str | None = None, root: str | os.PathLike = "mlruns") -> pd.DataFrame:
    """The study's cells without a COMPLETE trial: loss, lambda, seed, state and reason (the trial's
    `fail_reason` when it has one), in the columns of `lossbench.analysis.stats.PROBLEM_COLUMNS`."""
    rows = []
    for cell, state, trial in study_cells(load_study(name, storage, root)):
        if state == "done":
            continue
        reason = trial.user_attrs.get(record.FAIL_REASON) if trial is not None else None
        rows.append(
            {
                "loss": cell.loss,
                "lambda": cell.lam,
                "seed": cell.seed,
                "state": state,
                "reason": str(reason or _REASONS[state]),
            }
        )
    return pd.DataFrame(rows, columns=["loss", "lambda", "seed", "state", "reason"])


def load_problems(
    source: str | Path, storage: str | None = None, root: str | Path = "mlruns"
) -> pd.DataFrame | None:
    """A study's failed and missing cells (`cell_problems`), or None for a CSV source (the statistics
    then infer missing cells from the table)."""
    if Path(source).is_file():
        return None
    return cell_problems(str(source), storage, root)


def load_results(source: str | Path, storage: str | None = None, root: str | Path = "mlruns") -> pd.DataFrame:
    """The results frame of a CSV file, or of a study by name (`results_frame`)."""
    path = Path(source)
    if path.is_file():
        try:
            return pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise DataError(f"cannot read results CSV {path}: {first_line(e)}") from None
    if path.suffix.lower() == ".csv" or path.parent != Path("."):
        raise DataError(f"no results file at {path}: give an existing CSV or a study name")
    return results_frame(str(source), storage, root)
