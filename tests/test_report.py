"""The sweep report on tiny synthetic metrics.json trees, and its statistics (:mod:`dropout_lab.stats`),
against hand-computed values: selection on tuning seeds with ties and grid edges, evaluation on the other
seeds, paired differences, t and sign-flip tests, Holm over one family, TOST and decisions, exact power
and MDE (and a Monte Carlo), seeds needed, relative error reduction, probability of improvement, the
noise floor, the planning table, Friedman only with enough blocks, other metrics and networks,
duplicates, unreadable summaries and file names from run values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from dropout_lab import stats
from dropout_lab.report import Settings, candidates, finished_runs, load_jobs, promoted, write_report

TARGETS = {
    "none": "dropout_lab.dropout.NoDropout",
    "standard": "dropout_lab.dropout.standard.StandardDropout",
    "gaussian": "dropout_lab.dropout.gaussian.GaussianDropout",
    "spatial": "dropout_lab.dropout.spatial.SpatialDropout",
}


def job(
    sweep: Path,
    method: str,
    p: float,
    seed: int,
    val: float,
    test: float,
    dataset: str = "mnist",
    *,
    val_loss: float = 0.4,
    best: float | None = None,
    tuning: list[int] | None = None,
    metrics: dict | None = None,
    test_samples: int | None = None,
    config_anchor: float | None = None,
    **extra,
) -> Path:
    """Write one job folder: metrics.json (the fields the report reads) and .hydra/overrides.yaml. ``val`` is the
    last epoch's validation accuracy (also the best), ``test`` the last network's test accuracy, ``best`` the
    best-validation network's (default: ``test``)."""
    folder = sweep / f"{dataset.replace('/', '_')}-{method}-{p}-{seed}"
    (folder / ".hydra").mkdir(parents=True)
    overrides = [f"dropout={method}", f"dropout.p={p}", f"dataset={dataset}", f"seed={seed}"]
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    summary = {
        "status": "ok",
        "error": None,
        "epochs": 2,
        "train_seconds": 3.0,
        "wall_seconds": 10.0,
        "hparams": {"method": method, "p": p, "model": "lenet5", "dataset": dataset, "seed": seed},
        "metrics": {
            "val/acc_best": val,
            "test/acc": test,
            "test_best/acc": test if best is None else best,
            "dropout/drop_fraction": 0.0 if method == "none" else p,
            **(metrics or {}),
        },
        "config": {
            "dropout": {"_target_": TARGETS[method], "name": method, "p": p},
            "dataset": {"name": dataset, "split_seed": seed},
            "seed": seed,
            "output_dir": str(folder),
            "report": {"tuning_seeds": tuning},
            "anchor": config_anchor,
        },
        "history": [
            {"epoch": 0, "val/acc": val - 0.01, "val/loss": 0.5},
            {"epoch": 1, "val/acc": val, "val/loss": val_loss},
        ],
        **extra,
    }
    (folder / "metrics.json").write_text(json.dumps(summary))
    if test_samples:
        np.savez(folder / "predictions.npz", y=np.zeros(test_samples, dtype=np.int16))
    return folder


def read(sweep: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(sweep / name)


# --- statistics ----------------------------------------------------------------------------------------


def test_exact_mde_is_3914_for_5_pairs_and_23_comparisons_where_statsmodels_says_3215():
    """../shared/comparison.md §1: the power of the returned d is 0.8 (statsmodels' 3.215 has power 0.61)."""
    d = stats.mde(5, 0.05 / 23)
    assert d == pytest.approx(3.914, abs=5e-4)
    assert stats.power(d, 5, 0.05 / 23) == pytest.approx(0.8, abs=1e-6)
    assert stats.power(3.215, 5, 0.05 / 23) == pytest.approx(0.61, abs=0.01)


def test_power_agrees_with_a_monte_carlo_of_the_paired_t_test():
    """400k draws of 5 normal differences with d = 3.914: the two-sided t-test at 0.05/23 rejects in 80 %
    (binomial 4-sigma tolerance 0.0025)."""
    rng = np.random.default_rng(0)
    n, alpha, d, draws = 5, 0.05 / 23, 3.914, 400_000
    x = rng.normal(d, 1.0, size=(draws, n))
    t = x.mean(1) / (x.std(1, ddof=1) / math.sqrt(n))
    rejected = (np.abs(t) > sps.t.isf(alpha / 2, n - 1)).mean()
    assert rejected == pytest.approx(stats.power(d, n, alpha), abs=4 * math.sqrt(0.8 * 0.2 / draws))


def test_seeds_needed_never_crashes_and_is_the_smallest_n_with_power():
    n = stats.seeds_needed(0.3, 0.36, 0.05 / 23)
    assert n == 27 and stats.power(0.3 / 0.36, n, 0.05 / 23) >= 0.8 > stats.power(0.3 / 0.36, n - 1, 0.05 / 23)
    assert (
        stats.seeds_needed(2.0, 0.01, 0.05 / 23) == 3
    )  # 2 seeds, large consistent difference: statsmodels crashed (NaN)
    assert stats.power(200, 3, 0.05 / 23) >= 0.8 > stats.power(200, 2, 0.05 / 23)
    assert stats.seeds_needed(0.5, 0.0, 0.05) == 2 and stats.seeds_needed(0.0, 1.0, 0.05) is None
    assert stats.seeds_needed(1e-6, 1.0, 0.05) is None  # beyond 100,000 pairs


def test_sign_flip_tost_and_decisions_by_hand():
    assert stats.sign_flip_p([1, 2, 3, 4, 5]) == pytest.approx(2 / 32)  # the smallest two-sided p at n = 5
    assert stats.sign_flip_p([1, -1, 2, -2]) == pytest.approx(1.0)
    diff = np.array([0.1, -0.1, 0.05, 0.0, 0.02])  # mean 0.014, sd 0.0764
    se = diff.std(ddof=1) / math.sqrt(5)
    by_hand = max(sps.t.sf((diff.mean() + 0.3) / se, 4), sps.t.cdf((diff.mean() - 0.3) / se, 4))
    assert stats.tost_p(diff, 0.3) == pytest.approx(by_hand, rel=1e-6)
    assert stats.decide(0.2, 0.001, 0.5) == "better" and stats.decide(-0.2, 0.001, 0.5) == "worse"
    assert stats.decide(0.01, 0.001, 0.01) == "equivalent" and stats.decide(0.5, 0.2, 0.6) == "undecided"
    f, p = stats.iman_davenport(12.0, 10, 3)  # F = 9 * 12 / (10 * 2 - 12) = 13.5 on (2, 18)
    assert f == pytest.approx(13.5) and p == pytest.approx(sps.f.sf(13.5, 2, 18))
    assert stats.nemenyi_cd(24, 2) == pytest.approx(25.7, abs=0.05) and stats.blocks_needed(24, 10) == 14


# --- selection and evaluation ---------------------------------------------------------------------------


def test_p_selected_on_tuning_seeds_with_ties_edges_and_budget_reported_on_evaluation_seeds(tmp_path):
    """gaussian: p=0.1 and p=0.3 tie on validation, p=0.3 has the lower validation loss and wins; its test
    accuracy on the tuning seeds (0.99) is never reported, only the evaluation seeds' (0.80 + 0.01 seed)."""
    tuning = [0, 1]
    for seed in tuning:
        job(tmp_path, "gaussian", 0.1, seed, val=0.90, test=0.50, val_loss=0.5, tuning=tuning)
        job(tmp_path, "gaussian", 0.3, seed, val=0.90, test=0.99, val_loss=0.4, tuning=tuning)
        job(tmp_path, "gaussian", 0.5, seed, val=0.85, test=0.95, tuning=tuning)
        job(tmp_path, "standard", 0.5, seed, val=0.88, test=0.85, tuning=tuning)
    for seed in (10, 11, 12):
        job(tmp_path, "gaussian", 0.3, seed, val=0.9, test=0.80 + 0.01 * seed, tuning=tuning)
        job(tmp_path, "gaussian", 0.1, seed, val=0.9, test=0.10, tuning=tuning)  # not the choice: never read
        job(tmp_path, "standard", 0.5, seed, val=0.9, test=0.85, tuning=tuning)
    write_report(tmp_path)
    s = read(tmp_path, "summary.csv")
    (chosen,) = s[s["selected"] & (s["method"] == "gaussian")].itertuples()
    assert chosen.p == 0.3 and chosen.tie and not chosen.edge and chosen.budget == 3 and chosen.n == 2
    t = read(tmp_path, "tests.csv").set_index(["baseline", "method"]).loc[("standard", "gaussian")]
    assert t["n"] == 3 and t["diff"] == pytest.approx(100 * (0.91 - 0.85))  # seeds 10-12: 0.90, 0.91, 0.92
    md = (tmp_path / "report.md").read_text()
    assert (
        "tuning seeds 0, 1" in md
        and "| gaussian † | 0.3 | 3 | 90.00 | 2 | +14.00 | tie broken by val loss | evaluated |" in md
    )
    edge = tmp_path / "edge"
    for seed in (0, 1):
        for p, val in ((0.1, 0.9), (0.3, 0.8)):
            job(edge, "gaussian", p, seed, val=val, test=0.9)
    cand = candidates(finished_runs(load_jobs(edge))[0])
    assert (
        cand.loc[cand["selected"], "edge"].item()
        and "No tuning seeds are declared" in (write_report(edge)[0]).read_text()
    )


def paired_sweep(sweep: Path, gauss: list[float], spatial: list[float], base: list[float], tuning=(100,)) -> None:
    for seed in tuning:  # one tuning seed, equal values: selection is trivial
        for method in ("standard", "gaussian", "spatial", "none"):
            job(sweep, method, 0.5, seed, val=0.9, test=0.9, tuning=list(tuning))
    for seed, b in enumerate(base):
        job(sweep, "standard", 0.5, seed, val=0.9, test=b, tuning=list(tuning), test_samples=10_000)
        job(sweep, "gaussian", 0.5, seed, val=0.9, test=b + gauss[seed], tuning=list(tuning))
        job(sweep, "spatial", 0.5, seed, val=0.9, test=b + spatial[seed], tuning=list(tuning))
        job(sweep, "none", 0.5, seed, val=0.9, test=b - 0.05 + 0.001 * seed, tuning=list(tuning))


def test_paired_differences_tests_holm_tost_decisions_and_mde_by_hand(tmp_path):
    base = [0.80, 0.82, 0.84, 0.86]
    gauss = [0.01, 0.02, 0.03, 0.02]  # points: 1, 2, 3, 2: mean 2, sd sqrt(2/3)
    spatial = [0.0, 0.001, -0.001, 0.0005]  # points: 0, 0.1, -0.1, 0.05
    paired_sweep(tmp_path, gauss, spatial, base)
    write_report(tmp_path)
    t = read(tmp_path, "tests.csv").set_index(["baseline", "method"])
    g = t.loc[("standard", "gaussian")]
    d = np.array(gauss) * 100
    sd = d.std(ddof=1)
    p_t = 2 * sps.t.sf(d.mean() / (sd / 2), 3)
    half = sps.t.ppf(0.975, 3) * sd / 2
    assert g["n"] == 4 and g["diff"] == pytest.approx(2.0) and g["sd"] == pytest.approx(sd)
    assert (g["ci_low"], g["ci_high"]) == pytest.approx((2 - half, 2 + half), rel=1e-6)
    assert g["p_t"] == pytest.approx(p_t, rel=1e-6) and g["p_sign"] == pytest.approx(2 / 16)
    assert g["p_improve"] == 1.0
    # relative error reduction: errors 100 - 83 = 17 (standard) and 15 (gaussian)
    assert g["rel_error"] == pytest.approx((17 - 15) / 17)
    # the family: every distinct pair compared: gaussian, spatial, none vs standard; gaussian, spatial vs none (none vs
    # standard counted once) = 5 comparisons
    assert (t["family"] == 5).all()
    ps = {k: t.loc[k, "p_t"] for k in t.index if not (k[0] == "none" and k[1] == "standard")}
    order = sorted(ps.values())
    holm = np.minimum(1, np.maximum.accumulate([(5 - i) * p for i, p in enumerate(order)]))
    assert sorted(t.drop(index=("none", "standard"))["p_holm"]) == pytest.approx(list(holm), rel=1e-6)
    assert t.loc[("none", "standard"), "p_holm"] == t.loc[("standard", "none"), "p_holm"]
    assert g["decision"] == "better" and t.loc[("standard", "none"), "decision"] == "worse"
    s = t.loc[("standard", "spatial")]  # within ±0.3 points: equivalent by TOST (Holm over 5)
    assert s["decision"] == "equivalent" and s["p_tost_holm"] < 0.05
    assert g["mde"] == pytest.approx(stats.mde(4, 0.05 / 5) * sd, rel=1e-6)
    assert g["seeds_rope"] == stats.seeds_needed(0.3, sd, 0.05 / 5)
    md = (tmp_path / "report.md").read_text()
    se = 100 * math.sqrt(0.83 * 0.17 / 10_000)
    assert f"binomial standard error of an accuracy of 83.00 % on 10000 test images is {se:.2f} points" in md
    assert "| gaussian | 4 | +2.00 |" in md and "**better**" in md and "**equivalent**" in md
    plan = read(tmp_path, "planning.csv").set_index("baseline").loc["standard"]
    sds = sorted([t.loc[("standard", m), "sd"] for m in ("gaussian", "spatial", "none")])
    assert plan["median_sd"] == pytest.approx(sds[1])
    n = stats.seeds_needed(0.3, sds[1], 0.05 / 5)
    assert plan["seeds_needed"] == n and plan["hours"] == pytest.approx(n * 4 * 10.0 / 3600)  # 4 methods x 10 s a job
    assert (tmp_path / "forest_mnist_lenet5.png").exists()
    assert "Variance sources" in md and "each replicate draws its own subsets" in md


def test_other_metrics_and_the_other_network(tmp_path):
    """report.metric=nll compares the test loss (lower is better: the difference is baseline - method);
    report.selection=best reads the best-validation network's numbers; the sensitivity table the other's."""
    for seed in range(3):
        job(
            tmp_path,
            "standard",
            0.5,
            seed,
            val=0.9,
            test=0.80,
            best=0.70,
            metrics={"test/loss": 0.50, "test_best/loss": 0.6},
        )
        job(
            tmp_path,
            "gaussian",
            0.5,
            seed,
            val=0.9,
            test=0.80 + 0.01 * (seed + 1),
            best=0.70,
            metrics={"test/loss": 0.40 - 0.01 * seed, "test_best/loss": 0.6},
        )
    write_report(tmp_path, metric="nll")
    g = read(tmp_path, "tests.csv").set_index(["baseline", "method"]).loc[("standard", "gaussian")]
    assert g["diff"] == pytest.approx(100 * (0.50 - 0.39))  # NLL 0.40, 0.39, 0.38 vs 0.50, in 0.01 nats
    write_report(tmp_path, selection="best")
    g = read(tmp_path, "tests.csv").set_index(["baseline", "method"]).loc[("standard", "gaussian")]
    assert g["diff"] == pytest.approx(0.0)
    md = (tmp_path / "report.md").read_text()
    assert "Sensitivity: the same replicates and choices compared on the last epoch's network" in md
    assert "| gaussian | standard | 3 | +2.00 |" in md
    with pytest.raises(ValueError, match="report.metric='f1' is not one of acc, nll, ece, brier"):
        write_report(tmp_path, metric="f1")


def test_promotion_uses_validation_only(tmp_path):
    for seed in (0, 1):
        job(tmp_path, "standard", 0.5, seed, val=0.80, test=0.99)
        job(tmp_path, "none", 0.5, seed, val=0.70, test=0.99)
        job(tmp_path, "gaussian", 0.5, seed, val=0.90, test=0.10)
        job(tmp_path, "spatial", 0.5, seed, val=0.85, test=0.99)
    chosen = promoted(candidates(finished_runs(load_jobs(tmp_path))[0]), top=1)
    assert sorted(chosen["method"]) == ["gaussian", "none", "standard"]


# --- across blocks --------------------------------------------------------------------------------------


@pytest.mark.parametrize("blocks", [2, 10])
def test_friedman_only_with_ten_independent_blocks_and_iman_davenport(tmp_path, blocks):
    """standard > gaussian > spatial in every block: Friedman chi2 = 12N/(k(k+1)) sum R^2 - 3N(k+1)."""
    for b in range(blocks):
        for seed in range(2):
            for method, acc in (("standard", 0.9), ("gaussian", 0.8), ("spatial", 0.7)):
                job(tmp_path, method, 0.5, seed, val=acc, test=acc + 0.001 * b, dataset=f"d{b}")
    paths = write_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    if blocks < 10:
        assert f"{blocks} independent (dataset, model) block(s) and k = 3 methods: no Friedman test" in md
        assert tmp_path / "cd_diagram.png" not in paths
        return
    chi2 = 12 * blocks / 12 * (1 + 4 + 9) - 3 * blocks * 4
    f = (blocks - 1) * chi2 / (blocks * 2 - chi2) if blocks * 2 > chi2 else math.inf
    assert f"Friedman χ² = {chi2:.2f}" in md and (f"Iman-Davenport F = {f:.2f}" in md or f == math.inf)
    assert f"Nemenyi CD = {stats.nemenyi_cd(3, blocks):.2f} ranks" in md and tmp_path / "cd_diagram.png" in paths
    assert "| standard | 1.00 |" in md


# --- bookkeeping ----------------------------------------------------------------------------------------


def test_duplicates_unreadable_summaries_and_rates(tmp_path):
    for seed in range(2):
        for p in (0.1, 0.5):
            job(tmp_path, "none", p, seed, val=0.8, test=0.8)  # none ignores p: one configuration per seed
            job(
                tmp_path,
                "gaussian",
                p,
                seed,
                val=0.9,
                test=0.9,
                metrics={"dropout/p_eq": p / 2},
                method_info={"p_meaning": "noise level", "p_is_rate": False},
            )
    broken = job(tmp_path, "standard", 0.5, 0, val=0.9, test=0.9)
    (broken / "metrics.json").write_text('{"status": "ok", "metr')  # truncated
    paths = write_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert f"`{broken.name}`: **unreadable** metrics.json: JSONDecodeError" in md
    assert "2 duplicate job(s)" in md
    s = read(tmp_path, "summary.csv")
    assert len(s[s["method"] == "none"]) == 1 and s.loc[s["method"] == "none", "n"].item() == 2
    assert "| none | — | 1 | 80.00 | 2 | — |  | evaluated |" in md  # none ignores p: no †, one configuration
    assert tmp_path / "acc_vs_rate_mnist_lenet5.png" in paths
    jobs = read(tmp_path, "jobs.csv")
    assert {"val_last", "val_best", "test_last_acc", "test_best_acc", "test_last_brier"} <= set(jobs.columns)


def test_file_names_from_run_values_stay_inside_the_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    for seed in range(2):
        job(sweep, "standard", 0.5, seed, val=0.9, test=0.9, dataset="../../evil")
    before = set(tmp_path.rglob("*"))
    paths = write_report(sweep)
    assert all(p.parent == sweep.resolve() for p in paths)
    assert {p for p in set(tmp_path.rglob("*")) - before if sweep not in p.parents} == set()
    assert (sweep / "leaderboard_evil_lenet5.png").exists()


def test_settings_come_from_the_jobs_and_the_command_line(tmp_path):
    for seed in range(3):
        job(tmp_path, "standard", 0.5, seed, val=0.9, test=0.9, tuning=[0])
    runs, _ = finished_runs(load_jobs(tmp_path), Settings(tuning_seeds=(0,)))
    assert runs["tuning"].tolist() == [True, False, False]
    md = write_report(tmp_path, rope=0.5)[0].read_text()
    assert "ROPE ±0.5 points" in md and "tuning seeds 0 (" in md
    assert (
        "nothing is selected" in write_report(tmp_path, tuning_seeds=())[0].read_text()
    )  # one configuration: no selection
    with pytest.raises(ValueError, match="report.rope=0 must be > 0"):
        Settings(rope=0)


def test_hparams_spec_declares_every_swept_column_and_metric(tmp_path):
    """The sweep's HParams spec: discrete method domain, swept model args only, MC metrics when any run has them."""
    from omegaconf import OmegaConf

    from conftest import make_cfg
    from dropout_lab.hparams import build_spec, merge_specs
    from dropout_lab.summary import HPARAM_METRICS

    def config(overrides):
        return OmegaConf.to_container(make_cfg(overrides, tmp_path), resolve=True)

    cfgs = [
        config(["model=mlp", f"model.hidden_sizes={h}", f"dropout={m}", f"eval.mc_samples={t}"])
        for h, m, t in (("[32]", "none", 0), ("[16,16]", "standard", 4))
    ]
    spec = build_spec(cfgs)
    assert spec["hparams"]["method"] == ["none", "standard"] and spec["hparams"]["model.hidden_sizes"] == [
        "[16, 16]",
        "[32]",
    ]
    assert "model.activation" not in spec["hparams"] and spec["hparams"]["p"] == [0.0, 0.5]
    assert spec["metrics"] == [*HPARAM_METRICS, "test/mc_acc", "test/mc_nll", "test/mc_ece", "test/mc_brier"]
    assert build_spec(cfgs[:1])["metrics"] == list(HPARAM_METRICS)
    one_method_arg = build_spec([config(o) for o in (["dropout=dropblock"], ["dropout=none"])])
    swept_arg = build_spec([config(["dropout=dropblock", f"dropout.block_size={b}"]) for b in (3, 5)])
    assert "dropout.block_size" not in one_method_arg["hparams"] and swept_arg["hparams"]["dropout.block_size"] == [
        3,
        5,
    ]
    merged = merge_specs(build_spec(cfgs[:1]), build_spec(cfgs[1:]))  # a second sweep into the same folder
    assert merged["hparams"]["method"] == ["none", "standard"] and merged["metrics"] == spec["metrics"]


def test_regime_check_reads_validation_accuracy_and_loss():
    from dropout_lab.report import regime

    flat = np.array([0.5, 0.8, 0.9, 0.91, 0.905, 0.91, 0.91, 0.908, 0.91])
    rising = np.linspace(0.5, 0.9, 9)
    loss = np.array([1.0, 0.5, 0.3, 0.28, 0.3, 0.33, 0.36, 0.4, 0.45])
    text = regime(flat, loss)
    assert "peaks at epoch 4 (91.00 %)" in text and "so it has peaked" in text
    assert "validation loss rises over the last third (0.330 -> 0.450; minimum 0.280 at epoch 4)" in text
    # last third = epochs 6-9 of 9: the least-squares line rises 5 points an epoch over 3 epochs = +15 points
    assert "changes by +15.00 points" in regime(rising, loss) and "has not peaked" in regime(rising, loss)


def test_a_sources_anchor_is_a_column_of_the_evaluation_table(tmp_path):
    for seed in range(3):
        job(tmp_path, "standard", 0.5, seed, val=0.97, test=0.98, config_anchor=0.9816)
    md = write_report(tmp_path)[0].read_text()
    assert "| s/job | anchor (%) |" in md and "| 98.16 |" in md
