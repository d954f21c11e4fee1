"""The statistics of a comparison: selection on the tuning seeds (:func:`candidates`), the evaluation replicates
of each selected choice, paired tests against the baselines with Holm and TOST (:func:`comparisons`), the
screening estimate, promotion, rankings across blocks and the planning table (protocol: docs/sweeps.md#report;
../shared/comparison.md)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as sps

from dropout_lab import metrics as M
from dropout_lab import stats
from dropout_lab.report.settings import (
    ALPHA,
    BASELINES,
    BLOCK,
    CHOICE,
    MIN_BLOCKS,
    MIN_PAIRS,
    REFERENCE,
    Settings,
)


def in_block(frame: pd.DataFrame, block: tuple) -> pd.DataFrame:
    """The rows of ``frame`` in ``block`` (a (dataset, model, setting) tuple)."""
    return frame[(frame[BLOCK] == pd.Series(block, index=BLOCK)).all(axis=1)] if len(frame) else frame


def _ci(sd: pd.Series, n: pd.Series) -> pd.Series:
    """Half-width of the 95 % t-interval of a mean (NaN for n = 1)."""
    return (sps.t.ppf(1 - ALPHA / 2, (n - 1).clip(lower=1)) * sd / np.sqrt(n)).where(n > 1)


def candidates(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (block, method, args, p) of the tuning runs: n seeds, mean validation accuracy and loss,
    mean score with its 95 % CI half-width (points), realised rates, seconds per epoch, and the selection:

    * ``selected``: the highest mean validation accuracy within (block, method); an exact tie goes to the
      lower mean validation loss, then to the first in (args, p) order;
    * ``tie``: the selection was decided by the validation loss;
    * ``budget``: configurations tried for (block, method);
    * ``edge``: the selected p is the smallest or largest of the method's grid (grid of >= 2 values).
    """
    tuning = runs[runs["tuning"]]
    g = tuning.groupby(BLOCK + CHOICE, dropna=False, sort=True)
    out = g.agg(
        n=("score", "size"),
        val_mean=("val", "mean"),
        val_sd=("val", "std"),
        val_loss_mean=("val_loss", "mean"),
        test_mean=("score", "mean"),
        test_sd=("score", "std"),
        drop_fraction=("drop_fraction", "mean"),
        p_eq=("p_eq", "mean"),
        p_is_rate=("p_is_rate", "first"),
        sec_per_epoch=("sec_per_epoch", "mean"),
        anchor=("anchor", "first"),
        **{k: (k, "mean") for k in M.MC},
    ).reset_index()
    out["val_ci"], out["test_ci"] = _ci(out["val_sd"], out["n"]), _ci(out["test_sd"], out["n"])
    out["selected"] = out["tie"] = out["edge"] = False
    out["budget"] = 0
    for _, sub in out.groupby(BLOCK + ["method"], dropna=False):
        order = sub.sort_values(
            ["val_mean", "val_loss_mean"], ascending=[False, True], kind="stable", na_position="last"
        )
        pick = order.index[0]
        out.loc[sub.index, "budget"] = len(sub)
        out.loc[pick, "selected"] = True
        out.loc[pick, "tie"] = len(order) > 1 and order["val_mean"].iloc[1] == order["val_mean"].iloc[0]
        grid = sub["p"].dropna().unique()
        out.loc[pick, "edge"] = len(grid) > 1 and out.loc[pick, "p"] in (grid.min(), grid.max())
    return out


def on_choice(runs: pd.DataFrame, cand: pd.DataFrame) -> pd.DataFrame:
    """The runs of each method's selected choice."""
    chosen = cand.loc[cand["selected"], BLOCK + CHOICE]
    fill = {"p": -1.0}  # NaN p (a method that ignores it) joins with NaN
    return runs.fillna(fill).merge(chosen.fillna(fill), on=BLOCK + CHOICE).replace({"p": {-1.0: math.nan}})


def evaluation_runs(runs: pd.DataFrame, cand: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """The evaluation replicates (the declared ``settings.evaluation_seeds``, else every seed outside
    ``settings.tuning_seeds``, else every seed) of each method's selected choice: one row per (block, method, seed)."""
    on = on_choice(runs, cand)
    if settings.evaluation_seeds:
        return on[on["seed"].isin(settings.evaluation_seeds)]
    return on[~on["tuning"]] if settings.tuning_seeds else on


def _oriented_error(score: float, metric: str) -> float:
    """The metric's "error" in points from an oriented score: 100 - accuracy, or the metric itself."""
    return 100 - score if metric == "acc" else -score


COMPARISON_COLUMNS = [
    *BLOCK,
    "method",
    "baseline",
    "n",
    "diff",
    "ci_low",
    "ci_high",
    "sd",
    "p_t",
    "p_sign",
    "p_holm",
    "p_tost",
    "p_tost_holm",
    "decision",
    "mde",
    "seeds_rope",
    "p_improve",
    "rel_error",
    "family",
]


def _paired(chosen: pd.DataFrame, settings: Settings, score: str) -> list[dict]:
    """One row per (block, method, baseline): the paired differences' description (:func:`~dropout_lab.stats.describe`),
    the TOST p-value, the relative error reduction and the comparison's family key (the unordered pair of methods)."""
    rows = []
    for block, g in chosen.groupby(BLOCK, dropna=False):
        table = g.pivot_table(index="seed", columns="method", values=score)
        for base in (b for b in BASELINES if b in table):
            for method in (c for c in table.columns if c != base):
                pair = table[[method, base]].dropna()
                d = stats.describe((pair[method] - pair[base]).to_numpy(), ALPHA)
                err_m, err_b = (_oriented_error(pair[c].mean(), settings.metric) for c in (method, base))
                tost = stats.tost_p(pair[method] - pair[base], settings.rope) if d["n"] >= MIN_PAIRS else math.nan
                rows.append(
                    dict(zip(BLOCK, block))
                    | {"method": method, "baseline": base, "diff": d["mean"], **d, "p_tost": tost}
                    | {"rel_error": (err_b - err_m) / err_b if err_b else math.nan}
                    | {"family_key": (*block, *sorted((method, base)))}
                )
    return rows


def _decide(out: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """Holm over the family (each distinct pair of methods once), the decisions, MDE and replicates for one ROPE."""
    out.loc[out["n"] < MIN_PAIRS, ["p_t", "p_sign", "p_tost"]] = math.nan
    family = out.drop_duplicates("family_key")
    family = family[family["p_t"].notna() | family["p_tost"].notna()]
    m = max(len(family), 1)
    out["p_holm"] = out["family_key"].map(dict(zip(family["family_key"], stats.holm(family["p_t"].to_numpy()))))
    out["p_tost_holm"] = out["family_key"].map(dict(zip(family["family_key"], stats.holm(family["p_tost"].to_numpy()))))
    out["decision"] = [
        stats.decide(r.diff, r.p_holm, r.p_tost_holm) if r.n >= MIN_PAIRS else "undecided" for r in out.itertuples()
    ]
    out["mde"] = [
        stats.mde(int(r.n), ALPHA / m) * r.sd if r.n >= 2 and r.sd > 0 else math.nan for r in out.itertuples()
    ]
    out["seeds_rope"] = [
        stats.seeds_needed(settings.rope, r.sd, ALPHA / m) if r.n >= 2 else None for r in out.itertuples()
    ]
    out["family"] = m
    return out


def comparisons(chosen: pd.DataFrame, settings: Settings, score: str = "score") -> pd.DataFrame:
    """Every method against each of :data:`BASELINES` within each block, paired by seed, on column
    ``score`` (points, higher is better): n, mean difference ``diff`` with its 95 % CI, ``sd`` of the
    differences, ``p_t`` (paired t-test), ``p_sign`` (exact sign-flip test), ``p_holm`` and
    ``p_tost_holm`` (Holm over the family: every distinct pair of methods compared in the report, across
    blocks and baselines; ``standard`` vs ``none`` counts once), ``p_tost`` (TOST within ±``settings.rope``),
    ``decision``, ``mde`` (points: the difference this n detects with power :data:`POWER` at Holm's first
    threshold alpha/m), ``seeds_rope`` (pairs needed for a difference of one ROPE at that threshold),
    ``p_improve`` (share of replicates where the method is better) and ``rel_error`` (relative error
    reduction of the means, a fraction; error = 100 - accuracy, or the metric itself). Fewer than
    :data:`MIN_PAIRS` pairs: no test (NaN), ``decision`` undecided."""
    rows = _paired(chosen, settings, score)
    if not rows:
        return pd.DataFrame(columns=COMPARISON_COLUMNS)
    return _decide(pd.DataFrame(rows), settings).reindex(columns=COMPARISON_COLUMNS)


def screening(runs: pd.DataFrame, cand: pd.DataFrame) -> pd.DataFrame:
    """Each method's tuning-stage estimate against ``standard`` per block: the mean paired difference
    of the score on the tuning seeds, both at their selected choice (optimistic: chosen on these seeds'
    validation data; no test), with the selection's p, budget, edge and tie flags."""
    sel = cand[cand["selected"]]
    on = on_choice(runs[runs["tuning"]], cand)
    rows = []
    for block, g in on.groupby(BLOCK, dropna=False):
        table = g.pivot_table(index="seed", columns="method", values="score")
        for _, r in sel[(sel[BLOCK] == pd.Series(block, index=BLOCK)).all(axis=1)].iterrows():
            diff = (table[r["method"]] - table[REFERENCE]).dropna() if REFERENCE in table else pd.Series(dtype=float)
            rows.append(
                dict(zip(BLOCK, block))
                | {k: r[k] for k in ("method", "args", "p", "budget", "edge", "tie", "n", "val_mean")}
                | {"screen_diff": diff.mean() if len(diff) else math.nan, "screen_pairs": len(diff)}
            )
    return pd.DataFrame(rows)


def promoted(cand: pd.DataFrame, top: int) -> pd.DataFrame:
    """The choices a confirmation stage evaluates per block: ``standard``, ``none`` and the ``top`` other
    methods with the highest mean validation accuracy on the tuning seeds (at their selected choice;
    ties by the lower validation loss). Validation only: the test set plays no part in promotion."""
    sel = cand[cand["selected"]]
    out = []
    for _, sub in sel.groupby(BLOCK, dropna=False):
        rest = sub[~sub["method"].isin(BASELINES)].sort_values(
            ["val_mean", "val_loss_mean"], ascending=[False, True], kind="stable"
        )
        out += [sub[sub["method"].isin(BASELINES)], rest.head(top)]
    return pd.concat(out) if out else sel.iloc[:0]


def rankings(cand_eval: pd.DataFrame) -> dict | None:
    """Friedman test over the independent (dataset, model, setting) blocks (rows of the pivot of the mean
    evaluation scores) with Iman-Davenport's F, Nemenyi post-hoc (``scikit_posthocs``), mean ranks (1 = best)
    and the critical difference (:func:`~dropout_lab.stats.nemenyi_cd`; Demšar 2006) over the methods
    present in every block.

    Returns:
        None with fewer than 3 methods in every block; else a dict with N, k, ranks, and, only when
        N >= :data:`MIN_BLOCKS`, statistic, p, F, p_F, nemenyi (DataFrame) and cd; always
        ``needed`` ({CD: blocks for a Nemenyi CD below that many ranks}, for 10, 5 and 1 below k - 1) and ``left_out``.
    """
    import scikit_posthocs as sp

    table = cand_eval.pivot_table(index=BLOCK, columns="method", values="mean")
    complete = table.dropna(axis=1)
    n_blocks, k = complete.shape
    if k < 3 or n_blocks < 1:
        return None
    out = {
        "N": n_blocks,
        "k": k,
        "ranks": complete.rank(axis=1, ascending=False).mean().sort_values(),
        "needed": {cd: stats.blocks_needed(k, cd) for cd in (10.0, 5.0, 1.0) if cd < k - 1},
        "left_out": sorted(set(table.columns) - set(complete.columns)),
    }
    if n_blocks >= MIN_BLOCKS:
        statistic, p = sps.friedmanchisquare(*(complete[c] for c in complete))
        f, p_f = stats.iman_davenport(statistic, n_blocks, k)
        nemenyi = sp.posthoc_nemenyi_friedman(complete.to_numpy())
        nemenyi.index = nemenyi.columns = complete.columns
        out |= {
            "statistic": statistic,
            "p": p,
            "F": f,
            "p_F": p_f,
            "nemenyi": nemenyi,
            "cd": stats.nemenyi_cd(k, n_blocks),
        }
    return out


def eval_means(chosen: pd.DataFrame) -> pd.DataFrame:
    """Per (block, method) of the evaluation runs: n, mean score and its 95 % CI half-width, mean
    validation accuracy, realised rates, the selected p, mean job seconds."""
    if chosen.empty:
        return pd.DataFrame(
            columns=[
                *BLOCK,
                "method",
                "args",
                "p",
                "n",
                "mean",
                "ci",
                "val",
                "drop_fraction",
                "p_eq",
                "wall",
                "p_is_rate",
                "anchor",
                "test_samples",
            ]
        )
    g = chosen.groupby([*BLOCK, "method", "args"], dropna=False)
    out = g.agg(
        p=("p", "first"),
        n=("score", "size"),
        mean=("score", "mean"),
        sd=("score", "std"),
        val=("val", "mean"),
        drop_fraction=("drop_fraction", "mean"),
        p_eq=("p_eq", "mean"),
        wall=("wall_seconds", "mean"),
        p_is_rate=("p_is_rate", "first"),
        anchor=("anchor", "first"),
        test_samples=("test_samples", "max"),
        **{k: (k, "mean") for k in M.MC},
    ).reset_index()
    out["ci"] = _ci(out["sd"], out["n"])
    return out


def planning(tests: pd.DataFrame, means: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """Per block and baseline: the median SD of the paired differences, the replicates needed to detect a
    difference of one ROPE with power :data:`POWER` at Holm's first threshold of the report's family, and the
    cost of that many replicates of the block's evaluated methods at their mean measured job time (hours of
    one worker)."""
    rows = []
    for keys, t in tests.groupby([*BLOCK, "baseline"], dropna=False) if len(tests) else ():
        block, base = tuple(keys[:3]), keys[3]
        sd = t["sd"].median()
        n = stats.seeds_needed(settings.rope, sd, ALPHA / int(t["family"].iloc[0])) if pd.notna(sd) else None
        m = in_block(means, block)
        hours = n * m["wall"].sum() / 3600 if n and m["wall"].notna().all() else math.nan
        rows.append(
            dict(zip(BLOCK, block))
            | {"baseline": base, "median_sd": sd, "methods": len(m), "seeds_needed": n, "hours": hours}
        )
    return pd.DataFrame(rows)


def mean_curve(histories: pd.Series, key: str) -> np.ndarray:
    """Mean over runs of ``key`` per epoch, over the epochs every run has (empty if none)."""
    curves = [[e[key] for e in h if key in e] for h in histories]
    length = min((len(c) for c in curves), default=0)
    return np.mean([c[:length] for c in curves], axis=0) if length else np.array([])


def regime(acc: np.ndarray, loss: np.ndarray) -> str:
    """Whether mean validation accuracy has peaked and validation loss rises over the last third of
    training, as a sentence (epochs counted from 1)."""
    if len(acc) < 3:
        return "too few epochs to tell"
    start = len(acc) - len(acc) // 3 - 1
    peak = int(acc.argmax())
    third = acc[start:]
    slope = np.polyfit(np.arange(len(third)), 100 * third, 1)[0] if len(third) > 1 else 0.0
    words = (
        f"validation accuracy peaks at epoch {peak + 1} ({100 * acc[peak]:.2f} %), {100 * acc[-1]:.2f} % at the last epoch "
        f"{len(acc)}; over the last third it changes by {slope * (len(third) - 1):+.2f} points (least-squares line), "
        f"so it {'has' if slope * (len(third) - 1) < 0.25 else 'has not'} peaked"
    )
    if len(loss) == len(acc):
        words += (
            f"; validation loss {'rises' if loss[-1] > loss[start] else 'does not rise'} over the last third "
            f"({loss[start]:.3f} -> {loss[-1]:.3f}; minimum {loss.min():.3f} at epoch {int(loss.argmin()) + 1})"
        )
    return words
