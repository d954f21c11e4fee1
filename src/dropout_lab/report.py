"""Aggregate a sweep folder into a comparison a researcher can trust (protocol: docs/sweeps.md#report).

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
    least :data:`MIN_BLOCKS` independent (dataset, model, setting) blocks, else how many would be needed;
  - failed, unfinished, unreadable and duplicate jobs;
* ``summary.csv`` (every method x choice on the tuning seeds: selection flag, budget, edge),
  ``tests.csv`` (every comparison), ``jobs.csv`` (every job, last- and best-epoch validation and test values);
* PNGs: ``forest_*`` (the headline: paired differences to ``standard`` and ``none`` with CIs, the ROPE
  band and the decisions), ``leaderboard_*`` (marginal means; with a source's ``anchor`` where a preset
  sets one), ``acc_vs_rate_*`` (tuning candidates against their realised rate), ``val_acc_*``,
  ``val_loss_*`` (small multiples of at most :data:`PANEL` methods) and ``cd_diagram.png`` (only with
  :data:`MIN_BLOCKS` blocks).

The compared metric (``report.metric``) is accuracy, NLL, ECE or Brier score of the deterministic
network, in points (hundredths: accuracy, ECE and Brier x 100, NLL in 0.01 nats); differences are
oriented so that positive means better. A "setting" is every override that varies across the sweep
besides method, its arguments, dataset, model and seed (e.g. ``optimizer.weight_decay``).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import stats as sps

from dropout_lab import metrics as M
from dropout_lab import stats
from dropout_lab.dedup import effective_config, ignored_args, p_is_rate
from dropout_lab.launch import NEUTRAL_KEYS, neutral
from dropout_lab.summary import PREDICTIONS_FILE, SUMMARY_FILE, TIMINGS

#: the two reference methods every other method is compared with (``none`` = no dropout)
BASELINES = ("standard", "none")
ALPHA, POWER = stats.ALPHA, stats.POWER
#: fewest seed pairs a comparison is tested on (one degree of freedom gives t_{0.975,1} = 12.7)
MIN_PAIRS = 3
#: fewest independent blocks for a Friedman test and a CD diagram (../shared/comparison.md §4)
MIN_BLOCKS = 10
#: methods per panel of a small-multiples plot
PANEL = 8
BLOCK = ["dataset", "model", "setting"]
CHOICE = ["method", "args", "p"]
#: the metrics a report can compare: name -> (summary suffix, +1 higher is better / -1 lower is better, label)
METRICS = {
    "acc": ("acc", 1, "test accuracy"),
    "nll": ("loss", -1, "test NLL"),
    "ece": ("ece", -1, "test ECE"),
    "brier": ("brier", -1, "test Brier score"),
}
#: the two networks of a job: ``last`` (final epoch) and ``best`` (best-validation epoch)
NETWORKS = ("last", "best")
MC_METRICS = M.MC
#: override keys that are columns of their own (not part of a row's "setting")
AXES = ("dropout", "dataset", "model", "seed", "experiment", *NEUTRAL_KEYS)
COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:cyan")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
DECISION_STYLE = {
    "better": ("tab:green", "o"),
    "worse": ("tab:red", "o"),
    "equivalent": ("tab:blue", "s"),
    "undecided": ("gray", "o"),
}


@dataclass(frozen=True)
class Settings:
    """How a report compares (the ``report`` node of the jobs' config, overridden on the command line).

    Attributes:
        tuning_seeds: seeds that select each method's choice; the others are evaluation replicates.
            Empty: select and report on every seed.
        evaluation_seeds: the evaluation replicates a preset declares (what ``scripts/confirm.py`` runs);
            empty: every seed that is not a tuning seed. Must be disjoint from ``tuning_seeds``.
        rope: half-width of the region of practical equivalence, in points of ``metric``.
        metric: ``acc`` | ``nll`` | ``ece`` | ``brier`` (:data:`METRICS`).
        selection: ``last`` | ``best``: the network (checkpoint) that selection and test share.

    Raises:
        ValueError: for an unknown metric or selection, rope <= 0, or tuning and evaluation seeds in common.
    """

    tuning_seeds: tuple[int, ...] = ()
    evaluation_seeds: tuple[int, ...] = ()
    rope: float = 0.3
    metric: str = "acc"
    selection: str = "last"

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"report.metric={self.metric!r} is not one of {', '.join(METRICS)}")
        if self.selection not in NETWORKS:
            raise ValueError(f"report.selection={self.selection!r} is not one of {', '.join(NETWORKS)}")
        if not self.rope > 0:
            raise ValueError(f"report.rope={self.rope} must be > 0 (points)")
        if set(self.tuning_seeds) & set(self.evaluation_seeds):
            raise ValueError(
                f"report.tuning_seeds and report.evaluation_seeds share {sorted(set(self.tuning_seeds) & set(self.evaluation_seeds))}: "
                "tune and evaluate on different seeds"
            )

    @property
    def other(self) -> str:
        """The network of the sensitivity table."""
        return "best" if self.selection == "last" else "last"


def settings_from(jobs: pd.DataFrame, **given) -> Settings:
    """:class:`Settings` from the first readable job's ``report`` node, with the non-None ``given`` values on top."""
    node = next((r for r in jobs.get("report_cfg", pd.Series(dtype=object)) if isinstance(r, dict)), {})
    values = {k: node[k] for k in ("rope", "metric", "selection") if node.get(k) is not None}
    for key in ("tuning_seeds", "evaluation_seeds"):
        values[key] = tuple(int(s) for s in node.get(key) or ())
    values |= {k: (tuple(v) if k.endswith("_seeds") else v) for k, v in given.items() if v is not None}
    return Settings(**values)


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


def _networks(m: dict, cfg: dict) -> dict[str, float | None]:
    """``test_<network>_<metric>`` for both networks: ``test/*`` is the network ``eval.checkpoint`` names
    (default last), ``test_best/*`` the best-validation one beside it (absent in older summaries)."""
    on_best = (cfg.get("eval") or {}).get("checkpoint") == "best"
    out = {}
    for name, (suffix, _, _) in METRICS.items():
        out[f"test_last_{name}"] = None if on_best else m.get(M.test(suffix))
        out[f"test_best_{name}"] = m.get(M.test(suffix)) if on_best else m.get(M.test(suffix, M.TEST_BEST))
    return out


def _validation(history: list[dict], m: dict) -> dict[str, float | None]:
    """Last-epoch and best-epoch validation accuracy and loss from the per-epoch history (the best epoch
    is the first with the highest ``val/acc``, as the best checkpoint), else from the final metrics."""
    epochs = [e for e in history if e.get(M.VAL_ACC) is not None]
    if not epochs:
        return {
            "val_last": m.get(M.VAL_ACC),
            "val_loss_last": m.get(M.VAL_LOSS),
            "val_best": m.get(M.VAL_ACC_BEST),
            "val_loss_best": None,
            "best_epoch": None,
        }
    best = max(range(len(epochs)), key=lambda i: (epochs[i][M.VAL_ACC], -i))
    return {
        "val_last": epochs[-1][M.VAL_ACC],
        "val_loss_last": epochs[-1].get(M.VAL_LOSS),
        "val_best": epochs[best][M.VAL_ACC],
        "val_loss_best": epochs[best].get(M.VAL_LOSS),
        "best_epoch": epochs[best].get("epoch", best),
    }


def _test_samples(folder: Path) -> int | None:
    path = folder / PREDICTIONS_FILE
    if not path.exists():
        return None
    with np.load(path) as z:
        return len(z["y"])


def _summary_fields(s: dict, folder: Path) -> dict:
    """One job's row from its metrics.json ``s`` (KeyError/TypeError if a required field is missing)."""
    h, m = s["hparams"], {k: v for k, v in (s.get("metrics") or {}).items() if v is not None}
    cfg, info = s.get("config") or {}, s.get("method_info") or {}
    history = s.get("history") or []
    return {
        "status": s["status"],
        "error": ((s.get("error") or "").strip().splitlines() or [""])[-1],
        "dataset": str(h["dataset"]),
        "model": str(h["model"]),
        "method": str(h["method"]),
        "p": float(h["p"]),
        "seed": int(h["seed"]),
        **_validation(history, m),
        **_networks(m, cfg),
        "drop_fraction": m.get(M.DROP_FRACTION, s.get("drop_fraction")),
        "p_eq": m.get(M.P_EQ, s.get("p_eq")),
        "p_is_rate": info.get("p_is_rate", p_is_rate(cfg["dropout"]) if "dropout" in cfg else None),
        "sec_per_epoch": s["train_seconds"] / s["epochs"] if s.get("epochs") else None,
        "wall_seconds": s.get("wall_seconds"),
        "test_samples": _test_samples(folder),
        **{f"time_{k}": (s.get("timings") or {}).get(k) for k in TIMINGS},
        "split_seed": (cfg.get("dataset") or {}).get("split_seed"),
        "anchor": cfg.get("anchor"),
        "history": history,
        "report_cfg": cfg.get("report"),
        "ignored": ignored_args(cfg["dropout"]) if "dropout" in cfg else (),
        "effective": effective_config(cfg) if cfg else None,
        **{k: m.get(k) for k in MC_METRICS},
    }


def load_jobs(sweep: Path) -> pd.DataFrame:
    """One row per job folder under ``sweep`` (a folder with a ``metrics.json`` or a ``.hydra``
    folder): status ok | failed | interrupted | unfinished (no summary) | unreadable (a summary that
    does not parse; its ``error`` says why), coordinates, validation and test values of both networks,
    history and overrides."""
    folders = {p.parent for p in sweep.rglob(SUMMARY_FILE)} | {p.parent for p in sweep.rglob(".hydra") if p.is_dir()}
    rows = []
    for folder in sorted(folders):
        row = {
            "folder": str(folder.relative_to(sweep)),
            "status": "unfinished",
            "error": "",
            "overrides": _overrides(folder),
        }
        if (folder / SUMMARY_FILE).exists():
            try:
                row |= _summary_fields(json.loads((folder / SUMMARY_FILE).read_text()), folder)
            except (OSError, ValueError, KeyError, TypeError) as err:
                row |= {"status": "unreadable", "error": f"{SUMMARY_FILE}: {type(err).__name__}: {err}"}
        rows.append(row)
    return pd.DataFrame(rows)


def finished_runs(jobs: pd.DataFrame, settings: Settings = Settings()) -> tuple[pd.DataFrame, int]:
    """The ok jobs with their ``setting`` and swept method ``args`` (strings), ``p`` NaN for a method
    that ignores it, one row per effective configuration (:func:`~dropout_lab.dedup.effective_config`),
    and the columns the comparison uses for ``settings``' network: ``val`` and ``val_loss`` (validation
    accuracy and loss, fractions / nats) and ``score`` (the compared test metric in points, oriented
    so that higher is better), ``score_other`` (the same on the other network), ``tuning`` (bool).

    Returns:
        (runs, number of duplicate jobs dropped).
    """
    net, other, metric = settings.selection, settings.other, settings.metric
    ok = jobs["status"] == "ok" if "status" in jobs else pd.Series(False, index=jobs.index)
    runs = (
        jobs[ok & jobs[f"test_{net}_{metric}"].notna()].copy()
        if f"test_{net}_{metric}" in jobs
        else jobs.iloc[:0].copy()
    )
    if runs.empty:
        return runs.assign(
            setting="", args="", val=np.nan, val_loss=np.nan, score=np.nan, score_other=np.nan, tuning=False
        ), 0
    keys = sorted({k for o in runs["overrides"] for k in o if k not in AXES and not neutral(k)})
    varying = [k for k in keys if runs["overrides"].map(lambda o, k=k: o.get(k)).nunique(dropna=False) > 1]
    arg_keys = [k for k in varying if k.startswith("dropout.") and k != "dropout.p"]
    setting_keys = [k for k in varying if not k.startswith("dropout.")]
    runs["setting"] = runs["overrides"].map(lambda o: ", ".join(f"{k}={o.get(k, '')}" for k in setting_keys))
    runs["args"] = [
        ", ".join(f"{k}={o.get(k, '')}" for k in arg_keys if k.split(".", 1)[1] not in ign)
        for o, ign in zip(runs["overrides"], runs["ignored"])
    ]
    runs.loc[runs["ignored"].map(lambda ign: "p" in ign), "p"] = math.nan
    runs["effective"] = runs["effective"].fillna(runs["folder"])
    before = len(runs)
    runs = runs.drop_duplicates("effective").drop_duplicates(BLOCK + CHOICE + ["seed"])
    sign = METRICS[metric][1]
    runs["val"], runs["val_loss"] = runs[f"val_{net}"].astype(float), runs[f"val_loss_{net}"].astype(float)
    runs["score"] = sign * 100 * runs[f"test_{net}_{metric}"].astype(float)
    runs["score_other"] = sign * 100 * runs[f"test_{other}_{metric}"].astype(float)
    runs["tuning"] = runs["seed"].isin(settings.tuning_seeds) if settings.tuning_seeds else True
    return runs, before - len(runs)


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
        **{k: (k, "mean") for k in MC_METRICS},
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


def _on_choice(runs: pd.DataFrame, cand: pd.DataFrame) -> pd.DataFrame:
    """The runs of each method's selected choice."""
    chosen = cand.loc[cand["selected"], BLOCK + CHOICE]
    fill = {"p": -1.0}  # NaN p (a method that ignores it) joins with NaN
    return runs.fillna(fill).merge(chosen.fillna(fill), on=BLOCK + CHOICE).replace({"p": {-1.0: math.nan}})


def evaluation_runs(runs: pd.DataFrame, cand: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """The evaluation replicates (the declared ``settings.evaluation_seeds``, else every seed outside
    ``settings.tuning_seeds``, else every seed) of each method's selected choice: one row per (block, method, seed)."""
    on = _on_choice(runs, cand)
    if settings.evaluation_seeds:
        return on[on["seed"].isin(settings.evaluation_seeds)]
    return on[~on["tuning"]] if settings.tuning_seeds else on


def _oriented_error(score: float, metric: str) -> float:
    """The metric's "error" in points from an oriented score: 100 - accuracy, or the metric itself."""
    return 100 - score if metric == "acc" else -score


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
    rows = []
    for block, g in chosen.groupby(BLOCK, dropna=False):
        table = g.pivot_table(index="seed", columns="method", values=score)
        for base in (b for b in BASELINES if b in table):
            for method in (c for c in table.columns if c != base):
                pair = table[[method, base]].dropna()
                d = stats.describe((pair[method] - pair[base]).to_numpy(), ALPHA)
                err_m, err_b = (_oriented_error(pair[c].mean(), settings.metric) for c in (method, base))
                rows.append(
                    dict(zip(BLOCK, block))
                    | {
                        "method": method,
                        "baseline": base,
                        "diff": d["mean"],
                        **d,
                        "p_tost": stats.tost_p(pair[method] - pair[base], settings.rope)
                        if d["n"] >= MIN_PAIRS
                        else math.nan,
                        "rel_error": (err_b - err_m) / err_b if err_b else math.nan,
                        "family_key": (*block, *sorted((method, base))),
                    }
                )
    columns = [
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
    if not rows:
        return pd.DataFrame(columns=columns)
    out = pd.DataFrame(rows)
    out.loc[out["n"] < MIN_PAIRS, ["p_t", "p_sign", "p_tost"]] = math.nan
    family = out.drop_duplicates("family_key")
    family = family[family["p_t"].notna() | family["p_tost"].notna()]
    m = max(len(family), 1)
    holm_t = dict(zip(family["family_key"], stats.holm(family["p_t"].to_numpy())))
    holm_tost = dict(zip(family["family_key"], stats.holm(family["p_tost"].to_numpy())))
    out["p_holm"] = out["family_key"].map(holm_t)
    out["p_tost_holm"] = out["family_key"].map(holm_tost)
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
    return out.reindex(columns=columns)


def screening(runs: pd.DataFrame, cand: pd.DataFrame) -> pd.DataFrame:
    """Each method's tuning-stage estimate against ``standard`` per block: the mean paired difference
    of the score on the tuning seeds, both at their selected choice (optimistic: chosen on these seeds'
    validation data; no test), with the selection's p, budget, edge and tie flags."""
    sel = cand[cand["selected"]]
    on = _on_choice(runs[runs["tuning"]], cand)
    rows = []
    for block, g in on.groupby(BLOCK, dropna=False):
        table = g.pivot_table(index="seed", columns="method", values="score")
        for _, r in sel[(sel[BLOCK] == pd.Series(block, index=BLOCK)).all(axis=1)].iterrows():
            diff = (table[r["method"]] - table["standard"]).dropna() if "standard" in table else pd.Series(dtype=float)
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


def _pts(x, digits: int = 2, sign: bool = False) -> str:
    return "—" if x is None or pd.isna(x) else f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _pct(x, digits: int = 2) -> str:
    return "—" if x is None or pd.isna(x) else f"{100 * x:.{digits}f}"


def _pv(x) -> str:
    return "—" if x is None or pd.isna(x) else f"{x:.2g}" if x < 0.01 else f"{x:.3f}"


def _p(p) -> str:
    return "—" if pd.isna(p) else f"{p:g}"


def _rate_column(sub: pd.DataFrame) -> str:
    """The realised-rate axis of a block: ``p_eq`` where the summaries have it, else ``drop_fraction``."""
    return "p_eq" if sub["p_eq"].notna().any() else "drop_fraction"


def _title(block: tuple) -> str:
    dataset, model, setting = block
    return f"{dataset} / {model}" + (f" [{setting}]" if setting else "")


def _label(r) -> str:
    rate = "" if r["method"] == "none" or r["p_is_rate"] is None or pd.isna(r["p_is_rate"]) or r["p_is_rate"] else " †"
    return f"{r['method']}{rate}" + (f" [{r['args']}]" if r["args"] else "")


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return (
        ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"] + ["| " + " | ".join(r) + " |" for r in rows] + [""]
    )


def _mine(frame: pd.DataFrame, block: tuple) -> pd.DataFrame:
    return frame[(frame[BLOCK] == pd.Series(block, index=BLOCK)).all(axis=1)] if len(frame) else frame


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
        **{k: (k, "mean") for k in MC_METRICS},
    ).reset_index()
    out["ci"] = _ci(out["sd"], out["n"])
    return out


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
    metric_label = METRICS[settings.metric][2]
    counts = jobs["status"].value_counts().sort_index()
    tuned = f"tuning seeds {', '.join(map(str, settings.tuning_seeds))}" if settings.tuning_seeds else "every seed"
    lines = [
        f"# Sweep report: `{sweep.name}`",
        "",
        f"{len(jobs)} jobs: "
        + ", ".join(f"{n} {s}" for s, n in counts.items())
        + (
            f"; {duplicates} duplicate job(s) of another job's configuration (e.g. `none` at several p) left out."
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
    if len(chosen):
        lines += [_sources(chosen), ""]
    means = eval_means(chosen)
    for block, sub in cand.groupby(BLOCK, dropna=False):
        lines += [f"## {_title(block)}", ""]
        for method in ("none", "standard"):
            runs_m = _mine(chosen if len(chosen) else _on_choice(runs, cand), block)
            runs_m = runs_m[runs_m["method"] == method]
            if len(runs_m):
                lines += [
                    f"Regime check, `{method}` (mean of {len(runs_m)} run(s)): "
                    f"{regime(mean_curve(runs_m['history'], 'val/acc'), mean_curve(runs_m['history'], 'val/loss'))}.",
                    "",
                ]
        lines += _tuning_section(block, sub, _mine(screen, block), set(_mine(means, block)["method"]), settings)
        lines += _evaluation_section(block, _mine(means, block), _mine(tests, block), _mine(other, block), settings)
    lines += _planning_section(plan, settings) + _ranking_section(ranks)
    bad = jobs[jobs["status"] != "ok"]
    lines += ["## Failed, unfinished or unreadable jobs", ""]
    lines += [f"- `{r['folder']}`: **{r['status']}** {r['error']}" for _, r in bad.iterrows()] or ["none"]
    lines += ["", "## Plots", ""] + [f"![{p.name}]({p.name})" for p in plots]
    return "\n".join(lines) + "\n"


def _tuning_section(
    block: tuple, sub: pd.DataFrame, screen: pd.DataFrame, evaluated: set[str], settings: Settings
) -> list[str]:
    rows = []
    for _, r in screen.sort_values("val_mean", ascending=False).iterrows():
        flags = (["grid edge"] if r["edge"] else []) + (["tie broken by val loss"] if r["tie"] else [])
        rows.append(
            [
                _label(sub.loc[(sub["method"] == r["method"]) & sub["selected"]].iloc[0]),
                _p(r["p"]),
                str(int(r["budget"])),
                _pct(r["val_mean"]),
                str(int(r["n"])),
                _pts(r["screen_diff"], sign=True) if r["method"] != "standard" else "—",
                ", ".join(flags),
                "evaluated" if r["method"] in evaluated else "screened out" if evaluated else "—",
            ]
        )
    what = f"tuning seeds {', '.join(map(str, settings.tuning_seeds))}" if settings.tuning_seeds else "all seeds"
    lines = [
        f"**Tuning** ({what}): each method's selected choice, its budget (configurations tried), mean validation accuracy "
        f"(%) and the screening estimate: Δ {METRICS[settings.metric][2]} against `standard` on the same seeds (points; "
        "optimistic, chosen on these seeds, labelled as screening). Sorted by validation accuracy.",
        "",
    ]
    return lines + _table(
        ["method", "p", "budget", "val acc", "seeds", "screening Δ vs standard", "flags", "stage"], rows
    )


def _evaluation_section(
    block: tuple, means: pd.DataFrame, tests: pd.DataFrame, other: pd.DataFrame, settings: Settings
) -> list[str]:
    if means.empty:
        return ["No evaluation replicates in this block yet (`scripts/confirm.py` runs them).", ""]
    label = METRICS[settings.metric][2]
    lines = [
        f"**Evaluation** ({int(means['n'].max())} replicates at most): {label} (points, oriented), mean ± 95 % CI "
        "(marginal: for differences read the paired table and the forest plot).",
        "",
    ]
    anchored = (
        settings.metric == "acc" and means["anchor"].notna().any()
    )  # a source's reported accuracy (a preset's ``anchor``)
    rows = [
        [
            _label(r),
            _p(r["p"]),
            str(int(r["n"])),
            f"{_pts(r['mean'])} ± {_pts(r['ci'])}",
            _pct(r["val"]),
            _pct(r["drop_fraction"], 1),
            _pct(r["p_eq"], 1),
            _pts(r["wall"], 1),
            *([_pct(r["anchor"])] if anchored else []),
        ]
        for _, r in means.sort_values("mean", ascending=False).iterrows()
    ]
    lines += _table(
        [
            "method",
            "p",
            "n",
            label,
            "val acc (%)",
            "drop fraction (%)",
            "p_eq (%)",
            "s/job",
            *(["anchor (%)"] if anchored else []),
        ],
        rows,
    )
    if settings.metric == "acc" and means["method"].isin(["standard"]).any():
        acc = means.loc[means["method"] == "standard", "mean"].iloc[0] / 100
        size = _test_size(means)
        if size:
            lines += [
                f"Test-set noise floor: the binomial standard error of an accuracy of {100 * acc:.2f} % on {size} test images is "
                f"{100 * math.sqrt(acc * (1 - acc) / size):.2f} points (the test set's own sampling error, shared by every replicate).",
                "",
            ]
    for base, t in tests.groupby("baseline", sort=False) if len(tests) else ():
        lines += [
            f"Against `{base}` (paired by replicate; Holm over the report's family of {int(t['family'].iloc[0])} comparisons; "
            f"decision within the ROPE ±{settings.rope:g}):",
            "",
        ]
        rows = []
        for _, r in t.sort_values("diff", ascending=False).iterrows():
            ci = "—" if pd.isna(r["ci_low"]) else f"[{_pts(r['ci_low'], sign=True)}, {_pts(r['ci_high'], sign=True)}]"
            rows.append(
                [
                    r["method"],
                    str(int(r["n"])),
                    _pts(r["diff"], sign=True),
                    ci,
                    _pts(r["sd"]),
                    _pv(r["p_t"]),
                    _pv(r["p_sign"]),
                    _pv(r["p_holm"]),
                    _pv(r["p_tost_holm"]),
                    f"**{r['decision']}**",
                    _pts(r["mde"]),
                    "—" if pd.isna(r["seeds_rope"]) else str(int(r["seeds_rope"])),
                    _pts(r["p_improve"]),
                    _pct(r["rel_error"], 1),
                ]
            )
        lines += _table(
            [
                "method",
                "n",
                "Δ",
                "95 % CI",
                "SD of Δ",
                "t p",
                "sign-flip p",
                "Holm p",
                "TOST Holm p",
                "decision",
                "MDE",
                f"seeds for ±{settings.rope:g}",
                "P(better)",
                "rel. error reduction (%)",
            ],
            rows,
        )
    if len(other):
        rows = [
            [
                r["method"],
                r["baseline"],
                str(int(r["n"])),
                _pts(r["diff"], sign=True),
                "—" if pd.isna(r["ci_low"]) else f"[{_pts(r['ci_low'], sign=True)}, {_pts(r['ci_high'], sign=True)}]",
                r["decision"],
            ]
            for _, r in other.sort_values(["baseline", "diff"], ascending=[True, False]).iterrows()
        ]
        lines += [
            f"Sensitivity: the same replicates and choices compared on the {'best-validation' if settings.other == 'best' else 'last'} "
            f"epoch's network (`report.selection={settings.other}`{', early stopping for every method' if settings.other == 'best' else ''}):",
            "",
        ]
        lines += _table(["method", "baseline", "n", "Δ", "95 % CI", "decision"], rows)
    return lines


def _test_size(means: pd.DataFrame) -> int | None:
    sizes = means["test_samples"].dropna()
    return int(sizes.max()) if len(sizes) else None


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
        m = _mine(means, block)
        hours = n * m["wall"].sum() / 3600 if n and m["wall"].notna().all() else math.nan
        rows.append(
            dict(zip(BLOCK, block))
            | {"baseline": base, "median_sd": sd, "methods": len(m), "seeds_needed": n, "hours": hours}
        )
    return pd.DataFrame(rows)


def _planning_section(plan: pd.DataFrame, settings: Settings) -> list[str]:
    if plan.empty:
        return []
    rows = [
        [
            _title((r["dataset"], r["model"], r["setting"])),
            r["baseline"],
            _pts(r["median_sd"]),
            str(int(r["methods"])),
            "—" if pd.isna(r["seeds_needed"]) else str(int(r["seeds_needed"])),
            _pts(r["hours"], 1),
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
    ] + _table(["block", "against", "median SD of Δ", "methods", "replicates needed", "hours"], rows)


def _ranking_section(rank: dict | None) -> list[str]:
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
    return lines + _table(["method", "mean rank"], [[m, f"{v:.2f}"] for m, v in rank["ranks"].items()])


def _panels(methods: list[str]) -> list[list[str]]:
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
        f"{_title(block)}: paired differences over replicates; shaded: ROPE ±{settings.rope:g}; "
        "colour: decision after Holm (green better, red worse, blue equivalent, grey undecided)",
        fontsize=9,
    )
    return _save(fig, inside(sweep, safe_name("forest", *[b for b in block if b]) + ".png"))


def make_plots(
    sweep: Path,
    runs: pd.DataFrame,
    cand: pd.DataFrame,
    chosen: pd.DataFrame,
    tests: pd.DataFrame,
    rank: dict | None,
    settings: Settings,
) -> list[Path]:
    """Per block: the forest plot (:func:`forest`), the leaderboard of the evaluated methods (marginal means
    and CIs; tuning choices when nothing is evaluated), the score of every tuning choice against its realised
    rate, and validation accuracy and loss curves at the selected choice (small multiples of at most
    :data:`PANEL` methods, the baselines in every panel); the CD diagram with :data:`MIN_BLOCKS` blocks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    label = METRICS[settings.metric][2]
    means = eval_means(chosen) if len(chosen) else None
    for block, sub in cand.groupby(BLOCK, dropna=False):
        name, title = safe_name(*[b for b in block if b]), _title(block)
        path = forest(sweep, block, _mine(tests, block), settings)
        written += [path] if path else []
        board = (
            _mine(means, block).rename(columns={"mean": "test_mean", "ci": "test_ci"})
            if means is not None
            else pd.DataFrame()
        )
        if board.empty:
            board = sub[sub["selected"]]
        board = board.sort_values("test_mean")
        fig, ax = plt.subplots(figsize=(7, 1.2 + 0.28 * len(board)))
        y = np.arange(len(board))
        for i, (_, r) in enumerate(board.iterrows()):
            colour = "black" if r["method"] == "none" else "tab:red" if r["method"] == "standard" else "tab:blue"
            ax.errorbar(
                r["test_mean"],
                i,
                xerr=None if pd.isna(r["test_ci"]) else r["test_ci"],
                fmt="o",
                color=colour,
                capsize=3,
            )
        ax.set_yticks(y, [f"{_label(r)} (p={_p(r['p'])}, n={r['n']})" for _, r in board.iterrows()], fontsize=8)
        anchored = board["anchor"].notna().to_numpy()
        if anchored.any():  # a source's reported test accuracy (``anchor``, e.g. experiment=seed003_mlp)
            ax.plot(
                100 * board["anchor"][anchored],
                y[anchored],
                "x",
                color="tab:green",
                ms=8,
                label="source's reported accuracy",
            )
        for m, style in (("standard", "--"), ("none", ":")):
            if (board["method"] == m).any():
                ax.axvline(
                    board.loc[board["method"] == m, "test_mean"].iloc[0],
                    color="tab:red" if m == "standard" else "black",
                    ls=style,
                    lw=1,
                    label=f"{m} (baseline)",
                )
        ax.set(
            xlabel=f"{label} (points, oriented), mean and 95 % CI over seeds (marginal)",
            title=f"{title}: at the selected p",
        )
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7)
        written.append(_save(fig, inside(sweep, safe_name("leaderboard", name) + ".png")))
        rate = _rate_column(sub)
        others = [
            m for m in sub.loc[sub["selected"]].sort_values("val_mean", ascending=False)["method"] if m not in BASELINES
        ]
        if others or (sub["method"] == "standard").sum() > 1:
            fig, axes = _figure(len(_panels(others)))
            for ax, methods in zip(axes, _panels(others)):
                for m, colour, marker in zip(methods, COLORS, MARKERS):
                    pts = sub[(sub["method"] == m) & sub[rate].notna()].sort_values(rate)
                    for _, part in pts.groupby("args", dropna=False):
                        ci = (
                            part["test_ci"].where(part["n"] >= MIN_PAIRS).fillna(0)
                        )  # t_{0.975,1} = 12.7: 2-seed bars hide everything
                        ax.errorbar(
                            100 * part[rate],
                            part["test_mean"],
                            yerr=ci,
                            color=colour,
                            marker=marker,
                            capsize=2,
                            label=_label(part.iloc[0]),
                        )
                ref = sub[sub["method"] == "standard"].sort_values(rate)
                if len(ref):
                    ax.plot(
                        100 * ref[rate],
                        ref["test_mean"],
                        color="k",
                        ls="--",
                        marker="x",
                        lw=1,
                        label="standard (all p)",
                    )
                if (sub["method"] == "none").any():
                    ax.axhline(
                        sub.loc[sub["method"] == "none", "test_mean"].iloc[0], color="gray", ls=":", lw=1, label="none"
                    )
                ax.set(
                    xlabel=f"realised rate: {'p_eq' if rate == 'p_eq' else 'drop fraction'} over training (%)",
                    ylabel=f"{label} (points)",
                )
                ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
            fig.suptitle(
                f"{title}: tuning runs, every p against the realised rate, mean over seeds (95 % CI from {MIN_PAIRS} seeds; "
                "† p is not a drop probability)",
                fontsize=9,
            )
            written.append(_save(fig, inside(sweep, safe_name("acc_vs_rate", name) + ".png")))
        curves_of = _mine(chosen if len(chosen) else _on_choice(runs, cand), block)
        shown = [
            m
            for m in (means["method"] if means is not None and len(_mine(means, block)) else others)
            if m not in BASELINES
        ]
        labels = {
            r["method"]: _label(r) + ("" if pd.isna(r["p"]) else f" p={_p(r['p'])}")
            for _, r in sub[sub["selected"]].iterrows()
        }
        for key, what, scale in (
            (M.VAL_ACC, "validation accuracy (%)", 100),
            (M.VAL_LOSS, "validation loss (log scale)", 1),
        ):
            curves = {m: scale * mean_curve(g["history"], key) for m, g in curves_of.groupby("method")}
            fig, axes = _figure(len(_panels(list(shown))))
            for ax, methods in zip(axes, _panels(list(shown))):
                styles = [*zip(methods, COLORS, MARKERS), ("standard", "k", "x"), ("none", "gray", "")]
                for m, colour, marker in (s for s in styles if len(curves.get(s[0], ()))):
                    ax.plot(
                        range(1, len(curves[m]) + 1),
                        curves[m],
                        color=colour,
                        marker=marker,
                        ms=4,
                        markevery=max(1, len(curves[m]) // 8),
                        ls={"standard": "--", "none": ":"}.get(m, "-"),
                        label=labels.get(m, m),
                    )
                ax.set(xlabel="epoch", ylabel=what, yscale="log" if key == M.VAL_LOSS else "linear")
                ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
            fig.suptitle(
                f"{title}: {what.split(' (')[0]}, mean over {'evaluation replicates' if len(chosen) else 'seeds'}, at the selected p",
                fontsize=9,
            )
            written.append(_save(fig, inside(sweep, safe_name(key.replace("/", "_"), name) + ".png")))
    if rank is not None and "cd" in rank:
        import scikit_posthocs as sp

        fig, ax = plt.subplots(figsize=(10, 1.5 + 0.22 * rank["k"]))
        sp.critical_difference_diagram(rank["ranks"], rank["nemenyi"], ax=ax, alpha=ALPHA, label_props={"fontsize": 8})
        ax.set_title(
            f"mean rank over N = {rank['N']} (dataset, model) blocks, 1 = best; Nemenyi CD = {rank['cd']:.2f}",
            fontsize=9,
        )
        written.append(_save(fig, inside(sweep, "cd_diagram.png")))
    return written


JOB_COLUMNS = [
    "folder",
    "status",
    "dataset",
    "model",
    "method",
    "p",
    "seed",
    "val_last",
    "val_loss_last",
    "val_best",
    "val_loss_best",
    "best_epoch",
    *(f"test_{n}_{m}" for n in NETWORKS for m in METRICS),
    "drop_fraction",
    "p_eq",
    "sec_per_epoch",
    "wall_seconds",
    *(f"time_{k}" for k in TIMINGS),
    "error",
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
