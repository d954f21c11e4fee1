"""Callbacks: the ``callbacks`` config group (conf/callbacks/*.yaml) as Lightning callbacks, the progress bar
with the run's two numbers, and the Hydra callbacks that keep the console quiet and close a multirun.

The group uses lightning-hydra-template's layout: ``cfg.callbacks`` maps a name to a callback node, so
``callbacks=[default,lr_monitor,early_stopping]``, ``callbacks=many`` and ``~callbacks`` compose. train.py
adds the callbacks every run needs (dropout controller, history, checkpoint) itself.
"""

from __future__ import annotations

import atexit
import json
import logging
import warnings
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback as HydraCallback
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning import Callback
from pytorch_lightning.callbacks import ProgressBar, TQDMProgressBar

from dropout_lab.summary import SUMMARY_FILE

#: what the progress bar shows after the step counter: the latest epoch values of these metrics
BAR_METRICS = ("train/loss", "val/acc")
#: start-up notices Lightning and torch print on every run that carry no information about it, by
#: (warning category, message start): the SLURM hint when `srun` merely exists on the machine, and torch
#: 2.10's deprecation of the LeafSpec class that Lightning 2.6 still builds
NOISE = ((UserWarning, r"The `srun` command is available on your system but is not used"),
         (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
         # every metric of ours is logged per epoch, so log_every_n_steps longer than an epoch loses nothing
         # (the flagship's 1,000-image subset has 16 batches an epoch: this line came once per job)
         (UserWarning, r"The number of training batches \(\d+\) is smaller than the logging interval"))
#: loggers whose INFO lines are start-up chatter: Lightning's (GPU/TPU available, "Seed set to", the litlogger
#: tip, "`Trainer.fit` stopped"), alembic's "setup plugin" lines and Optuna's "A new study created" when the
#: Optuna sweeper loads; their warnings and errors still show
CHATTY_LOGGERS = ("pytorch_lightning", "lightning_fabric", "alembic", "optuna")


class MetricsProgressBar(TQDMProgressBar):
    """Lightning's tqdm progress bar showing :data:`BAR_METRICS` (the latest epoch values) instead of
    the logger version number. tqdm, not rich: the rich bar redraws from a thread whose teardown join cost
    0.87 s per job at 2 redraws/s (measured with scripts/bench_harness.py e2e)."""

    def get_metrics(self, trainer, pl_module) -> dict[str, Any]:
        found = trainer.callback_metrics
        return {key: f"{float(found[key]):.4f}" for key in BAR_METRICS if key in found}


def instantiate_callbacks(cfg: DictConfig | None, progress_bar: bool = True) -> list[Callback]:
    """One Lightning callback per node with a ``_target_`` under ``cfg`` (the ``callbacks`` node), in
    config order; ``[]`` for none. Scalar keys (``activation_variance``, ``activation_samples``: switches
    train.py reads) are not callbacks and are skipped, and so are progress bars when ``progress_bar`` is
    False (``trainer.enable_progress_bar=false``: Lightning refuses a progress bar callback then)."""
    nodes = [node for node in (cfg or {}).values() if isinstance(node, Mapping) and "_target_" in node]
    callbacks = [instantiate(node) for node in nodes]
    return [c for c in callbacks if progress_bar or not isinstance(c, ProgressBar)]


class QuietConsole(HydraCallback):
    """Hydra callback (conf/config.yaml ``hydra.callbacks``): at the start of a multirun (before the sweeper
    loads) and of each job, in the process that runs it, silence the start-up noise at its source: the INFO
    level of :data:`CHATTY_LOGGERS` and the warnings in :data:`NOISE` (matched by category and message;
    every other warning still shows)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.on_job_start(config)
        if "Optuna" in str(config.hydra.sweeper.get("_target_")):  # Optuna sets its logger's level on first use
            import optuna

            optuna.logging.set_verbosity(logging.WARNING)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        for name in CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        for category, message in NOISE:
            warnings.filterwarnings("ignore", message=message, category=category)


def sweep_counts(sweep_dir: Path) -> Counter:
    """Jobs under ``sweep_dir`` by the ``status`` of their ``metrics.json`` (ok, failed, interrupted)."""
    counts: Counter = Counter()
    for path in Path(sweep_dir).rglob(SUMMARY_FILE):
        try:
            counts[json.loads(path.read_text()).get("status", "unknown")] += 1
        except (OSError, ValueError):
            counts["unreadable"] += 1
    return counts


def sweep_summary(sweep_dir: Path) -> str:
    """The closing line of a multirun: ``N ok, M failed`` (other statuses named) and the report command."""
    counts = sweep_counts(sweep_dir)
    ok = counts.pop("ok", 0)
    failed = sum(counts.values())
    others = "".join(f", {n} {status}" for status, n in sorted(counts.items()) if status != "failed")
    return f"{ok} ok, {failed} failed{others}; report: python scripts/report.py {sweep_dir}"


class SweepSummary(HydraCallback):
    """Hydra callback (conf/config.yaml ``hydra.callbacks``): prints :func:`sweep_summary` once at the end
    of a multirun. Hydra skips ``on_multirun_end`` when a job failed (its sweeper re-raises the job's
    error), so the line is also registered to print at exit and printed by whichever comes first."""

    def __init__(self) -> None:
        self.sweep_dir: Path | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.sweep_dir = Path(config.hydra.sweep.dir)
        atexit.register(self.on_multirun_end, config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.sweep_dir is not None:
            print(sweep_summary(self.sweep_dir), flush=True)
            self.sweep_dir = None
