"""lossbench.analysis.report and `lossbench report`: self-contained HTML, graceful degradation, MLflow
artifacts."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import matplotlib.axes
import numpy as np
import pandas as pd
import pytest
from conftest import assert_one_line_error
from matplotlib.figure import Figure
from PIL import Image

from lossbench import analysis, tracking
from lossbench.analysis import report as rp
from lossbench.analysis import stats
from lossbench.cli import main

LOSSES, LAMBDAS, SEEDS = ("bce", "wgangp"), (0.5, 5.0), (0, 1, 2)


def results(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [
        {
            "study": "demo",
            "trial": i,
            "loss": loss,
            "lambda": lam,
            "seed": s,
            "state": "COMPLETE",
            "fid": 150 + (0 if loss == "wgangp" else 20) + 4 * rng.normal(),
            "kid": 0.1 + 0.01 * rng.normal(),
            "lpips_ff": 0.45 + 0.02 * rng.normal(),
            "msssim_ff": 0.2 + 0.02 * rng.normal(),
        }
        for i, (loss, lam, s) in enumerate((lo, la, s) for lo in LOSSES for la in LAMBDAS for s in SEEDS)
    ]
    return pd.DataFrame(rows)


def embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_report_from_bare_csv_is_self_contained_and_degrades(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(rp, "umap_available", lambda: False)
    csv = tmp_path / "results.csv"
    df = results()
    df.to_csv(csv, index=False)
    assert main(["report", str(csv), "--out", str(tmp_path / "out")]) == 0
    assert "report.html" in capsys.readouterr().out
    page = (tmp_path / "out" / "report.html").read_text()
    # self-contained: no external URL, stylesheet or script; every image an embedded PNG
    assert not re.search(r"(src|href)=[\"'](?!data:)", page)
    assert "<script" not in page and "<link" not in page
    pngs = embedded_pngs(page)
    assert len(pngs) == 1  # metrics-vs-lambda only: no artifacts without MLflow
    assert Image.open(io.BytesIO(pngs[0])).size[0] > 300
    for missing in (
        "sample grids: not available",
        "training curves: not available",
        "PCA of features: not available",
        "closest fakes: not available",
        "UMAP map: not available (an optional extra: pip install &#39;lossbench[umap]&#39;)",
    ):
        assert missing in page
    # paper-style table: mean ± sd over seeds; the best fid cell (lowest mean) in bold
    cell = df[(df["loss"] == "wgangp") & (df["lambda"] == 5.0)]["fid"]
    assert f"{cell.mean():.4g} ± {cell.std(ddof=1):.2g}" in page
    summary = analysis.analyze(df).summary
    best = summary[summary["metric"] == "fid"].sort_values("mean").iloc[0]
    best_text = f"{best['mean']:.4g} ± {best['sd']:.2g}"
    assert f"<b>{best_text}</b>" in page
    md = (tmp_path / "out" / "report.md").read_text()
    assert f"**{best_text}**" in md and "![metrics against lambda](figures/metrics_vs_lambda.png)" in md
    assert "Holm" in page and ("paired t" if analysis.analyze(df).paired else "Welch t") in page
    assert (tmp_path / "out" / "figures" / "metrics_vs_lambda.png").is_file()


def test_report_bad_input_is_one_line_exit_2(tmp_path, capsys):
    csv = tmp_path / "bad.csv"
    csv.write_text("loss,seed,fid\na,0,1\n")
    assert main(["report", str(csv), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err, "lacks column(s) lambda")


def test_every_value_on_the_page_is_escaped(tmp_path):
    """The page is a Jinja2 template with autoescaping: a loss named like markup stays text."""
    df = results()
    df["loss"] = df["loss"].replace({"bce": "<img src=x onerror=alert(1)>"})
    out = rp.report(df, tmp_path / "out")
    page = out.html.read_text()
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<img src=x" in out.markdown.read_text()  # markdown keeps the name as written


def test_pca_matches_covariance_eigenvectors():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(60, 5)) * [5, 2, 1, 0.5, 0.1]
    fake = rng.normal(size=(40, 5)) + 3
    real_2d, (fake_2d,) = rp.pca_2d(real, [fake])
    union = np.concatenate([real, fake])
    _, vecs = np.linalg.eigh(np.cov(union.T))
    ref = (union - union.mean(0)) @ vecs[:, ::-1][:, :2]
    got = np.concatenate([real_2d, fake_2d])
    for k in range(2):  # equal up to the sign of each axis
        assert np.allclose(np.abs(got[:, k]), np.abs(ref[:, k]), atol=1e-8)


@pytest.mark.parametrize("method", ["pca", "umap"])
def test_map_by_class_draws_one_panel_per_class_and_says_when_it_cannot(monkeypatch, method):
    if method == "umap":
        pytest.importorskip("umap", reason="the optional extra lossbench[umap]")
    rng = np.random.default_rng(0)
    names = np.array(["benign", "malignant", "normal"])
    art = tracking.Artifacts(real_features=rng.normal(size=(90, 4)), real_classes=np.repeat(names, 30))
    for cell in [(loss, lam) for loss in LOSSES for lam in LAMBDAS]:
        art.fake_features[cell] = rng.normal(size=(30, 4))
        art.fake_classes[cell] = np.repeat(names, 10)
    panels, original = [], Figure.add_subplot

    def add_subplot(self, *args, **kwargs):
        panels.append(args)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "add_subplot", add_subplot)
    png = rp.plot_map_by_class(art, method)
    assert png.startswith(b"\x89PNG") and [a[2] for a in panels] == [1, 2, 3]
    art.fake_classes = {}  # an unconditional study, or runs from before class names were logged
    assert rp.plot_map_by_class(art, method) is None


def test_umap_map_is_umap_learns_embedding_of_reals_and_fakes_together():
    umap = pytest.importorskip("umap", reason="the optional extra lossbench[umap]")
    rng = np.random.default_rng(1)
    real, fakes = rng.normal(size=(40, 6)), [rng.normal(size=(25, 6)) + 2, rng.normal(size=(15, 6))]
    real_2d, fakes_2d = rp.umap_2d(real, fakes)
    reference = umap.UMAP(n_components=2, random_state=0).fit_transform(np.concatenate([real, *fakes]))
    assert [len(real_2d), *map(len, fakes_2d)] == [40, 25, 15]
    assert np.allclose(np.concatenate([real_2d, *fakes_2d]), reference, atol=1e-5)


# ------------------------------------------------------------------------------------ with MLflow


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """A small MLflow store laid out as tracking.py does: parent study run, one child per trial."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("mlruns")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("demo", artifact_location=(root / "artifacts").as_uri())
    parent = client.create_run(exp, tags={"lossbench.role": "study", "lossbench.study": "demo"}).info.run_id
    files = tmp_path_factory.mktemp("files")
    np.save(files / "real.npy", np.random.default_rng(0).normal(size=(50, 8)))
    client.log_artifact(parent, str(files / "real.npy"), "features")
    df = results()
    run_ids = []
    for r in df.to_dict("records"):
        tags = {
            "mlflow.parentRunId": parent,
            "lossbench.role": "trial",
            "lossbench.study": "demo",
            "lossbench.loss": r["loss"],
            "lossbench.lambda": str(r["lambda"]),
            "lossbench.seed": str(r["seed"]),
        }
        run_id = client.create_run(exp, tags=tags).info.run_id
        run_ids.append(run_id)
        for step in range(0, 50, 10):
            client.log_metric(run_id, "train/g_loss", float(np.exp(-step / 20) + r["seed"]), step=step)
        if (r["loss"], r["lambda"]) != ("bce", 5.0):  # one cell without sample grid and features
            d = files / run_id
            d.mkdir()
            (d / "final.png").write_bytes(_png(40 * r["seed"] + (100 if r["loss"] == "wgangp" else 0)))
            np.save(d / "fake.npy", np.random.default_rng(r["trial"]).normal(size=(20, 8)) + 1)
            client.log_artifact(run_id, str(d / "final.png"), "samples")
            client.log_artifact(run_id, str(d / "fake.npy"), "features")
        client.set_terminated(run_id)
    df["run_id"] = run_ids
    return uri, client, parent, df


def test_report_with_mlflow_artifacts(tracked, tmp_path):
    uri, client, parent, df = tracked
    csv = tmp_path / "export.csv"
    df.to_csv(csv, index=False)
    out = rp.report(pd.read_csv(csv), tmp_path / "out", tracking_uri=uri)
    assert out.logged_to is None  # a CSV is never logged back to the study
    page = out.html.read_text()
    pngs = embedded_pngs(page)
    # metrics figure + 3 sample grids (bce λ=5 missing) + training curves + PCA
    assert len(pngs) == 1 + 3 + 1 + 1
    grids = [p for p in pngs if Image.open(io.BytesIO(p)).size == (16, 16)]
    # lowest seed per cell: seed 0 -> value 0 (bce) or 100 (wgangp)
    assert sorted(int(np.asarray(Image.open(io.BytesIO(p))).mean()) for p in grids) == [0, 100, 100]
    assert '<td class="na">not available</td>' in page
    assert "training curves: not available" not in page and "PCA of features: not available" not in page
    assert {p.name for p in out.figures} >= {"training_curves.png", "pca.png", "samples_wgangp_0.5.png"}


def test_fetch_artifacts_follows_conventions(tracked):
    _, client, parent, df = tracked
    art = tracking.fetch_artifacts(df, client)
    assert art.parent_run_id == parent
    assert art.real_features.shape == (50, 8)
    assert set(art.fake_features) == {("bce", 0.5), ("wgangp", 0.5), ("wgangp", 5.0)}
    runs = art.curves["g_loss"]
    assert len(runs) == len(df)
    loss, lam, steps, values = runs[0]
    assert steps == [0, 10, 20, 30, 40] and values[0] == pytest.approx(1.0)  # bce λ=0.5 seed 0


def test_a_cell_killed_and_resumed_has_its_whole_curves(tmp_path):
    """Three runs trained one cell in turn (from 0 to step 750; killed before logging; resumed from
    750 to the end); an older run of the cell that started from 0 and a run of another seed must not
    leak in. The curves join the turns at the checkpoint's step."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("s", artifact_location=(tmp_path / "artifacts").as_uri())

    def run(seed: int, resumed: int | None, steps: range, offset: float) -> str:
        tags = {"lossbench.role": "trial", "lossbench.study": "s", "lossbench.loss": "wgangp"}
        tags |= {"lossbench.lambda": "0.5", "lossbench.seed": str(seed)}
        if resumed is not None:
            tags[tracking.RESUMED_FROM_TAG] = str(resumed)
        run_id = client.create_run(exp, tags=tags).info.run_id
        for step in steps:
            client.log_metric(run_id, "eval/fid", offset + step, step=step)
            client.log_metric(run_id, "eval/fid_std", 1.0, step=step)
            client.log_metric(run_id, "train/g/loss", offset - step, step=step)
        return run_id

    run(0, 0, range(250, 3001, 250), 10_000.0)  # an older, unrelated training of the cell
    run(1, 750, range(1000, 3001, 250), 20_000.0)  # another seed
    run(0, 0, range(250, 1001, 250), 0.0)  # the first turn, killed after logging step 1000
    run(0, 750, range(0), 0.0)  # the second turn, killed before logging
    final = run(0, 750, range(1000, 3001, 250), 0.5)  # the third turn replays step 1000 (+0.5 here)
    df = pd.DataFrame([{"loss": "wgangp", "lambda": 0.5, "seed": 0, "run_id": final, "study": "s"}])
    art = tracking.fetch_artifacts(df, client)
    assert set(art.quality) == {"fid"} and set(art.curves) == {"g/loss"}
    ((loss, lam, steps, values),) = art.quality["fid"]
    assert (loss, lam, steps) == ("wgangp", 0.5, list(range(250, 3001, 250)))
    assert values == [s + (0.5 if s > 750 else 0.0) for s in steps]  # the later turn wins from 1000
    ((*_, g_steps, g_values),) = art.curves["g/loss"]
    assert g_steps == steps and g_values[0] == -250.0

    # seed 2: trained to the end, killed evaluating; its retry only evaluated. Before 2026-12-06 such
    # a retry carried no start step (tagged at a first step it never ran); now it carries the last.
    run(2, 0, range(250, 3001, 250), 0.0)
    for tag in (None, 3000):
        final = run(2, tag, range(0), 0.0)
        df = pd.DataFrame([{"loss": "wgangp", "lambda": 0.5, "seed": 2, "run_id": final, "study": "s"}])
        ((*_, steps, values),) = tracking.fetch_artifacts(df, client).quality["fid"]
        assert steps == values == list(range(250, 3001, 250)), tag


@pytest.fixture
def drawn(monkeypatch) -> dict[str, list]:
    """What the figures draw: each panel's title ("titles"), each line's width ("lines") and each
    horizontal reference line's label ("references")."""
    out: dict[str, list] = {"titles": [], "lines": [], "references": []}
    set_title, plot = matplotlib.axes.Axes.set_title, matplotlib.axes.Axes.plot
    axhline = matplotlib.axes.Axes.axhline

    def record_reference(self, *args, **kwargs):
        out["references"].append(kwargs.get("label"))
        return axhline(self, *args, **kwargs)

    def record_title(self, label, *args, **kwargs):
        out["titles"].append(label)
        return set_title(self, label, *args, **kwargs)

    def record_line(self, *args, **kwargs):
        out["lines"].append(kwargs.get("lw"))
        return plot(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "set_title", record_title)
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", record_line)
    monkeypatch.setattr(matplotlib.axes.Axes, "axhline", record_reference)
    return out


def test_quality_curves_draw_every_seed_and_the_reals_reference_in_their_partner_panel(drawn):
    titles, lines = drawn["titles"], drawn["lines"]
    quality = {
        term: [("bce", lam, [250, 500], [1.0, 0.5]) for lam in (0.0, 5.0) for _ in range(3)]
        for term in ("fid", "msssim_ff", "msssim_rr", "fid_at_heldout_n", "fid_heldout")
    }
    assert rp.plot_curves(quality, each_seed=True) is not None
    # msssim_rr and fid_heldout: references in their partners' panels, no panel of their own
    assert sorted(titles) == ["bce: fid", "bce: fid_at_heldout_n", "bce: msssim_ff"]
    assert lines.count(0.6) == 3 * 2 * 3 and lines.count(1.5) == 3 * 2  # seeds, then each λ's mean
    assert drawn["references"] == ["fid_heldout (real)", "msssim_rr (real)"]
    lines.clear()
    rp.plot_curves(quality)
    assert lines == [1] * 3 * 2  # the mean per λ only


def test_curve_ends_give_each_cells_last_value_and_its_slope_over_the_last_third():
    from scipy.stats import linregress

    steps = list(range(250, 3001, 250))
    noisy = [100 - 0.01 * s + (7 if s % 500 else -3) for s in steps]
    quality = {
        "fid": [
            ("wgangp", 0.5, steps, [100 - 0.01 * s for s in steps]),  # -10 per 1000 steps
            ("wgangp", 0.5, steps, [80 - 0.02 * s for s in steps]),  # -20 per 1000 steps
            ("wgangp", 0.5, [250, 500], [3.0, 2.0]),  # too short to fit: left out
            ("bce", 0.0, steps, noisy),
        ],
        "msssim_rr": [("wgangp", 0.5, steps, [0.2] * len(steps))],  # a reference, not a curve
    }
    table = rp.curve_ends(quality).set_index(["loss", "lambda"])
    assert list(table["metric"].unique()) == ["fid"]
    cell = table.loc[("wgangp", 0.5)]
    assert cell["n"] == 2 and (cell["from_step"], cell["to_step"]) == (2000, 3000)
    assert cell["last"] == pytest.approx(45.0) and cell["slope_per_1000"] == pytest.approx(-15.0)
    assert cell["slope_sd"] == pytest.approx(np.std([-10, -20], ddof=1))
    assert cell["slope_share"] == pytest.approx(np.mean([-10 / 70, -20 / 20]))
    end = [i for i, s in enumerate(steps) if s >= 2000]
    reference = linregress([steps[i] for i in end], [noisy[i] for i in end]).slope * 1000
    assert table.loc[("bce", 0.0), "slope_per_1000"] == pytest.approx(reference)
    assert rp.curve_ends({}).empty
    diverged = [np.nan if s == 2500 else 1.0 for s in steps]  # one NaN evaluation: 4 finite points left
    quality = {"fid": [("bce", 0.0, steps, diverged), ("bce", 0.0, steps, [*diverged[:-1], np.inf])]}
    (row,) = rp.curve_ends(quality).to_dict("records")  # the run ending in inf is left out
    assert row["n"] == 1 and row["slope_per_1000"] == pytest.approx(0.0) and row["last"] == 1.0


def test_report_from_study_is_logged_to_parent_run(tracked, tmp_path, monkeypatch, capsys):
    uri, client, parent, df = tracked
    frame = df.drop(columns=["run_id"]).assign(run_id=df["run_id"])
    from lossbench.study import results

    monkeypatch.setattr(results, "results_frame", lambda name, storage=None, root="mlruns": frame)
    monkeypatch.setattr(results, "cell_problems", lambda *a: pd.DataFrame(columns=stats.PROBLEM_COLUMNS))
    assert main(["report", "demo", "--out", str(tmp_path / "rep"), "--tracking-uri", uri]) == 0
    assert f"logged to MLflow run {parent}" in capsys.readouterr().out
    logged = {Path(f.path).name for f in client.list_artifacts(parent, "report")}
    assert {"report.html", "report.md", "stats.json", "figures"} <= logged


def test_no_store_is_created_for_a_csv(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    df = results().assign(run_id="abc")
    df.to_csv("r.csv", index=False)
    assert tracking.tracking_client(None) is None
    out = rp.report(pd.read_csv("r.csv"), Path("out"))
    assert out.html.is_file() and not Path("mlruns").exists()


def test_verdict_and_results_first_warnings_folded_below(tmp_path):
    df = results().assign(**{"setting.weights": "random"})
    df = df[~((df["loss"] == "bce") & (df["lambda"] == 5.0))]  # a diverged cell
    problems = pd.DataFrame(
        [
            {"loss": "bce", "lambda": 5.0, "seed": s, "state": "failed", "reason": "diverged: NaN"}
            for s in SEEDS
        ]
    )
    out = rp.report(df, tmp_path / "out", problems=problems)
    page = out.html.read_text()
    order = [
        page.index(x) for x in ("<h2>Verdict</h2>", "Results: mean", "<details><summary>", "<h2>Significance")
    ]
    assert order == sorted(order)
    verdict = page[order[0] : order[1]]
    assert "fid: loss: " in verdict and "Holm-corrected" in verdict
    assert "3 cell(s) failed or are missing" in verdict
    assert "random network weights" in page[: order[0]]  # how to read every number: before the verdict
    folded = page[order[2] : page.index("</details>")]
    for text in ("explicitly random network weights", "bce: 3 cell(s) failed or missing"):
        assert text in folded, text
    assert order[2] < page.index("diverged: NaN") < order[3]  # the failed cells' table
    assert "bold is not" not in page and "not a significant difference" in page  # bold explained
    header = re.search(r"<h2>Significance</h2>\n<p>(.*?)</p>", page).group(1).split("<br>")
    assert any(line.startswith("tests: ") for line in header)
    assert sum(line.startswith("power, ") for line in header) == 4  # one line per metric
    md = out.markdown.read_text()
    assert md.index("## Verdict") < md.index("## Results") < md.index("<details>")


def test_training_curves_are_drawn_per_loss_and_lambda():
    curves = {
        "g_loss": [
            (loss, lam, [0, 1, 2], [1.0, 0.5, 0.2]) for loss in LOSSES for lam in LAMBDAS for _ in SEEDS
        ]
    }
    png = rp.plot_curves(curves)
    assert Image.open(io.BytesIO(png)).size[1] > 300  # one row of panels per loss


def test_a_term_a_loss_does_not_log_gets_no_panel_and_rows_hold_at_most_four(drawn):
    titles = drawn["titles"]
    terms = ["d/gp", "d/loss", "g/adv", "g/loss", "g/perc", "d/acc"]
    curves = {t: [("wgangp", 0.5, [0, 1], [1.0, 0.5])] for t in terms}
    curves["g/loss"].append(("bce", 0.5, [0, 1], [1.0, 0.5]))
    png = rp.plot_curves(curves)
    assert sorted(titles) == sorted([f"wgangp: {t}" for t in terms] + ["bce: g/loss"])
    width, height = Image.open(io.BytesIO(png)).size  # wgangp's 6 panels in 2 rows, bce's in 1: 3 rows
    assert height > 2.5 * 300 and width < 4.5 * 420


def test_the_fid_yardstick_reads_the_heldout_score_beside_the_fakes_at_its_count(tmp_path):
    df = results()
    sentence, table = rp.fid_yardstick(df)  # no held-out part
    assert sentence is None and table.empty
    df = df.assign(fid_heldout=11.18, **{"setting.n_heldout": 156})
    df["fid_at_heldout_n"] = df["fid"] / 2
    sentence, table = rp.fid_yardstick(df)
    assert "held-out images (n = 156) score FID 11.18" in sentence
    expected = df.groupby(["loss", "lambda"])["fid_at_heldout_n"].agg(["count", "mean", "std"])
    got = table.set_index(["loss", "lambda"])
    np.testing.assert_allclose(got[["n", "mean", "sd"]].to_numpy(float), expected.to_numpy(float))
    page = rp.report(df, tmp_path / "out").markdown.read_text()
    assert "Real yardstick: the held-out images (n = 156) score FID 11.18" in page
    df["fid_heldout"] = ["abc"] + [11.18] * (len(df) - 1)  # a damaged CSV: unparsable counts as missing
    assert "score FID 11.18 against" in rp.fid_yardstick(df)[0]
    assert rp.fid_yardstick(df.assign(fid_heldout="abc"))[0] is None
    assert "Below the held-out images" not in sentence  # every cell's fakes above 11.18


def test_the_yardstick_names_the_cells_whose_fakes_score_below_unseen_real_images():
    df = results().assign(**{"setting.n_heldout": 156})
    df["fid_at_heldout_n"] = np.where(df["loss"] == "wgangp", 60.0, 90.0) + df["seed"]
    sentence, table = rp.fid_yardstick(df.assign(fid_heldout=80.0))
    wgangp = ", ".join(f"wgangp λ {rp.lambda_text(lam)}" for lam in LAMBDAS)
    assert f"Below the held-out images: {wgangp}. This space ranks those fakes closer" in sentence
    assert "bce λ" not in sentence
    assert "Below the held-out" not in rp.fid_yardstick(df.assign(fid_heldout=50.0))[0]
