"""What a report compares and how: the baselines, the blocks and choices, the metrics, and :class:`Settings`
(the ``report`` node of the jobs' config). The one place that names methods: :data:`REFERENCE` and
:data:`CONTROL`."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from dropout_lab import stats
from dropout_lab.job import NEUTRAL_KEYS

#: the method every other method is compared with first (the field's default dropout)
REFERENCE = "standard"
#: no dropout
CONTROL = "none"
#: the two reference methods every other method is compared with
BASELINES = (REFERENCE, CONTROL)
ALPHA, POWER = stats.ALPHA, stats.POWER
#: fewest seed pairs a comparison is tested on (one degree of freedom gives t_{0.975,1} = 12.7)
MIN_PAIRS = 3
#: fewest independent blocks for a Friedman test and a CD diagram (../shared/comparison.md §4)
MIN_BLOCKS = 10
#: the columns of a block (methods are compared within one) and of a method's choice
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
#: override keys that are columns of their own (not part of a row's "setting")
AXES = ("dropout", "dataset", "model", "seed", "experiment", *NEUTRAL_KEYS)


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
