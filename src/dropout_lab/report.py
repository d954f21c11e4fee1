"""Aggregate a sweep folder into a comparison a researcher can trust (protocol: docs/sweeps.md#report).

Reads every job's ``metrics.json`` (written by :func:`dropout_lab.train.train`) and its
``.hydra/overrides.yaml`` into one pandas table and writes, inside the sweep folder only:

* ``report.md``: per (dataset, model[, setting]) a leaderboard where each method's ``p`` and any swept
  method argument (``dropout.<arg>`` overrides) are **selected on mean validation accuracy** and test
  accuracy is reported at that choice (Cawley & Talbot, JMLR 2010); every mean with its 95 %
  t-interval and n; the realised rates (``dropout/drop_fraction``, ``dropout/p_eq``) beside nominal p,
  with methods whose p is not a drop probability marked; paired t-tests by seed against ``standard``
  and ``none`` (effect size with CI, Holm-corrected p, minimum detectable effect, or the seeds needed
  where there are fewer than :data:`MIN_PAIRS`); across blocks a Friedman test with Nemenyi
  post-hoc and critical difference (Demšar, JMLR 2006), and the same over (dataset, model, seed)
  blocks, labelled as per-run ranks; whether ``none`` overfits (validation loss
  rising over the last third); failed, unfinished, unreadable and duplicate jobs;
* ``summary.csv`` (every method x setting x p with its selection flag), ``jobs.csv``, ``tests.csv``;
* PNGs: ``leaderboard_*`` (with a source's ``anchor`` accuracy where a preset sets one), ``acc_vs_rate_*``
  (blocks with a method besides the baselines, or ``standard`` at several rates), ``val_acc_*``, ``val_loss_*`` (small multiples of at most
  :data:`PANEL` methods), ``diff_from_standard.png`` (blocks holding ``standard`` and another method),
  ``cd_diagram.png`` and ``cd_diagram_per_run.png`` (when the Friedman test can be computed).

Nothing here knows the methods, models or datasets. A "setting" is every override that varies across
the sweep besides method, its arguments, dataset, model and seed (e.g. ``optimizer.weight_decay``);
each setting is its own block.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from dropout_lab.dedup import effective_config, ignored_args, p_is_rate
from dropout_lab.launch import NEUTRAL_KEYS
from dropout_lab.summary import SUMMARY_FILE

BASELINES = ("standard", "none")
ALPHA = 0.05
POWER = 0.8
#: fewest seed pairs a paired t-test is run on: with 2 the variance has one degree of freedom and
#: t_{0.975,1} = 12.7, so only enormous effects could reach significance after Holm
MIN_PAIRS = 3
#: methods per panel of a small-multiples plot
PANEL = 8
BLOCK = ["dataset", "model", "setting"]
CHOICE = ["method", "args", "p"]
EXTRA_METRICS = ("test/nll", "test/ece", "test/mc_acc", "test/mc_nll", "test/mc_ece")
#: override keys that are columns of their own (not part of a row's "setting")
AXES = ("dropout", "dataset", "model", "seed", "experiment", *NEUTRAL_KEYS)
COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:cyan")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
SIGNIFICANT = " **\\***"   # Markdown for a bold asterisk


def safe_name(*parts: object) -> str:
    """A file name from run values: each run of characters other than letters, digits and ``-``
    becomes one ``_``, none at the ends (``../../x`` -> ``x``; no dot, so no ``..``)."""
    return re.sub(r"[^A-Za-z0-9-]+", "_", "_".join(str(p) for p in parts)).strip("_") or "_"


def inside(sweep: Path, name: str) -> Path:
    """``sweep/name`` for a :func:`safe_name` ``name``.

    Raises:
        ValueError: if the path would leave ``sweep``.
    """
    path = (sweep / name).resolve()
    if path.parent != sweep.resolve():
        raise ValueError(f"refusing to write {path}: outside the sweep folder {sweep}")
    return path


def _overrides(job_dir: Path) -> dict[str, str]:
    path = job_dir / ".hydra" / "overrides.yaml"
    items = yaml.safe_load(path.read_text()) if path.exists() else []
    return {o.split("=", 1)[0].lstrip("+~"): o.split("=", 1)[1] if "=" in o else "" for o in items or []}


def _summary_fields(s: dict) -> dict:
    """One job's row from its metrics.json ``s`` (KeyError/TypeError if a required field is missing)."""
    h, m = s["hparams"], {k: v for k, v in (s.get("metrics") or {}).items() if v is not None}
    cfg, info = s.get("config") or {}, s.get("method_info") or {}
    return {"status": s["status"], "error": ((s.get("error") or "").strip().splitlines() or [""])[-1],
            "dataset": str(h["dataset"]), "model": str(h["model"]), "method": str(h["method"]),
            "p": float(h["p"]), "seed": int(h["seed"]),
            "val": m.get("val/acc_best", s.get("best_val_acc")), "test": m.get("test/acc"),
            "drop_fraction": m.get("dropout/drop_fraction", s.get("drop_fraction")),
            "p_eq": m.get("dropout/p_eq", s.get("p_eq")),
            "p_is_rate": info.get("p_is_rate", p_is_rate(cfg["dropout"]) if "dropout" in cfg else None),
            "sec_per_epoch": s["train_seconds"] / s["epochs"] if s.get("epochs") else None,
            "anchor": cfg.get("anchor"), "history": s.get("history") or [],
            "ignored": ignored_args(cfg["dropout"]) if "dropout" in cfg else (),
            "effective": effective_config(cfg) if cfg else None,
            **{k: m.get(k) for k in EXTRA_METRICS}}


def load_jobs(sweep: Path) -> pd.DataFrame:
    """One row per job folder under ``sweep`` (a folder with a ``metrics.json`` or a ``.hydra``
    folder): status ok | failed | interrupted | unfinished (no summary) | unreadable (a summary that
    does not parse; its ``error`` says why), coordinates, metrics, history and overrides."""
    folders = {p.parent for p in sweep.rglob(SUMMARY_FILE)} | {p.parent for p in sweep.rglob(".hydra") if p.is_dir()}
    rows = []
    for folder in sorted(folders):
        row = {"folder": str(folder.relative_to(sweep)), "status": "unfinished", "error": "", "overrides": _overrides(folder)}
        if (folder / SUMMARY_FILE).exists():
            try:
                row |= _summary_fields(json.loads((folder / SUMMARY_FILE).read_text()))
            except (OSError, ValueError, KeyError, TypeError) as err:
                row |= {"status": "unreadable", "error": f"{SUMMARY_FILE}: {type(err).__name__}: {err}"}
        rows.append(row)
    return pd.DataFrame(rows)


def finished_runs(jobs: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The ok jobs with their ``setting`` and swept method ``args`` (strings), ``p`` NaN for a method
    that ignores it, one row per effective configuration (:func:`~dropout_lab.dedup.effective_config`).

    Returns:
        (runs, number of duplicate jobs dropped).
    """
    runs = jobs[(jobs["status"] == "ok") & jobs["test"].notna()].copy() if "test" in jobs else jobs.iloc[:0].copy()
    if runs.empty:
        return runs.assign(setting="", args=""), 0
    keys = sorted({k for o in runs["overrides"] for k in o if k not in AXES})
    varying = [k for k in keys if runs["overrides"].map(lambda o, k=k: o.get(k)).nunique(dropna=False) > 1]
    arg_keys = [k for k in varying if k.startswith("dropout.") and k != "dropout.p"]
    setting_keys = [k for k in varying if not k.startswith("dropout.")]
    runs["setting"] = runs["overrides"].map(lambda o: ", ".join(f"{k}={o.get(k, '')}" for k in setting_keys))
    runs["args"] = [", ".join(f"{k}={o.get(k, '')}" for k in arg_keys if k.split(".", 1)[1] not in ign)
                    for o, ign in zip(runs["overrides"], runs["ignored"])]
    runs.loc[runs["ignored"].map(lambda ign: "p" in ign), "p"] = math.nan
    runs["effective"] = runs["effective"].fillna(runs["folder"])
    before = len(runs)
    runs = runs.drop_duplicates("effective").drop_duplicates(BLOCK + CHOICE + ["seed"])
    return runs, before - len(runs)


def _ci(sd: pd.Series, n: pd.Series) -> pd.Series:
    """Half-width of the 95 % t-interval of a mean (NaN for n = 1)."""
    return (stats.t.ppf(1 - ALPHA / 2, (n - 1).clip(lower=1)) * sd / np.sqrt(n)).where(n > 1)


def candidates(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (block, method, args, p): n seeds, mean validation and test accuracy with 95 %
    CI half-widths (fractions), realised rates, seconds per epoch, extra metrics, and ``selected``:
    the choice with the highest mean validation accuracy within (block, method); ties go to the
    first in (args, p) order."""
    g = runs.groupby(BLOCK + CHOICE, dropna=False, sort=True)
    out = g.agg(n=("test", "size"), val_mean=("val", "mean"), val_sd=("val", "std"), test_mean=("test", "mean"),
                test_sd=("test", "std"), drop_fraction=("drop_fraction", "mean"), p_eq=("p_eq", "mean"),
                p_is_rate=("p_is_rate", "first"), sec_per_epoch=("sec_per_epoch", "mean"), anchor=("anchor", "first"),
                **{k: (k, "mean") for k in EXTRA_METRICS}).reset_index()
    out["val_ci"], out["test_ci"] = _ci(out["val_sd"], out["n"]), _ci(out["test_sd"], out["n"])
    best = out.groupby(BLOCK + ["method"], dropna=False)["val_mean"].idxmax()
    out["selected"] = out.index.isin(best.dropna())
    return out


def selected_runs(runs: pd.DataFrame, cand: pd.DataFrame) -> pd.DataFrame:
    """The runs (one per seed) of each method's selected choice."""
    chosen = cand.loc[cand["selected"], BLOCK + CHOICE]
    fill = {"p": -1.0}  # NaN p (a method that ignores it) joins with NaN
    return runs.fillna(fill).merge(chosen.fillna(fill), on=BLOCK + CHOICE).replace({"p": {-1.0: math.nan}})


def seeds_needed(diff: pd.Series, m: int) -> int | None:
    """Seeds for a paired t-test to detect the observed mean difference with power :data:`POWER`
    at Holm's first threshold ``ALPHA / m`` (statsmodels ``TTestPower``); None without a variance
    estimate (fewer than 2 pairs, or identical differences)."""
    from statsmodels.stats.power import TTestPower

    if len(diff) < 2 or not diff.std(ddof=1) > 0 or diff.mean() == 0:
        return None
    n = TTestPower().solve_power(effect_size=abs(diff.mean()) / diff.std(ddof=1), alpha=ALPHA / m, power=POWER)
    return max(MIN_PAIRS, math.ceil(n))


def paired_tests(sel: pd.DataFrame) -> pd.DataFrame:
    """Each method against each of :data:`BASELINES` within each block, paired by seed, both at
    their validation-selected choice: n pairs, mean difference of test accuracy (fraction), its 95 %
    CI and p-value (``scipy.stats.ttest_rel``) when n >= :data:`MIN_PAIRS`, Holm-adjusted p over the
    block's methods (``statsmodels`` ``multipletests``), the minimum detectable effect at this n
    (``mde``, same power and threshold) or else ``seeds_needed``."""
    from statsmodels.stats.multitest import multipletests
    from statsmodels.stats.power import TTestPower

    out = []
    for block, g in sel.groupby(BLOCK, dropna=False):
        acc = g.pivot_table(index="seed", columns="method", values="test")
        for base in (b for b in BASELINES if b in acc):
            others = [c for c in acc.columns if c != base]
            rows = []
            for method in others:
                pair = acc[[method, base]].dropna()
                diff = pair[method] - pair[base]
                row = dict(zip(BLOCK, block)) | {"method": method, "baseline": base, "n": len(diff),
                                                 "diff": diff.mean() if len(diff) else math.nan}
                if len(diff) >= MIN_PAIRS and diff.std(ddof=1) > 0:
                    res = stats.ttest_rel(pair[method], pair[base])
                    ci = res.confidence_interval(1 - ALPHA)
                    d = TTestPower().solve_power(nobs=len(diff), alpha=ALPHA / len(others), power=POWER)
                    row |= {"ci_low": ci.low, "ci_high": ci.high, "p_value": res.pvalue, "mde": d * diff.std(ddof=1)}
                elif len(diff) >= MIN_PAIRS:  # identical differences: no variance, no t statistic
                    row |= {"ci_low": diff.mean(), "ci_high": diff.mean()}
                else:
                    row["seeds_needed"] = seeds_needed(diff, len(others))
                rows.append(row)
            tested = [r for r in rows if not math.isnan(r.get("p_value", math.nan))]
            if tested:
                holm = multipletests([r["p_value"] for r in tested], alpha=ALPHA, method="holm")[1]
                for r, p in zip(tested, holm):
                    r["p_holm"] = p
            out += rows
    columns = [*BLOCK, "method", "baseline", "n", "diff", "ci_low", "ci_high", "p_value", "p_holm", "mde", "seeds_needed"]
    return pd.DataFrame(out).reindex(columns=columns)


#: the two rankings: (key, what a block is, file of its CD diagram)
RANKINGS = (("blocks", "(dataset, model) blocks", "cd_diagram.png"),
            ("runs", "(dataset, model, seed) blocks, per-run ranks: runs of one dataset are not independent datasets",
             "cd_diagram_per_run.png"))


def rankings(cand: pd.DataFrame, chosen: pd.DataFrame) -> dict[str, dict | None]:
    """:func:`friedman` over (dataset, model, setting) blocks of the selected mean test accuracies
    (``blocks``), and over (dataset, model, setting, seed) blocks of the selected runs (``runs``:
    more blocks, but not independent datasets; Demšar 2006 asks for independent data sets)."""
    return {"blocks": friedman(cand[cand["selected"]].pivot_table(index=BLOCK, columns="method", values="test_mean")),
            "runs": friedman(chosen.pivot_table(index=[*BLOCK, "seed"], columns="method", values="test"))}


def friedman(table: pd.DataFrame) -> dict | None:
    """Friedman test over the blocks (rows of ``table``) and the methods present in every block
    (columns; test accuracies), Nemenyi post-hoc (``scikit_posthocs.posthoc_nemenyi_friedman``),
    mean ranks (1 = best) and the critical difference CD = q_alpha sqrt(k (k + 1) / (6 N)) with
    q_alpha = studentized range(1 - alpha, k, inf) / sqrt(2) (Demšar 2006, section 3.2.2).

    Returns:
        None with fewer than 2 blocks or 3 methods, else a dict with N, k, statistic, p, ranks
        (Series), nemenyi (DataFrame of p-values), cd, spread (largest minus smallest mean rank) and
        left_out (methods missing from some block).
    """
    import scikit_posthocs as sp

    complete = table.dropna(axis=1)
    n_blocks, k = complete.shape
    if n_blocks < 2 or k < 3:
        return None
    statistic, p = stats.friedmanchisquare(*(complete[c] for c in complete))
    ranks = complete.rank(axis=1, ascending=False).mean().sort_values()
    nemenyi = sp.posthoc_nemenyi_friedman(complete.to_numpy())
    nemenyi.index = nemenyi.columns = complete.columns
    cd = stats.studentized_range.ppf(1 - ALPHA, k, np.inf) / math.sqrt(2) * math.sqrt(k * (k + 1) / (6 * n_blocks))
    return {"N": n_blocks, "k": k, "statistic": statistic, "p": p, "ranks": ranks, "nemenyi": nemenyi, "cd": cd,
            "spread": ranks.max() - ranks.min(), "left_out": sorted(set(table.columns) - set(complete.columns))}


def mean_curve(histories: pd.Series, key: str) -> np.ndarray:
    """Mean over runs of ``key`` per epoch, over the epochs every run has (empty if none)."""
    curves = [[e[key] for e in h if key in e] for h in histories]
    length = min((len(c) for c in curves), default=0)
    return np.mean([c[:length] for c in curves], axis=0) if length else np.array([])


def overfits(loss: np.ndarray) -> str:
    """Whether a validation-loss curve rises over the last third of training, as a sentence."""
    if len(loss) < 3:
        return "too few epochs to tell"
    start = len(loss) - len(loss) // 3 - 1
    rises = loss[-1] > loss[start]
    return (f"validation loss {'rises' if rises else 'does not rise'} over the last third "
            f"({loss[start]:.3f} at epoch {start + 1} -> {loss[-1]:.3f} at epoch {len(loss)}; minimum {loss.min():.3f} at epoch {int(loss.argmin()) + 1})")


def _pct(x, digits: int = 2) -> str:
    return "—" if x is None or pd.isna(x) else f"{100 * x:.{digits}f}"


def _mean_ci(mean, ci) -> str:
    return _pct(mean) + ("" if pd.isna(ci) else f" ± {_pct(ci)}")


def _p(p) -> str:
    return "—" if pd.isna(p) else f"{p:g}"


def _rate_column(sub: pd.DataFrame) -> str:
    """The realised-rate axis of a block: ``p_eq`` where the summaries have it, else ``drop_fraction``."""
    return "p_eq" if sub["p_eq"].notna().any() else "drop_fraction"


def _bold(r) -> str:
    return "**" if r["selected"] else ""


def _title(block: tuple) -> str:
    dataset, model, setting = block
    return f"{dataset} / {model}" + (f" [{setting}]" if setting else "")


def _label(r) -> str:
    rate = "" if r["p_is_rate"] is None or pd.isna(r["p_is_rate"]) or r["p_is_rate"] else " †"
    return f"{r['method']}{rate}" + (f" [{r['args']}]" if r["args"] else "")


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"] + ["| " + " | ".join(r) + " |" for r in rows] + [""]


def markdown(sweep: Path, jobs: pd.DataFrame, chosen: pd.DataFrame, duplicates: int, cand: pd.DataFrame,
             tests: pd.DataFrame, ranks: dict[str, dict | None], plots: list[Path]) -> str:
    """The Markdown report (see the module docstring); ``chosen``: :func:`selected_runs`."""
    counts = jobs["status"].value_counts().sort_index()
    lines = [f"# Sweep report: `{sweep.name}`", "",
             f"{len(jobs)} jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items())
             + (f"; {duplicates} duplicate job(s) of another job's configuration (e.g. `none` at several p) left out." if duplicates else "."), "",
             "**Protocol.** For every dataset, model and method, the rate `p` and any swept method argument are chosen by "
             "the mean over seeds of the best validation accuracy (`val/acc_best`); test accuracy (`test/acc`, the network after "
             "the last epoch) is reported at that choice only, never used to choose. Accuracies in %, mean ± half-width of the 95 % t-interval over seeds (n); a single "
             "run has no interval. † marks methods whose `p` is not a drop probability (`method_info.p_is_rate`); compare "
             "them by the realised rates: drop fraction (mean fraction of units zeroed over all training steps) and p_eq "
             "(equivalent Bernoulli rate Var / (1 + Var) of the mask).", ""]
    has_mc = cand["test/mc_acc"].notna().any()
    for block, sub in cand.groupby(BLOCK, dropna=False):
        sel = sub[sub["selected"]].sort_values("test_mean", ascending=False)
        lines += [f"## {_title(block)}", ""]
        base = chosen[(chosen[BLOCK] == pd.Series(block, index=BLOCK)).all(axis=1) & (chosen["method"] == "none")]
        if len(base):
            loss = mean_curve(base["history"], "val/loss")
            lines += [f"Regime check, `none` (mean of {len(base)} run(s)): {overfits(loss)}.", ""]
        head = ["rank", "method", "p", "val acc", "test acc", "n", "drop fraction", "p_eq", "s/epoch"]
        head += ["NLL", "ECE", "MC acc", "MC NLL", "MC ECE"] if has_mc else []
        anchored = sel["anchor"].notna().any()
        head += ["anchor"] if anchored else []
        rows = []
        for i, (_, r) in enumerate(sel.iterrows(), 1):
            label = _label(r)
            label = f"**{label}**" if r["method"] in BASELINES else label
            cells = [str(i), label, _p(r["p"]), _mean_ci(r["val_mean"], r["val_ci"]), _mean_ci(r["test_mean"], r["test_ci"]),
                     str(r["n"]), _pct(r["drop_fraction"], 1), _pct(r["p_eq"], 1),
                     "—" if pd.isna(r["sec_per_epoch"]) else f"{r['sec_per_epoch']:.2f}"]
            if has_mc:
                cells += [f"{r['test/nll']:.3f}", _pct(r["test/ece"]), _pct(r["test/mc_acc"]), f"{r['test/mc_nll']:.3f}", _pct(r["test/mc_ece"])]
            cells += [_pct(r["anchor"]) if pd.notna(r["anchor"]) else "—"] if anchored else []
            rows.append(cells)
        lines += ["Leaderboard (each method at its validation-selected choice; sorted by test accuracy):", ""] + _table(head, rows)
        unrated = sorted(set(sub["method"]) - set(sub.loc[sub[_rate_column(sub)].notna(), "method"]))
        lines += [f"Not on the realised-rate plot (no `{_rate_column(sub)}` recorded): {', '.join(unrated)}.", ""] if unrated else []
        mine = tests[(tests[BLOCK] == pd.Series(block, index=BLOCK)).all(axis=1)] if len(tests) else tests
        for base, t in mine.groupby("baseline", sort=False) if len(mine) else ():
            rows = []
            for _, r in t.sort_values("diff", ascending=False).iterrows():
                if pd.notna(r["p_value"]):
                    star = SIGNIFICANT if r["p_holm"] < ALPHA else ""
                    verdict = f"{r['p_value']:.3g} | {r['p_holm']:.3g}{star} | {100 * r['mde']:.2f}"
                else:
                    need = "≥ 3 (no variance estimate)" if pd.isna(r["seeds_needed"]) else f"{int(r['seeds_needed'])}"
                    verdict = f"— | — | needs {need} seeds" if r["n"] < MIN_PAIRS else "— | — | no variance"
                ci = "—" if pd.isna(r["ci_low"]) else f"[{100 * r['ci_low']:+.2f}, {100 * r['ci_high']:+.2f}]"
                rows.append([r["method"], str(r["n"]), f"{100 * r['diff']:+.2f}", ci, verdict])
            lines += [f"Against `{base}` (paired by seed, both at their validation-selected choice):", ""]
            lines += _table(["method", "pairs", "Δ test (points)", "95 % CI", "t-test p", "Holm p", "MDE (points) / seeds needed"], rows)
        grid = sub.assign(label=sub.apply(_label, axis=1), column=sub["p"].map(lambda p: "p ignored" if pd.isna(p) else f"p={p:g}"),
                          cell=sub.apply(lambda r: f"{_bold(r)}{_pct(r['val_mean'])} / {_pct(r['test_mean'])}{_bold(r)} ({r['n']})", axis=1))
        table = grid.pivot(index="label", columns="column", values="cell").fillna("")
        table = table[sorted(table.columns, key=lambda c: (c == "p ignored", c))]
        lines += ["Every choice: validation / test accuracy (n); **bold** = selected on validation:", ""]
        lines += _table(["method", *table.columns], [[label, *row] for label, row in zip(table.index, table.to_numpy().tolist())])
    lines += ["Paired test: two-sided paired t-test (`scipy.stats.ttest_rel`) over seeds of each method against the baseline, "
              f"p-values Holm-adjusted over the block's methods (`statsmodels` `multipletests`), **\\*** = Holm p < {ALPHA}. "
              f"MDE: the difference this many seeds detects with power {POWER} at Holm's first threshold {ALPHA}/m "
              f"(`statsmodels` `TTestPower`, sd of the observed paired differences). With fewer than {MIN_PAIRS} pairs no test is "
              "run; the seeds needed to detect the observed difference are given instead. "
              "s/epoch: training time only (validation excluded)."
              + (" NLL (nats) / ECE (%, 15 bins): deterministic test set; MC: Monte-Carlo dropout (`eval.mc_samples`)." if has_mc else ""), ""]
    lines += ["## Across datasets and models: Friedman test and Nemenyi post-hoc", ""]
    for key, what, _ in RANKINGS:
        rank = ranks[key]
        lines += [f"### Over {what}", ""]
        if rank is None:
            lines += ["Not computed: it needs at least 2 blocks and 3 methods present in all of them.", ""]
            continue
        lines += [f"Friedman χ² = {rank['statistic']:.2f}, p = {rank['p']:.3g} over N = {rank['N']} blocks and k = {rank['k']} methods "
                  f"(ranks of the selected test accuracy within each block, 1 = best). Nemenyi critical difference "
                  f"CD = {rank['cd']:.2f} ranks; mean ranks spread over {rank['spread']:.2f}."
                  + (f" **The CD is wider than the whole spread of mean ranks: no two methods can be separated with {rank['N']} "
                     "blocks**; rely on the paired tests within each block." if rank["cd"] > rank["spread"] else ""),
                  ""] + ([f"Left out (missing from some block): {', '.join(rank['left_out'])}.", ""] if rank["left_out"] else [])
        lines += _table(["method", "mean rank"], [[m, f"{v:.2f}"] for m, v in rank["ranks"].items()])
    bad = jobs[jobs["status"] != "ok"]
    lines += ["## Failed, unfinished or unreadable jobs", ""]
    lines += [f"- `{r['folder']}`: **{r['status']}** {r['error']}" for _, r in bad.iterrows()] or ["none"]
    lines += ["", "## Plots", ""] + [f"![{p.name}]({p.name})" for p in plots]
    return "\n".join(lines) + "\n"


def _panels(methods: list[str]) -> list[list[str]]:
    return [methods[i:i + PANEL] for i in range(0, len(methods), PANEL)] or [[]]


def _figure(n_panels: int, width: float = 5.2, height: float = 3.4):
    import matplotlib.pyplot as plt

    cols = min(2, n_panels)
    rows = math.ceil(n_panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols + 2.2 * cols, height * rows), squeeze=False)
    for ax in axes.flat[n_panels:]:
        ax.set_visible(False)
    return fig, axes.flat


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def make_plots(sweep: Path, chosen: pd.DataFrame, cand: pd.DataFrame, ranks: dict[str, dict | None]) -> list[Path]:
    """Leaderboards, accuracy against realised rate and validation accuracy and loss curves of the
    selected runs ``chosen`` (:func:`selected_runs`) per block (small multiples
    of at most :data:`PANEL` methods, legends outside the data), the difference-from-``standard``
    heat map (diverging colours, one scale per column) and the critical-difference diagram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for block, sub in cand.groupby(BLOCK, dropna=False):
        sel = sub[sub["selected"]].sort_values("test_mean")
        name, title = safe_name(*[b for b in block if b]), _title(block)
        # leaderboard: methods sorted, mean and 95 % CI, baselines (and a source's anchor) marked
        fig, ax = plt.subplots(figsize=(7, 1.2 + 0.28 * len(sel)))
        colours = ["black" if m == "none" else "tab:red" if m == "standard" else "tab:blue" for m in sel["method"]]
        y = np.arange(len(sel))
        for i, (mean, ci, colour) in enumerate(zip(100 * sel["test_mean"], 100 * sel["test_ci"], colours)):
            ax.errorbar(mean, i, xerr=None if pd.isna(ci) else ci, fmt="o", color=colour, capsize=3)
        ax.set_yticks(y, [f"{_label(r)} (p={_p(r['p'])}, n={r['n']})" for _, r in sel.iterrows()], fontsize=8)
        anchored = sel["anchor"].notna().to_numpy()
        if anchored.any():  # a source's reported test accuracy (``anchor``, e.g. experiment=seed003_mlp)
            ax.plot(100 * sel["anchor"][anchored], y[anchored], "x", color="tab:green", ms=8, label="source's reported accuracy")
        for m, style in (("standard", "--"), ("none", ":")):
            if (sel["method"] == m).any():
                ax.axvline(100 * sel.loc[sel["method"] == m, "test_mean"].iloc[0], color="tab:red" if m == "standard" else "black",
                           ls=style, lw=1, label=f"{m} (baseline)")
        ax.set(xlabel="test accuracy (%), mean and 95 % CI over seeds", title=f"{title}: p selected on validation")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7)  # outside: it must not cover a point
        written.append(_save(fig, inside(sweep, safe_name("leaderboard", name) + ".png")))
        # accuracy against the realised rate: needs a method besides the baselines or `standard` at several rates
        rate = _rate_column(sub)
        others = [m for m in sel["method"][::-1] if m not in BASELINES]
        if others or (sub["method"] == "standard").sum() > 1:
            fig, axes = _figure(len(_panels(others)))
            for ax, methods in zip(axes, _panels(others)):
                for m, colour, marker in zip(methods, COLORS, MARKERS):
                    pts = sub[(sub["method"] == m) & sub[rate].notna()].sort_values(rate)
                    for _, part in pts.groupby("args", dropna=False):
                        ax.errorbar(100 * part[rate], 100 * part["test_mean"], yerr=100 * part["test_ci"].fillna(0), color=colour,
                                    marker=marker, capsize=2, label=_label(part.iloc[0]))
                ref = sub[sub["method"] == "standard"].sort_values(rate)
                if len(ref):
                    ax.plot(100 * ref[rate], 100 * ref["test_mean"], color="k", ls="--", marker="x", lw=1, label="standard (all p)")
                if (sub["method"] == "none").any():
                    ax.axhline(100 * sub.loc[sub["method"] == "none", "test_mean"].iloc[0], color="gray", ls=":", lw=1, label="none")
                ax.set(xlabel=f"realised rate: {'p_eq' if rate == 'p_eq' else 'drop fraction'} over training (%)", ylabel="test accuracy (%)")
                ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
            fig.suptitle(f"{title}: test accuracy at every p against the realised rate († p is not a drop probability)", fontsize=9)
            written.append(_save(fig, inside(sweep, safe_name("acc_vs_rate", name) + ".png")))
        # validation accuracy and loss at the selected choice, the baselines in every panel
        mine = chosen[(chosen[BLOCK] == pd.Series(block, index=BLOCK)).all(axis=1)]
        labels = {r["method"]: f"{_label(r)} p={_p(r['p'])}" for _, r in sel.iterrows()}
        for key, what, scale in (("val/acc", "validation accuracy (%)", 100), ("val/loss", "validation loss (log scale)", 1)):
            curves = {m: scale * mean_curve(g["history"], key) for m, g in mine.groupby("method")}
            fig, axes = _figure(len(_panels(others)))
            for ax, methods in zip(axes, _panels(others)):
                styles = [*zip(methods, COLORS, MARKERS), ("standard", "k", "x"), ("none", "gray", "")]
                for m, colour, marker in (s for s in styles if len(curves.get(s[0], ()))):
                    ax.plot(range(1, len(curves[m]) + 1), curves[m], color=colour, marker=marker, ms=4,
                            markevery=max(1, len(curves[m]) // 8), ls={"standard": "--", "none": ":"}.get(m, "-"), label=labels[m])
                ax.set(xlabel="epoch", ylabel=what, yscale="log" if key == "val/loss" else "linear")
                ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
            fig.suptitle(f"{title}: {what.split(' (')[0]}, mean over seeds, at the selected p", fontsize=9)
            written.append(_save(fig, inside(sweep, safe_name(key.replace("/", "_"), name) + ".png")))
    written += [p for p in (_heatmap(sweep, cand), *(_cd_diagram(sweep, ranks[k], what, name) for k, what, name in RANKINGS)) if p]
    return written


def differences(cand: pd.DataFrame) -> pd.DataFrame:
    """Selected test accuracy minus ``standard``'s in points, methods x blocks (block titles), rows sorted
    by their mean difference; only the blocks that have ``standard`` and another method, and only the
    methods present in one of them (empty if there is no such block: source 003's five MLPs each run one
    method)."""
    sel = cand[cand["selected"]].assign(block=lambda d: d[BLOCK].apply(lambda r: _title(tuple(r)), axis=1))
    table = sel.pivot_table(index="method", columns="block", values="test_mean")
    if "standard" not in table.index:
        return table.iloc[:0, :0]
    diff = 100 * (table - table.loc["standard"])
    diff = diff.loc[:, diff.drop(index="standard").notna().any()].dropna(how="all")
    return diff.loc[diff.mean(axis=1).sort_values(ascending=False).index] if diff.shape[1] else diff.iloc[:0, :0]


def _heatmap(sweep: Path, cand: pd.DataFrame) -> Path | None:
    """The :func:`differences` table as a heat map, each column on its own symmetric diverging scale
    (±its largest |difference|), values written in the cells; None without a block to compare."""
    import matplotlib.pyplot as plt

    diff = differences(cand)
    if diff.empty:
        return None
    scale = diff.abs().max().replace(0, 1)
    fig, ax = plt.subplots(figsize=(2.5 + 1.6 * diff.shape[1], 1.5 + 0.3 * len(diff)))
    ax.imshow((diff / scale).to_numpy(dtype=float), aspect="auto", cmap="RdBu", vmin=-1, vmax=1)
    ax.set_xticks(range(diff.shape[1]), [f"{c}\n(±{s:.2f})" for c, s in scale.items()], fontsize=8)
    ax.set_yticks(range(len(diff)), diff.index, fontsize=8)
    for (i, j), v in np.ndenumerate(diff.to_numpy(dtype=float)):
        if not np.isnan(v):
            ax.text(j, i, f"{v:+.2f}", ha="center", va="center", fontsize=7, color="w" if abs(v) > 0.6 * scale.iloc[j] else "k")
    ax.set_title("test accuracy minus standard (points), at the validation-selected p;\n"
                 "blue = better; each column on its own scale (± in the label)", fontsize=9)
    return _save(fig, inside(sweep, "diff_from_standard.png"))


def _cd_diagram(sweep: Path, rank: dict | None, what: str, name: str) -> Path | None:
    """scikit-posthocs' critical-difference diagram of the Friedman mean ranks (Nemenyi p-values)."""
    if rank is None:
        return None
    import matplotlib.pyplot as plt
    import scikit_posthocs as sp

    fig, ax = plt.subplots(figsize=(10, 1.5 + 0.22 * rank["k"]))
    sp.critical_difference_diagram(rank["ranks"], rank["nemenyi"], ax=ax, alpha=ALPHA, label_props={"fontsize": 8})
    wide = " (wider than the spread of mean ranks: nothing separable)" if rank["cd"] > rank["spread"] else ""
    ax.set_title(f"mean rank over N = {rank['N']} {what.split(':')[0]}, 1 = best; Nemenyi CD = {rank['cd']:.2f}{wide}", fontsize=9)
    return _save(fig, inside(sweep, name))


def write_report(sweep: str | Path) -> list[Path]:
    """Write ``report.md``, ``summary.csv``, ``jobs.csv``, ``tests.csv`` and the PNG plots into ``sweep``.

    Returns:
        the written paths.

    Raises:
        FileNotFoundError: if ``sweep`` holds no job folder.
    """
    sweep = Path(sweep)
    jobs = load_jobs(sweep)
    if jobs.empty:
        raise FileNotFoundError(f"no job folders (with {SUMMARY_FILE} or .hydra/) under {sweep}")
    runs, duplicates = finished_runs(jobs)
    cand = candidates(runs) if len(runs) else pd.DataFrame(columns=[*BLOCK, *CHOICE, "selected", "test/mc_acc"])
    chosen = selected_runs(runs, cand) if len(runs) else runs
    tests = paired_tests(chosen) if len(runs) else pd.DataFrame()
    ranks = rankings(cand, chosen) if len(runs) else dict.fromkeys(k for k, _, _ in RANKINGS)
    written = make_plots(sweep, chosen, cand, ranks) if len(runs) else []
    path = inside(sweep, "report.md")
    path.write_text(markdown(sweep, jobs, chosen, duplicates, cand, tests, ranks, written))
    cand.to_csv(inside(sweep, "summary.csv"), index=False)
    tests.to_csv(inside(sweep, "tests.csv"), index=False)
    columns = ["folder", "status", "dataset", "model", "method", "p", "seed", "val", "test", "drop_fraction", "p_eq", "sec_per_epoch", "error"]
    jobs.reindex(columns=columns).to_csv(inside(sweep, "jobs.csv"), index=False)
    return [path, *written, inside(sweep, "summary.csv"), inside(sweep, "tests.csv"), inside(sweep, "jobs.csv")]
