"""Read a sweep folder: one row per job folder (:func:`load_jobs`), then the finished runs a comparison uses
(:func:`finished_runs`, one per effective configuration)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from dropout_lab import metrics as M
from dropout_lab.dropout import spec
from dropout_lab.job import SUMMARY_FILE, Job, identity, ignored_args, neutral
from dropout_lab.report.settings import AXES, BLOCK, CHOICE, METRICS, NETWORKS, Settings
from dropout_lab.summary import PREDICTIONS_FILE, TIMINGS

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


def p_is_rate(dropout: dict) -> bool | None:
    """Whether the job's method's ``p`` is a drop probability (its spec's; None for a method not registered now)."""
    found = spec.specs().get(dropout.get("name"))
    return found.p_is_rate if found else None


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
        "effective": identity(cfg) if cfg else None,
        **{k: m.get(k) for k in M.MC},
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
            "overrides": Job(folder).overrides(),
        }
        if (folder / SUMMARY_FILE).exists():
            try:
                row |= _summary_fields(Job(folder).read(), folder)
            except (OSError, ValueError, KeyError, TypeError) as err:
                row |= {"status": "unreadable", "error": f"{SUMMARY_FILE}: {type(err).__name__}: {err}"}
        rows.append(row)
    return pd.DataFrame(rows)


def finished_runs(jobs: pd.DataFrame, settings: Settings = Settings()) -> tuple[pd.DataFrame, int]:
    """The ok jobs with their ``setting`` and swept method ``args`` (strings), ``p`` NaN for a method
    that ignores it, one row per effective configuration (:func:`~dropout_lab.job.identity`),
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
