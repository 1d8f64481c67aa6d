"""lossbench.analysis.verdict: the study's questions on tables whose answers are known (R's
warpbreaks, planted effects), checked against R's published values, scipy and hand formulas; one
correction family."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

from lossbench import analysis
from lossbench.analysis import formatting
from lossbench.cli import main

# R's warpbreaks (datasets package): breaks per loom for wool A/B at tension L/M/H, 9 looms per cell.
WARPBREAKS = {
    ("A", "L"): [26, 30, 54, 25, 70, 52, 51, 26, 67],
    ("A", "M"): [18, 21, 29, 17, 12, 18, 35, 30, 36],
    ("A", "H"): [36, 21, 24, 18, 10, 43, 28, 15, 26],
    ("B", "L"): [27, 14, 29, 19, 29, 31, 41, 20, 44],
    ("B", "M"): [42, 26, 19, 16, 39, 28, 21, 39, 29],
    ("B", "H"): [20, 21, 24, 17, 13, 15, 15, 16, 28],
}
TENSION = {"L": 0.0, "M": 0.5, "H": 5.0}


def warpbreaks() -> pd.DataFrame:
    """warpbreaks recast: wool -> loss, tension -> λ, breaks -> fid, loom -> seed."""
    rows = [
        {"loss": wool, "lambda": TENSION[tension], "seed": i, "fid": float(y)}
        for (wool, tension), values in WARPBREAKS.items()
        for i, y in enumerate(values)
    ]
    return pd.DataFrame(rows)


def planted(
    lambda_effect: float = 6.0, loss_effect: float = 0.0, seeds: int = 8, seed: int = 0
) -> pd.DataFrame:
    """A paired grid (2 losses x λ 0, 0.5, 5 x seeds): a per-seed offset shared by every cell, fid
    lowered by `lambda_effect` at every λ > 0 and by `loss_effect` for wgangp, noise sd 1."""
    rng = np.random.default_rng(seed)
    offset = rng.normal(0, 5, seeds)
    rows = [
        {
            "loss": loss,
            "lambda": lam,
            "seed": s,
            "fid": 100
            + offset[s]
            - lambda_effect * (lam > 0)
            - loss_effect * (loss == "wgangp")
            + rng.normal(),
        }
        for loss in ("bce", "wgangp")
        for lam in (0.0, 0.5, 5.0)
        for s in range(seeds)
    ]
    return pd.DataFrame(rows)


def rows_of(result, question: str) -> pd.DataFrame:
    v = result.verdict
    return v[v["question"] == question].reset_index(drop=True)


def test_warpbreaks_unpaired_verdict_matches_r_and_scipy():
    df = warpbreaks()
    res = analysis.analyze(df, ["fid"], paired=False)
    pooled = rows_of(res, "loss").iloc[0]
    # R: anova(lm(breaks ~ wool * tension, warpbreaks)): wool F = 3.7653, p = 0.05821 (balanced: type I = II)
    assert (pooled["test"], round(pooled["statistic"], 4), round(pooled["p"], 5)) == (
        "two-way ANOVA, loss term",
        3.7653,
        0.05821,
    )
    within = rows_of(res, "λ within loss").set_index("scope")
    for wool in ("A", "B"):
        groups = [df[(df["loss"] == wool) & (df["lambda"] == lam)]["fid"] for lam in TENSION.values()]
        assert within.loc[wool, "p"] == pytest.approx(st.f_oneway(*groups).pvalue, rel=1e-10)
    assert within.loc["A", "a"] == "λ=0.5"  # wool A: fewest breaks at tension M (24.0 vs H 24.6, L 44.6)
    assert within.loc["A", "b"] == "λ=0"
    # R: the wool:tension interaction, F = 4.1891, p = 0.02104: the better wool changes with tension
    assert any(
        "the better loss changes with λ" in n or "interaction p = 0.021" in n for n in res.verdict_notes
    )
    family = res.verdict
    assert family["p_adj"].to_numpy() == pytest.approx(multipletests(family["p"], method="holm")[1])


def test_planted_lambda_effect_and_no_loss_effect_paired():
    df = planted()
    res = analysis.analyze(df, ["fid"])
    assert res.paired
    pooled = rows_of(res, "loss").iloc[0]
    means = df.groupby(["loss", "seed"])["fid"].mean().unstack(0)
    ref = st.ttest_rel(means["bce"], means["wgangp"])
    assert pooled["p"] == pytest.approx(ref.pvalue, rel=1e-10)
    assert pooled["answer"] == "no significant difference"
    within = rows_of(res, "λ within loss").set_index("scope")
    for loss in ("bce", "wgangp"):
        y = df[df["loss"] == loss].pivot(index="seed", columns="lambda", values="fid").to_numpy()
        n, k = y.shape  # repeated-measures ANOVA by hand: subjects = seeds, conditions = λ
        grand = y.mean()
        ss_cond = n * ((y.mean(0) - grand) ** 2).sum()
        ss_subj = k * ((y.mean(1) - grand) ** 2).sum()
        ss_err = ((y - grand) ** 2).sum() - ss_cond - ss_subj
        f = (ss_cond / (k - 1)) / (ss_err / ((k - 1) * (n - 1)))
        assert within.loc[loss, "statistic"] == pytest.approx(f, rel=1e-10)
        assert within.loc[loss, "p"] == pytest.approx(st.f.sf(f, k - 1, (k - 1) * (n - 1)), rel=1e-8)
        assert within.loc[loss, "effect"] == pytest.approx(ss_cond / (ss_cond + ss_err), rel=1e-10)
        assert within.loc[loss, "answer"].startswith("λ matters: best λ=")
        assert within.loc[loss, "b"] == "λ=0"
    versus = rows_of(res, "λ vs 0")
    assert len(versus) == 4 and (versus["p_adj"] < 0.05).all()
    assert set(versus["answer"]) == {"λ=0.5 better (lower fid)", "λ=5 better (lower fid)"}
    line = formatting.verdict_lines(res)[0]
    assert (
        line.startswith("fid: loss: no significant difference")
        and "λ=5 better (lower fid) within bce" in line
    )


def test_seeds_needed_are_at_the_family_level():
    res = analysis.analyze(planted(lambda_effect=1.0, seeds=5), ["fid"])
    row = rows_of(res, "λ vs 0").iloc[0]
    m = len(res.verdict)
    df = planted(lambda_effect=1.0, seeds=5)
    cell = df[df["loss"] == row["scope"]].pivot(index="seed", columns="lambda", values="fid")
    df_diff = cell[float(row["a"].removeprefix("λ="))] - cell[0.0]
    d = abs(df_diff.mean()) / df_diff.std(ddof=1)
    need = TTestPower().solve_power(effect_size=d, alpha=0.05 / m, power=0.8)
    assert row["n_needed"] == np.ceil(need)
    power = res.power.iloc[0]  # the power table works at the same level: no second answer
    assert (power["alpha"], power["family"]) == (pytest.approx(0.05 / m), m)


def test_correction_family_does_not_depend_on_the_metrics_shown(tmp_path, capsys):
    df = planted(lambda_effect=2.0, loss_effect=1.0, seeds=4)
    df["lpips_ff"] = 0.4 + 0.01 * np.random.default_rng(1).normal(size=len(df))
    path = tmp_path / "results.csv"
    df.to_csv(path, index=False)
    outputs = []
    for extra in ([], ["--metric", "fid"], ["--metric", "lpips_ff,fid"]):
        assert main(["stats", str(path), "--format", "json", *extra]) == 0
        out = json.loads(capsys.readouterr().out)
        fid = [r for r in out["verdict"] if r["metric"] == "fid"]
        pairs = [r["p_adj"] for r in out["pairwise"] if r["metric"] == "fid"]
        outputs.append(([r["p_adj"] for r in fid], pairs))
    assert outputs[0] == outputs[1] == outputs[2]


def test_pooled_effect_without_any_single_lambda_is_explained():
    rng = np.random.default_rng(4)
    rows = [
        {"loss": loss, "lambda": lam, "seed": s, "fid": 100 - 1.2 * (loss == "wgangp") + rng.normal()}
        for loss in ("bce", "wgangp")
        for lam in (0.5, 1.0, 3.0, 5.0, 7.0, 10.0)
        for s in range(8)
    ]
    res = analysis.analyze(pd.DataFrame(rows), ["fid"])
    pooled = rows_of(res, "loss").iloc[0]
    assert pooled["answer"] == "wgangp better (lower fid)"
    assert not (rows_of(res, "loss at λ")["p_adj"] < 0.05).any()
    assert any("pooled over λ, but at no single λ" in n for n in res.verdict_notes)


def test_verdict_table_fits_a_terminal():
    res = analysis.analyze(warpbreaks(), ["fid"], paired=False)
    text = formatting.format_result(res, "table", ("verdict",))
    assert "Verdict per metric" in text
    assert max(len(line) for line in text.splitlines()) <= formatting.WIDTH
