"""lossbench.analysis.stats and `lossbench stats`: published reference values, equality with
scipy/statsmodels."""

from __future__ import annotations

import io
import itertools
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_one_line_error
from scipy import stats as st
from statsmodels.stats.multitest import multipletests

from lossbench import analysis
from lossbench.analysis import formatting, stats
from lossbench.cli import main

DATA = Path(__file__).parent / "data"


def sig4(x: float) -> float:
    return float(f"{x:.4g}")


@pytest.fixture
def toothgrowth_csv(tmp_path) -> Path:
    """ToothGrowth as a lossbench results table: supp -> loss, dose -> lambda, len -> fid."""
    df = pd.read_csv(DATA / "toothgrowth.csv")
    assert len(df) == 60
    df = df.rename(columns={"supp": "loss", "dose": "lambda", "len": "fid"})
    df["seed"] = np.arange(len(df))  # 60 guinea pigs: not paired
    path = tmp_path / "toothgrowth.csv"
    df.to_csv(path, index=False)
    return path


def run_json(capsys, *args) -> dict:
    assert main(["stats", *map(str, args), "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def synthetic(losses=("bce", "wgangp"), lambdas=(0.5, 3.0, 5.0), seeds=range(5), shift=None, seed=0):
    """A results frame with fid and lpips_ff; `shift[loss]` moves fid by that amount."""
    rng = np.random.default_rng(seed)
    shift = shift or {}
    rows = [
        {
            "study": "s",
            "loss": loss,
            "lambda": lam,
            "seed": s,
            "fid": 100 + shift.get(loss, 0) + 3 * rng.normal(),
            "lpips_ff": 0.4 + 0.02 * rng.normal(),
            "kid_std": 0.1,
        }
        for loss in losses
        for lam in lambdas
        for s in seeds
    ]
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------ published reference values


def test_toothgrowth_two_way_anova_matches_published_f_values(toothgrowth_csv, capsys):
    out = run_json(capsys, toothgrowth_csv, "--metric", "fid")
    anova = {r["term"]: r for r in out["anova"]}
    # R: summary(aov(len ~ supp * factor(dose), ToothGrowth)); balanced, so type I = type II.
    assert sig4(anova["loss"]["F"]) == 15.57
    assert sig4(anova["lambda"]["F"]) == 92.00
    assert sig4(anova["loss:lambda"]["F"]) == 4.107
    assert f"{anova['loss']['p']:.3g}" == "0.000231"
    assert sig4(anova["loss:lambda"]["p"]) == 0.02186
    sum_sq = [anova[t]["sum_sq"] for t in ("loss", "lambda", "loss:lambda", "residual")]
    assert sum_sq == pytest.approx([205.4, 2426.4, 108.3, 712.1], abs=0.051)  # R prints 1 decimal
    assert anova["residual"]["df"] == 54
    # partial eta squared by hand from the published sums of squares
    assert anova["loss"]["partial_eta_sq"] == pytest.approx(205.4 / (205.4 + 712.1), abs=2e-4)
    assert anova["lambda"]["partial_eta_sq"] == pytest.approx(2426.4 / (2426.4 + 712.1), abs=2e-4)


def test_toothgrowth_welch_per_dose_matches_published_p_values(toothgrowth_csv, capsys):
    out = run_json(capsys, toothgrowth_csv)
    rows = {r["lambda"]: r for r in out["pairwise"]}
    assert set(rows) == {0.5, 1.0, 2.0}
    assert all((r["a"], r["b"], r["test"]) == ("OJ", "VC", "Welch t") for r in rows.values())
    # R: t.test(len ~ supp, data = subset(ToothGrowth, dose == d)), Welch by default.
    assert [sig4(rows[d]["p"]) for d in (0.5, 1.0, 2.0)] == [0.006359, 0.001038, 0.9639]
    assert [sig4(rows[d]["statistic"]) for d in (0.5, 1.0, 2.0)] == [3.170, 4.033, -0.04614]
    assert rows[2.0]["verdict"] == "no significant difference"
    assert rows[0.5]["verdict"] == "VC better (lower fid)"  # fid: lower is better


def test_toothgrowth_cell_summaries_match_published(toothgrowth_csv, capsys):
    out = run_json(capsys, toothgrowth_csv)
    cells = {(r["loss"], r["lambda"]): r for r in out["summary"]}
    published = {  # Kabacoff, R in Action ch. 9: n, mean, sd, 95% CI half-width
        ("OJ", 0.5): (13.23, 4.46, 3.19),
        ("OJ", 1.0): (22.70, 3.91, 2.80),
        ("OJ", 2.0): (26.06, 2.66, 1.90),
        ("VC", 0.5): (7.98, 2.75, 1.96),
        ("VC", 1.0): (16.77, 2.52, 1.80),
        ("VC", 2.0): (26.14, 4.80, 3.43),
    }
    for cell, (mean, sd, half) in published.items():
        r = cells[cell]
        assert r["n"] == 10 and r["n_dropped"] == 0
        assert round(r["mean"], 2) == mean and round(r["sd"], 2) == sd
        assert round((r["ci_high"] - r["ci_low"]) / 2, 2) == half
    best = out["best"][0]
    assert (best["loss"], best["lambda"]) == ("VC", 0.5)  # lowest mean, fid is "min"


def test_hedges_g_matches_published_example():
    # reproducer::calculateHg(Mc=10, Mt=15, Nc=20, Nt=20, SDc=2, SDt=2): g 2.5, adjusted 2.450276.
    z = np.random.default_rng(0).normal(size=20)
    z = (z - z.mean()) / z.std(ddof=1)
    control, treatment = 10 + 2 * z, 15 + 2 * z[::-1]
    assert stats.hedges_g(treatment, control) == pytest.approx(2.450276, abs=1e-6)
    assert stats.hedges_g(control, treatment) == pytest.approx(-2.450276, abs=1e-6)
    # Hedges' common approximation of J agrees to 1e-4 at m = 38.
    assert stats.hedges_g(treatment, control) == pytest.approx(2.5 * (1 - 3 / (4 * 38 - 1)), abs=1e-4)


def test_hedges_g_by_hand_unequal_sizes():
    a, b = np.array([3.0, 5.0, 4.0, 8.0]), np.array([1.0, 2.0, 2.5])
    pooled = np.sqrt((3 * np.var(a, ddof=1) + 2 * np.var(b, ddof=1)) / 5)
    j = math.gamma(5 / 2) / (math.sqrt(5 / 2) * math.gamma(4 / 2))  # exact J(m), m = 5
    assert stats.hedges_g(a, b) == pytest.approx(j * (a.mean() - b.mean()) / pooled, rel=1e-12)


def test_cliffs_delta_equals_pair_count_and_u_identity():
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 6, 9).astype(float), rng.integers(1, 7, 7).astype(float)  # with ties
    dominance = np.mean([np.sign(x - y) for x, y in itertools.product(a, b)])
    u = st.mannwhitneyu(a, b).statistic
    assert stats.cliffs_delta(a, b) == pytest.approx(dominance, abs=1e-12)
    assert stats.cliffs_delta(a, b) == pytest.approx(2 * u / (len(a) * len(b)) - 1, abs=1e-12)
    assert stats.cliffs_delta(b, a) == pytest.approx(-dominance, abs=1e-12)


# ------------------------------------------------------------------------ equality with scipy/statsmodels


def test_t_confidence_intervals_equal_scipy():
    df = synthetic(seeds=range(4))
    res = analysis.analyze(df, ["fid"])
    for r in res.summary.to_dict("records"):
        x = df[(df["loss"] == r["loss"]) & (df["lambda"] == r["lambda"])]["fid"].to_numpy()
        low, high = st.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=st.sem(x))
        assert (r["ci_low"], r["ci_high"]) == pytest.approx((low, high), rel=1e-12)
        assert r["sd"] == pytest.approx(np.std(x, ddof=1))


def test_bootstrap_confidence_intervals_equal_scipy():
    df = synthetic(seeds=range(6), lambdas=(1.0,))
    res = analysis.analyze(df, ["fid"], bootstrap=True, n_resamples=999, seed=7)
    assert res.ci_method == "bootstrap" and "bootstrap" in formatting.header(res)
    for r in res.summary.to_dict("records"):
        x = df[(df["loss"] == r["loss"]) & (df["lambda"] == r["lambda"])]["fid"].to_numpy()
        ref = st.bootstrap((x,), np.mean, n_resamples=999, rng=np.random.default_rng(7)).confidence_interval
        assert (r["ci_low"], r["ci_high"]) == pytest.approx((ref.low, ref.high), rel=1e-12)


def test_holm_equals_multipletests_with_ties_nan_and_ones():
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 40):
        p = rng.uniform(0, 0.2, n)
        p[: n // 3] = p[0]  # ties
        assert stats.holm(p) == pytest.approx(multipletests(p, method="holm")[1], rel=1e-15)
    p = np.array([0.01, np.nan, 0.9, 0.02, 0.5])
    expected = multipletests(p[np.isfinite(p)], method="holm")[1]
    got = stats.correct(p)
    assert np.isnan(got[1]) and got[np.isfinite(p)] == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize("method", ["holm", "fdr_bh"])
def test_corrections_equal_multipletests(method):
    df = synthetic(shift={"wgangp": -4})
    res = analysis.analyze(df, ["fid", "lpips_ff"], correction=method, paired=False)
    pw = res.pairwise
    assert len(pw) == 2 * 3  # 2 metrics x 3 lambdas x 1 pair
    assert (pw["correction"] == method).all()
    for metric in ("fid", "lpips_ff"):  # one family per metric: every test of its verdict
        family = res.verdict[res.verdict["metric"] == metric]
        assert len(family) == 1 + 3 + 2  # loss pooled, loss at each λ, λ within each loss
        assert family["p_adj"].to_numpy() == pytest.approx(multipletests(family["p"], method=method)[1])
        at = family[family["question"] == "loss at λ"]
        rows = pw[pw["metric"] == metric]
        assert rows["p"].to_numpy() == pytest.approx(at["p"].to_numpy(), rel=1e-12)
        assert rows["p_adj"].to_numpy() == pytest.approx(at["p_adj"].to_numpy(), rel=1e-12)
        assert rows["rank_p_adj"].to_numpy() == pytest.approx(
            multipletests(rows["rank_p"], method=method)[1], rel=1e-12
        )
    name = {"holm": "Holm", "fdr_bh": "Benjamini-Hochberg"}[method]
    assert (
        f"{name}-corrected (multipletests method='{method}') within each metric"
        in formatting.format_result(res, "table").replace("\n  ", " ")
    )
    for r in pw.to_dict("records"):  # the raw tests are scipy's
        at = df[df["lambda"] == r["lambda"]]
        xa, xb = (at[at["loss"] == loss][r["metric"]].to_numpy() for loss in (r["a"], r["b"]))
        assert r["p"] == pytest.approx(st.ttest_ind(xa, xb, equal_var=False).pvalue, rel=1e-12)
        assert r["rank_p"] == pytest.approx(st.mannwhitneyu(xa, xb).pvalue, rel=1e-12)


def test_paired_tests_match_seeds_and_equal_scipy():
    df = synthetic(seeds=range(6), lambdas=(3.0,), shift={"wgangp": -5})
    df = df[~((df["loss"] == "bce") & (df["seed"] == 5))]  # seed 5 has no partner
    df = df.sample(frac=1, random_state=0)  # row order must not matter
    res = analysis.analyze(df, ["fid"], paired=True)
    r = res.pairwise.iloc[0]
    a = df[df["loss"] == "bce"].set_index("seed")["fid"]
    b = df[df["loss"] == "wgangp"].set_index("seed")["fid"]
    seeds = sorted(set(a.index) & set(b.index))
    assert (r["test"], r["rank_test"], r["n_a"]) == ("paired t", "Wilcoxon signed-rank", 5)
    assert r["p"] == pytest.approx(st.ttest_rel(a[seeds], b[seeds]).pvalue, rel=1e-12)
    assert r["rank_p"] == pytest.approx(st.wilcoxon(a[seeds], b[seeds]).pvalue, rel=1e-12)
    assert any("without a matching seed" in w for w in res.warnings)


def test_more_than_two_losses_omnibus_and_all_pairs():
    df = synthetic(losses=("bce", "hinge", "wgangp"), seeds=range(4), shift={"wgangp": -10})
    res = analysis.analyze(df, ["fid"], paired=False)
    assert len(res.pairwise) == 3 * 3  # 3 lambdas x 3 pairs, corrected with the rest of fid's verdict
    family = res.verdict
    assert len(family) == 3 + 9 + 3  # 3 pairs pooled, 9 at one λ, λ within 3 losses
    assert family["p_adj"].to_numpy() == pytest.approx(multipletests(family["p"], method="holm")[1])
    at = family[family["question"] == "loss at λ"]
    assert res.pairwise["p_adj"].to_numpy() == pytest.approx(at["p_adj"].to_numpy())
    for r in res.omnibus.to_dict("records"):
        at = df[df["lambda"] == r["lambda"]]
        groups = [g["fid"].to_numpy() for _, g in at.groupby("loss")]
        assert r["test"] == "Kruskal-Wallis"
        assert r["p"] == pytest.approx(st.kruskal(*groups).pvalue, rel=1e-12)
    paired = analysis.analyze(df, ["fid"], paired=True)
    for r in paired.omnibus.to_dict("records"):
        wide = df[df["lambda"] == r["lambda"]].pivot(index="seed", columns="loss", values="fid")
        assert r["test"] == "Friedman"
        assert r["p"] == pytest.approx(st.friedmanchisquare(*wide.to_numpy().T).pvalue, rel=1e-12)


# ------------------------------------------------------------------------ direction, verdicts, edge cases


def test_a_cell_with_fewer_seeds_done_is_not_named_best():
    """A study still running: bce λ 5 has one seed done, with the lowest fid of all."""
    df = synthetic(lambdas=(0.5, 5.0), shift={"wgangp": -10})
    df = df[~((df["loss"] == "bce") & (df["lambda"] == 5.0) & (df["seed"] > 0))]
    df.loc[(df["loss"] == "bce") & (df["lambda"] == 5.0), "fid"] = 1.0
    best = analysis.analyze(df, ["fid"]).best.set_index("metric").loc["fid"]
    full = df[df["loss"] == "wgangp"].groupby("lambda")["fid"].mean()
    assert (best["loss"], best["lambda"], best["n"]) == ("wgangp", full.idxmin(), 5)
    assert best["mean"] == pytest.approx(full.min())
    one_seed = analysis.analyze(df[df["seed"] == 0], ["fid"]).best.set_index("metric").loc["fid"]
    assert (one_seed["loss"], one_seed["lambda"], one_seed["mean"]) == ("bce", 5.0, 1.0)  # all alike


def test_power_on_one_loss_says_why_it_is_not_computed():
    """A study still running with one loss done (the BUSI grid at 12 of 30 cells) printed
    "no seed count for nan (observed mean |a - b|)"."""
    res = analysis.analyze(synthetic(losses=("wgangp",), lambdas=(0.0, 0.5)), ["fid"])
    (line,) = formatting.power_lines(res)
    assert line.startswith("power, fid: not computed (it compares two losses at one λ") and "nan" not in line
    (line,) = formatting.power_lines(analysis.analyze(synthetic(lambdas=(0.5,)), ["fid"]))
    assert "seeds" in line and "not computed" not in line


def test_verdicts_are_direction_aware():
    df = synthetic(seeds=range(8), lambdas=(5.0,), shift={"wgangp": -30})
    df.loc[df["loss"] == "wgangp", "lpips_ff"] += 0.3  # wgangp more diverse: higher lpips is better
    res = analysis.analyze(df, ["fid", "lpips_ff"])
    verdicts = dict(zip(res.pairwise["metric"], res.pairwise["verdict"], strict=True))
    assert verdicts == {"fid": "wgangp better (lower fid)", "lpips_ff": "wgangp better (higher lpips_ff)"}
    best = res.best.set_index("metric")
    assert best.loc["fid", "loss"] == "wgangp" and best.loc["lpips_ff", "loss"] == "wgangp"
    assert stats.verdict("fid", "a", "b", 1.0, 2.0, 0.05, 0.05) == "no significant difference"
    assert stats.verdict("msssim_ff", "a", "b", 1.0, 2.0, 0.01, 0.05) == "a better (lower msssim_ff)"


def test_nan_and_inf_are_dropped_and_counted():
    df = synthetic(seeds=range(4), lambdas=(0.5,))
    df.loc[(df["loss"] == "bce") & (df["seed"] == 0), "fid"] = np.nan
    df.loc[(df["loss"] == "bce") & (df["seed"] == 1), "fid"] = np.inf
    res = analysis.analyze(df, ["fid"])
    cell = res.summary.set_index("loss").loc["bce"]
    finite = df[(df["loss"] == "bce") & (df["seed"] >= 2)]["fid"]
    assert (cell["n"], cell["n_dropped"]) == (2, 2)
    assert cell["mean"] == pytest.approx(finite.mean())
    assert res.pairwise.iloc[0]["n_a"] == 2
    assert any("2 missing or non-finite value(s)" in w for w in res.warnings)


def test_evaluation_settings_are_printed_and_mixed_or_random_ones_warned():
    df = synthetic(seeds=range(3), lambdas=(0.5,))
    df["setting.fid_extractor"] = "lossbench-tiny"
    df["setting.n_fake"] = 128
    df["setting.fid_cache"] = ["hit", "miss"] * (len(df) // 2)  # provenance, not a setting
    df["setting.utility_real_cache"] = ["miss"] + ["hit"] * (len(df) - 1)  # the real arm: cached once
    df["setting.weights"] = "random"
    # a per-cell result a metric declares as a detail: neither a setting nor a reason to warn
    df["setting.utility_aug_recall"] = [f"benign {i / 10:.3f}" for i in range(len(df))]
    res = analysis.analyze(df, ["fid"])
    assert res.settings == {"fid_extractor": "lossbench-tiny", "n_fake": "128", "weights": "random"}
    assert (
        "evaluation settings: fid_extractor=lossbench-tiny, n_fake=128, weights=random"
        in formatting.header(res)
    )
    assert any("random network weights" in w for w in res.warnings)
    assert not any("differs" in w for w in res.warnings)
    df.loc[0, "setting.n_fake"] = 1000
    res = analysis.analyze(df, ["fid"])
    assert res.settings["n_fake"] == "1000 | 128"
    assert any(w.startswith("n_fake differs between rows") for w in res.warnings)


def test_no_perceptual_loss_at_lambda_0_is_not_a_different_setting():
    df = synthetic(seeds=range(3), lambdas=(0.0, 0.5))
    df["setting.perceptual_weights"] = np.where(df["lambda"] == 0, "none", "random")
    res = analysis.analyze(df, ["fid"])
    assert res.settings["perceptual_weights"] == "none | random"  # still shown as it is
    assert not any("differs" in w for w in res.warnings)
    assert any("random-weight VGG16" in w for w in res.warnings)
    df.loc[df["lambda"] == 0.5, "setting.perceptual_weights"] = ["pretrained", "random"] * 3
    res = analysis.analyze(df, ["fid"])
    assert any(w.startswith("perceptual_weights differs between rows") for w in res.warnings)
    assert not any("random-weight VGG16" in w for w in res.warnings)


def test_too_few_seeds_warn_and_are_not_tested():
    df = synthetic(seeds=range(3), lambdas=(0.5, 3.0))
    df = df[~((df["loss"] == "bce") & (df["lambda"] == 3.0) & (df["seed"] > 0))]
    res = analysis.analyze(df, ["fid"])
    row = res.pairwise.set_index("lambda").loc[3.0]
    assert np.isnan(row["p"]) and row["verdict"] == "not testable"
    assert any("(bce, λ=3) has 1 valid seed(s)" in w for w in res.warnings)
    # 3 vs 3 seeds: Mann-Whitney's smallest two-sided p is 2 / C(6, 3) = 0.1 >= alpha
    assert any(
        "Mann-Whitney U with 3 vs 3 seeds cannot reach p < 0.05 (smallest possible p = 0.1)" in w
        for w in res.warnings
    )
    assert stats.min_rank_p(3, 0, paired=True) == pytest.approx(0.25)  # Wilcoxon: 2 / 2**3


def test_study_name_is_resolved_lazily(monkeypatch, capsys):
    df = synthetic(seeds=range(3))
    calls = []

    def results_frame(name, storage=None, root="mlruns"):
        calls.append((name, storage, root))
        return df

    from lossbench.study import results

    monkeypatch.setattr(results, "results_frame", results_frame)
    monkeypatch.setattr(results, "cell_problems", lambda *a: pd.DataFrame(columns=stats.PROBLEM_COLUMNS))
    out = run_json(capsys, "demo", "--storage", "sqlite:///x.db", "--metric", "fid")
    assert calls == [("demo", "sqlite:///x.db", Path("mlruns"))]
    assert out["metrics"] == ["fid"]


# ------------------------------------------------------------------------ CLI formats and errors


@pytest.mark.parametrize("fmt", ["table", "markdown", "csv", "latex"])
def test_cli_formats(tmp_path, capsys, fmt):
    path = tmp_path / "r.csv"
    synthetic(seeds=range(3)).to_csv(path, index=False)
    assert main(["stats", str(path), "--format", fmt, "--correction", "fdr_bh"]) == 0
    out = capsys.readouterr().out
    assert "Benjamini-Hochberg" in out
    if fmt == "csv":
        table = pd.read_csv(io.StringIO(out), comment="#")
        table = table[table["table"] == "pairwise"]
        assert set(table["metric"]) == {"fid", "lpips_ff"} and (table["correction"] == "fdr_bh").all()
    if fmt == "latex":
        assert "\\begin{tabular}" in out
    if fmt == "markdown":
        assert "| metric | lambda |" in out


@pytest.mark.parametrize(
    "content, args, message",
    [
        ("loss,seed,fid\nbce,0,1\n", [], "lacks column(s) lambda"),
        ("loss,lambda,seed,fid\n", [], "has no rows"),
        ("loss,lambda,seed,fid\nbce,1,0,1\n", ["--metric", "inception"], "unknown metric 'inception'"),
        ("loss,lambda,seed,fid\nbce,1,0,1\n", ["--metric", "kid"], "has no column 'kid'"),
        ("loss,lambda,seed,fid\nbce,1,0,nan\n", [], "no finite values"),
        ("loss,lambda,seed,fid\nbce,x,0,1\n", [], "non-numeric or empty lambda"),
        ("loss,lambda,seed,fid\nbce,1,0,1\n", ["--correction", "bonferroni"], "unknown correction"),
        ("loss,lambda,seed,fid\nbce,1,0,1\n", ["--format", "xml"], "unknown format 'xml'"),
        ("loss,lambda,seed,fid\nbce,1,0,1\n", ["--alpha", "1.5"], "alpha must be in (0, 1)"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys, content, args, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    assert main(["stats", str(path), *args]) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err, message)


def test_cli_missing_file_and_paired_duplicates(tmp_path, capsys):
    assert main(["stats", str(tmp_path / "nope.csv")]) == 2
    assert "no results file" in capsys.readouterr().err
    path = tmp_path / "dup.csv"
    path.write_text("loss,lambda,seed,fid\na,1,0,1\na,1,0,2\nb,1,0,3\nb,1,1,4\na,1,1,5\n")
    assert main(["stats", str(path), "--paired"]) == 2
    assert "repeats a seed" in capsys.readouterr().err


def test_analysis_side_imports_no_study_optuna_or_torch():
    """The analysis side stays light: the CLI composes it with the study package, of which it reads
    only the trial record's names (`lossbench.study.record`, standard library only)."""
    code = (
        "import sys, lossbench.analysis.stats, lossbench.analysis.verdict, lossbench.analysis, "
        "lossbench.analysis.formatting, lossbench.analysis.report; "
        "heavy = [m for m in sys.modules if m.startswith('lossbench.study.')]; "
        "heavy = [m for m in heavy + ['optuna', 'torch'] if m != 'lossbench.study.record']; "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------- paired design, mixed model, power


def test_paired_is_the_default_when_seeds_match():
    df = synthetic(seeds=range(4), shift={"wgangp": -4})
    res = analysis.analyze(df, ["fid"])
    assert res.paired and res.paired_reason == "seeds match across cells"
    assert (res.pairwise["test"] == "paired t").all()
    unmatched = df[~((df["loss"] == "bce") & (df["seed"] == 3))]
    res = analysis.analyze(unmatched, ["fid"])
    assert not res.paired and (res.pairwise["test"] == "Welch t").all()
    assert not analysis.analyze(df, ["fid"], paired=False).paired


def test_mixed_model_equals_statsmodels_called_directly():
    from statsmodels.formula.api import mixedlm

    df = synthetic(seeds=range(5), shift={"wgangp": -4})
    df["fid"] += df["seed"] * 2.0  # a seed effect shared by every cell
    res = analysis.analyze(df, ["fid"])
    data = df.rename(columns={"lambda": "lam"})
    fit = mixedlm("fid ~ C(loss) * C(lam)", data, groups=data["seed"]).fit(reml=True)
    mixed = res.mixed.set_index("term")
    for term in fit.fe_params.index:
        assert mixed.loc[term, "coef"] == pytest.approx(fit.fe_params[term], rel=1e-9)
        assert mixed.loc[term, "p"] == pytest.approx(fit.pvalues[term], rel=1e-6)
    assert mixed.loc["seed var", "coef"] == pytest.approx(fit.cov_re.iloc[0, 0], rel=1e-9)


@pytest.mark.parametrize("paired", [True, False])
def test_power_equals_statsmodels(paired):
    from statsmodels.stats.power import TTestIndPower, TTestPower

    df = synthetic(seeds=range(4), lambdas=(3.0,), shift={"wgangp": -4})
    row = analysis.analyze(df, ["fid"], paired=paired, deltas={"fid": 5.0}).power.iloc[0]
    a, b = (df[df["loss"] == loss].set_index("seed")["fid"] for loss in ("bce", "wgangp"))
    if paired:
        sd = np.std(a - b, ddof=1)
        d = TTestPower().solve_power(nobs=4, alpha=0.05, power=0.8)
        n = TTestPower().solve_power(effect_size=5.0 / sd, alpha=0.05, power=0.8)
    else:
        sd = np.sqrt((np.var(a, ddof=1) + np.var(b, ddof=1)) / 2)
        d = TTestIndPower().solve_power(nobs1=4, alpha=0.05, power=0.8)
        n = TTestIndPower().solve_power(effect_size=5.0 / sd, alpha=0.05, power=0.8)
    assert row["sd"] == pytest.approx(sd, rel=1e-12)
    assert row["min_detectable"] == pytest.approx(d * sd, rel=1e-9)
    assert row["n_needed"] == math.ceil(n) and row["delta_source"] == "given"


def test_cli_power_view(tmp_path, capsys):
    path = tmp_path / "r.csv"
    synthetic(seeds=range(3)).to_csv(path, index=False)
    assert main(["stats", str(path), "--power", "--delta", "fid=10"]) == 0
    out = capsys.readouterr().out
    assert "Power:" in out and "Pairwise" not in out and "min_detectable" in out
    assert main(["stats", str(path), "--delta", "fid=x"]) == 2
    assert "--delta wants metric=number" in capsys.readouterr().err


@pytest.mark.parametrize("bootstrap", [False, True])
def test_confidence_intervals_stay_inside_metric_ranges(bootstrap):
    rows = [
        {"loss": loss, "lambda": 1.0, "seed": s, "kid": k, "lpips_ff": p, "msssim_ff": m}
        for loss in ("a", "b")
        for s, (k, p, m) in enumerate([(0.0, 0.99, 0.01), (0.02, 1.0, 0.0), (0.001, 0.9, 0.2)])
    ]
    res = analysis.analyze(pd.DataFrame(rows), bootstrap=bootstrap, n_resamples=999)
    lows = res.summary.set_index("metric")["ci_low"]
    highs = res.summary.set_index("metric")["ci_high"]
    assert (lows["kid"] >= 0).all() and (lows[["lpips_ff", "msssim_ff"]] >= 0).all()
    assert (highs[["lpips_ff", "msssim_ff"]] <= 1).all()
    if not bootstrap:  # the unclipped t interval leaves the range here: the clipping is what holds
        t = st.ttest_1samp([0.0, 0.02, 0.001], 0).confidence_interval()
        assert t.low < 0 and lows["kid"].iloc[0] == 0.0 and highs["kid"].iloc[0] == pytest.approx(t.high)


# ------------------------------------------------------------------ failed and missing cells


def test_failed_and_missing_cells_are_listed_with_their_reason(tmp_path, capsys):
    df = synthetic(seeds=range(3))
    df = df[~((df["loss"] == "wgangp") & (df["lambda"] == 5.0))]  # a whole cell gone
    df.loc[(df["loss"] == "bce") & (df["seed"] == 2) & (df["lambda"] == 0.5), ["fid", "lpips_ff"]] = np.nan
    df = df[~((df["loss"] == "bce") & (df["seed"] == 1) & (df["lambda"] == 3.0))]  # one seed gone
    res = analysis.analyze(df)
    got = {
        (r["loss"], r["lambda"], r["seed"] if r["seed"] == r["seed"] else None): r["reason"]
        for r in res.problems.to_dict("records")
    }
    assert got == {
        ("bce", 0.5, 2): "no finite metric value (diverged?)",
        ("bce", 3.0, 1): "no row",
        ("wgangp", 5.0, None): "no row for any seed",
    }
    path = tmp_path / "r.csv"
    df.to_csv(path, index=False)
    assert main(["stats", str(path)]) == 0
    captured = capsys.readouterr()
    assert captured.out.index("Failed and missing cells") < captured.out.index("Per cell")
    assert "wgangp: 1 cell(s) failed or missing" in captured.err and "warning:" not in captured.out


def test_study_failed_cells_reach_stats(monkeypatch, capsys):
    """A loss whose every cell diverged is listed, with the study's reason, not silently dropped."""
    df = synthetic(losses=("bce",), seeds=range(3))
    problems = pd.DataFrame(
        [{"loss": "hinge", "lambda": 0.5, "seed": 0, "state": "failed", "reason": "diverged: NaN at step 7"}]
    )
    from lossbench.study import results

    monkeypatch.setattr(results, "results_frame", lambda *a: df)
    monkeypatch.setattr(results, "cell_problems", lambda *a: problems)
    out = run_json(capsys, "demo", "--metric", "fid")
    assert out["problems"] == [{**problems.iloc[0].to_dict()}]
    assert "hinge: 1 cell(s) failed or missing, e.g. diverged: NaN at step 7" in out["warnings"]


# ------------------------------------------------------------------------------- formats


def test_csv_round_trips_through_pandas(tmp_path, capsys):
    path = tmp_path / "r.csv"
    synthetic(seeds=range(3)).to_csv(path, index=False)
    assert main(["stats", str(path), "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# metrics:")
    back = pd.read_csv(io.StringIO(out), comment="#")
    res = analysis.analyze(pd.read_csv(path))
    expected = formatting.csv_table(res, tuple(res.tables()))
    assert list(back.columns) == list(expected.columns)
    pd.testing.assert_frame_equal(
        back.drop(columns=["table"]).select_dtypes("number"),
        expected.drop(columns=["table"]).select_dtypes("number").reset_index(drop=True),
        check_dtype=False,
        rtol=1e-12,
    )
    assert list(back["table"]) == list(expected["table"])


def test_latex_escapes_and_table_fits_100_columns():
    df = synthetic(losses=("my_loss", "wgan_gp"), seeds=range(3))
    res = analysis.analyze(df)
    latex = formatting.format_result(res, "latex")
    body = "\n".join(line for line in latex.splitlines() if not line.startswith("%"))
    assert "my\\_loss" in body and "lpips\\_ff" in body and "p\\_adj" in body
    assert not re.search(r"(?<!\\)_", body)  # every underscore escaped
    assert formatting.latex_escape("a&b%c$d#e{f}g~h^i\\") == (
        r"a\&b\%c\$d\#e\{f\}g\textasciitilde{}h\^{}i\textbackslash{}"
    )
    table = formatting.format_result(res, "table")
    assert max(len(line) for line in table.splitlines()) <= formatting.WIDTH


def test_summary_sets_the_metrics_own_noise_beside_the_spread_across_seeds():
    """metric_se = RMS of the runs' bootstrap SEs (by hand here); NaN when no run computed one."""
    df = pd.DataFrame(
        {
            "loss": ["a"] * 3 + ["b"] * 3,
            "lambda": [1.0] * 6,
            "seed": [0, 1, 2] * 2,
            "fid": [10.0, 12.0, 11.0, 20.0, 25.0, 21.0],
            "fid_se": [1.0, 2.0, np.nan, 3.0, 4.0, 5.0],
            "kid": [0.1] * 6,
        }
    )
    fid = stats.summarize(df, "fid").set_index("loss")
    assert fid.loc["a", "metric_se"] == pytest.approx(math.sqrt((1 + 4) / 2))
    assert fid.loc["b", "metric_se"] == pytest.approx(math.sqrt((9 + 16 + 25) / 3))
    assert fid.loc["a", "sd"] == pytest.approx(np.std([10, 12, 11], ddof=1))
    assert stats.summarize(df, "kid")["metric_se"].isna().all()
