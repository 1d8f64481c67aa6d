"""Text forms of an analysis (`lossbench.analysis.StatsResult`): plain table, markdown, csv, latex, json;
and of a downstream-utility result (`utility_table`).

Shared by `lossbench stats` and the report, and kept apart from the report so that printing
statistics does not load matplotlib. Floats are shown with 4 significant digits, lambda with `:g`.
"""

from __future__ import annotations

import io
import json
import textwrap
from typing import TYPE_CHECKING

import pandas as pd

from lossbench.analysis import StatsResult
from lossbench.analysis.stats import CONFIDENCE, POWER
from lossbench.analysis.verdict import describe, headline
from lossbench.errors import ConfigError

if TYPE_CHECKING:
    from lossbench.metrics.utility import UtilityResult

FORMATS = ("table", "markdown", "csv", "latex", "json")


def header_lines(result: StatsResult) -> list[str]:
    """The settings every number depends on, one line each."""
    tests = "paired t / Wilcoxon signed-rank" if result.paired else "Welch t / Mann-Whitney U"
    lines = [
        f"metrics: {', '.join(result.metrics)}; alpha = {result.alpha:g}",
        f"tests: {tests} ({result.paired_reason}); mixed model with seed as random intercept",
        correction_sentence(result),
        f"{'bootstrap (BCa)' if result.ci_method == 'bootstrap' else 't-based'} {CONFIDENCE:.0%} CIs, "
        "clipped to each metric's range",
    ]
    if result.settings:
        lines.append("evaluation settings: " + ", ".join(f"{k}={v}" for k, v in result.settings.items()))
    return lines


def correction_sentence(result: StatsResult) -> str:
    """The correction family in words: the same sentence wherever a corrected p-value is shown."""
    return (
        f"p_adj: {result.correction_name}-corrected (multipletests method='{result.correction}') within "
        "each metric over the tests of its verdict (loss pooled over λ, loss at each λ, λ within each "
        "loss, each λ against λ = 0); rank tests likewise among themselves; none across metrics, so a "
        "p_adj does not depend on which metrics are shown"
    )


def verdict_table(result: StatsResult, metric: str) -> pd.DataFrame:
    """One metric's verdict as display strings: question, a vs b, difference of means, effect size,
    corrected p, seeds (held / needed for the observed difference at `stats.POWER`) and the answer."""
    rows = []
    for r in result.verdict[result.verdict["metric"] == metric].to_dict("records"):
        effect = "g" if r["effect_kind"] == "Hedges' g" else "η²"
        needed = "" if pd.isna(r["n_needed"]) else f"/{int(r['n_needed'])}"
        rows.append(
            {
                "question": describe(r, pair=False),
                "a vs b": f"{r['a']} vs {r['b']}" if r["a"] else "",
                "a - b": _num(r["mean_a"] - r["mean_b"]),
                "effect": "" if pd.isna(r["effect"]) else f"{effect} {r['effect']:.2g}",
                "p_adj": _num(r["p_adj"], 2),
                "seeds": f"{int(r['n'])}{needed}",
                "answer": r["answer"],
            }
        )
    return pd.DataFrame(rows)


def verdict_lines(result: StatsResult, first: str | None = None) -> list[str]:
    """The answer per metric in one line each (metric `first`'s first), then the sentences where
    analyses disagree."""
    metrics = sorted(result.verdict_metrics, key=lambda m: m != first)  # stable: otherwise in order
    return [headline(result.verdict, m, result.alpha) for m in metrics] + result.verdict_notes


def wrap(lines: list[str]) -> list[str]:
    """`lines` wrapped to WIDTH columns, continuation lines indented: the plain-text format."""
    return [w for line in lines for w in textwrap.wrap(line, WIDTH, subsequent_indent="  ")]


def _num(x: float, digits: int = 4) -> str:
    return "" if pd.isna(x) else f"{x:.{digits}g}"


def header(result: StatsResult) -> str:
    """`header_lines` joined by newlines."""
    return "\n".join(header_lines(result))


def power_lines(result: StatsResult) -> list[str]:
    """One sentence per metric: the smallest difference detectable and the seeds a difference needs."""
    lines = []
    for r in result.power.to_dict("records"):
        if pd.isna(r["sd"]) and pd.isna(r["delta"]):  # `power_analysis`: no two losses to compare
            lines.append(
                f"power, {r['metric']}: not computed (it compares two losses at one λ; no λ here has "
                "two losses with 2+ seeds each)"
            )
            continue
        if pd.isna(r["min_detectable"]):
            detect = f"with {r['n']} seeds per cell no detectable difference can be computed"
        else:
            detect = f"with {r['n']} seeds, {r['min_detectable']:.3g} is detected with {r['power']:.0%} power"
        if pd.isna(r["n_needed"]):
            need = f"no seed count for {r['delta']:.3g} ({r['delta_source']})"
        else:
            need = f"{r['delta']:.3g} ({r['delta_source']}) needs {int(r['n_needed'])} seeds"
        level = f"at alpha {r['alpha']:.2g}" + (
            f" ({r['family']} tests corrected together)" if r["family"] > 1 else ""
        )
        lines.append(f"power, {r['metric']} {level}: {detect}; {need}")
    return lines


def display(table: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    """A copy with floats as strings of `digits` significant digits (p-values likewise)."""
    out = table.copy()
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col]):
            fmt = "{:g}" if col == "lambda" else f"{{:.{digits}g}}"
            out[col] = [("" if pd.isna(v) else fmt.format(v)) for v in out[col]]
    return out


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table of `table` (strings as they are)."""
    cells = table.astype(str).map(lambda s: s.replace("|", "\\|"))
    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in cells.itertuples(index=False)]
    return "\n".join(lines)


TITLES = {
    "verdict": "Verdict per metric: a vs b, a - b, effect size, corrected p, seeds held/needed, answer",
    "problems": "Failed and missing cells",
    "summary": f"Per cell: mean, sd and {CONFIDENCE:.0%} CI over seeds; metric_se: the metric's own noise",
    "best": "Best cell per metric",
    "pairwise": "Pairwise comparisons per lambda",
    "omnibus": "Omnibus tests per lambda (more than two losses)",
    "anova": "Two-way ANOVA (type II): metric ~ loss * lambda",
    "mixed": "Mixed model: metric ~ loss * lambda, seed as random intercept (REML)",
    "power": f"Power: smallest difference detectable at {POWER:.0%} power; seeds needed for a difference",
}
WIDTH = 100  # columns of the plain-text table
#: The columns the plain-text format shows of the wide tables (every column: json, csv, markdown).
TERMINAL_COLUMNS = {
    "summary": ("metric", "loss", "lambda", "n", "n_dropped", "mean", "sd", "ci_low", "ci_high", "metric_se"),
    "pairwise": (
        "metric",
        "lambda",
        "a",
        "b",
        "n_a",
        "mean_a",
        "mean_b",
        "p",
        "p_adj",
        "hedges_g",
        "verdict",
    ),
    "power": ("metric", "design", "n", "sd", "alpha", "min_detectable", "delta", "n_needed"),
}


def terminal_table(name: str, table: pd.DataFrame) -> pd.DataFrame:
    """`table` for the plain-text format: its TERMINAL_COLUMNS, without columns empty or zero in
    every row (n_dropped 0, metric_se without bootstrap)."""
    shown = table[[c for c in TERMINAL_COLUMNS.get(name, table.columns) if c in table.columns]]
    empty = [c for c in shown.columns if shown[c].isna().all() or (c == "n_dropped" and not shown[c].any())]
    return shown.drop(columns=empty)


LATEX_ESCAPES = str.maketrans(
    {c: "\\" + c for c in "&%$#_{}"} | {"~": r"\textasciitilde{}", "^": r"\^{}", "\\": r"\textbackslash{}"}
)


def check_format(fmt: str) -> str:
    """Return `fmt` if it is one of FORMATS; raise ConfigError otherwise."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}: choose from {', '.join(FORMATS)}")
    return fmt


def latex_escape(text: str) -> str:
    """`text` with LaTeX's special characters escaped."""
    return str(text).translate(LATEX_ESCAPES)


def csv_table(result: StatsResult, names: tuple[str, ...]) -> pd.DataFrame:
    """The tables `names` stacked into one frame, a first column `table` naming each row's table."""
    frames = [t.assign(table=name) for name, t in result.tables().items() if name in names and len(t)]
    if not frames:
        return pd.DataFrame(columns=["table"])
    out = pd.concat(frames, ignore_index=True)
    return out[["table", *[c for c in out.columns if c != "table"]]]


def format_result(result: StatsResult, fmt: str = "table", tables: tuple[str, ...] | None = None) -> str:
    """`result` as text: "table" (plain, WIDTH columns), "markdown", "csv", "latex" or "json".

    `tables` selects tables (default: all). Warnings are not included except in json (see
    `format_warnings`). csv is one table readable by `pandas.read_csv(path, comment="#")`: the
    tables stacked with a `table` column, every header line commented.
    """
    check_format(fmt)
    names = tables or tuple(result.tables())
    if fmt == "json":
        return json.dumps(result.to_dict(), indent=2, allow_nan=False, default=str)
    lines = header_lines(result)
    if fmt == "csv":
        buf = io.StringIO()
        csv_table(result, names).to_csv(buf, index=False)
        return "".join(f"# {line}\n" for line in lines) + buf.getvalue()
    if fmt == "table":
        lines = wrap(lines)
    blocks = ["\n".join({"latex": "% "}.get(fmt, "") + line for line in lines)]
    if "verdict" in names and len(result.verdict):
        blocks.append(_verdict_block(result, fmt))
    for name, table in result.tables().items():
        if table.empty or name not in names or name == "verdict":
            continue
        shown = display(terminal_table(name, table) if fmt == "table" else table)
        if fmt == "table":
            blocks.append(f"{TITLES[name]}\n{shown.to_string(index=False, line_width=WIDTH)}")
        elif fmt == "markdown":
            blocks.append(f"### {TITLES[name]}\n\n{markdown_table(shown)}")
        else:
            shown = shown.astype(str).map(latex_escape).rename(columns=latex_escape)
            body = shown.to_latex(index=False, escape=False)
            blocks.append(f"% {TITLES[name]}\n{body}".rstrip())
    return "\n\n".join(blocks) + "\n"


def verdict_markdown(result: StatsResult, first: str | None = None) -> str:
    """The verdict as a markdown document: its lines (metric `first` first), the correction family,
    the settings, one table per metric (the MLflow parent run's `verdict.md`, the dashboard note)."""
    lines = verdict_lines(result, first)
    tables = [f"### {m}\n\n{markdown_table(verdict_table(result, m))}" for m in result.verdict_metrics]
    settings = "\n".join(f"- {line}" for line in header_lines(result) if not line.startswith("p_adj:"))
    return "\n\n".join(
        [
            "## Verdict",
            "\n".join(f"- {x}" for x in lines),
            correction_sentence(result) + ".",
            settings,
            *tables,
        ]
    )


def _verdict_block(result: StatsResult, fmt: str) -> str:
    """The verdict: its lines, then one table per metric (see `verdict_table`)."""
    lines = verdict_lines(result)
    tables = {m: verdict_table(result, m) for m in result.verdict_metrics}
    if fmt == "table":
        text = wrap(lines)
        body = [f"{m}\n{t.to_string(index=False, line_width=WIDTH)}" for m, t in tables.items()]
        return "\n\n".join([f"{TITLES['verdict']}\n" + "\n".join(text), *body])
    if fmt == "markdown":
        body = [f"**{m}**\n\n{markdown_table(t)}" for m, t in tables.items()]
        return "\n\n".join([f"### {TITLES['verdict']}", "\n".join(f"- {x}" for x in lines), *body])
    body = []
    for m, t in tables.items():
        t = t.astype(str).map(latex_escape).rename(columns=latex_escape)
        body.append(f"% {m}\n" + t.to_latex(index=False, escape=False).rstrip())
    return "\n".join(f"% {x}" for x in [TITLES["verdict"], *lines]) + "\n" + "\n".join(body)


def utility_table(result: UtilityResult) -> str:
    """The downstream-utility result as a markdown table (one row per arm: each score with its
    CI, per-class recall, training counts), then the gain line and the settings line."""
    rows = []
    for arm in result.scores:
        row = {"arm": arm, "train counts": "/".join(map(str, result.counts[arm]))}
        for s, value in result.scores[arm].items():
            low, high = result.ci[arm][s]
            row[s] = f"{value:.3f} [{low:.3f}, {high:.3f}]"
        row |= {f"recall {k}": f"{v:.3f}" for k, v in result.recall[arm].items()}
        rows.append(row)
    low, high = result.gain_ci
    settings = ", ".join(f"{k}={v}" for k, v in result.settings.items())
    return (
        markdown_table(pd.DataFrame(rows))
        + f"\n\nutility_gain (balanced accuracy, aug - real) = {result.gain:.3f} [{low:.3f}, {high:.3f}]"
        + f"\nheld-out counts: {'/'.join(map(str, result.counts['heldout']))}; {settings}"
    )


def format_warnings(result: StatsResult) -> str:
    """The warnings of `result`, one per line after "warning: " (for stderr); empty when none."""
    return "".join(f"warning: {w}\n" for w in result.warnings)
