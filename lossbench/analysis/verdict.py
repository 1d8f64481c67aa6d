"""The verdict: a study's questions answered per metric, computed once here and shown first by
`lossbench stats`, the report, the parent MLflow run and the optuna-dashboard note.

Questions, for each metric ("better" follows its `DIRECTIONS` entry):
- `loss`: which loss, pooled over λ. Paired: per seed, the mean over λ of a - b (over the λ where
  both cells hold the seed), a paired t test across seeds. Unpaired: the loss term of the two-way
  ANOVA of the two losses (type II F, `stats.two_way_anova`), which removes λ's effect first.
- `loss at λ`: which loss at each λ: the t tests of `stats.pairwise` (paired t or Welch t).
- `λ within loss`: does λ change the metric within a loss. Paired: repeated-measures ANOVA across λ
  with the seed as subject (statsmodels `AnovaRM`, on the seeds that hold every λ). Unpaired:
  one-way ANOVA (scipy `f_oneway`). Names the best and the worst λ.
- `λ vs 0`: each λ > 0 against λ = 0 within a loss (paired t or Welch t), where the grid has λ = 0.

The correction family: per metric, every test above of that metric (`family_size` of them),
corrected together with the chosen method (Holm by default). A p_adj therefore does not depend on
which metrics are shown; across metrics nothing is corrected: each metric is its own question, the
study's objective the primary one. The same p_adj is written into the pairwise table (`stats`).

Effect sizes: Hedges' g of a - b (on the per-seed means for the pooled test) for two-group tests;
partial eta squared F df1 / (F df1 + df2) for the λ omnibus. `n_needed`: the seeds per cell a
two-sided t test needs for `stats.POWER` power to detect the observed difference given the observed
sd (of the seed-wise differences when paired; for the omnibus, of its best-vs-worst pair) at
alpha / (tests in the family): the level Holm's first step applies, so a difference that would
stay insignificant after correction is not said to need the seeds the study already has.

`notes` explain, one sentence each, where two analyses disagree: a pooled test and the per-λ tests
(power, or an interaction), a test significant only before correction, an omnibus without a pair.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
from scipy import stats as sps
from statsmodels.stats.anova import AnovaRM

from lossbench.analysis.stats import correct, hedges_g, seeds_needed, two_way_anova
from lossbench.analysis.stats import verdict as better
from lossbench.config import lambda_label
from lossbench.metrics import DIRECTIONS

#: Columns of the verdict table, in order.
# fmt: off
VERDICT_COLUMNS = (
    "metric", "question", "scope", "a", "b", "n", "mean_a", "mean_b",
    "test", "statistic", "p", "p_adj", "effect", "effect_kind", "n_needed", "answer",
)
# fmt: on
#: The questions, in the order they are asked and shown.
QUESTIONS = ("loss", "loss at λ", "λ within loss", "λ vs 0")
NAN = float("nan")


def _t_row(xa: np.ndarray, xb: np.ndarray, paired: bool, alpha: float) -> dict:
    """A two-group t test (paired on equal-length matched arrays, else Welch) with Hedges' g and the
    seeds a difference of the observed size would need."""
    row = {"n": len(xa), "mean_a": NAN, "mean_b": NAN, "test": "paired t" if paired else "Welch t"}
    row |= {"statistic": NAN, "p": NAN, "effect": NAN, "effect_kind": "Hedges' g", "power": None}
    if len(xa) == 0 or len(xb) == 0:
        return row
    row |= {"n": min(len(xa), len(xb)), "mean_a": float(np.mean(xa)), "mean_b": float(np.mean(xb))}
    diff = row["mean_a"] - row["mean_b"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # zero variance: NaN, shown as "not testable"
        if paired and len(xa) >= 2:
            res = sps.ttest_rel(xa, xb)
            sd = float(np.std(xa - xb, ddof=1))
        elif not paired and len(xa) >= 2 and len(xb) >= 2:
            res = sps.ttest_ind(xa, xb, equal_var=False)
            sd = float(np.sqrt((np.var(xa, ddof=1) + np.var(xb, ddof=1)) / 2))
        else:
            return row
    row |= {"statistic": float(res.statistic), "p": float(res.pvalue), "effect": hedges_g(xa, xb)}
    row["power"] = (abs(diff), sd, paired, 1)
    return row


def _wide(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Finite values as a frame: index seed, columns (loss, lambda)."""
    data = df[np.isfinite(df[metric])]
    return data.pivot_table(index="seed", columns=["loss", "lambda"], values=metric, aggfunc="first")


def _cell(df: pd.DataFrame, metric: str, loss: str, lam: float) -> pd.Series:
    """The finite values of one cell, indexed by seed."""
    cell = df[(df["loss"] == loss) & (df["lambda"] == lam) & np.isfinite(df[metric])]
    return cell.set_index("seed")[metric]


def _pair(xa: pd.Series, xb: pd.Series, paired: bool) -> tuple[np.ndarray, np.ndarray]:
    """Two cells' values, matched by seed when paired."""
    if paired:
        both = pd.concat([xa.rename("a"), xb.rename("b")], axis=1, join="inner")
        return both["a"].to_numpy(float), both["b"].to_numpy(float)
    return xa.to_numpy(float), xb.to_numpy(float)


def _crossed(df: pd.DataFrame, metric: str, a: str, b: str) -> pd.DataFrame:
    """The finite rows of losses a and b at the λ both hold (a crossed design)."""
    two = df[df["loss"].isin([a, b]) & np.isfinite(df[metric])]
    both = set(two.loc[two["loss"] == a, "lambda"]) & set(two.loc[two["loss"] == b, "lambda"])
    return two[two["lambda"].isin(both)]


def _loss_pooled(df: pd.DataFrame, metric: str, a: str, b: str, paired: bool, alpha: float) -> dict:
    """`loss`: a against b pooled over λ (see the module docstring)."""
    row = {"question": "loss", "scope": "pooled over λ", "a": a, "b": b}
    if paired:
        wide = _wide(df, metric)
        lams = sorted(set(wide[a].columns) & set(wide[b].columns)) if a in wide and b in wide else []
        diffs = pd.concat([wide[(a, lam)] - wide[(b, lam)] for lam in lams], axis=1) if lams else None
        if diffs is None:
            return row | _t_row(np.array([]), np.array([]), True, alpha)
        seeds = diffs.notna().any(axis=1)
        mask = diffs.notna()[seeds]
        mean_a = wide[a][lams][seeds].where(mask.to_numpy()).mean(axis=1).to_numpy(float)
        mean_b = wide[b][lams][seeds].where(mask.to_numpy()).mean(axis=1).to_numpy(float)
        return row | _t_row(mean_a, mean_b, True, alpha) | {"test": "paired t on per-seed means over λ"}
    two = _crossed(df, metric, a, b)
    anova = two_way_anova(two, metric)
    values = {loss: two.loc[(two["loss"] == loss) & np.isfinite(two[metric]), metric] for loss in (a, b)}
    per_cell = two.groupby(["loss", "lambda"]).size()
    out = row | {"n": int(per_cell.min()) if len(per_cell) else 0, "test": "two-way ANOVA, loss term"}
    out |= {"mean_a": float(values[a].mean()), "mean_b": float(values[b].mean())}
    out |= {"statistic": NAN, "p": NAN, "effect": NAN, "effect_kind": "Hedges' g", "power": None}
    term = anova[anova["term"] == "loss"] if len(anova) else anova
    if len(term):
        residual = anova[anova["term"] == "residual"].iloc[0]
        sd = float(np.sqrt(residual["sum_sq"] / residual["df"]))
        out |= {"statistic": float(term["F"].iloc[0]), "p": float(term["p"].iloc[0])}
        out |= {"effect": hedges_g(values[a].to_numpy(float), values[b].to_numpy(float))}
        out["power"] = (abs(out["mean_a"] - out["mean_b"]), sd, False, two["lambda"].nunique())
    return out


def _lambda_omnibus(df: pd.DataFrame, metric: str, loss: str, paired: bool, alpha: float) -> dict:
    """`λ within loss`: one test across λ within `loss`; a = best λ, b = worst λ."""
    cells = {
        lam: _cell(df, metric, loss, lam) for lam in sorted(df.loc[df["loss"] == loss, "lambda"].unique())
    }
    cells = {lam: x for lam, x in cells.items() if len(x)}
    row = {"question": "λ within loss", "scope": loss, "a": "", "b": "", "n": 0, "mean_a": NAN}
    row |= {"mean_b": NAN, "statistic": NAN, "p": NAN, "effect": NAN, "effect_kind": "partial η²"}
    row |= {"test": "repeated-measures ANOVA" if paired else "one-way ANOVA", "power": None}
    if len(cells) < 2:
        return row
    if paired:
        complete = pd.concat(cells, axis=1).dropna()
        cells = {lam: complete[lam] for lam in cells}
    means = {lam: float(x.mean()) if len(x) else NAN for lam, x in cells.items()}
    order = sorted(means, key=means.get, reverse=DIRECTIONS[metric] == "max")
    best, worst = order[0], order[-1]
    row |= {"a": lambda_label(best), "b": lambda_label(worst), "mean_a": means[best], "mean_b": means[worst]}
    row["n"] = int(min(len(x) for x in cells.values()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if paired and row["n"] >= 2:
            long = pd.concat(cells, names=["lam", "seed"]).rename("y").reset_index()
            table = AnovaRM(long, "y", "seed", within=["lam"]).fit().anova_table.iloc[0]
            f, df1, df2, p = table["F Value"], table["Num DF"], table["Den DF"], table["Pr > F"]
        elif not paired and all(len(x) >= 2 for x in cells.values()):
            res = sps.f_oneway(*[x.to_numpy(float) for x in cells.values()])
            f, p = res.statistic, res.pvalue
            df1, df2 = len(cells) - 1, sum(len(x) for x in cells.values()) - len(cells)
        else:
            return row
    pair = _t_row(*_pair(cells[best], cells[worst], paired), paired, alpha)
    row |= {"statistic": float(f), "p": float(p), "power": pair["power"]}
    row["effect"] = float(f * df1 / (f * df1 + df2)) if np.isfinite(f) else NAN
    return row


def _metric_rows(
    df: pd.DataFrame, metric: str, pairwise: pd.DataFrame, paired: bool, alpha: float
) -> list[dict]:
    """Every test of one metric's family, uncorrected."""
    losses = sorted(df["loss"].unique())
    lambdas = sorted(df["lambda"].unique())
    rows = []
    if len(lambdas) > 1:
        rows += [_loss_pooled(df, metric, a, b, paired, alpha) for a, b in itertools.combinations(losses, 2)]
    for r in pairwise[pairwise["metric"] == metric].to_dict("records") if len(pairwise) else []:
        xa, xb = _pair(_cell(df, metric, r["a"], r["lambda"]), _cell(df, metric, r["b"], r["lambda"]), paired)
        row = {"question": "loss at λ", "scope": lambda_label(r["lambda"]), "a": r["a"], "b": r["b"]}
        rows.append(row | _t_row(xa, xb, paired, alpha))
    if len(lambdas) > 1:
        rows += [_lambda_omnibus(df, metric, loss, paired, alpha) for loss in losses]
    if 0 in lambdas:
        for loss, lam in itertools.product(losses, [x for x in lambdas if x > 0]):
            xa, xb = _pair(_cell(df, metric, loss, lam), _cell(df, metric, loss, 0.0), paired)
            if len(xa) or len(xb):
                row = {"question": "λ vs 0", "scope": loss, "a": lambda_label(lam), "b": lambda_label(0)}
                rows.append(row | _t_row(xa, xb, paired, alpha))
    return [{"metric": metric} | r for r in rows]


def _seeds_needed(power: tuple | None, alpha: float) -> float:
    """Seeds per cell for `power` = (difference, sd, paired, values per seed and group) at `alpha`."""
    if power is None:
        return NAN
    delta, sd, paired, per_seed = power
    need = seeds_needed(delta, sd, paired, alpha)
    return float(np.ceil(need / per_seed)) if np.isfinite(need) else NAN


def _answer(r: dict, alpha: float) -> str:
    if r["question"] != "λ within loss":
        return better(r["metric"], r["a"], r["b"], r["mean_a"], r["mean_b"], r["p_adj"], alpha)
    if not np.isfinite(r["p_adj"]):
        return "not testable"
    if r["p_adj"] >= alpha:
        return "no significant effect of λ"
    return f"λ matters: best {r['a']}, worst {r['b']}"


def interaction_p(df: pd.DataFrame, metric: str, a: str, b: str, paired: bool) -> float:
    """The p of the loss x λ interaction between losses a and b: the two-way repeated-measures
    ANOVA (seeds holding every cell) when paired, the two-way ANOVA otherwise; NaN if not testable."""
    two = _crossed(df, metric, a, b)
    if two["lambda"].nunique() < 2:
        return NAN
    if not paired:
        anova = two_way_anova(two, metric)
        term = anova[anova["term"] == "loss:lambda"] if len(anova) else anova
        return float(term["p"].iloc[0]) if len(term) else NAN
    wide = _wide(two, metric).dropna()  # the seeds that hold every cell
    if len(wide) < 2:
        return NAN
    long = wide.stack(["loss", "lambda"], future_stack=True).rename("y").reset_index()
    long = long.rename(columns={"lambda": "lam"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        table = AnovaRM(long, "y", "seed", within=["loss", "lam"]).fit().anova_table
    return float(table.loc["loss:lam", "Pr > F"])


def describe(r: dict, pair: bool = True) -> str:
    """A verdict row's question in words: "loss at λ=5 (bce vs wgangp)" (without the pair: "loss at λ=5")."""
    question = {
        "loss": "loss pooled over λ",
        "loss at λ": f"loss at {r['scope']}",
        "λ within loss": f"λ within {r['scope']}",
        "λ vs 0": f"λ vs 0 within {r['scope']}",
    }[r["question"]]
    return f"{question} ({r['a']} vs {r['b']})" if r["a"] and pair else question


def _notes(
    df: pd.DataFrame, table: pd.DataFrame, anova: pd.DataFrame, metric: str, paired: bool, alpha: float
) -> list[str]:
    """One sentence per disagreement between the analyses of one metric (`anova`: the two-way ANOVA
    table of every metric, `stats.two_way_anova`)."""
    notes = []
    rows = table[table["metric"] == metric]
    lost = rows[(rows["p"] < alpha) & (rows["p_adj"] >= alpha)]
    if len(lost):
        listed = "; ".join(
            f"{describe(r)} p {r['p']:.2g} -> {r['p_adj']:.2g}" for r in lost.to_dict("records")
        )
        notes.append(
            f"{metric}: {len(lost)} test(s) reach p < {alpha:g} only before correcting over the {len(rows)} "
            f"tests on {metric} ({listed}): more seeds would tell (see seeds needed)"
        )
    pooled = rows[rows["question"] == "loss"]
    per_lambda = rows[rows["question"] == "loss at λ"]
    for r in pooled.itertuples():
        at = per_lambda[(per_lambda["a"] == r.a) & (per_lambda["b"] == r.b)]
        winners = set(at.loc[at["p_adj"] < alpha, "answer"])
        pooled_sig = r.p_adj < alpha
        inter = interaction_p(df, metric, r.a, r.b, paired)
        inter_text = f"loss x λ interaction p = {inter:.3g}" if np.isfinite(inter) else "no interaction test"
        if pooled_sig and not winners:
            notes.append(
                f"{metric}: {r.answer} pooled over λ, but at no single λ: pooling averages "
                f"{at['scope'].nunique()} λ per seed, which leaves less noise than one λ's {int(r.n)} seeds "
                "(power), and each λ's test is corrected with the rest"
            )
        elif not pooled_sig and len(winners) > 1:
            notes.append(
                f"{metric}: the better loss changes with λ ({'; '.join(sorted(winners))}; {inter_text}): "
                "pooled over λ the differences cancel"
            )
        elif not pooled_sig and winners:
            sig = at[at["p_adj"] < alpha]
            notes.append(
                f"{metric}: {next(iter(winners))} at {', '.join(sig['scope'])} only, not pooled over λ "
                f"({inter_text}): the λ where the losses do not differ dilute the pooled difference"
            )
        elif pooled_sig and winners and not winners <= {r.answer}:
            notes.append(
                f"{metric}: {r.answer} pooled over λ, yet the other loss wins at some λ ({inter_text})"
            )
        if inter < alpha and not (not pooled_sig and len(winners) > 1):
            notes.append(
                f"{metric}, {r.a} vs {r.b}: {inter_text} (uncorrected): the difference between the losses "
                "depends on λ, so the pooled answer is an average over λ; read the per-λ rows"
            )
    notes += _anova_notes(anova[anova["metric"] == metric] if len(anova) else anova, rows, metric, alpha)
    for r in rows[rows["question"] == "λ within loss"].itertuples():
        versus = rows[(rows["question"] == "λ vs 0") & (rows["scope"] == r.scope)]
        if r.p_adj < alpha and len(versus) and not (versus["p_adj"] < alpha).any():
            between = "" if "λ=0" in (r.a, r.b) else "; its largest difference lies between nonzero λ"
            notes.append(
                f"{metric}, {r.scope}: λ matters in the test across every λ (best {r.a}, worst {r.b}) but no "
                f"λ > 0 differs from λ = 0 after correction: one test of every λ at once has more power "
                f"than {len(versus)} corrected pairs{between}"
            )
    return notes


def _anova_notes(anova: pd.DataFrame, rows: pd.DataFrame, metric: str, alpha: float) -> list[str]:
    """Where the metric's two-way ANOVA table (uncorrected, every value an independent unit) finds a
    main effect that the verdict's corrected tests do not."""
    if anova.empty:
        return []
    notes = []
    p = anova.set_index("term")["p"]
    checks = (("loss", "loss", "the losses"), ("lambda", "λ within loss", "λ"))
    for term, question, what in checks:
        asked = rows[rows["question"] == question]
        if term in p and p[term] < alpha and len(asked) and not (asked["p_adj"] < alpha).any():
            notes.append(
                f"{metric}: the two-way ANOVA's {term} term has p = {p[term]:.2g} (uncorrected, pooled over "
                f"{'λ' if term == 'loss' else 'losses'}, seeds as independent units) while the verdict finds "
                f"no difference between {what} after correcting over the {len(rows)} tests on {metric}"
            )
    return notes


def build(
    df: pd.DataFrame,
    metrics: list[str],
    pairwise: pd.DataFrame,
    anova: pd.DataFrame,
    paired: bool,
    alpha: float,
    correction: str,
) -> tuple[pd.DataFrame, list[str]]:
    """The verdict table (`VERDICT_COLUMNS`, per metric in `QUESTIONS` order) with p-values corrected
    per metric, and the sentences that explain disagreements. `df` is a checked results frame
    (`stats.check_results`); `pairwise` and `anova` are `stats.pairwise`'s and
    `stats.two_way_anova`'s tables of the same metrics."""
    tables = []
    for metric in metrics:
        rows = pd.DataFrame(_metric_rows(df, metric, pairwise, paired, alpha))
        if rows.empty:
            continue
        rows["p_adj"] = correct(rows["p"], alpha, correction)
        rows["n_needed"] = [_seeds_needed(power, alpha / len(rows)) for power in rows.pop("power")]
        rows["answer"] = [_answer(r, alpha) for r in rows.to_dict("records")]
        tables.append(rows)
    if not tables:
        return pd.DataFrame(columns=list(VERDICT_COLUMNS)), []
    table = pd.concat(tables, ignore_index=True)[list(VERDICT_COLUMNS)]
    notes = [n for metric in metrics for n in _notes(df, table, anova, metric, paired, alpha)]
    return table, notes


def headline(table: pd.DataFrame, metric: str, alpha: float) -> str:
    """One line answering the study's questions on `metric`, from the verdict table: the significant
    answers with their p_adj, or, where none is, the largest difference and the seeds it would need.
    Per-λ loss rows speak only where there is no pooled row (a single λ)."""
    rows = table[table["metric"] == metric]
    parts = []
    for question in QUESTIONS:
        q = rows[rows["question"] == question]
        if q.empty or (question == "loss at λ" and (rows["question"] == "loss").any()):
            continue
        name = {"loss at λ": "loss", "λ within loss": "λ"}.get(question, question)
        sig = q[q["p_adj"] < alpha].to_dict("records")
        if sig:
            answers = [
                f"{r['answer']}" + (f" within {r['scope']}" if question != "loss" else "") for r in sig
            ]
            answers = [f"{a} (p_adj {r['p_adj']:.2g})" for a, r in zip(answers, sig, strict=True)]
            parts.append(f"{name}: " + "; ".join(answers))
            continue
        testable = q.dropna(subset=["p_adj"])
        if testable.empty:
            parts.append(f"{name}: not testable")
            continue
        r = testable.loc[testable["effect"].abs().idxmax()].to_dict()
        need = f", {int(r['n_needed'])} seeds would detect it" if np.isfinite(r["n_needed"]) else ""
        parts.append(
            f"{name}: no significant difference (largest: {describe(r)}, a - b = "
            f"{r['mean_a'] - r['mean_b']:.3g}, p_adj {r['p_adj']:.2g}{need})"
        )
    return f"{metric}: " + ". ".join(parts)
