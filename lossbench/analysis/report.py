"""The study report: paper-style table, significance tables and figures, as HTML and markdown.

Numbers come from a results frame (a study's or a CSV's; the CLI reads it) through
`lossbench.analysis.stats`. Figures that need MLflow artifacts are read by
`lossbench.tracking.fetch_artifacts` from the runs named in the frame's `run_id` column: sample
grids, training curves, generated features per trial run and real features on the parent (study)
run. A figure whose inputs are missing says "not available", so a bare CSV still gives the whole
numeric report.

Output in `out_dir`: `report.html` (self-contained: images embedded as base64 PNG, inline CSS, no
external assets), `report.md` with `figures/*.png` beside it, and `stats.json`. Figures are drawn
with matplotlib's Agg canvas (`matplotlib.figure.Figure`, no pyplot state). PCA is numpy's SVD of
the centred real + generated features.
"""

from __future__ import annotations

import base64
import html
import importlib.util
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lossbench import analysis, tracking
from lossbench.analysis import stats
from lossbench.analysis.formatting import (
    TITLES,
    correction_sentence,
    display,
    format_result,
    header_lines,
    markdown_table,
    power_lines,
    verdict_lines,
    verdict_table,
)
from lossbench.config import lambda_label, lambda_text
from lossbench.files import check_folder
from lossbench.metrics import DIRECTIONS, metric_description
from lossbench.tracking import Artifacts

NOT_AVAILABLE = "not available"
#: The page template (templates/report.html.j2), escaping every value it is given.
_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("lossbench.analysis", "templates"),
    autoescape=True,
    keep_trailing_newline=True,
)


@dataclass
class Report:
    """Paths of the written report."""

    html: Path
    markdown: Path
    stats_json: Path
    figures: list[Path]
    logged_to: str | None = None  # MLflow parent run id when the report was logged


# ------------------------------------------------------------------------------------ figures


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _better(metric: str) -> str:
    return f"{'lower' if DIRECTIONS[metric] == 'min' else 'higher'} is better"


def _label(metric: str) -> str:
    return f"{metric} ({_better(metric)})"


def plot_metrics_vs_lambda(summary: pd.DataFrame, metrics: list[str]) -> bytes:
    """One panel per metric: mean over seeds against lambda per loss, with the CI as a band."""
    cols = min(2, len(metrics))
    rows = -(-len(metrics) // cols)
    fig = Figure(figsize=(5.5 * cols, 3.6 * rows))
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(rows, cols, i + 1)
        for loss, s in summary[summary["metric"] == metric].groupby("loss", sort=True):
            s = s.sort_values("lambda")
            line = ax.plot(s["lambda"], s["mean"], marker="o", label=loss)[0]
            ax.fill_between(s["lambda"], s["ci_low"], s["ci_high"], color=line.get_color(), alpha=0.2)
        ax.set_xlabel("λ (perceptual-loss weight)")
        ax.set_title(_label(metric), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


#: Panels per row of the training-curve figure: more would shrink each below legibility in the report.
CURVE_COLUMNS = 4


#: Quality curves drawn as a reference line in another's panel: the real images' own value (fake-fake
#: MS-SSIM beside real-real; fakes' FID at the held-out count beside the held-out images' own FID).
CURVE_REFERENCES = {"msssim_ff": "msssim_rr", "fid_at_heldout_n": "fid_heldout"}


def plot_curves(
    curves: dict[str, list[tuple[str, float, list[int], list[float]]]], each_seed: bool = False
) -> bytes | None:
    """Per loss, one panel per term it logs (rows of at most CURVE_COLUMNS; a term a loss does not
    log, e.g. another loss's gradient penalty, gets no panel); per λ (coloured by λ, viridis) the
    mean over seeds, and with `each_seed` every seed's curve as a thin line beside it, so whether
    each run flattened is seen. A term of CURVE_REFERENCES' values is drawn, dashed grey, as the
    mean reference in its partner's panel instead of in a panel of its own."""
    if not curves:
        return None
    references = {ff: rr for ff, rr in CURVE_REFERENCES.items() if ff in curves and rr in curves}
    losses = sorted({c[0] for runs in curves.values() for c in runs})
    lambdas = sorted({c[1] for runs in curves.values() for c in runs})
    cmap = matplotlib.colormaps["viridis"]
    colors = {lam: cmap(i / max(1, len(lambdas) - 1)) for i, lam in enumerate(lambdas)}
    drawn = sorted(set(curves) - set(references.values()))
    logged = {loss: [t for t in drawn if any(c[0] == loss for c in curves[t])] for loss in losses}
    rows = [(loss, chunk) for loss in losses for chunk in _chunks(logged[loss], CURVE_COLUMNS)]
    fig = Figure(figsize=(4.2 * min(CURVE_COLUMNS, max(map(len, logged.values()))), 3.0 * len(rows)))
    for r, (loss, terms) in enumerate(rows):
        for c, term in enumerate(terms):
            ax = fig.add_subplot(len(rows), CURVE_COLUMNS, r * CURVE_COLUMNS + c + 1)
            for lam in lambdas:
                runs = [pd.Series(v, index=s) for x, y, s, v in curves[term] if (x, y) == (loss, lam)]
                if not runs:
                    continue
                if each_seed:
                    for run in runs:
                        ax.plot(run.index, run.to_numpy(), color=colors[lam], lw=0.6, alpha=0.35)
                mean = pd.concat(runs, axis=1).mean(axis=1).sort_index()
                ax.plot(mean.index, mean.to_numpy(), color=colors[lam], lw=1.5 if each_seed else 1,
                        label=lambda_label(lam))  # fmt: skip
            if term in references:
                level = np.mean([v for x, _, _, vs in curves[references[term]] if x == loss for v in vs])
                ax.axhline(level, color="0.4", ls="--", lw=1, label=f"{references[term]} (real)")
            ax.set_title(f"{loss}: {term}", fontsize=10)
            ax.set_xlabel("generator step")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


#: `curve_ends` fits a slope to the last 1 / END_PARTS of a run's steps: the last third.
END_PARTS = 3


def curve_ends(quality: dict[str, list[tuple[str, float, list[int], list[float]]]]) -> pd.DataFrame:
    """Whether each cell's quality curves had flattened when training ended: per curve metric (not
    the CURVE_REFERENCES partners), loss and λ, over seeds (mean and sd): the last value and the
    least-squares slope of the values in the last 1 / END_PARTS of the steps, per 1000 steps and as a
    share of the last value. A run with fewer than 3 finite points in that part, or a last value
    that is not finite, is left out."""
    rows = []
    for metric in sorted(set(quality) - set(CURVE_REFERENCES.values())):
        for loss, lam, steps, values in quality[metric]:
            x, y = np.asarray(steps, float), np.asarray(values, float)
            end = END_PARTS * x >= (END_PARTS - 1) * x.max() if len(x) else x.astype(bool)
            end &= np.isfinite(y)  # a diverged evaluation (NaN, inf) is no point of the line
            if end.sum() < 3 or not np.isfinite(y[-1]):
                continue
            slope = np.polyfit(x[end], y[end], 1)[0] * 1000
            rows.append({"metric": metric, "loss": loss, "lambda": lam, "last": y[-1], "slope": slope,
                         "from_step": int(x[end].min()), "to_step": int(x.max())})  # fmt: skip
    if not rows:
        return pd.DataFrame()
    runs = pd.DataFrame(rows).assign(share=lambda d: d["slope"] / d["last"].abs())
    cells = runs.groupby(["metric", "loss", "lambda"], sort=True)
    table = cells.agg(
        n=("last", "size"), from_step=("from_step", "min"), to_step=("to_step", "max"),
        last=("last", "mean"), last_sd=("last", "std"), slope_per_1000=("slope", "mean"),
        slope_sd=("slope", "std"), slope_share=("share", "mean"),
    )  # fmt: skip
    return table.reset_index()


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)] or [[]]


def pca_2d(real: np.ndarray, fakes: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Project real and generated features on the top two principal axes of their union."""
    union = np.concatenate([real, *fakes]).astype(np.float64)
    mean = union.mean(axis=0)
    _, _, vt = np.linalg.svd(union - mean, full_matrices=False)
    axes = vt[:2].T
    return (real - mean) @ axes, [(f - mean) @ axes for f in fakes]


def umap_2d(real: np.ndarray, fakes: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Real and generated features embedded together by UMAP (McInnes et al. 2018, as the paper
    plots them; umap-learn's defaults, 15 neighbours, seed 0 so the map repeats). Needs the optional
    extra: pip install 'lossbench[umap]'."""
    import umap  # the optional extra; the report checks `umap_available()` first
    from threadpoolctl import threadpool_limits

    union = np.concatenate([real, *fakes]).astype(np.float64)
    # numba's OpenMP layer sets the process's OpenMP threads to the core count, and torch reads them
    # (a process that trains after it would oversubscribe the cores): the limiter puts them back.
    with threadpool_limits(limits=None):
        embedded = umap.UMAP(n_components=2, random_state=0, n_jobs=1).fit_transform(union)
    bounds = np.cumsum([len(real), *(len(f) for f in fakes)])
    return embedded[: bounds[0]], [embedded[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


#: 2-D maps of features by name: the projection and the axis label.
MAPS = {"pca": (pca_2d, "PC"), "umap": (umap_2d, "UMAP ")}


def umap_available() -> bool:
    """Whether the optional extra for the UMAP map (umap-learn) is installed."""
    return importlib.util.find_spec("umap") is not None


def plot_map_by_class(art: Artifacts, method: str = "pca") -> bytes | None:
    """One panel per class: the class's real features (grey) against the class's generated features
    per loss (every λ, the lowest seed), in the 2-D map `method` ("pca" or "umap", `MAPS`) of all
    real and generated features, so whether a loss covers each class's real spread is seen at a
    glance. None without class names (an unconditional study, or runs from before they were logged)."""
    cells = sorted(c for c in art.fake_features if c in art.fake_classes)
    if art.real_features is None or art.real_classes is None or not cells:
        return None
    project, axis = MAPS[method]
    real_2d, fakes_2d = project(art.real_features, [art.fake_features[c] for c in cells])
    classes = sorted(set(art.real_classes.tolist()))
    losses = sorted({loss for loss, _ in cells})
    fig = Figure(figsize=(4.2 * len(classes), 3.8))
    for i, name in enumerate(classes):
        ax = fig.add_subplot(1, len(classes), i + 1)
        mine = art.real_classes == name
        ax.scatter(real_2d[mine, 0], real_2d[mine, 1], s=6, c="0.6", alpha=0.6, label=f"real ({mine.sum()})")
        for loss in losses:
            pts = [
                p[art.fake_classes[c] == name] for c, p in zip(cells, fakes_2d, strict=True) if c[0] == loss
            ]
            pts = np.concatenate(pts)
            ax.scatter(
                pts[:, 0], pts[:, 1], s=5, alpha=0.4, c=f"C{losses.index(loss)}", label=f"{loss} ({len(pts)})"
            )
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(f"{axis}1")
        ax.set_ylabel(f"{axis}2")
        ax.legend(fontsize=8, markerscale=2)
    fig.tight_layout()
    return _png(fig)


def plot_pca(real: np.ndarray | None, fakes: dict[tuple[str, float], np.ndarray]) -> bytes | None:
    """One panel per lambda: real features (grey) against generated features per loss, in 2-D PCA."""
    if real is None or not fakes:
        return None
    cells = sorted(fakes)
    real_2d, fakes_2d = pca_2d(real, [fakes[c] for c in cells])
    lambdas = sorted({lam for _, lam in cells})
    losses = sorted({loss for loss, _ in cells})
    cols = min(3, len(lambdas))
    rows = -(-len(lambdas) // cols)
    fig = Figure(figsize=(4.2 * cols, 3.8 * rows))
    for i, lam in enumerate(lambdas):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.scatter(real_2d[:, 0], real_2d[:, 1], s=6, c="0.6", alpha=0.5, label="real")
        for (loss, cell_lam), pts in zip(cells, fakes_2d, strict=True):
            if cell_lam == lam:
                ax.scatter(pts[:, 0], pts[:, 1], s=6, alpha=0.6, c=f"C{losses.index(loss)}", label=loss)
        ax.set_title(lambda_label(lam), fontsize=10)
        ax.set_xlabel("PC1")
        ax.set_ylabel("PC2")
        ax.legend(fontsize=8, markerscale=2)
    fig.tight_layout()
    return _png(fig)


# ------------------------------------------------------------------------------------- tables


def fid_yardstick(df: pd.DataFrame) -> tuple[str | None, pd.DataFrame]:
    """What real data scores, beside the fakes at the same sample size: a sentence with the held-out
    part's FID against the train part (`fid_heldout`; one value where every row used the same part
    and extractor), and per cell the mean and sd over seeds of `fid_at_heldout_n`. (None, empty) for
    results without a held-out part."""
    if not {"fid_heldout", "fid_at_heldout_n"} <= set(df.columns):
        return None, pd.DataFrame()
    df = df.assign(**{c: pd.to_numeric(df[c], errors="coerce") for c in ("fid_heldout", "fid_at_heldout_n")})
    heldout = stats.finite(df["fid_heldout"])  # unparsable values count as missing, as metrics do
    if not len(heldout):
        return None, pd.DataFrame()
    values = ", ".join(f"{v:.4g}" for v in sorted(set(heldout)))
    n = df["setting.n_heldout"].dropna().unique() if "setting.n_heldout" in df.columns else []
    count = f" (n = {', '.join(str(int(float(x))) for x in n)})" if len(n) else ""
    sentence = (
        f"Real yardstick: the held-out images{count} score FID {values} against the train part; "
        "the fakes, drawn at that count, score fid_at_heldout_n (FID's bias grows as the sample "
        "shrinks, so compare these two, not fid)."
    )
    cells = df.groupby(["loss", "lambda"], sort=True)["fid_at_heldout_n"]
    table = cells.agg(n="count", mean="mean", sd="std").reset_index()
    below = table[table["mean"] < heldout.min()]
    if len(below):
        names = ", ".join(f"{r.loss} λ {lambda_text(r['lambda'])}" for _, r in below.iterrows())
        sentence += (
            f" Below the held-out images: {names}. This space ranks those fakes closer to the train "
            "part than unseen real images are, so a lower FID here does not mean more realistic "
            "images: look at copy detection and the samples."
        )
    return sentence, table


def paper_table(summary: pd.DataFrame, best: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows (loss, lambda), one column per metric, "mean ± sd" over seeds; and a mask of best cells."""
    cells = summary[["loss", "lambda"]].drop_duplicates().sort_values(["loss", "lambda"])
    table = cells.assign(**{"lambda": cells["lambda"].map(lambda_text)}).reset_index(drop=True)
    mask = pd.DataFrame(False, index=table.index, columns=table.columns)
    for metric, s in summary.groupby("metric", sort=False):
        s = cells.merge(s, on=["loss", "lambda"], how="left")
        table[metric] = [
            "–" if pd.isna(m) else f"{m:.4g}" if pd.isna(sd) else f"{m:.4g} ± {sd:.2g}"
            for m, sd in zip(s["mean"], s["sd"], strict=True)
        ]
        b = best[best["metric"] == metric]
        mask[metric] = (s["loss"] == b["loss"].iloc[0]).to_numpy() & (
            s["lambda"] == b["lambda"].iloc[0]
        ).to_numpy()
    return table, mask


def _table_block(table: pd.DataFrame, bold: pd.DataFrame | None = None) -> dict[str, Any]:
    """A table for the page template: column names and rows of cells, bold where `bold` says."""
    rows = [
        [{"text": value, "bold": bold is not None and bool(bold.iat[i, j])} for j, value in enumerate(row)]
        for i, row in enumerate(table.astype(str).itertuples(index=False))
    ]
    return {"kind": "table", "columns": [str(c) for c in table.columns], "rows": rows}


def _md_table(table: pd.DataFrame, bold: pd.DataFrame | None = None) -> str:
    if bold is not None:
        table = table.astype(str).mask(bold, "**" + table.astype(str) + "**")
    return markdown_table(table)


#: The pairwise columns shown in the report: test names, statistics and raw rank p-values are in stats.json.
PAIRWISE_SHOWN = [
    c
    for c in stats.PAIRWISE_COLUMNS
    if c not in {"test", "statistic", "rank_test", "rank_statistic", "rank_p", "correction"}
]


#: Why a summary column can be empty in every cell (the report leaves such columns out and says why).
EMPTY_BECAUSE = {
    "metric_se": "the metric's bootstrap standard error: eval.bootstrap is off",
    "sd": "one seed per cell",
    "ci_low": "one seed per cell",
    "ci_high": "one seed per cell",
}


# ------------------------------------------------------------------------------------- report


class _Doc:
    """Collects each section once: as blocks for the HTML page (rendered by templates/report.html.j2,
    which escapes every value) and as markdown."""

    def __init__(self, out_dir: Path) -> None:
        self.blocks: list[dict[str, Any]] = []
        self.md: list[str] = []
        self.figures: list[Path] = []
        self.fig_dir = out_dir / "figures"

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append({"kind": "heading", "text": text, "level": level})
        self.md.append("#" * level + " " + text)

    def text(self, text: str, css: str = "") -> None:
        self.blocks.append({"kind": "text", "text": text, "css": css})
        self.md.append(f"_{text}_" if css == "na" else text)

    def lines(self, lines: list[str]) -> None:
        """Separate lines of one paragraph."""
        self.blocks.append({"kind": "lines", "lines": lines})
        self.md.append("  \n".join(lines))

    def bullets(self, lines: list[str]) -> None:
        """An unordered list, one item per line."""
        self.blocks.append({"kind": "bullets", "lines": lines})
        self.md.append("\n".join(f"- {x}" for x in lines))

    def folded(self, title: str, lines: list[str]) -> None:
        """A list folded under `title` (HTML <details>, which GitHub's markdown renders too)."""
        if not lines:
            return
        self.blocks.append({"kind": "folded", "title": title, "lines": lines})
        items = "".join(f"<li>{html.escape(x)}</li>" for x in lines)
        self.md.append(f"<details><summary>{html.escape(title)}</summary><ul>{items}</ul></details>")

    def table(self, table: pd.DataFrame, bold: pd.DataFrame | None = None) -> None:
        if table.empty:
            return self.text(NOT_AVAILABLE, "na")
        self.blocks.append(_table_block(table, bold))
        self.md.append(_md_table(table, bold))

    def _save(self, name: str, png: bytes, alt: str) -> tuple[dict[str, Any], str]:
        """Write figures/<name>.png; return its image block (embedded in the page) and its markdown
        reference."""
        name = re.sub(r"[^\w.=-]", "_", name)
        self.fig_dir.mkdir(parents=True, exist_ok=True)
        path = self.fig_dir / f"{name}.png"
        path.write_bytes(png)
        self.figures.append(path)
        image = {"kind": "image", "alt": alt, "data": base64.b64encode(png).decode()}
        return image, f"![{alt}](figures/{name}.png)"

    def image(self, name: str, png: bytes | None, alt: str) -> None:
        if png is None:
            return self.text(f"{alt}: {NOT_AVAILABLE}", "na")
        image, md = self._save(name, png, alt)
        self.blocks.append(image)
        self.md.append(md)

    def grids(
        self,
        grids: dict[tuple[str, float], bytes],
        losses: list[str],
        lambdas: list[float],
        kind: tuple[str, str] = ("samples", "sample grids"),  # figure file prefix, label
        missing: str = "the runs logged none, or the results came from a CSV without run ids",
    ) -> None:
        if not grids:
            return self.text(f"{kind[1]}: {NOT_AVAILABLE} ({missing})", "na")
        columns = ["loss \\ λ", *(lambda_text(lam) for lam in lambdas)]
        md = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
        rows = []
        for loss in losses:
            cells: list[dict[str, Any]] = [{"header": True, "text": loss}]
            md_cells = []
            for lam in lambdas:
                png = grids.get((loss, lam))
                if png is None:
                    cells.append({"na": True, "text": NOT_AVAILABLE})
                    md_cells.append(NOT_AVAILABLE)
                    continue
                image, md_image = self._save(
                    f"{kind[0]}_{loss}_{lambda_text(lam)}", png, f"{loss} {lambda_label(lam)}"
                )
                cells.append({"image": image})
                md_cells.append(md_image)
            rows.append(cells)
            md.append(f"| {loss} | " + " | ".join(md_cells) + " |")
        self.blocks.append({"kind": "table", "css": "grid", "columns": columns, "rows": rows})
        self.md.append("\n".join(md))

    def page(self, title: str) -> str:
        """The self-contained HTML page (no external file, script or stylesheet)."""
        return _TEMPLATES.get_template("report.html.j2").render(title=title, blocks=self.blocks)


def closest_fakes_section(doc: _Doc, art: Artifacts, losses: list[str], lambdas: list[float]) -> None:
    """Per cell, the fakes closest to a training image beside that image (copy detection, `copy`)."""
    doc.heading("Closest fakes beside their training image (pixel space, lowest seed)", 3)
    doc.text(
        "Top row: the generated images nearest a training image; bottom row: that training image. "
        "Near-identical pairs are copies; compare with authenticity and C_T in the results."
    )
    doc.grids(
        art.closest,
        losses,
        lambdas,
        kind=("closest", "closest fakes"),
        missing="the `copy` metric logs them; this study's runs did not compute it, or the results "
        "came from a CSV without run ids",
    )


def yardstick_section(doc: _Doc, df: pd.DataFrame) -> None:
    """What held-out real images score beside the fakes at their count (`fid_yardstick`), if any."""
    sentence, yardstick = fid_yardstick(df)
    if sentence:
        doc.text(sentence)
        doc.table(display(yardstick))


def curves_section(doc: _Doc, art: Artifacts) -> None:
    """The quality curves of every seed, where they ended, and the training curves."""
    doc.heading("Quality curves during training (every seed; bold: the mean over seeds)", 3)
    doc.text(
        "The curve metrics evaluated every eval_every steps (eval/ in MLflow), each run's whole "
        "training: a cell resumed after a kill is drawn from the runs that trained it in turn."
    )
    if not art.quality:
        doc.text(f"quality curves: {NOT_AVAILABLE} (a study logs them when eval_every > 0)", "na")
    else:
        doc.image("quality_curves", plot_curves(art.quality, each_seed=True), "quality curves")
        doc.text(
            f"Where the curves ended: the last value and the least-squares slope over the last "
            f"1/{END_PARTS} of the steps (per 1000 steps; slope_share: as a share of the last value, "
            "negative = still falling), mean and sd over seeds. A flat curve has a slope near 0."
        )
        doc.table(display(curve_ends(art.quality)))
    doc.heading("Training curves (mean over seeds)", 3)
    doc.image("training_curves", plot_curves(art.curves), "training curves")


def build_report(
    df: pd.DataFrame,
    out_dir: Path,
    result: analysis.StatsResult,
    artifacts: Artifacts | None = None,
    title: str = "lossbench report",
) -> Report:
    """Write report.html, report.md, figures/ and stats.json for an analysed results frame."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    art = artifacts or Artifacts()
    doc = _Doc(out_dir)
    losses = sorted(result.summary["loss"].unique())
    lambdas = sorted(result.summary["lambda"].unique())
    doc.heading(title, 1)
    grid = f"{len(df)} trials; losses {', '.join(losses)}; λ {', '.join(f'{x:g}' for x in lambdas)}."
    if result.settings.get("weights") == "random":
        grid += " Metrics from random network weights: not comparable with published scores."
    doc.lines([grid])
    doc.heading("Verdict")
    doc.bullets(verdict_lines(result))
    doc.text(correction_sentence(result) + f"; alpha = {result.alpha:g}.")
    if len(result.problems):
        doc.text(f"{len(result.problems)} cell(s) failed or are missing: see '{TITLES['problems']}' below.")

    doc.heading("Results: mean ± sd over seeds")
    doc.text("Bold: the best mean per metric, not a significant difference (the verdict says which are).")
    doc.table(*paper_table(result.summary, result.best))
    doc.lines([f"{m}: {metric_description(m) or 'a plugin metric'}; {_better(m)}" for m in result.metrics])
    yardstick_section(doc, df)
    doc.folded(f"{len(result.warnings)} warning(s)", result.warnings)
    if len(result.problems):
        doc.heading(TITLES["problems"], 3)
        doc.table(display(result.problems))

    doc.heading("Significance")
    doc.lines(header_lines(result) + power_lines(result))
    doc.heading(TITLES["verdict"], 3)
    for metric in result.verdict_metrics:
        doc.text(metric)
        doc.table(verdict_table(result, metric))
    doc.heading(TITLES["pairwise"], 3)
    pair = result.pairwise[PAIRWISE_SHOWN] if len(result.pairwise) else result.pairwise
    doc.table(display(pair))
    if len(result.omnibus):
        doc.heading(TITLES["omnibus"], 3)
        doc.table(display(result.omnibus))
    doc.heading(TITLES["anova"], 3)
    doc.table(display(result.anova))
    doc.heading(TITLES["mixed"], 3)
    doc.table(display(result.mixed))
    doc.heading(TITLES["power"], 3)
    doc.table(display(result.power))

    doc.heading("Figures")
    doc.heading(f"Metrics against λ ({stats.CONFIDENCE:.0%} CI bands)", 3)
    doc.image(
        "metrics_vs_lambda", plot_metrics_vs_lambda(result.summary, result.metrics), "metrics against lambda"
    )
    doc.heading("Sample grids (lowest seed per cell) beside real training images", 3)
    if art.real_grid is not None:
        doc.text("Real: training images in the sample grids' layout (one row per class when conditional).")
        doc.image("real_grid", art.real_grid, "real training images")
    else:
        doc.text(
            f"real images: {NOT_AVAILABLE} (the study's run logged none, or a CSV without run ids)", "na"
        )
    doc.grids(art.grids, losses, lambdas)
    closest_fakes_section(doc, art, losses, lambdas)
    curves_section(doc, art)
    doc.heading("PCA of real and generated features", 3)
    doc.image("pca", plot_pca(art.real_features, art.fake_features), "PCA of features")
    doc.heading("Per class: real and generated features (PCA)", 3)
    per_class = "needs a class-conditional study whose runs logged class names"
    doc.image("pca_by_class", plot_map_by_class(art, "pca"), f"PCA per class ({per_class})")
    doc.heading("Per class: real and generated features (UMAP)", 3)
    if umap_available():
        doc.image("umap_by_class", plot_map_by_class(art, "umap"), f"UMAP per class ({per_class})")
    else:
        doc.text(f"UMAP map: {NOT_AVAILABLE} (an optional extra: pip install 'lossbench[umap]')", "na")

    doc.heading(TITLES["summary"])
    summary = result.summary.dropna(axis=1, how="all")
    left_out = sorted(set(result.summary.columns) - set(summary.columns))
    doc.table(display(summary))
    if left_out:
        why = [f"{c} ({EMPTY_BECAUSE[c]})" if c in EMPTY_BECAUSE else c for c in left_out]
        doc.text(f"Left out, empty in every cell: {', '.join(why)}.")

    paths = Report(out_dir / "report.html", out_dir / "report.md", out_dir / "stats.json", doc.figures)
    paths.html.write_text(doc.page(title), encoding="utf-8")
    paths.markdown.write_text("\n\n".join(doc.md) + "\n", encoding="utf-8")
    paths.stats_json.write_text(format_result(result, "json"), encoding="utf-8")
    return paths


def report(
    df: pd.DataFrame,
    out_dir: Path,
    name: str = "results",
    study: str | None = None,
    title: str | None = None,
    tracking_uri: str | None = None,
    root: str | Path = "mlruns",
    **options: Any,
) -> Report:
    """Analyse a results frame and write its report to `out_dir`.

    `name` (the frame's source) appears in error messages and the default title. `options` go
    to `analysis.analyze` (alpha, paired, correction, bootstrap, seed). Artifacts are
    read when the frame has a `run_id` column and the MLflow store (`tracking_uri`, default the one
    under `root`) exists. `study` names the study the frame was read from: the report is then also
    logged to the study's parent run under `report/` (a frame from a CSV is never logged back).
    """
    check_folder(out_dir, "report output")
    result = analysis.analyze(df, name=name, **options)
    client = tracking.tracking_client(tracking_uri, root) if "run_id" in df.columns else None
    art = tracking.fetch_artifacts(df, client, study=study)
    out = build_report(df, out_dir, result, art, title=title or f"lossbench report: {name}")
    if study is not None and client is not None and art.parent_run_id:
        written = [out.html, out.markdown, out.stats_json, *out.figures]
        tracking.log_report(client, art.parent_run_id, out_dir, written)
        out.logged_to = art.parent_run_id
    return out
