"""The analysis of a results table: every table of `lossbench.analysis.stats`, the verdict of
`lossbench.analysis.verdict` and the warnings, put together into one `StatsResult` by `analyze`.

Pure: a DataFrame in, a `StatsResult` out. Reading a study is `lossbench.study.results`; text forms
are `lossbench.analysis.formatting`; conventions of each test are in `lossbench.analysis.stats`' docstring.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lossbench.analysis import verdict as verdicts
from lossbench.analysis.stats import (
    CONFIDENCE,
    PAIRWISE_COLUMNS,
    best_cells,
    check_results,
    correct,
    missing_cells,
    mixed_model,
    omnibus,
    pairwise,
    power_analysis,
    seeds_match,
    summarize,
    two_way_anova,
    verdict,
)
from lossbench.config import ANALYSIS, CORRECTIONS, lambda_label
from lossbench.errors import ConfigError
from lossbench.metrics import metric_key, result_details
from lossbench.study.record import SETTING


@dataclass
class StatsResult:
    """Everything `analyze` finds; each table is a tidy DataFrame with a `metric` column."""

    metrics: list[str]
    alpha: float
    paired: bool
    paired_reason: str  # why the tests are paired or not
    correction: str  # a key of config.CORRECTIONS
    ci_method: str  # "t" or "bootstrap"
    verdict: pd.DataFrame  # metric, question, scope, a, b, tests, p, p_adj, effect, n_needed, answer
    verdict_notes: list[str]  # where two analyses disagree, one sentence each
    summary: pd.DataFrame  # metric, loss, lambda, n, n_dropped, mean, sd, ci_low, ci_high
    best: pd.DataFrame  # metric, direction, loss, lambda, mean
    pairwise: pd.DataFrame  # metric, lambda, a, b, tests, p, p_adj, effect sizes, verdict
    omnibus: pd.DataFrame  # metric, lambda, test, statistic, p, p_adj (more than two losses only)
    anova: pd.DataFrame  # metric, term, sum_sq, df, F, p, partial_eta_sq
    mixed: pd.DataFrame  # metric, term, coef, se, z, p (seed as random intercept)
    power: pd.DataFrame  # metric, design, n, sd, alpha, power, min_detectable, delta, delta_source, n_needed
    problems: pd.DataFrame  # loss, lambda, seed, state, reason: failed and missing cells
    warnings: list[str] = field(default_factory=list)
    settings: dict[str, str] = field(default_factory=dict)  # evaluation settings (`setting.*` columns)

    @property
    def verdict_metrics(self) -> list[str]:
        """The metrics the verdict answers (those with a testable pair of cells), in `metrics` order."""
        answered = set(self.verdict["metric"])
        return [m for m in self.metrics if m in answered]

    @property
    def correction_name(self) -> str:
        return CORRECTIONS[self.correction]

    def tables(self) -> dict[str, pd.DataFrame]:
        return {
            "verdict": self.verdict,
            "problems": self.problems,
            "summary": self.summary,
            "best": self.best,
            "pairwise": self.pairwise,
            "omnibus": self.omnibus,
            "anova": self.anova,
            "mixed": self.mixed,
            "power": self.power,
        }

    def to_dict(self) -> dict:
        out = {
            "metrics": self.metrics,
            "alpha": self.alpha,
            "paired": self.paired,
            "paired_reason": self.paired_reason,
            "correction": self.correction,
            "correction_name": self.correction_name,
            "ci_method": self.ci_method,
            "warnings": self.warnings,
            "verdict_notes": self.verdict_notes,
            "settings": self.settings,
        }
        for name, table in self.tables().items():
            out[name] = json.loads(table.to_json(orient="records", double_precision=15))
        return out


def _concat(tables: list[pd.DataFrame]) -> pd.DataFrame:
    tables = [t for t in tables if len(t)]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def _cell_warnings(summary: pd.DataFrame) -> list[str]:
    """Cells with dropped values or fewer than two valid seeds."""
    notes = []
    for r in summary.to_dict("records"):
        where = f"{r['metric']}: cell ({r['loss']}, {lambda_label(r['lambda'])})"
        if r["n_dropped"]:
            notes.append(f"{where}: {r['n_dropped']} missing or non-finite value(s) (diverged runs?) dropped")
        if r["n"] < 2:
            notes.append(f"{where} has {r['n']} valid seed(s): no sd, CI or t-test (need at least 2)")
    return notes


def _settings_warnings(settings: dict[str, str]) -> list[str]:
    """Settings that differ between rows, and explicitly random network weights. A λ = 0 cell has no
    perceptual loss (perceptual_weights "none"): beside one other kind that is not a difference."""
    notes = [
        f"{key} differs between rows ({value}): the numbers are not comparable"
        for key, value in settings.items()
        if len(_kinds(key, value)) > 1
    ]
    if settings.get("weights") == "random":
        notes.append(
            "metrics come from explicitly random network weights: they exercise the pipeline and are "
            "not comparable with published scores"
        )
    if _kinds("perceptual_weights", settings.get("perceptual_weights", "")) == {"random"}:
        notes.append(
            "the perceptual loss (λ > 0) ran on a random-weight VGG16: the λ effects are those of random "
            "features, not of the paper's ImageNet-trained VGG"
        )
    return notes


def _kinds(key: str, value: str) -> set[str]:
    """The distinct values of a setting as `evaluation_settings` joins them, "none" of
    perceptual_weights (no perceptual loss at λ = 0) left out."""
    kinds = set(value.split(" | ")) - {""}
    return kinds - {"none"} if key == "perceptual_weights" else kinds


def _verdict_and_pairwise(
    df: pd.DataFrame, metrics: list[str], anova: pd.DataFrame, alpha: float, paired: bool, correction: str
) -> tuple[pd.DataFrame, list[str], pd.DataFrame, list[str]]:
    """The verdict (`lossbench.analysis.verdict`) and its notes, the pairwise table of every metric with its
    corrected p-values (the verdict's family per metric; rank tests per metric among themselves) and
    its warnings."""
    pairs = [pairwise(df, m, alpha, paired) for m in metrics]
    table = _concat([p for p, _ in pairs])
    notes = [n for _, pair_notes in pairs for n in pair_notes]
    answers, answer_notes = verdicts.build(df, metrics, table, anova, paired, alpha, correction)
    if len(table):
        at = answers[answers["question"] == "loss at λ"].set_index(["metric", "scope", "a", "b"])["p_adj"]
        keys = zip(table["metric"], table["lambda"].map(lambda_label), table["a"], table["b"], strict=True)
        table["p_adj"] = [at.get(k, np.nan) for k in keys]
        table["rank_p_adj"] = table.groupby("metric")["rank_p"].transform(
            lambda p: correct(p, alpha, correction)
        )
        table["correction"] = correction
        table["verdict"] = [
            verdict(r.metric, r.a, r.b, r.mean_a, r.mean_b, r.p_adj, alpha) for r in table.itertuples()
        ]
        table = table[list(PAIRWISE_COLUMNS)]
    return answers, answer_notes, table, notes


def analyze(
    df: pd.DataFrame,
    metrics: list[str] | None = None,
    alpha: float = ANALYSIS.alpha,
    paired: bool | None = None,
    correction: str = ANALYSIS.correction,
    bootstrap: bool = ANALYSIS.bootstrap,
    n_resamples: int = ANALYSIS.n_resamples,
    seed: int = ANALYSIS.seed,
    name: str = "results",
    problems: pd.DataFrame | None = None,
    deltas: dict[str, float] | None = None,
) -> StatsResult:
    """Summaries, best cells, corrected pairwise and omnibus tests, ANOVA, mixed model, power and
    warnings for `df`. `paired=None` pairs by seed when `seeds_match`; `problems` (PROBLEM_COLUMNS,
    e.g. a study's failed cells) replaces the missing cells inferred from the table; `deltas`: metric ->
    the difference whose needed seeds the power table gives."""
    if correction not in CORRECTIONS:
        raise ConfigError(f"unknown correction {correction!r}: use {' or '.join(map(repr, CORRECTIONS))}")
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}")
    df, metrics = check_results(df, metrics, name)
    if paired is None:
        paired = seeds_match(df)
        reason = "seeds match across cells" if paired else "seeds differ between cells"
    else:
        reason = "asked for"
    ci_method = "bootstrap" if bootstrap else "t"
    summary = _concat([summarize(df, m, CONFIDENCE, ci_method, n_resamples, seed) for m in metrics])
    anovas = [two_way_anova(df, m) for m in metrics]
    anova = _concat(anovas)
    answers, answer_notes, pair_table, pair_notes = _verdict_and_pairwise(
        df, metrics, anova, alpha, paired, correction
    )
    omni_table = _concat([omnibus(df, m, paired) for m in metrics])
    if len(omni_table):
        omni_table["p_adj"] = omni_table.groupby("metric")["p"].transform(
            lambda p: correct(p, alpha, correction)
        )
        omni_table["correction"] = correction
    anova_notes = [
        f"{m}: no two-way ANOVA (needs more than one row per cell or more than one level)"
        for m, a in zip(metrics, anovas, strict=True)
        if a.empty
    ]
    mixed = [mixed_model(df, m) for m in metrics]
    deltas = {metric_key(k): v for k, v in (deltas or {}).items()}
    family = answers.groupby("metric").size() if len(answers) else pd.Series(dtype=int)
    power = pd.DataFrame(
        [power_analysis(df, m, paired, alpha, deltas.get(m), int(family.get(m, 1))) for m in metrics]
    )
    problems = missing_cells(df, metrics) if problems is None else problems
    settings = evaluation_settings(df)
    notes = (
        _settings_warnings(settings)
        + _problem_notes(problems)
        + _cell_warnings(summary)
        + pair_notes
        + anova_notes
        + [n for _, m_notes in mixed for n in m_notes]
    )
    return StatsResult(
        metrics=metrics,
        alpha=alpha,
        paired=paired,
        paired_reason=reason,
        correction=correction,
        ci_method=ci_method,
        verdict=answers,
        verdict_notes=answer_notes,
        summary=summary,
        best=best_cells(summary),
        pairwise=pair_table,
        omnibus=omni_table,
        anova=anova,
        mixed=_concat([t for t, _ in mixed]),
        power=power,
        problems=problems.reset_index(drop=True),
        warnings=list(dict.fromkeys(notes)),  # ordered, de-duplicated
        settings=settings,
    )


def _problem_notes(problems: pd.DataFrame) -> list[str]:
    """One line per loss whose cells failed or are missing, the first reason named."""
    notes = []
    for loss, p in problems.groupby("loss", sort=True):
        reasons = list(dict.fromkeys(p["reason"].astype(str)))
        more = f" (and {len(reasons) - 1} other reason(s))" if len(reasons) > 1 else ""
        notes.append(f"{loss}: {len(p)} cell(s) failed or missing, e.g. {reasons[0]}{more}")
    return notes


#: `setting.*` columns that record how a number was obtained, not what it depends on.
PROVENANCE_COLUMNS = {f"{SETTING}fid_cache", f"{SETTING}utility_real_cache"}


def evaluation_settings(df: pd.DataFrame) -> dict[str, str]:
    """The `setting.*` columns of a results table (from `lossbench study export`) as key -> value;
    a setting that differs between rows lists its values joined by " | ". The metrics' per-cell
    `details` (e.g. per-class recall) are results, not settings, and are left out."""
    out = {}
    skipped = PROVENANCE_COLUMNS | {f"{SETTING}{k}" for k in result_details()}
    for column in df.columns:
        if str(column).startswith(SETTING) and column not in skipped:
            values = sorted({str(v) for v in df[column].dropna()})
            out[str(column).removeprefix(SETTING)] = " | ".join(values)
    return out
