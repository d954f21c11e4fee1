"""The Markdown of a report (``report.md``): the protocol, per block the regime check, tuning, evaluation and
paired tables, then planning, rankings and failed jobs. Formatting only: every number comes from
:mod:`dropout_lab.report.compare`."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from dropout_lab import metrics as M
from dropout_lab.report.compare import eval_means, in_block, mean_curve, on_choice, regime
from dropout_lab.report.settings import BLOCK, CONTROL, METRICS, MIN_BLOCKS, POWER, REFERENCE, Settings


def pts(x, digits: int = 2, sign: bool = False) -> str:
    """Points (hundredths of the metric) with ``digits`` decimals, signed if ``sign``; — for a missing value."""
    return "—" if x is None or pd.isna(x) else f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def pct(x, digits: int = 2) -> str:
    """A fraction as a percentage; — for a missing value."""
    return "—" if x is None or pd.isna(x) else f"{100 * x:.{digits}f}"


def pv(x) -> str:
    """A p-value: two significant digits below 0.01, else three decimals."""
    return "—" if x is None or pd.isna(x) else f"{x:.2g}" if x < 0.01 else f"{x:.3f}"


def p_cell(p) -> str:
    """A method's ``p``; — for a method that ignores it."""
    return "—" if pd.isna(p) else f"{p:g}"


def title(block: tuple) -> str:
    """``dataset / model [setting]``."""
    dataset, model, setting = block
    return f"{dataset} / {model}" + (f" [{setting}]" if setting else "")


def label(r) -> str:
    """A method's label: its key, † where ``p`` is not a drop probability, its swept arguments."""
    rate = "" if r["method"] == CONTROL or r["p_is_rate"] is None or pd.isna(r["p_is_rate"]) or r["p_is_rate"] else " †"
    return f"{r['method']}{rate}" + (f" [{r['args']}]" if r["args"] else "")


def table(head: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table as lines, with a blank line after it."""
    return (
        ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"] + ["| " + " | ".join(r) + " |" for r in rows] + [""]
    )


def _sources(chosen: pd.DataFrame) -> str:
    """Which variance sources the evaluation replicates randomise, as a sentence."""
    data = (
        chosen["split_seed"].notna().all()
        and (chosen["split_seed"].astype(float) == chosen["seed"].astype(float)).all()
    )
    drawn = (
        "the training and validation data (each replicate draws its own subsets: `dataset.split_seed` follows `seed`), "
        if data
        else "not the training and validation data (`dataset.split_seed` is fixed: intervals are conditional on that split), "
    )
    return (
        "**Variance sources.** The intervals and tests are over replicates (seeds), which randomise "
        + drawn
        + "the initial weights, the batch order and the dropout masks (separate streams, shared by every method of a "
        "replicate: common random numbers, docs/sweeps.md). The test set is the same fixed split for every replicate: "
        "its own sampling error is not in the intervals (noise floor below)."
    )


def markdown(
    sweep: Path,
    jobs: pd.DataFrame,
    runs: pd.DataFrame,
    duplicates: int,
    cand: pd.DataFrame,
    chosen: pd.DataFrame,
    tests: pd.DataFrame,
    other: pd.DataFrame,
    screen: pd.DataFrame,
    plan: pd.DataFrame,
    ranks: dict | None,
    settings: Settings,
    plots: list[Path],
) -> str:
    """The Markdown report (see the module docstring)."""
    lines = _protocol(sweep, jobs, duplicates, cand, settings)
    if len(chosen):
        lines += [_sources(chosen), ""]
    means = eval_means(chosen)
    for block, sub in cand.groupby(BLOCK, dropna=False):
        lines += [f"## {title(block)}", ""] + _regime_lines(
            in_block(chosen if len(chosen) else on_choice(runs, cand), block)
        )
        lines += _tuning_section(block, sub, in_block(screen, block), set(in_block(means, block)["method"]), settings)
        lines += _evaluation_section(in_block(means, block), in_block(tests, block), in_block(other, block), settings)
    lines += _planning_section(plan, settings) + _ranking_section(ranks)
    bad = jobs[jobs["status"] != "ok"]
    lines += ["## Failed, unfinished or unreadable jobs", ""]
    lines += [f"- `{r['folder']}`: **{r['status']}** {r['error']}" for _, r in bad.iterrows()] or ["none"]
    lines += ["", "## Plots", ""] + [f"![{p.name}]({p.name})" for p in plots]
    return "\n".join(lines) + "\n"


def _protocol(sweep: Path, jobs: pd.DataFrame, duplicates: int, cand: pd.DataFrame, settings: Settings) -> list[str]:
    """The title, the job counts and the protocol paragraph."""
    metric_label = METRICS[settings.metric][2]
    counts = jobs["status"].value_counts().sort_index()
    tuned = f"tuning seeds {', '.join(map(str, settings.tuning_seeds))}" if settings.tuning_seeds else "every seed"
    lines = [
        f"# Sweep report: `{sweep.name}`",
        "",
        f"{len(jobs)} jobs: "
        + ", ".join(f"{n} {s}" for s, n in counts.items())
        + (
            f"; {duplicates} duplicate job(s) of another job's configuration (e.g. `{CONTROL}` at several p) left out."
            if duplicates
            else "."
        ),
        "",
        f"**Protocol.** Compared metric: {metric_label} (`report.metric={settings.metric}`) of the "
        f"{'last epoch' if settings.selection == 'last' else 'best-validation epoch'}'s network (`report.selection={settings.selection}`); "
        f"selection uses the validation accuracy of that same network. For every block and method, `p` and any swept method "
        f"argument are chosen on the mean validation accuracy over the {tuned} (exact ties: lower mean validation loss). "
        + (
            "Evaluation replicates are the other seeds; each method is reported only there, at its selected choice. "
            if settings.tuning_seeds
            else "Every method runs one configuration, so nothing is selected and every seed is an evaluation replicate. "
            if len(cand) and cand["budget"].max() <= 1
            else "**No tuning seeds are declared (`report.tuning_seeds`): the same seeds choose and report, which is optimistic "
            "for the chosen methods.** "
        )
        + f"Points: hundredths of the metric; differences are oriented so that positive is better. ROPE ±{settings.rope:g} points "
        f"(`report.rope`). † marks methods whose `p` is not a drop probability (compare them by the realised rates).",
        "",
    ]
    return lines


def _regime_lines(runs: pd.DataFrame) -> list[str]:
    """The regime check of the baselines' runs in a block (:func:`~dropout_lab.report.compare.regime`)."""
    lines = []
    for method in (CONTROL, REFERENCE):
        mine = runs[runs["method"] == method]
        if len(mine):
            acc, loss = mean_curve(mine["history"], M.VAL_ACC), mean_curve(mine["history"], M.VAL_LOSS)
            lines += [f"Regime check, `{method}` (mean of {len(mine)} run(s)): {regime(acc, loss)}.", ""]
    return lines


def _tuning_section(
    block: tuple, sub: pd.DataFrame, screen: pd.DataFrame, evaluated: set[str], settings: Settings
) -> list[str]:
    """The tuning table of a block: each method's selected choice, budget, validation accuracy, screening Δ."""
    rows = []
    for _, r in screen.sort_values("val_mean", ascending=False).iterrows():
        flags = (["grid edge"] if r["edge"] else []) + (["tie broken by val loss"] if r["tie"] else [])
        rows.append(
            [
                label(sub.loc[(sub["method"] == r["method"]) & sub["selected"]].iloc[0]),
                p_cell(r["p"]),
                str(int(r["budget"])),
                pct(r["val_mean"]),
                str(int(r["n"])),
                pts(r["screen_diff"], sign=True) if r["method"] != REFERENCE else "—",
                ", ".join(flags),
                "evaluated" if r["method"] in evaluated else "screened out" if evaluated else "—",
            ]
        )
    what = f"tuning seeds {', '.join(map(str, settings.tuning_seeds))}" if settings.tuning_seeds else "all seeds"
    lines = [
        f"**Tuning** ({what}): each method's selected choice, its budget (configurations tried), mean validation accuracy "
        f"(%) and the screening estimate: Δ {METRICS[settings.metric][2]} against `{REFERENCE}` on the same seeds (points; "
        "optimistic, chosen on these seeds, labelled as screening). Sorted by validation accuracy.",
        "",
    ]
    return lines + table(
        ["method", "p", "budget", "val acc", "seeds", f"screening Δ vs {REFERENCE}", "flags", "stage"], rows
    )


def _evaluation_section(means: pd.DataFrame, tests: pd.DataFrame, other: pd.DataFrame, settings: Settings) -> list[str]:
    """The evaluation of a block: marginal means, the noise floor, paired tables against each baseline and
    the sensitivity table on the other network."""
    if means.empty:
        return ["No evaluation replicates in this block yet (`scripts/confirm.py` runs them).", ""]
    lines = _means_table(means, settings) + _noise_floor(means, settings)
    for base, t in tests.groupby("baseline", sort=False) if len(tests) else ():
        lines += _paired_table(base, t, settings)
    return lines + (_sensitivity_table(other, settings) if len(other) else [])


def _means_table(means: pd.DataFrame, settings: Settings) -> list[str]:
    """Each evaluated method's mean score ± 95 % CI, validation accuracy, realised rates, job time (and a
    source's reported accuracy where a preset sets ``anchor``)."""
    name = METRICS[settings.metric][2]
    anchored = settings.metric == "acc" and means["anchor"].notna().any()
    rows = [
        [
            label(r),
            p_cell(r["p"]),
            str(int(r["n"])),
            f"{pts(r['mean'])} ± {pts(r['ci'])}",
            pct(r["val"]),
            pct(r["drop_fraction"], 1),
            pct(r["p_eq"], 1),
            pts(r["wall"], 1),
            *([pct(r["anchor"])] if anchored else []),
        ]
        for _, r in means.sort_values("mean", ascending=False).iterrows()
    ]
    head = ["method", "p", "n", name, "val acc (%)", "drop fraction (%)", "p_eq (%)", "s/job"]
    return [
        f"**Evaluation** ({int(means['n'].max())} replicates at most): {name} (points, oriented), mean ± 95 % CI "
        "(marginal: for differences read the paired table and the forest plot).",
        "",
    ] + table(head + (["anchor (%)"] if anchored else []), rows)


def _noise_floor(means: pd.DataFrame, settings: Settings) -> list[str]:
    """The binomial standard error of the reference method's test accuracy on the test set's size."""
    sizes = means["test_samples"].dropna()
    if settings.metric != "acc" or not (means["method"] == REFERENCE).any() or not len(sizes):
        return []
    acc, size = means.loc[means["method"] == REFERENCE, "mean"].iloc[0] / 100, int(sizes.max())
    return [
        f"Test-set noise floor: the binomial standard error of an accuracy of {100 * acc:.2f} % on {size} test images is "
        f"{100 * math.sqrt(acc * (1 - acc) / size):.2f} points (the test set's own sampling error, shared by every replicate).",
        "",
    ]


def _ci_cell(r) -> str:
    return "—" if pd.isna(r["ci_low"]) else f"[{pts(r['ci_low'], sign=True)}, {pts(r['ci_high'], sign=True)}]"


def _paired_table(base: str, t: pd.DataFrame, settings: Settings) -> list[str]:
    """Every method against ``base``: Δ, CI, tests, Holm, TOST, decision, MDE, replicates for one ROPE."""
    rows = [
        [
            r["method"],
            str(int(r["n"])),
            pts(r["diff"], sign=True),
            _ci_cell(r),
            pts(r["sd"]),
            pv(r["p_t"]),
            pv(r["p_sign"]),
            pv(r["p_holm"]),
            pv(r["p_tost_holm"]),
            f"**{r['decision']}**",
            pts(r["mde"]),
            "—" if pd.isna(r["seeds_rope"]) else str(int(r["seeds_rope"])),
            pts(r["p_improve"]),
            pct(r["rel_error"], 1),
        ]
        for _, r in t.sort_values("diff", ascending=False).iterrows()
    ]
    head = ["method", "n", "Δ", "95 % CI", "SD of Δ", "t p", "sign-flip p", "Holm p", "TOST Holm p", "decision", "MDE"]
    head += [f"seeds for ±{settings.rope:g}", "P(better)", "rel. error reduction (%)"]
    return [
        f"Against `{base}` (paired by replicate; Holm over the report's family of {int(t['family'].iloc[0])} comparisons; "
        f"decision within the ROPE ±{settings.rope:g}):",
        "",
    ] + table(head, rows)


def _sensitivity_table(other: pd.DataFrame, settings: Settings) -> list[str]:
    """The same comparisons on the other network (``report.selection``'s other value)."""
    rows = [
        [r["method"], r["baseline"], str(int(r["n"])), pts(r["diff"], sign=True), _ci_cell(r), r["decision"]]
        for _, r in other.sort_values(["baseline", "diff"], ascending=[True, False]).iterrows()
    ]
    best = settings.other == "best"
    return [
        f"Sensitivity: the same replicates and choices compared on the {'best-validation' if best else 'last'} "
        f"epoch's network (`report.selection={settings.other}`{', early stopping for every method' if best else ''}):",
        "",
    ] + table(["method", "baseline", "n", "Δ", "95 % CI", "decision"], rows)


def _planning_section(plan: pd.DataFrame, settings: Settings) -> list[str]:
    """The planning table: replicates needed for one ROPE and their cost in hours."""
    if plan.empty:
        return []
    rows = [
        [
            title((r["dataset"], r["model"], r["setting"])),
            r["baseline"],
            pts(r["median_sd"]),
            str(int(r["methods"])),
            "—" if pd.isna(r["seeds_needed"]) else str(int(r["seeds_needed"])),
            pts(r["hours"], 1),
        ]
        for _, r in plan.iterrows()
    ]
    return [
        "## Planning",
        "",
        f"Replicates needed to detect a difference of one ROPE (±{settings.rope:g} points) with power {POWER} at Holm's first "
        "threshold of this report's family, from the median SD of the paired differences, and what they cost at the measured "
        "job times (all evaluated methods of the block, hours of one worker):",
        "",
    ] + table(["block", "against", "median SD of Δ", "methods", "replicates needed", "hours"], rows)


def _ranking_section(rank: dict | None) -> list[str]:
    """Friedman, Iman-Davenport and Nemenyi across blocks, or why there is none."""
    lines = ["## Across datasets and models", ""]
    if rank is None:
        return lines + ["No ranking: it needs at least 3 methods evaluated in every block.", ""]
    if "cd" not in rank:
        return lines + [
            f"{rank['N']} independent (dataset, model) block(s) and k = {rank['k']} methods: no Friedman test or "
            f"critical-difference diagram below {MIN_BLOCKS} blocks (Demšar 2006; ../shared/comparison.md §4). "
            + "".join(
                f"A Nemenyi CD below {cd:g} rank(s) would need N >= {n} blocks. " for cd, n in rank["needed"].items()
            )
            + "Read the paired tests per block.",
            "",
        ]
    lines += [
        f"Friedman χ² = {rank['statistic']:.2f} (p = {rank['p']:.3g}); Iman-Davenport F = {rank['F']:.2f} (p = {rank['p_F']:.3g}) "
        f"over N = {rank['N']} blocks and k = {rank['k']} methods; Nemenyi CD = {rank['cd']:.2f} ranks.",
        "",
    ]
    lines += [f"Left out (missing from some block): {', '.join(rank['left_out'])}.", ""] if rank["left_out"] else []
    return lines + table(["method", "mean rank"], [[m, f"{v:.2f}"] for m, v in rank["ranks"].items()])
