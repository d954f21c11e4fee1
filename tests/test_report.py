"""The sweep report on tiny synthetic metrics.json trees, against hand-computed statistics:
selection on validation, confidence intervals, paired t-tests with Holm, seeds needed, Friedman and
Nemenyi, realised rates, duplicates, unreadable summaries and file names from run values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from dropout_lab.report import candidates, differences, finished_runs, load_jobs, write_report

TARGETS = {"none": "dropout_lab.dropout.NoDropout", "standard": "dropout_lab.dropout.standard.StandardDropout",
           "gaussian": "dropout_lab.dropout.gaussian.GaussianDropout", "spatial": "dropout_lab.dropout.spatial.SpatialDropout"}


def job(sweep: Path, method: str, p: float, seed: int, val: float, test: float, dataset: str = "mnist", *,
        history: list | None = None, **extra) -> Path:
    """Write one job folder: metrics.json (the fields the report reads) and .hydra/overrides.yaml."""
    folder = sweep / f"{dataset.replace('/', '_')}-{method}-{p}-{seed}"
    (folder / ".hydra").mkdir(parents=True)
    overrides = [f"dropout={method}", f"dropout.p={p}", f"dataset={dataset}", f"seed={seed}"]
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    summary = {"status": "ok", "error": None, "epochs": 2, "train_seconds": 3.0,
               "hparams": {"method": method, "p": p, "model": "lenet5", "dataset": dataset, "seed": seed},
               "metrics": {"val/acc_best": val, "test/acc": test, "dropout/drop_fraction": 0.0 if method == "none" else p,
                           **extra.pop("metrics", {})},
               "config": {"dropout": {"_target_": TARGETS[method], "p": p}, "dataset": {"name": dataset}, "seed": seed,
                          "output_dir": str(folder)},
               "history": history or [{"epoch": 0, "val/acc": val - 0.01, "val/loss": 0.5}, {"epoch": 1, "val/acc": val, "val/loss": 0.4}],
               **extra}
    (folder / "metrics.json").write_text(json.dumps(summary))
    return folder


def summary(sweep: Path) -> pd.DataFrame:
    return pd.read_csv(sweep / "summary.csv")


def test_p_is_selected_on_validation_and_test_reported_there(tmp_path):
    """gaussian: p=0.1 has the best validation accuracy, p=0.5 the best test accuracy."""
    for seed in range(3):
        job(tmp_path, "gaussian", 0.1, seed, val=0.90, test=0.80 + 0.01 * seed)
        job(tmp_path, "gaussian", 0.5, seed, val=0.85, test=0.95)
        job(tmp_path, "standard", 0.5, seed, val=0.88, test=0.85)
    write_report(tmp_path)
    s = summary(tmp_path)
    (chosen,) = s[s["selected"] & (s["method"] == "gaussian")].itertuples()
    assert chosen.p == 0.1 and chosen.test_mean == pytest.approx(0.81)
    md = (tmp_path / "report.md").read_text()
    assert "chosen by the mean over seeds of the best validation accuracy" in md
    assert "| 2 | gaussian † | 0.1 | 90.00 ± 0.00 | 81.00 ± 2.48 | 3 |" in md  # t_{0.975,2} * 0.01 / sqrt(3) = 0.0248


def test_confidence_interval_and_a_single_run_without_one(tmp_path):
    for seed, acc in enumerate((0.80, 0.82, 0.84)):
        job(tmp_path, "standard", 0.5, seed, val=0.9, test=acc)
    job(tmp_path, "gaussian", 0.5, 0, val=0.9, test=0.7)
    write_report(tmp_path)
    s = summary(tmp_path).set_index("method")
    assert s.loc["standard", "test_ci"] == pytest.approx(4.302653 * 0.02 / math.sqrt(3), rel=1e-5)  # t_{0.975,2} sd / sqrt(n)
    assert math.isnan(s.loc["gaussian", "test_ci"])
    md = (tmp_path / "report.md").read_text()
    assert "| 1 | **standard** | 0.5 | 90.00 ± 0.00 | 82.00 ± 4.97 | 3 |" in md and "| 2 | gaussian † | 0.5 | 90.00 | 70.00 | 1 |" in md


def test_paired_t_tests_holm_and_seeds_needed(tmp_path):
    base = [0.80, 0.82, 0.84, 0.86]
    gauss = [0.01, 0.02, 0.03, 0.02]   # mean 0.02, sd sqrt(2e-4 / 3)
    spatial = [0.00, 0.01, -0.01, 0.005]
    for seed in range(4):
        job(tmp_path, "standard", 0.5, seed, val=0.9, test=base[seed])
        job(tmp_path, "gaussian", 0.5, seed, val=0.9, test=base[seed] + gauss[seed])
        job(tmp_path, "spatial", 0.5, seed, val=0.9, test=base[seed] + spatial[seed])
        job(tmp_path, "none", 0.0, seed, val=0.9, test=base[seed] - 0.05)
    write_report(tmp_path)
    t = pd.read_csv(tmp_path / "tests.csv").set_index(["baseline", "method"])
    sd = math.sqrt(2e-4 / 3)
    t_stat = 0.02 / (sd / 2)
    p_gauss = 2 * stats.t.sf(t_stat, 3)
    half = stats.t.ppf(0.975, 3) * sd / 2
    row = t.loc[("standard", "gaussian")]
    assert row["n"] == 4 and row["diff"] == pytest.approx(0.02)
    assert row["p_value"] == pytest.approx(p_gauss, rel=1e-6)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((0.02 - half, 0.02 + half), rel=1e-6)
    d_sp = pd.Series(spatial)
    p_sp = 2 * stats.t.sf(abs(d_sp.mean()) / (d_sp.std() / 2), 3)
    # Holm over the 3 methods compared with standard (none: all differences -0.05, no variance, no test)
    assert math.isnan(t.loc[("standard", "none"), "p_value"])
    assert row["p_holm"] == pytest.approx(min(1, 2 * min(p_gauss, p_sp)), rel=1e-6)
    assert t.loc[("standard", "spatial"), "p_holm"] == pytest.approx(max(2 * min(p_gauss, p_sp), max(p_gauss, p_sp)), rel=1e-6)

    two = tmp_path / "two"
    for seed, (b, d) in enumerate(((0.80, 0.01), (0.82, 0.03))):
        job(two, "standard", 0.5, seed, val=0.9, test=b)
        job(two, "gaussian", 0.5, seed, val=0.9, test=b + d)
    write_report(two)
    row = pd.read_csv(two / "tests.csv").set_index(["baseline", "method"]).loc[("standard", "gaussian")]
    assert math.isnan(row["p_value"])
    from statsmodels.stats.power import TTestPower
    effect = 0.02 / pd.Series([0.01, 0.03]).std()
    n = int(row["seeds_needed"])  # smallest n with power >= 0.8 at alpha 0.05 (one comparison)
    assert TTestPower().power(effect, n, 0.05) >= 0.8 > TTestPower().power(effect, n - 1, 0.05)
    assert f"needs {n} seeds" in (two / "report.md").read_text()


@pytest.mark.parametrize("blocks", [2, 3])
def test_friedman_nemenyi_and_critical_difference(tmp_path, blocks):
    """standard > gaussian > spatial in every block: Friedman chi2 = 12N/(k(k+1)) sum R^2 - 3N(k+1)."""
    for b in range(blocks):
        for method, acc in (("standard", 0.9), ("gaussian", 0.8), ("spatial", 0.7)):
            job(tmp_path, method, 0.5, 0, val=acc, test=acc + 0.001 * b, dataset=f"d{b}")
    paths = write_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    chi2 = 12 * blocks / 12 * (1 + 4 + 9) - 3 * blocks * 4
    cd = 2.343 * math.sqrt(3 * 4 / (6 * blocks))  # q_0.05 for k = 3 (Demšar 2006, Table 5a)
    assert f"Friedman χ² = {chi2:.2f}, p = {stats.chi2.sf(chi2, 2):.3g} over N = {blocks} blocks and k = 3" in md
    assert f"CD = {cd:.2f} ranks; mean ranks spread over 2.00" in md
    assert ("The CD is wider than the whole spread" in md) == (cd > 2)
    assert "| standard | 1.00 |" in md and tmp_path / "cd_diagram.png" in paths
    # one seed per block: the per-run ranking has the same N blocks and the same statistic
    assert md.count(f"Friedman χ² = {chi2:.2f}") == 2 and "### Over (dataset, model, seed) blocks, per-run ranks" in md
    assert tmp_path / "cd_diagram_per_run.png" in paths


def test_duplicates_unreadable_summaries_and_rates(tmp_path):
    for seed in range(2):
        for p in (0.1, 0.5):
            job(tmp_path, "none", p, seed, val=0.8, test=0.8)  # none ignores p: one configuration per seed
            job(tmp_path, "gaussian", p, seed, val=0.9, test=0.9, metrics={"dropout/p_eq": p / 2},
                method_info={"p_meaning": "noise level", "p_is_rate": False})
    broken = job(tmp_path, "standard", 0.5, 0, val=0.9, test=0.9)
    (broken / "metrics.json").write_text('{"status": "ok", "metr')  # truncated
    paths = write_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert f"`{broken.name}`: **unreadable** metrics.json: JSONDecodeError" in md
    assert "2 duplicate job(s)" in md
    s = summary(tmp_path)
    assert len(s[s["method"] == "none"]) == 1 and s.loc[s["method"] == "none", "n"].item() == 2
    assert "| **none †** | — |" in md  # none ignores p (NoDropout.p_is_rate is False) and "| gaussian † | 0.1 | 90.00 ± 0.00 | 90.00 ± 0.00 | 2 | 10.0 | 5.0 |" in md
    assert tmp_path / "acc_vs_rate_mnist_lenet5.png" in paths


def test_file_names_from_run_values_stay_inside_the_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    for seed in range(2):
        job(sweep, "standard", 0.5, seed, val=0.9, test=0.9, dataset="../../evil")
    before = set(tmp_path.rglob("*"))
    paths = write_report(sweep)
    assert all(p.parent == sweep.resolve() for p in paths)
    assert {p for p in set(tmp_path.rglob("*")) - before if sweep not in p.parents} == set()
    assert (sweep / "leaderboard_evil_lenet5.png").exists()


def test_hparams_spec_declares_every_swept_column_and_metric(tmp_path):
    """The sweep's HParams spec: discrete method domain, swept model args only, MC metrics when any run has them."""
    from conftest import make_cfg
    from dropout_lab.hparams import build_spec, merge_specs
    from dropout_lab.summary import HPARAM_METRICS

    cfgs = [make_cfg(["model=mlp", f"model.hidden_sizes={h}", f"dropout={m}", f"eval.mc_samples={t}"], tmp_path)
            for h, m, t in (("[32]", "none", 0), ("[16,16]", "standard", 4))]
    spec = build_spec(cfgs)
    assert spec["hparams"]["method"] == ["none", "standard"] and spec["hparams"]["model.hidden_sizes"] == ["[16, 16]", "[32]"]
    assert "model.activation" not in spec["hparams"] and spec["hparams"]["p"] == [0.0, 0.5]
    assert spec["metrics"] == [*HPARAM_METRICS, "test/nll", "test/ece", "test/mc_acc", "test/mc_nll", "test/mc_ece"]
    assert build_spec(cfgs[:1])["metrics"] == list(HPARAM_METRICS)
    one_method_arg = build_spec([make_cfg(o, tmp_path) for o in (["dropout=dropblock"], ["dropout=none"])])
    swept_arg = build_spec([make_cfg(["dropout=dropblock", f"dropout.block_size={b}"], tmp_path) for b in (3, 5)])
    assert "dropout.block_size" not in one_method_arg["hparams"] and swept_arg["hparams"]["dropout.block_size"] == [3, 5]
    merged = merge_specs(build_spec(cfgs[:1]), build_spec(cfgs[1:]))  # a second sweep into the same folder
    assert merged["hparams"]["method"] == ["none", "standard"] and merged["metrics"] == spec["metrics"]


def test_difference_from_standard_only_where_standard_has_company(tmp_path):
    """Blocks holding `standard` alone (source 003's five MLPs each run one method) get no column, and a sweep
    without any such comparison writes no heat map and no accuracy-against-rate plot."""
    for seed in range(3):
        job(tmp_path, "standard", 0.5, seed, val=0.90, test=0.90)
        job(tmp_path, "gaussian", 0.5, seed, val=0.90, test=0.92)
        job(tmp_path, "standard", 0.5, seed, val=0.80, test=0.80, dataset="fashion_mnist")
    runs, _ = finished_runs(load_jobs(tmp_path))
    diff = differences(candidates(runs))
    assert list(diff.columns) == ["mnist / lenet5"] and diff.loc["gaussian"].iloc[0] == pytest.approx(2.0)
    alone = tmp_path / "alone"
    for seed in range(3):
        job(alone, "standard", 0.5, seed, val=0.80, test=0.80)
    written = write_report(alone)
    assert alone / "diff_from_standard.png" not in written and alone / "acc_vs_rate_mnist_lenet5.png" not in written
    assert alone / "leaderboard_mnist_lenet5.png" in written
    rates = tmp_path / "rates"  # standard alone but at two rates: its accuracy against the realised rate is the plot
    for seed in range(3):
        job(rates, "standard", 0.1, seed, val=0.80, test=0.80)
        job(rates, "standard", 0.5, seed, val=0.82, test=0.82)
    assert rates / "acc_vs_rate_mnist_lenet5.png" in write_report(rates)
