"""Aggregate a sweep folder into a comparison a researcher can trust (protocol: docs/sweeps.md#report).

A package in four steps, one module each: :mod:`~dropout_lab.report.load` (job folders to a table),
:mod:`~dropout_lab.report.compare` (selection, paired tests, rankings, planning), :mod:`~dropout_lab.report.tables`
(the Markdown) and :mod:`~dropout_lab.report.plots`; :mod:`~dropout_lab.report.settings` holds what a report
compares (the baselines, metrics and :class:`Settings`), the only place that names methods.

Reads every job's ``metrics.json`` (written by :func:`dropout_lab.train.train`) and its
``.hydra/overrides.yaml`` into one pandas table and writes, inside the sweep folder only:

* ``report.md``:

  - **tuning**: per (dataset, model[, setting]) block each method's ``p`` and any swept method argument
    (``dropout.<arg>`` overrides) are selected on the mean validation accuracy of the *tuning seeds*
    (``report.tuning_seeds``; without them on every seed, and the report says that this is optimistic),
    exact ties broken by the lower mean validation loss; the tuning budget (configurations tried), a pick
    at the edge of its grid flagged, and each method's screening estimate against ``standard``;
  - **evaluation**: the methods run on evaluation replicates at their selected choice, compared with
    ``standard`` and ``none`` paired by seed (common random numbers, :mod:`dropout_lab.seeding`): mean
    paired difference with its 95 % CI, SD of the differences, paired t-test and exact sign-flip test,
    Holm over every comparison of the report (one declared family), TOST within the ROPE
    (``report.rope``), the decision (better / worse / equivalent / undecided, :func:`~dropout_lab.stats.decide`),
    MDE at this n after Holm, probability of improvement, relative error reduction; a sensitivity table
    on the other network (``report.selection``: last epoch or best-validation epoch); a planning table
    (seeds needed for the ROPE's effect, and their cost at the measured job time); the test set's
    binomial noise floor; which variance sources the intervals cover; the regime check (does ``none``'s
    validation accuracy peak, does its loss rise);
  - **across blocks**: Friedman with Iman-Davenport's F and Nemenyi's critical difference only with at
    least :data:`~dropout_lab.report.settings.MIN_BLOCKS` independent (dataset, model, setting) blocks, else how many would be needed;
  - failed, unfinished, unreadable and duplicate jobs;
* ``summary.csv`` (every method x choice on the tuning seeds: selection flag, budget, edge),
  ``tests.csv`` (every comparison), ``jobs.csv`` (every job, last- and best-epoch validation and test values);
* PNGs: ``forest_*`` (the headline: paired differences to ``standard`` and ``none`` with CIs, the ROPE
  band and the decisions), ``leaderboard_*`` (marginal means; with a source's ``anchor`` where a preset
  sets one), ``acc_vs_rate_*`` (tuning candidates against their realised rate), ``val_acc_*``,
  ``val_loss_*`` (small multiples of at most :data:`~dropout_lab.report.plots.PANEL` methods) and ``cd_diagram.png`` (only with
  :data:`~dropout_lab.report.settings.MIN_BLOCKS` blocks).

The compared metric (``report.metric``) is accuracy, NLL, ECE or Brier score of the deterministic
network, in points (hundredths: accuracy, ECE and Brier x 100, NLL in 0.01 nats); differences are
oriented so that positive means better. A "setting" is every override that varies across the sweep
besides method, its arguments, dataset, model and seed (e.g. ``optimizer.weight_decay``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dropout_lab.job import SUMMARY_FILE
from dropout_lab.report.compare import (
    candidates,
    comparisons,
    eval_means,
    evaluation_runs,
    planning,
    promoted,
    rankings,
    regime,
    screening,
)
from dropout_lab.report.files import inside
from dropout_lab.report.load import JOB_COLUMNS, finished_runs, load_jobs
from dropout_lab.report.plots import make_plots
from dropout_lab.report.settings import BLOCK, CHOICE, METRICS, NETWORKS, Settings, settings_from
from dropout_lab.report.tables import markdown

__all__ = [
    "METRICS",
    "NETWORKS",
    "Settings",
    "candidates",
    "finished_runs",
    "load_jobs",
    "promoted",
    "regime",
    "settings_from",
    "write_report",
]


def write_report(sweep: str | Path, **given) -> list[Path]:
    """Write ``report.md``, ``summary.csv``, ``tests.csv``, ``planning.csv``, ``jobs.csv`` and the PNG plots
    into ``sweep``.

    Args:
        sweep: the multirun folder.
        **given: :class:`Settings` fields overriding the jobs' ``report`` node (None: keep it).

    Returns:
        the written paths.

    Raises:
        FileNotFoundError: if ``sweep`` holds no job folder.
        ValueError: for a bad setting (:class:`Settings`).
    """
    sweep = Path(sweep)
    jobs = load_jobs(sweep)
    if jobs.empty:
        raise FileNotFoundError(f"no job folders (with {SUMMARY_FILE} or .hydra/) under {sweep}")
    settings = settings_from(jobs, **given)
    runs, duplicates = finished_runs(jobs, settings)
    if len(runs):
        cand = candidates(runs)
        chosen = evaluation_runs(runs, cand, settings)
        tests = comparisons(chosen, settings)
        other = (
            comparisons(chosen, settings, score="score_other")
            if chosen["score_other"].notna().any()
            else tests.iloc[:0]
        )
        screen = screening(runs, cand)
        means = eval_means(chosen)
        ranks = rankings(means)
        plots = make_plots(sweep, runs, cand, chosen, tests, ranks, settings)
        plan = planning(tests, means, settings)
    else:
        cand = pd.DataFrame(columns=[*BLOCK, *CHOICE, "selected"])
        chosen = tests = other = screen = plan = pd.DataFrame()
        ranks, plots = None, []
    path = inside(sweep, "report.md")
    path.write_text(
        markdown(sweep, jobs, runs, duplicates, cand, chosen, tests, other, screen, plan, ranks, settings, plots)
    )
    cand.to_csv(inside(sweep, "summary.csv"), index=False)
    tests.to_csv(inside(sweep, "tests.csv"), index=False)
    plan.to_csv(inside(sweep, "planning.csv"), index=False)
    jobs.reindex(columns=JOB_COLUMNS).to_csv(inside(sweep, "jobs.csv"), index=False)
    return [path, *plots, *(inside(sweep, f) for f in ("summary.csv", "tests.csv", "planning.csv", "jobs.csv"))]
