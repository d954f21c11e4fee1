"""The report's plots, per block: the forest plot of paired differences (the headline), the leaderboard of
marginal means, every tuning choice against its realised rate, validation curves; the CD diagram across
blocks. The baselines are drawn alike in every plot (:data:`BASELINE_STYLE`)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from dropout_lab import metrics as M
from dropout_lab.report.compare import eval_means, in_block, mean_curve, on_choice
from dropout_lab.report.files import inside, safe_name
from dropout_lab.report.settings import ALPHA, BASELINES, BLOCK, CONTROL, METRICS, MIN_PAIRS, REFERENCE, Settings
from dropout_lab.report.tables import label, p_cell, title

#: methods per panel of a small-multiples plot
PANEL = 8
#: the other methods' colours and markers, in turn within a panel
COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:cyan")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
#: how the baselines are drawn in every plot (matplotlib keyword arguments)
BASELINE_STYLE = {
    REFERENCE: {"color": "k", "ls": "--", "marker": "x"},
    CONTROL: {"color": "gray", "ls": ":", "marker": ""},
}
#: a decision's colour and marker in the forest plot
DECISION_STYLE = {
    "better": ("tab:green", "o"),
    "worse": ("tab:red", "o"),
    "equivalent": ("tab:blue", "s"),
    "undecided": ("gray", "o"),
}


def _rate_column(sub: pd.DataFrame) -> str:
    """The realised-rate axis of a block: ``p_eq`` where the summaries have it, else ``drop_fraction``."""
    return "p_eq" if sub["p_eq"].notna().any() else "drop_fraction"


def _panels(methods: list[str]) -> list[list[str]]:
    """``methods`` in panels of at most :data:`PANEL` (one empty panel if there are none)."""
    return [methods[i : i + PANEL] for i in range(0, len(methods), PANEL)] or [[]]


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


def forest(sweep: Path, block: tuple, tests: pd.DataFrame, settings: Settings) -> Path | None:
    """The headline plot of a block: each method's paired difference to ``standard`` (left) and ``none``
    (right) with its 95 % CI, the ROPE band, methods sorted by the difference, the decision as colour."""
    import matplotlib.pyplot as plt

    if tests.empty:
        return None
    bases = [b for b in BASELINES if (tests["baseline"] == b).any()]
    fig, axes = plt.subplots(
        1, len(bases), figsize=(5.5 * len(bases), 1.8 + 0.35 * tests.groupby("baseline").size().max()), squeeze=False
    )
    for ax, base in zip(axes.flat, bases):
        t = tests[tests["baseline"] == base].sort_values("diff")
        ax.axvspan(-settings.rope, settings.rope, color="tab:blue", alpha=0.12)
        ax.axvline(0, color="k", lw=0.8)
        for i, (_, r) in enumerate(t.iterrows()):
            colour, marker = DECISION_STYLE[r["decision"]]
            err = None if pd.isna(r["ci_low"]) else [[r["diff"] - r["ci_low"]], [r["ci_high"] - r["diff"]]]
            ax.errorbar(r["diff"], i, xerr=err, fmt=marker, color=colour, capsize=3)
        ax.set_yticks(
            range(len(t)), [f"{r['method']} (n={int(r['n'])}): {r['decision']}" for _, r in t.iterrows()], fontsize=8
        )
        ax.set(
            xlabel=f"Δ {METRICS[settings.metric][2]} vs {base} (points, + = better), 95 % CI", title=f"against {base}"
        )
        ax.set_ylim(-0.7, len(t) - 0.3)
    fig.suptitle(
        f"{title(block)}: paired differences over replicates; shaded: ROPE ±{settings.rope:g}; "
        "colour: decision after Holm (green better, red worse, blue equivalent, grey undecided)",
        fontsize=9,
    )
    return _save(fig, inside(sweep, safe_name("forest", *[b for b in block if b]) + ".png"))


def leaderboard(sweep: Path, block: tuple, board: pd.DataFrame, settings: Settings) -> Path:
    """Marginal means and 95 % CIs of ``board`` (the evaluated methods, else the tuning choices), sorted, the
    baselines as vertical lines, a source's reported accuracy (``anchor``) as a cross where a preset sets one."""
    import matplotlib.pyplot as plt

    board = board.sort_values("test_mean")
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.28 * len(board)))
    y = np.arange(len(board))
    for i, (_, r) in enumerate(board.iterrows()):
        colour = BASELINE_STYLE.get(r["method"], {"color": "tab:blue"})["color"]
        ci = None if pd.isna(r["test_ci"]) else r["test_ci"]
        ax.errorbar(r["test_mean"], i, xerr=ci, fmt="o", color=colour, capsize=3)
    ax.set_yticks(y, [f"{label(r)} (p={p_cell(r['p'])}, n={r['n']})" for _, r in board.iterrows()], fontsize=8)
    anchored = board["anchor"].notna().to_numpy()
    if anchored.any():
        ax.plot(
            100 * board["anchor"][anchored],
            y[anchored],
            "x",
            color="tab:green",
            ms=8,
            label="source's reported accuracy",
        )
    for m, style in BASELINE_STYLE.items():
        if (board["method"] == m).any():
            x = board.loc[board["method"] == m, "test_mean"].iloc[0]
            ax.axvline(x, color=style["color"], ls=style["ls"], lw=1, label=f"{m} (baseline)")
    ax.set(
        xlabel=f"{METRICS[settings.metric][2]} (points, oriented), mean and 95 % CI over seeds (marginal)",
        title=f"{title(block)}: at the selected p",
    )
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7)
    return _save(fig, inside(sweep, safe_name("leaderboard", *[b for b in block if b]) + ".png"))


def acc_vs_rate(sweep: Path, block: tuple, sub: pd.DataFrame, others: list[str], settings: Settings) -> Path:
    """Every tuning choice's mean score against its realised rate (small multiples of ``others``), with
    ``standard`` at every p and ``none`` as references; CIs only from :data:`MIN_PAIRS` seeds."""
    rate = _rate_column(sub)
    fig, axes = _figure(len(_panels(others)))
    for ax, methods in zip(axes, _panels(others)):
        for m, colour, marker in zip(methods, COLORS, MARKERS):
            pts = sub[(sub["method"] == m) & sub[rate].notna()].sort_values(rate)
            for _, part in pts.groupby("args", dropna=False):
                ci = part["test_ci"].where(part["n"] >= MIN_PAIRS).fillna(0)  # t_{0.975,1} = 12.7 hides everything
                ax.errorbar(
                    100 * part[rate],
                    part["test_mean"],
                    yerr=ci,
                    color=colour,
                    marker=marker,
                    capsize=2,
                    label=label(part.iloc[0]),
                )
        ref = sub[sub["method"] == REFERENCE].sort_values(rate)
        if len(ref):
            ax.plot(100 * ref[rate], ref["test_mean"], lw=1, label=f"{REFERENCE} (all p)", **BASELINE_STYLE[REFERENCE])
        if (sub["method"] == CONTROL).any():
            style = BASELINE_STYLE[CONTROL]
            ax.axhline(
                sub.loc[sub["method"] == CONTROL, "test_mean"].iloc[0],
                color=style["color"],
                ls=style["ls"],
                lw=1,
                label=CONTROL,
            )
        ax.set(
            xlabel=f"realised rate: {'p_eq' if rate == 'p_eq' else 'drop fraction'} over training (%)",
            ylabel=f"{METRICS[settings.metric][2]} (points)",
        )
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.suptitle(
        f"{title(block)}: tuning runs, every p against the realised rate, mean over seeds (95 % CI from {MIN_PAIRS} seeds; "
        "† p is not a drop probability)",
        fontsize=9,
    )
    return _save(fig, inside(sweep, safe_name("acc_vs_rate", *[b for b in block if b]) + ".png"))


def curves(
    sweep: Path, block: tuple, runs: pd.DataFrame, shown: list[str], labels: dict[str, str], what: str
) -> list[Path]:
    """Mean validation accuracy and loss per epoch of ``runs`` (one curve per method; small multiples of
    ``shown``, the baselines in every panel); ``what`` says over which runs the mean is."""

    written = []
    for key, axis, scale in (
        (M.VAL_ACC, "validation accuracy (%)", 100),
        (M.VAL_LOSS, "validation loss (log scale)", 1),
    ):
        mean = {m: scale * mean_curve(g["history"], key) for m, g in runs.groupby("method")}
        fig, axes = _figure(len(_panels(shown)))
        for ax, methods in zip(axes, _panels(shown)):
            styles = [*({"color": c, "ls": "-", "marker": k} for c, k in zip(COLORS, MARKERS))][: len(methods)]
            for m, style in [*zip(methods, styles), *BASELINE_STYLE.items()]:
                if len(mean.get(m, ())):
                    x = range(1, len(mean[m]) + 1)
                    ax.plot(x, mean[m], ms=4, markevery=max(1, len(mean[m]) // 8), label=labels.get(m, m), **style)
            ax.set(xlabel="epoch", ylabel=axis, yscale="log" if key == M.VAL_LOSS else "linear")
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
        fig.suptitle(f"{title(block)}: {axis.split(' (')[0]}, mean over {what}, at the selected p", fontsize=9)
        written.append(_save(fig, inside(sweep, safe_name(key.replace("/", "_"), *[b for b in block if b]) + ".png")))
    return written


def cd_diagram(sweep: Path, rank: dict) -> Path:
    """The critical-difference diagram of the mean ranks across blocks (scikit-posthocs)."""
    import matplotlib.pyplot as plt
    import scikit_posthocs as sp

    fig, ax = plt.subplots(figsize=(10, 1.5 + 0.22 * rank["k"]))
    sp.critical_difference_diagram(rank["ranks"], rank["nemenyi"], ax=ax, alpha=ALPHA, label_props={"fontsize": 8})
    ax.set_title(
        f"mean rank over N = {rank['N']} (dataset, model) blocks, 1 = best; Nemenyi CD = {rank['cd']:.2f}", fontsize=9
    )
    return _save(fig, inside(sweep, "cd_diagram.png"))


def make_plots(
    sweep: Path,
    runs: pd.DataFrame,
    cand: pd.DataFrame,
    chosen: pd.DataFrame,
    tests: pd.DataFrame,
    rank: dict | None,
    settings: Settings,
) -> list[Path]:
    """Per block: :func:`forest`, :func:`leaderboard` (the evaluated methods; the tuning choices when nothing is
    evaluated), :func:`acc_vs_rate` and :func:`curves` at the selected choice; :func:`cd_diagram` with
    :data:`~dropout_lab.report.settings.MIN_BLOCKS` blocks."""
    import matplotlib

    matplotlib.use("Agg")
    written = []
    means = eval_means(chosen) if len(chosen) else None
    for block, sub in cand.groupby(BLOCK, dropna=False):
        path = forest(sweep, block, in_block(tests, block), settings)
        written += [path] if path else []
        mine = in_block(means, block) if means is not None else pd.DataFrame()
        board = mine.rename(columns={"mean": "test_mean", "ci": "test_ci"}) if len(mine) else sub[sub["selected"]]
        written.append(leaderboard(sweep, block, board, settings))
        selected = sub.loc[sub["selected"]]
        others = [m for m in selected.sort_values("val_mean", ascending=False)["method"] if m not in BASELINES]
        if others or (sub["method"] == REFERENCE).sum() > 1:
            written.append(acc_vs_rate(sweep, block, sub, others, settings))
        shown = [m for m in (mine["method"] if len(mine) else others) if m not in BASELINES]
        labels = {
            r["method"]: label(r) + ("" if pd.isna(r["p"]) else f" p={p_cell(r['p'])}") for _, r in selected.iterrows()
        }
        of = in_block(chosen if len(chosen) else on_choice(runs, cand), block)
        written += curves(sweep, block, of, shown, labels, "evaluation replicates" if len(chosen) else "seeds")
    if rank is not None and "cd" in rank:
        written.append(cd_diagram(sweep, rank))
    return written
