"""Aggregate a sweep folder into a comparison a researcher can read at a glance.

Reads every job's ``metrics.json`` (written by :func:`dropout_lab.train.train`) and its
``.hydra/overrides.yaml``, and writes into the sweep folder:

* ``report.md``: per dataset/model, test accuracy mean ± std over seeds (method x p), the best p per
  method with its realised drop fraction, seconds per epoch, calibration and MC-dropout metrics,
  a paired Wilcoxon signed-rank test against ``standard``, anchors when the preset gives them, and
  the failed or unfinished jobs;
* ``summary.csv`` (one row per method/setting/p) and ``jobs.csv`` (one row per job);
* ``acc_vs_p_<dataset>_<model>.png``, ``val_curves_<dataset>_<model>.png`` and ``heatmap.png``.

Nothing here knows the methods, models or datasets: a "setting" is every override that varies
across the sweep besides method, p, dataset, model and seed (e.g. ``optimizer.weight_decay``).
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from dropout_lab.launch import NEUTRAL_KEYS
from dropout_lab.summary import SUMMARY_FILE

#: override keys that are columns of their own (not part of a row's "setting")
AXES = ("dropout", "dropout.p", "dataset", "model", "seed", "experiment", *NEUTRAL_KEYS)
BASELINE = "standard"
ALPHA = 0.05
EXTRA_METRICS = ("test/nll", "test/ece", "test/mc_acc", "test/mc_nll", "test/mc_ece")


@dataclass
class Job:
    """One job folder: where it is, how it ended, its coordinates and results."""

    folder: str
    status: str                      # ok | failed | interrupted | unfinished
    overrides: dict[str, str]
    hparams: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    sec_per_epoch: float | None = None
    drop_fraction: float | None = None
    anchor: float | None = None
    error: str = ""


def _overrides(job_dir: Path) -> dict[str, str]:
    path = job_dir / ".hydra" / "overrides.yaml"
    items = yaml.safe_load(path.read_text()) if path.exists() else []
    return {o.split("=", 1)[0].lstrip("+~"): o.split("=", 1)[1] if "=" in o else "" for o in items or []}


def load_jobs(sweep: Path) -> list[Job]:
    """Every job under ``sweep``: folders with a ``metrics.json`` or a ``.hydra`` folder (a job that
    started but never wrote its summary is ``unfinished``)."""
    folders = {p.parent for p in sweep.rglob(SUMMARY_FILE)} | {p.parent for p in sweep.rglob(".hydra") if p.is_dir()}
    jobs = []
    for folder in sorted(folders):
        job = Job(str(folder.relative_to(sweep)), "unfinished", _overrides(folder))
        path = folder / SUMMARY_FILE
        if path.exists():
            s = json.loads(path.read_text())
            job.status, job.hparams, job.history = s["status"], s.get("hparams") or {}, s.get("history") or []
            job.metrics = {k: v for k, v in (s.get("metrics") or {}).items() if v is not None}
            job.drop_fraction = s.get("drop_fraction")
            job.sec_per_epoch = s["train_seconds"] / s["epochs"] if s.get("epochs") else None
            job.anchor = (s.get("config") or {}).get("anchor")
            job.error = ((s.get("error") or "").strip().splitlines() or [""])[-1]  # the exception line of the traceback
        jobs.append(job)
    return jobs


def setting_keys(jobs: list[Job]) -> list[str]:
    """Override keys (other than :data:`AXES`) whose value differs between jobs."""
    keys = {k for j in jobs for k in j.overrides if k not in AXES}
    return sorted(k for k in keys if len({j.overrides.get(k) for j in jobs}) > 1)


def _mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def wilcoxon(a: dict[int, float], b: dict[int, float]) -> tuple[float | None, int]:
    """Two-sided Wilcoxon signed-rank test (scipy, exact for small n) of a vs b paired by seed.

    Returns:
        (p-value or None if fewer than 2 pairs, number of pairs). All-equal pairs give p = 1.
    """
    from scipy.stats import wilcoxon as test

    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None, len(seeds)
    diff = np.array([a[s] - b[s] for s in seeds])
    if not np.any(diff):
        return 1.0, len(seeds)
    return float(test(diff).pvalue), len(seeds)


def aggregate(jobs: list[Job]) -> list[dict[str, Any]]:
    """One row per (dataset, model, method, setting, p) of the finished jobs: n seeds, test accuracy
    mean/std (fractions), best-validation mean, drop fraction, seconds per epoch, extra metrics,
    and the per-seed accuracies (``by_seed``) for the paired test."""
    keys = setting_keys(jobs)
    groups: dict[tuple, list[Job]] = defaultdict(list)
    for j in jobs:
        if j.status == "ok" and "test/acc" in j.metrics:
            setting = ", ".join(f"{k}={j.overrides.get(k, '')}" for k in keys)
            groups[(j.hparams["dataset"], j.hparams["model"], j.hparams["method"], setting, j.hparams["p"])].append(j)
    rows = []
    for (dataset, model, method, setting, p), group in sorted(groups.items()):
        mean, std = _mean_std([j.metrics["test/acc"] for j in group])
        row = {"dataset": dataset, "model": model, "method": method, "setting": setting, "p": p, "n": len(group),
               "acc_mean": mean, "acc_std": std,
               "best_val_mean": float(np.mean([j.metrics.get("val/acc_best", math.nan) for j in group])),
               "drop_fraction": _nanmean([j.drop_fraction for j in group]),
               "sec_per_epoch": _nanmean([j.sec_per_epoch for j in group]),
               "anchor": group[0].anchor,
               "by_seed": {int(j.hparams["seed"]): j.metrics["test/acc"] for j in group},
               "curves": [[e["val/acc"] for e in j.history if "val/acc" in e] for j in group]}
        for key in EXTRA_METRICS:
            row[key] = _nanmean([j.metrics.get(key) for j in group])
        rows.append(row)
    return rows


def _nanmean(values: list[float | None]) -> float:
    a = [v for v in values if v is not None]
    return float(np.mean(a)) if a else math.nan


def best_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each (dataset, model, method, setting) the row of the p with the highest mean test
    accuracy, with ``wilcoxon_p``/``pairs`` against ``standard`` at its own best p (same dataset,
    model and setting)."""
    best: dict[tuple, dict] = {}
    for r in rows:
        key = (r["dataset"], r["model"], r["method"], r["setting"])
        if key not in best or r["acc_mean"] > best[key]["acc_mean"]:
            best[key] = r
    out = []
    for (dataset, model, method, setting), r in best.items():
        base = best.get((dataset, model, BASELINE, setting))
        pval, pairs = wilcoxon(r["by_seed"], base["by_seed"]) if base and method != BASELINE else (None, 0)
        out.append(r | {"wilcoxon_p": pval, "pairs": pairs})
    return out


def _pct(x: float | None, digits: int = 2) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f}"


def _label(r: dict[str, Any]) -> str:
    return r["method"] + (f" [{r['setting']}]" if r["setting"] else "")


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})


def markdown(sweep: Path, jobs: list[Job], rows: list[dict], best: list[dict]) -> str:
    """The Markdown report (see the module docstring)."""
    counts = defaultdict(int)
    for j in jobs:
        counts[j.status] += 1
    lines = [f"# Sweep report: `{sweep}`", "",
             f"{len(jobs)} jobs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ". "
             "Test accuracy in %, mean ± sample std over seeds (n = seeds).", ""]
    has_mc = any(not math.isnan(r["test/mc_acc"]) for r in rows)
    for dataset, model in sorted({(r["dataset"], r["model"]) for r in rows}):
        sub = [r for r in rows if (r["dataset"], r["model"]) == (dataset, model)]
        ps = sorted({r["p"] for r in sub})
        lines += [f"## {dataset} / {model}", "", "| method | " + " | ".join(f"p={p:g}" for p in ps) + " |",
                  "|---" * (len(ps) + 1) + "|"]
        for label in sorted({_label(r) for r in sub}):
            cells = {r["p"]: f"{_pct(r['acc_mean'])} ± {_pct(r['acc_std'])} ({r['n']})" for r in sub if _label(r) == label}
            lines.append(f"| {label} | " + " | ".join(cells.get(p, "") for p in ps) + " |")
        head = ["method", "best p", "test acc", "n", "drop fraction", "s/epoch"]
        head += ["NLL", "ECE", "MC acc", "MC NLL", "MC ECE"] if has_mc else []
        head += [f"vs {BASELINE}: Wilcoxon p"]
        anchored = any(r["anchor"] is not None for r in best if (r["dataset"], r["model"]) == (dataset, model))
        head += ["anchor"] if anchored else []
        lines += ["", "Best p per method:", "", "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
        for r in sorted((r for r in best if (r["dataset"], r["model"]) == (dataset, model)), key=lambda r: -r["acc_mean"]):
            cells = [_label(r), f"{r['p']:g}", f"{_pct(r['acc_mean'])} ± {_pct(r['acc_std'])}", str(r["n"]),
                     _pct(r["drop_fraction"], 1), f"{r['sec_per_epoch']:.2f}"]
            cells += [f"{r['test/nll']:.3f}", _pct(r["test/ece"]), _pct(r["test/mc_acc"]), f"{r['test/mc_nll']:.3f}",
                      _pct(r["test/mc_ece"])] if has_mc else []
            p = r["wilcoxon_p"]
            cells.append("—" if p is None else f"{p:.3f}{' *' if p < ALPHA else ''} ({r['pairs']} seeds)")
            cells += [_pct(r["anchor"]) if r["anchor"] is not None else "—"] if anchored else []
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    pairs = [r["pairs"] for r in best if r["pairs"]]
    lines += ["Paired test: two-sided Wilcoxon signed-rank over seeds (paired by seed) of each method at its best p "
              f"against `{BASELINE}` at its best p; `*` marks p < {ALPHA}. "
              + (f"With {min(pairs)} seed pair(s) the smallest attainable p is {2 / 2 ** min(pairs):.3f}, so the test has "
                 "little power: at least 6 seeds are needed to reach p < 0.05." if pairs and min(pairs) < 6 else ""),
              "Drop fraction: realised fraction of dropped units over training (from the methods' `record`). "
              "s/epoch: training time only (validation excluded)."
              + (" NLL (nats) / ECE (%, 15 bins): deterministic test set; MC: Monte-Carlo dropout (`eval.mc_samples`)."
                 if has_mc else ""), ""]
    bad = [j for j in jobs if j.status != "ok"]
    lines += ["## Failed or unfinished jobs", ""] + ([f"- `{j.folder}`: **{j.status}** {j.error}" for j in bad] or ["none"])
    plots = sorted(p.name for p in sweep.glob("*.png"))
    lines += ["", "## Plots", ""] + [f"![{name}]({name})" for name in plots]
    return "\n".join(lines) + "\n"


def _save(fig, ax, path: Path) -> Path:
    """Add the legend, write ``fig`` as a PNG at ``path`` and close it."""
    import matplotlib.pyplot as plt

    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plots(sweep: Path, rows: list[dict], best: list[dict]) -> list[Path]:
    """Accuracy against p (one line per method/setting, error bars = std over seeds), validation
    curves at each method's best p (mean over seeds), and a method x dataset heat map of the best
    mean accuracy. Returns the PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    written = []
    for dataset, model in sorted({(r["dataset"], r["model"]) for r in rows}):
        sub = [r for r in rows if (r["dataset"], r["model"]) == (dataset, model)]
        fig, ax = plt.subplots(figsize=(6, 4))
        for label in sorted({_label(r) for r in sub}):
            pts = sorted((r["p"], 100 * r["acc_mean"], 100 * r["acc_std"]) for r in sub if _label(r) == label)
            ax.errorbar([a for a, _, _ in pts], [b for _, b, _ in pts], yerr=[c for _, _, c in pts], marker="o", capsize=3, label=label)
        ax.set(xlabel="p (drop probability)", ylabel="test accuracy (%)", title=f"{dataset} / {model}")
        written.append(_save(fig, ax, sweep / f"acc_vs_p_{dataset}_{model}.png"))
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in (r for r in best if (r["dataset"], r["model"]) == (dataset, model)):
            length = min(len(c) for c in r["curves"])
            if length:
                curve = 100 * np.mean([c[:length] for c in r["curves"]], axis=0)
                ax.plot(range(1, length + 1), curve, marker=".", label=f"{_label(r)} p={r['p']:g}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel="epoch", ylabel="validation accuracy (%)", title=f"{dataset} / {model}: best p per method")
        written.append(_save(fig, ax, sweep / f"val_curves_{dataset}_{model}.png"))
    labels = sorted({_label(r) for r in best})
    columns = sorted({f"{r['dataset']}/{r['model']}" for r in best})
    grid = np.full((len(labels), len(columns)), np.nan)
    for r in best:
        grid[labels.index(_label(r)), columns.index(f"{r['dataset']}/{r['model']}")] = 100 * r["acc_mean"]
    fig, ax = plt.subplots(figsize=(3 + 1.4 * len(columns), 1.2 + 0.35 * len(labels)))
    image = ax.imshow(grid, aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(columns)), columns, rotation=20, fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    middle = np.nanmean([np.nanmin(grid), np.nanmax(grid)])
    for (i, k), v in np.ndenumerate(grid):
        if not np.isnan(v):
            ax.text(k, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="k" if v > middle else "w")
    ax.set_title("best mean test accuracy (%)", fontsize=9)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    written.append(sweep / "heatmap.png")
    fig.savefig(written[-1], dpi=90)
    plt.close(fig)
    return written


def write_report(sweep: str | Path) -> list[Path]:
    """Write ``report.md``, ``summary.csv``, ``jobs.csv`` and the PNG plots into ``sweep``.

    Returns:
        the written paths.

    Raises:
        FileNotFoundError: if ``sweep`` holds no job folder.
    """
    sweep = Path(sweep)
    jobs = load_jobs(sweep)
    if not jobs:
        raise FileNotFoundError(f"no job folders (with {SUMMARY_FILE} or .hydra/) under {sweep}")
    rows = aggregate(jobs)
    best = best_rows(rows)
    written = plots(sweep, rows, best) if rows else []
    columns = ["dataset", "model", "method", "setting", "p", "n", "acc_mean", "acc_std", "best_val_mean", "drop_fraction",
               "sec_per_epoch", "anchor", *EXTRA_METRICS]
    write_csv(sweep / "summary.csv", rows, columns)
    job_rows = [{"folder": j.folder, "status": j.status, **j.hparams, "test_acc": j.metrics.get("test/acc"),
                 "best_val_acc": j.metrics.get("val/acc_best"), "drop_fraction": j.drop_fraction,
                 "sec_per_epoch": j.sec_per_epoch, "error": j.error} for j in jobs]
    hp_keys = sorted({k for j in jobs for k in j.hparams})
    write_csv(sweep / "jobs.csv", job_rows, ["folder", "status", *hp_keys, "test_acc", "best_val_acc", "drop_fraction",
                                              "sec_per_epoch", "error"])
    (sweep / "report.md").write_text(markdown(sweep, jobs, rows, best))
    return [sweep / "report.md", sweep / "summary.csv", sweep / "jobs.csv", *written]
