"""Text forms of an analysis (`lossbench.stats.StatsResult`): plain table, markdown, csv, latex, json;
and of a downstream-utility result (`utility_table`).

Shared by `lossbench stats` and the report, and kept apart from the report so that printing
statistics does not load matplotlib. Floats are shown with 4 significant digits, lambda with `:g`.
"""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING

import pandas as pd

from lossbench.errors import ConfigError
from lossbench.stats import StatsResult

if TYPE_CHECKING:
    from lossbench.metrics.utility import UtilityResult

FORMATS = ("table", "markdown", "csv", "latex", "json")


def header(result: StatsResult) -> str:
    """One line naming the settings every number depends on (a second one for evaluation settings)."""
    tests = "paired t / Wilcoxon signed-rank" if result.paired else "Welch t / Mann-Whitney U"
    settings = ", ".join(f"{k}={v}" for k, v in result.settings.items())
    return (
        f"metrics: {', '.join(result.metrics)}; alpha={result.alpha:g}; tests: {tests}; "
        f"p-values corrected with {result.correction_name} (multipletests method='{result.correction}'); "
        f"{'bootstrap (BCa)' if result.ci_method == 'bootstrap' else 't-based'} 95% CIs"
        + (f"\nevaluation settings: {settings}" if settings else "")
    )


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
    "summary": "Per cell: mean, sd and 95% CI over seeds",
    "best": "Best cell per metric",
    "pairwise": "Pairwise comparisons per lambda",
    "omnibus": "Omnibus tests per lambda (more than two losses)",
    "anova": "Two-way ANOVA (type II): metric ~ loss * lambda",
}


def check_format(fmt: str) -> str:
    """Return `fmt` if it is one of FORMATS; raise ConfigError otherwise."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}: choose from {', '.join(FORMATS)}")
    return fmt


def format_result(result: StatsResult, fmt: str = "table") -> str:
    """`result` as text: "table" (plain), "markdown", "csv", "latex" or "json".

    csv and latex give one block per table, each after a line `# <table name>`.
    """
    check_format(fmt)
    if fmt == "json":
        return json.dumps(result.to_dict(), indent=2, allow_nan=False, default=str)
    blocks = [header(result)]
    for name, table in result.tables().items():
        if table.empty:
            continue
        shown = display(table)
        if fmt == "table":
            blocks.append(f"{TITLES[name]}\n{shown.to_string(index=False)}")
        elif fmt == "markdown":
            blocks.append(f"### {TITLES[name]}\n\n{markdown_table(shown)}")
        elif fmt == "csv":
            buf = io.StringIO()
            table.to_csv(buf, index=False)
            blocks.append(f"# {name}\n{buf.getvalue().rstrip()}")
        else:
            blocks.append(f"% {TITLES[name]}\n{shown.to_latex(index=False)}".rstrip())
    comment = {"csv": "# ", "latex": "% "}.get(fmt, "")
    blocks[0] = comment + blocks[0]
    if result.warnings:
        title = "### Warnings" if fmt == "markdown" else comment + "warnings:"
        bullet = "- " if fmt == "markdown" else comment + "  "
        blocks.append("\n".join([title, *[bullet + w for w in result.warnings]]))
    return "\n\n".join(blocks) + "\n"


def utility_table(result: UtilityResult) -> str:
    """The downstream-utility result as a markdown table (one row per arm: each score with its 95%
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
