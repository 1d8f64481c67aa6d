"""Text forms of an analysis (`lossbench.stats.StatsResult`): plain table, markdown, csv, latex, json;
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

from lossbench.errors import ConfigError
from lossbench.stats import StatsResult

if TYPE_CHECKING:
    from lossbench.metrics.utility import UtilityResult

FORMATS = ("table", "markdown", "csv", "latex", "json")


def header_lines(result: StatsResult) -> list[str]:
    """The settings every number depends on, one line each."""
    tests = "paired t / Wilcoxon signed-rank" if result.paired else "Welch t / Mann-Whitney U"
    lines = [
        f"metrics: {', '.join(result.metrics)}; alpha = {result.alpha:g}",
        f"tests: {tests} ({result.paired_reason}); mixed model with seed as random intercept",
        f"p-values corrected with {result.correction_name} (multipletests method='{result.correction}')",
        f"{'bootstrap (BCa)' if result.ci_method == 'bootstrap' else 't-based'} 95% CIs, "
        "clipped to each metric's range",
    ]
    if result.settings:
        lines.append("evaluation settings: " + ", ".join(f"{k}={v}" for k, v in result.settings.items()))
    return lines


def header(result: StatsResult) -> str:
    """`header_lines` joined by newlines."""
    return "\n".join(header_lines(result))


def power_lines(result: StatsResult) -> list[str]:
    """One sentence per metric: the smallest difference detectable and the seeds a difference needs."""
    lines = []
    for r in result.power.to_dict("records"):
        if pd.isna(r["min_detectable"]):
            detect = f"with {r['n']} seeds per cell no detectable difference can be computed"
        else:
            detect = f"with {r['n']} seeds, {r['min_detectable']:.3g} is detected with {r['power']:.0%} power"
        if pd.isna(r["n_needed"]):
            need = f"no seed count for {r['delta']:.3g} ({r['delta_source']})"
        else:
            need = f"{r['delta']:.3g} ({r['delta_source']}) needs {int(r['n_needed'])} seeds"
        lines.append(f"power, {r['metric']}: {detect}; {need}")
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
    "problems": "Failed and missing cells",
    "summary": "Per cell: mean, sd and 95% CI over seeds; metric_se: the metric's own noise (bootstrap)",
    "best": "Best cell per metric",
    "pairwise": "Pairwise comparisons per lambda",
    "omnibus": "Omnibus tests per lambda (more than two losses)",
    "anova": "Two-way ANOVA (type II): metric ~ loss * lambda",
    "mixed": "Mixed model: metric ~ loss * lambda, seed as random intercept (REML)",
    "power": "Power: smallest difference detectable at 80% power; seeds needed for a difference",
}
WIDTH = 100  # columns of the plain-text table
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
        lines = [w for line in lines for w in textwrap.wrap(line, WIDTH, subsequent_indent="  ")]
    blocks = ["\n".join({"latex": "% "}.get(fmt, "") + line for line in lines)]
    for name, table in result.tables().items():
        if table.empty or name not in names:
            continue
        shown = display(table)
        if fmt == "table":
            blocks.append(f"{TITLES[name]}\n{shown.to_string(index=False, line_width=WIDTH)}")
        elif fmt == "markdown":
            blocks.append(f"### {TITLES[name]}\n\n{markdown_table(shown)}")
        else:
            shown = shown.astype(str).map(latex_escape).rename(columns=latex_escape)
            body = shown.to_latex(index=False, escape=False)
            blocks.append(f"% {TITLES[name]}\n{body}".rstrip())
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


def format_warnings(result: StatsResult) -> str:
    """The warnings of `result`, one per line after "warning: " (for stderr); empty when none."""
    return "".join(f"warning: {w}\n" for w in result.warnings)
