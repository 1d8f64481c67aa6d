"""Significance across seeds, the tables: cell summaries, pairwise tests, omnibus tests, two-way
ANOVA, mixed model, power, corrections.

Each function takes a results frame (one row per trial, the columns `loss`, `lambda`, `seed` plus
metric columns named by the keys of `lossbench.metrics.DIRECTIONS`: `fid`, `kid`, `lpips_ff`, ...;
`check_results` validates one) and returns a table. `lossbench.analysis.verdict` asks the study's questions
with these tests; `lossbench.analysis.analyze` puts everything together into a `StatsResult`.
Reading a study is `lossbench.study.results`; text forms are `lossbench.analysis.formatting`.

Conventions:
- a cell is one (loss, lambda); its replicates are the seeds. NaN or infinite metric values
  (diverged or missing runs) are dropped and counted per cell, never used as numbers;
- confidence intervals are two-sided (95% by default): t-based (`scipy.stats.ttest_1samp`), or a
  seeded BCa bootstrap of the mean (`scipy.stats.bootstrap`) on request; either is intersected with
  the metric's declared range (`lossbench.metrics.metric_range`: KID >= 0, LPIPS in [0, 1], ...),
  which keeps its coverage since the true mean lies in that range;
- the design is paired when the seeds match: every seed shares initial weights, batches and z across
  losses and lambdas, so `paired=None` (the default) chooses paired tests when every cell of a lambda
  holds the same seeds, once each (`seeds_match`); `paired=True/False` forces the choice;
- pairwise comparisons run per metric, per lambda, per pair of losses (a, b): Welch's t and
  Mann-Whitney U, or paired, the paired t and Wilcoxon signed-rank tests on the seeds present in both
  cells;
- effect sizes are signed a - b: Hedges' g (pooled sd, exact small-sample factor J) and Cliff's
  delta = P(a > b) - P(a < b) = 2 U_a / (n_a n_b) - 1 from the Mann-Whitney U statistic;
- p-values are corrected by Holm's method (`holm`, equal to statsmodels' `multipletests`), or
  Benjamini-Hochberg with `correction="fdr_bh"` (`multipletests`), over one family per metric:
  every t or F test of that metric's verdict (`lossbench.analysis.verdict`: loss pooled over lambda, loss at
  each lambda, lambda within each loss, each lambda against 0); its rank tests form a second family
  of the same metric. A p_adj therefore does
  not change with the metrics selected; across metrics nothing is corrected;
- verdicts use the corrected t-test p-value and each metric's direction: "wgangp better (lower fid)",
  or "no significant difference" when p >= alpha; rank tests are reported beside it;
- with more than two losses, an omnibus test per lambda: Kruskal-Wallis, or Friedman when paired;
- two-way ANOVA `metric ~ C(loss) * C(lambda)`, type II, with partial eta squared
  SS_effect / (SS_effect + SS_residual); beside it the linear mixed model of the same formula with
  the seed as random intercept (`statsmodels` `mixedlm`, REML), which uses the pairing by seed;
- power (`statsmodels.stats.power`, two-sided, at `alpha` over the tests of the metric's verdict,
  the level Holm's first step applies): per metric, the smallest difference
  between two losses at one lambda that the study detects with 80% power given its seeds and the
  observed sd (of the seed-wise differences when paired, pooled within cells otherwise), and the
  seeds needed to detect a given difference (default: the mean absolute difference observed);
- failed and missing cells (diverged, unfinished, or absent from a table) are listed with their
  reason (`problems`), never dropped without a word.
Every test statistic comes from scipy or statsmodels.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
from scipy import special, stats
from statsmodels.formula.api import mixedlm, ols
from statsmodels.stats.anova import anova_lm
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower, TTestPower
from statsmodels.tools.sm_exceptions import ConvergenceWarning

from lossbench.config import ANALYSIS, lambda_label
from lossbench.errors import ConfigError, DataError, first_line
from lossbench.metrics import DIRECTIONS, metric_key, metric_range
from lossbench.metrics.registry import EXTRACTOR_SEP

REQUIRED_COLUMNS = ("loss", "lambda", "seed")
POWER = ANALYSIS.power  # the power at which detectable differences and needed seeds are reported
CONFIDENCE = ANALYSIS.confidence  # of every CI
#: Columns of the table of failed and missing cells.
PROBLEM_COLUMNS = ("loss", "lambda", "seed", "state", "reason")
#: Columns of the pairwise table, in order.
PAIRWISE_COLUMNS = (
    "metric",
    "lambda",
    "a",
    "b",
    "n_a",
    "n_b",
    "mean_a",
    "mean_b",
    "test",
    "statistic",
    "p",
    "p_adj",
    "rank_test",
    "rank_statistic",
    "rank_p",
    "rank_p_adj",
    "correction",
    "hedges_g",
    "cliffs_delta",
    "verdict",
)


# ---------------------------------------------------------------------------------------- input


def check_results(
    df: pd.DataFrame, metrics: list[str] | None = None, name: str = "results"
) -> tuple[pd.DataFrame, list[str]]:
    """Validate a results frame; return a clean copy and the metrics to analyse.

    `metrics=None` takes every `DIRECTIONS` key present with at least one finite value. Metric
    values are coerced to floats (anything unparsable becomes NaN, then counts as missing).
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(
            f"{name} lacks column(s) {', '.join(missing)}: a results table needs loss, lambda, seed "
            "and metric columns (see `lossbench study export`)"
        )
    if df.empty:
        raise DataError(f"{name} has no rows: no completed trials yet, or an empty file")
    if metrics is None:
        metrics = [m for m in DIRECTIONS if m in df.columns]
        metrics += [c for c in df.columns if EXTRACTOR_SEP in str(c) and c in DIRECTIONS]  # fid.<extractor>
    else:
        metrics = [metric_key(m) for m in metrics]
        unknown = [m for m in metrics if m not in DIRECTIONS]
        if unknown:
            raise ConfigError(f"unknown metric {unknown[0]!r}: choose from {', '.join(DIRECTIONS)}")
        absent = [m for m in metrics if m not in df.columns]
        if absent:
            raise DataError(f"{name} has no column {absent[0]!r}; it has {', '.join(map(str, df.columns))}")
    clean = df.copy()
    clean["loss"] = clean["loss"].astype(str)
    clean["lambda"] = pd.to_numeric(clean["lambda"], errors="coerce")
    if clean["lambda"].isna().any():
        raise DataError(f"{name} has non-numeric or empty lambda values: every row needs a number")
    for m in metrics:
        clean[m] = pd.to_numeric(clean[m], errors="coerce")
    metrics = [m for m in metrics if np.isfinite(clean[m].to_numpy(float)).any()]
    if not metrics:
        raise DataError(f"{name} has no finite values in any metric column ({', '.join(DIRECTIONS)})")
    return clean, metrics


# ---------------------------------------------------------------------------------- statistics


def finite(values) -> np.ndarray:
    """The finite values of `values` as a float array (NaN and +-Inf dropped)."""
    x = np.asarray(values, dtype=float)
    return x[np.isfinite(x)]


def confidence_interval(
    x: np.ndarray,
    confidence: float = CONFIDENCE,
    method: str = "t",
    n_resamples: int = ANALYSIS.n_resamples,
    seed: int = 0,
    bounds: tuple[float, float] = (-np.inf, np.inf),
) -> tuple[float, float]:
    """Two-sided CI of the mean: t-based (scipy ttest_1samp) or BCa bootstrap, intersected with
    `bounds` (the metric's range); NaN when n < 2."""
    if len(x) < 2:
        return float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # zero variance: scipy returns NaN/degenerate
        if method == "bootstrap":
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)
            res = stats.bootstrap(
                (x,),
                np.mean,
                confidence_level=confidence,
                n_resamples=n_resamples,
                rng=np.random.default_rng(seed),
            )
            ci = res.confidence_interval
        else:
            ci = stats.ttest_1samp(x, 0.0).confidence_interval(confidence)
    low, high = np.clip([ci.low, ci.high], *bounds)
    return float(low), float(high)


def hedges_g(a: np.ndarray, b: np.ndarray) -> float:
    """Hedges' g of a - b: Cohen's d with the pooled sd times the exact factor
    J(m) = Gamma(m/2) / (sqrt(m/2) Gamma((m-1)/2)), m = n_a + n_b - 2 (Hedges 1981)."""
    na, nb = len(a), len(b)
    m = na + nb - 2
    if na < 1 or nb < 1 or m < 2:
        return float("nan")
    pooled = np.sqrt((np.sum((a - np.mean(a)) ** 2) + np.sum((b - np.mean(b)) ** 2)) / m)
    if pooled == 0:
        return float("nan")
    j = np.exp(special.gammaln(m / 2) - 0.5 * np.log(m / 2) - special.gammaln((m - 1) / 2))
    return float(j * (np.mean(a) - np.mean(b)) / pooled)


def cliffs_delta(a: np.ndarray, b: np.ndarray) -> float:
    """Cliff's delta of a vs b, P(a > b) - P(a < b), as 2 U_a / (n_a n_b) - 1 (scipy mannwhitneyu)."""
    if len(a) < 1 or len(b) < 1:
        return float("nan")
    u = stats.mannwhitneyu(a, b, alternative="two-sided").statistic
    return float(2 * u / (len(a) * len(b)) - 1)


def min_rank_p(n_a: int, n_b: int, paired: bool) -> float:
    """The smallest two-sided p-value the rank test can give at these sizes (perfect separation)."""
    if paired:
        return float(stats.wilcoxon(np.arange(1.0, n_a + 1)).pvalue) if n_a >= 1 else float("nan")
    if n_a < 1 or n_b < 1:
        return float("nan")
    return float(stats.mannwhitneyu(np.arange(n_a), np.arange(n_a, n_a + n_b)).pvalue)


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values: sorted ascending, max over j <= i of min(1, (m - j + 1) p_(j)).
    The same values as statsmodels' `multipletests(p, method="holm")` (tests compare them), which
    calls `gc.collect()` on every Holm call: about 1 s each in a process holding torch, and an
    analysis makes a few calls per metric."""
    order = np.argsort(p)
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * np.arange(len(p), 0, -1)))
    out = np.empty_like(adjusted)
    out[order] = adjusted
    return out


def correct(pvalues, alpha: float = ANALYSIS.alpha, method: str = ANALYSIS.correction) -> np.ndarray:
    """Corrected p-values: `holm`, or statsmodels' multipletests for the other methods; NaN entries
    stay NaN and are not counted."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = holm(p[ok]) if method == "holm" else multipletests(p[ok], alpha=alpha, method=method)[1]
    return out


def verdict(metric: str, a: str, b: str, mean_a: float, mean_b: float, p_adj: float, alpha: float) -> str:
    """Which loss wins on `metric`, honouring its direction, or "no significant difference"."""
    if not np.isfinite(p_adj):
        return "not testable"
    if p_adj >= alpha:
        return "no significant difference"
    lower, higher = (a, b) if mean_a < mean_b else (b, a)
    if DIRECTIONS[metric] == "min":
        return f"{lower} better (lower {metric})"
    return f"{higher} better (higher {metric})"


def seeds_needed(delta: float, sd: float, paired: bool, alpha: float = ANALYSIS.alpha) -> float:
    """The seeds per cell a two-sided t test at `alpha` needs for POWER to detect `delta` given `sd`
    (statsmodels `TTestPower` on differences when paired, `TTestIndPower` per group otherwise);
    NaN when delta or sd is not a positive finite number, or no sample size reaches POWER."""
    if not (np.isfinite(delta) and np.isfinite(sd) and delta > 0 and sd > 0):
        return float("nan")
    solver = TTestPower() if paired else TTestIndPower()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels warns when its root finder starts far off
        try:
            need = float(
                np.asarray(solver.solve_power(effect_size=delta / sd, alpha=alpha, power=POWER)).item()
            )
        except (ValueError, RuntimeError):
            return float("nan")
    return float(np.ceil(need)) if np.isfinite(need) and need > 0 else float("nan")


def summarize(
    df: pd.DataFrame,
    metric: str,
    confidence: float = CONFIDENCE,
    ci_method: str = "t",
    n_resamples: int = ANALYSIS.n_resamples,
    seed: int = 0,
) -> pd.DataFrame:
    """Per (loss, lambda): n (finite values), n_dropped, mean, sd (ddof=1), CI of the mean, and
    metric_se: the root mean square of the runs' bootstrap standard errors (`<metric>_se` columns,
    NaN without them), the metric's own noise in one evaluation. sd, the spread across seeds,
    includes that noise: sd close to metric_se means the seeds differ little beyond measurement."""
    rows = []
    se_column = f"{metric}_se"
    for (loss, lam), cell in df.groupby(["loss", "lambda"], sort=True):
        raw = cell[metric].to_numpy(float)
        x = finite(raw)
        low, high = confidence_interval(x, confidence, ci_method, n_resamples, seed, metric_range(metric))
        se = finite(cell[se_column].to_numpy(float)) if se_column in cell else np.array([])
        rows.append(
            {
                "metric": metric,
                "loss": loss,
                "lambda": lam,
                "n": len(x),
                "n_dropped": len(raw) - len(x),
                "mean": float(np.mean(x)) if len(x) else float("nan"),
                "sd": float(np.std(x, ddof=1)) if len(x) > 1 else float("nan"),
                "ci_low": low,
                "ci_high": high,
                "metric_se": float(np.sqrt(np.mean(se**2))) if len(se) else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def best_cells(summary: pd.DataFrame) -> pd.DataFrame:
    """The cell with the best mean per metric (lowest for "min" metrics, highest for "max"), among
    the cells with the most seeds for that metric: a cell of a study still running, with fewer
    seeds done, is not named best on a mean its missing seeds may move."""
    rows = []
    for metric, s in summary.dropna(subset=["mean"]).groupby("metric", sort=False):
        direction = DIRECTIONS[metric]
        s = s[s["n"] == s["n"].max()]
        row = s.loc[s["mean"].idxmin() if direction == "min" else s["mean"].idxmax()]
        rows.append(
            {
                "metric": metric,
                "direction": direction,
                "loss": row["loss"],
                "lambda": row["lambda"],
                "mean": row["mean"],
                "sd": row["sd"],
                "n": row["n"],
            }
        )
    return pd.DataFrame(rows, columns=["metric", "direction", "loss", "lambda", "mean", "sd", "n"])


def _pair_values(
    df: pd.DataFrame, metric: str, lam: float, a: str, b: str, paired: bool
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The finite values of cells (a, lam) and (b, lam), matched by seed when paired; warnings."""
    at = df[df["lambda"] == lam]
    xa = at[at["loss"] == a][["seed", metric]]
    xb = at[at["loss"] == b][["seed", metric]]
    xa, xb = xa[np.isfinite(xa[metric])], xb[np.isfinite(xb[metric])]
    if not paired:
        return xa[metric].to_numpy(float), xb[metric].to_numpy(float), []
    for loss, x in ((a, xa), (b, xb)):
        if x["seed"].duplicated().any():
            raise DataError(
                f"cell ({loss}, {lambda_label(lam)}) repeats a seed: paired tests need one row per seed "
                "(drop --paired or remove the duplicate rows)"
            )
    both = xa.merge(xb, on="seed", suffixes=("_a", "_b"))
    unmatched = len(xa) + len(xb) - 2 * len(both)
    notes = []
    if unmatched:
        notes.append(
            f"{metric} {lambda_label(lam)} {a} vs {b}: {unmatched} value(s) without a matching seed "
            "left out of the paired tests"
        )
    return both[f"{metric}_a"].to_numpy(float), both[f"{metric}_b"].to_numpy(float), notes


def _compare(xa: np.ndarray, xb: np.ndarray, paired: bool) -> dict:
    """The t test and rank test of one pair; NaN where the sizes do not allow the test."""
    nan = float("nan")
    t_stat = t_p = r_stat = r_p = nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # zero variance -> NaN, reported "not testable"
        if paired:
            if len(xa) >= 2:
                res = stats.ttest_rel(xa, xb)
                t_stat, t_p = float(res.statistic), float(res.pvalue)
            if len(xa) >= 1 and np.any(xa != xb):
                res = stats.wilcoxon(xa, xb)
                r_stat, r_p = float(res.statistic), float(res.pvalue)
        else:
            if len(xa) >= 2 and len(xb) >= 2:
                res = stats.ttest_ind(xa, xb, equal_var=False)
                t_stat, t_p = float(res.statistic), float(res.pvalue)
            if len(xa) >= 1 and len(xb) >= 1:
                res = stats.mannwhitneyu(xa, xb, alternative="two-sided")
                r_stat, r_p = float(res.statistic), float(res.pvalue)
    return {
        "test": "paired t" if paired else "Welch t",
        "statistic": t_stat,
        "p": t_p,
        "rank_test": "Wilcoxon signed-rank" if paired else "Mann-Whitney U",
        "rank_statistic": r_stat,
        "rank_p": r_p,
        "hedges_g": hedges_g(xa, xb),
        "cliffs_delta": cliffs_delta(xa, xb),
    }


def pairwise(
    df: pd.DataFrame, metric: str, alpha: float = ANALYSIS.alpha, paired: bool = False
) -> tuple[pd.DataFrame, list[str]]:
    """Uncorrected tests for every lambda and pair of losses on one metric (see `analyze`), and the
    warnings they raise (unmatched seeds, rank tests that cannot reach `alpha`)."""
    notes: list[str] = []
    rows = []
    losses = sorted(df["loss"].unique())
    for lam in sorted(df["lambda"].unique()):
        for a, b in itertools.combinations(losses, 2):
            xa, xb, pair_notes = _pair_values(df, metric, lam, a, b, paired)
            notes += pair_notes
            if len(xa) == 0 and len(xb) == 0:
                continue
            row = {"metric": metric, "lambda": lam, "a": a, "b": b, "n_a": len(xa), "n_b": len(xb)}
            row |= {
                "mean_a": float(np.mean(xa)) if len(xa) else np.nan,
                "mean_b": float(np.mean(xb)) if len(xb) else np.nan,
            }
            row |= _compare(xa, xb, paired)
            rows.append(row)
            min_p = min_rank_p(len(xa), len(xb), paired)
            if np.isfinite(min_p) and min_p >= alpha:
                sizes = f"{len(xa)} seed pairs" if paired else f"{len(xa)} vs {len(xb)} seeds"
                notes.append(
                    f"{row['rank_test']} with {sizes} cannot reach p < {alpha:g} "
                    f"(smallest possible p = {min_p:.3g}); add seeds for a rank test to be informative"
                )
    return pd.DataFrame(rows), notes


def omnibus(df: pd.DataFrame, metric: str, paired: bool = False) -> pd.DataFrame:
    """Per lambda with more than two losses: Kruskal-Wallis, or Friedman on seeds common to all."""
    rows = []
    for lam, at in df.groupby("lambda", sort=True):
        at = at[np.isfinite(at[metric])]
        if at["loss"].nunique() < 3:
            continue
        if paired:
            wide = at.pivot_table(index="seed", columns="loss", values=metric, aggfunc="first").dropna()
            groups, test = [wide[c].to_numpy() for c in wide.columns], "Friedman"
        else:
            groups = [g[metric].to_numpy(float) for _, g in at.groupby("loss")]
            test = "Kruskal-Wallis"
        try:
            res = stats.friedmanchisquare(*groups) if paired else stats.kruskal(*groups)
            stat, p = float(res.statistic), float(res.pvalue)
        except ValueError:  # identical values, or too few blocks
            stat = p = float("nan")
        rows.append(
            {
                "metric": metric,
                "lambda": lam,
                "test": test,
                "k": len(groups),
                "n": int(sum(len(g) for g in groups)),
                "statistic": stat,
                "p": p,
            }
        )
    return pd.DataFrame(rows)


def two_way_anova(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Type II ANOVA of metric ~ C(loss) * C(lambda) (factors with one level left out), with
    partial eta squared; empty when there are no residual degrees of freedom."""
    data = df.loc[np.isfinite(df[metric]), ["loss", "lambda", metric]]
    data = data.rename(columns={"lambda": "lam", metric: "y"})
    factors = [f for f, col in (("C(loss)", "loss"), ("C(lam)", "lam")) if data[col].nunique() > 1]
    if not factors:
        return pd.DataFrame()
    model = ols("y ~ " + " * ".join(factors), data).fit()
    if model.df_resid < 1:
        return pd.DataFrame()
    table = anova_lm(model, typ=2)
    ss_res = table.loc["Residual", "sum_sq"]
    table["partial_eta_sq"] = table["sum_sq"] / (table["sum_sq"] + ss_res)
    table.loc["Residual", "partial_eta_sq"] = np.nan
    names = {"C(loss)": "loss", "C(lam)": "lambda", "C(loss):C(lam)": "loss:lambda", "Residual": "residual"}
    table = table.rename(index=names, columns={"PR(>F)": "p"}).reset_index(names="term")
    table.insert(0, "metric", metric)
    return table[["metric", "term", "sum_sq", "df", "F", "p", "partial_eta_sq"]]


def seeds_match(df: pd.DataFrame) -> bool:
    """Whether the seeds are shared: at every lambda, every loss holds the same seeds, once each."""
    if df.duplicated(["loss", "lambda", "seed"]).any():
        return False
    for _, at in df.groupby("lambda"):
        seed_sets = {frozenset(g["seed"]) for _, g in at.groupby("loss")}
        if len(seed_sets) > 1:
            return False
    return df["seed"].nunique() > 1


def mixed_model(df: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, list[str]]:
    """The linear mixed model metric ~ C(loss) * C(lambda) with a random intercept per seed
    (statsmodels `mixedlm`, REML): fixed-effect terms with coef, se, z, p, and the seed variance
    (term "seed var"); empty with a note when it cannot be fitted (fewer than 2 seeds, one level)."""
    data = df.loc[np.isfinite(df[metric]), ["loss", "lambda", "seed", metric]]
    data = data.rename(columns={"lambda": "lam", metric: "y"})
    factors = [f for f, col in (("C(loss)", "loss"), ("C(lam)", "lam")) if data[col].nunique() > 1]
    if not factors or data["seed"].nunique() < 2:
        return pd.DataFrame(), [f"{metric}: no mixed model (needs 2+ seeds and a factor with 2+ levels)"]
    notes = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        try:
            fit = mixedlm("y ~ " + " * ".join(factors), data, groups=data["seed"]).fit(reml=True)
        except (ValueError, np.linalg.LinAlgError) as e:
            return pd.DataFrame(), [f"{metric}: mixed model not fitted ({first_line(e)})"]
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        notes.append(f"{metric}: the mixed model did not converge cleanly (seed variance near 0?)")
    fe = fit.fe_params.index
    table = pd.DataFrame(
        {
            "metric": metric,
            "term": list(fe) + ["seed var"],
            "coef": list(fit.fe_params) + [float(fit.cov_re.iloc[0, 0])],
            "se": list(fit.bse_fe) + [np.nan],
            "z": list(fit.tvalues[fe]) + [np.nan],
            "p": list(fit.pvalues[fe]) + [np.nan],
        }
    )
    return table, notes


def _power_sd(df: pd.DataFrame, metric: str, paired: bool) -> tuple[float, int]:
    """The sd that power depends on and the seeds per cell (median): the pooled sd of seed-wise
    differences between losses at one lambda when paired, the pooled within-cell sd otherwise."""
    data = df[np.isfinite(df[metric])]
    sizes = data.groupby(["loss", "lambda"]).size()
    n = int(sizes.median()) if len(sizes) else 0
    if paired:
        variances = []
        for _, at in data.groupby("lambda"):
            wide = at.pivot_table(index="seed", columns="loss", values=metric, aggfunc="first")
            for a, b in itertools.combinations(wide.columns, 2):
                d = (wide[a] - wide[b]).dropna()
                if len(d) > 1:
                    variances.append(np.var(d, ddof=1))
    else:
        variances = [np.var(g, ddof=1) for _, g in data.groupby(["loss", "lambda"])[metric] if len(g) > 1]
    return (float(np.sqrt(np.mean(variances))) if variances else float("nan")), n


def power_analysis(
    df: pd.DataFrame,
    metric: str,
    paired: bool,
    alpha: float = ANALYSIS.alpha,
    delta: float | None = None,
    family: int = 1,
) -> dict:
    """Power of a two-sided t test between two losses at one lambda (statsmodels.stats.power:
    `TTestPower` on the differences when paired, `TTestIndPower` with equal groups otherwise), at
    alpha / `family` (the level Holm's first step applies to a family of that many tests):
    `min_detectable`, the difference detected with POWER at the study's seeds, and `n_needed`, the
    seeds needed to detect `delta` (default: the mean |a - b| observed between losses)."""
    level = alpha / family
    sd, n = _power_sd(df, metric, paired)
    source = "given"
    if delta is None:
        means = df[np.isfinite(df[metric])].groupby(["lambda", "loss"])[metric].mean()
        diffs = [
            abs(g.iloc[i] - g.iloc[j])
            for _, g in means.groupby(level="lambda")
            for i, j in itertools.combinations(range(len(g)), 2)
        ]
        delta, source = (float(np.mean(diffs)) if diffs else float("nan")), "observed mean |a - b|"
    solver = TTestPower() if paired else TTestIndPower()
    row = {"metric": metric, "design": "paired" if paired else "two-sample", "n": n, "sd": sd}
    row |= {"alpha": level, "family": family, "power": POWER, "min_detectable": float("nan")}
    row |= {"delta": delta, "delta_source": source, "n_needed": float("nan")}
    if np.isfinite(sd) and sd > 0 and n >= 2:
        size = "nobs" if paired else "nobs1"  # TTestIndPower: per group, ratio 1
        row["min_detectable"] = float(solver.solve_power(**{size: n}, alpha=level, power=POWER)) * sd
    row["n_needed"] = seeds_needed(delta, sd, paired, level)
    return row


def missing_cells(df: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Cells a table lacks (`PROBLEM_COLUMNS`): (loss, lambda) pairs of its grid without a row (seed
    NaN), rows without a finite value in any metric, and, where seeds are shared (a seed in at least
    half of the (loss, lambda) cells), the shared seeds a cell lacks."""
    pairs = pd.MultiIndex.from_product([sorted(df["loss"].unique()), sorted(df["lambda"].unique())])
    counts = df.groupby(["loss", "lambda"]).size().reindex(pairs, fill_value=0)
    rows = [
        {"loss": loss, "lambda": lam, "seed": np.nan, "state": "missing", "reason": "no row for any seed"}
        for (loss, lam), n in counts.items()
        if n == 0
    ]
    cells_per_seed = df.drop_duplicates(["loss", "lambda", "seed"]).groupby("seed").size()
    shared = sorted(cells_per_seed[cells_per_seed >= len(pairs) / 2].index)
    for (loss, lam), cell in df.groupby(["loss", "lambda"], sort=True):
        for seed in sorted(set(shared) - set(cell["seed"])):
            rows.append({"loss": loss, "lambda": lam, "seed": seed, "state": "missing", "reason": "no row"})
    dead = df[~np.isfinite(df[metrics].to_numpy(float)).any(axis=1)]
    for r in dead.to_dict("records"):
        rows.append({**{k: r[k] for k in ("loss", "lambda", "seed")}, "state": "missing"})
        rows[-1]["reason"] = "no finite metric value (diverged?)"
    out = pd.DataFrame(rows, columns=list(PROBLEM_COLUMNS))
    return out.sort_values(["loss", "lambda", "seed"], ignore_index=True)
