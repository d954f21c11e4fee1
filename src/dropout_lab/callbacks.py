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
import os
import shlex
import sys
import time
import warnings
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback as HydraCallback
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning import Callback
from pytorch_lightning.callbacks import ProgressBar, TQDMProgressBar

from dropout_lab import interrupts
from dropout_lab import metrics as M
from dropout_lab.job import JOBS_FILE, SUMMARY_FILE, Job
from dropout_lab.progress import Progress

#: what the progress bar shows after the step counter: the latest epoch values of these metrics
BAR_METRICS = (M.TRAIN_LOSS, M.VAL_ACC)
#: start-up notices Lightning and torch print on every run that carry no information about it, by
#: (warning category, message start): the SLURM hint when `srun` merely exists on the machine, and torch
#: 2.10's deprecation of the LeafSpec class that Lightning 2.6 still builds
NOISE = (
    (UserWarning, r"The `srun` command is available on your system but is not used"),
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
    # every metric of ours is logged per epoch, so log_every_n_steps longer than an epoch loses nothing
    # (the flagship's 1,000-image subset has 16 batches an epoch: this line came once per job)
    (UserWarning, r"The number of training batches \(\d+\) is smaller than the logging interval"),
)
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
    config order; ``[]`` for none. Progress bars are skipped when ``progress_bar`` is
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
    """Jobs of the sweep in ``sweep_dir`` by status (:meth:`~dropout_lab.job.Job.status`): every job of its ``jobs.json``
    (written by dropout-lab's sweeper, so jobs that never started count too), else every folder holding a
    ``metrics.json``."""
    sweep_dir = Path(sweep_dir)
    listed = sweep_dir / JOBS_FILE
    if listed.is_file():
        folders = [sweep_dir / name for name in json.loads(listed.read_text())]
    else:
        folders = [path.parent for path in sweep_dir.rglob(SUMMARY_FILE)]
    return Counter(Job(folder).status() for folder in folders)


def resume_command(sweep_dir: Path, argv: list[str] | None = None) -> str:
    """The command line that resumes this sweep: ``python`` + this process' arguments with ``resume=true``
    and ``hydra.sweep.dir=<sweep_dir>`` (replacing any earlier value of either), shell-quoted."""
    args = [a for a in (sys.argv if argv is None else argv) if not a.startswith(("resume=", "hydra.sweep.dir="))]
    return shlex.join(["python", *args, "resume=true", f"hydra.sweep.dir={sweep_dir}"])


def sweep_summary(sweep_dir: Path, argv: list[str] | None = None) -> str:
    """The closing line of a multirun: ``N ok, M failed`` then every other status
    (``K interrupted, L not started``), the resume command when a job is not ok (:func:`resume_command`) and the
    report command."""
    counts = sweep_counts(sweep_dir)
    ok, failed = counts.pop("ok", 0), counts.pop("failed", 0)
    line = f"{ok} ok, {failed} failed" + "".join(f", {n} {status}" for status, n in sorted(counts.items()))
    if failed or counts:
        line += f"; resume: {resume_command(sweep_dir, argv)}"
    return f"{line}; report: python scripts/report.py {sweep_dir}"


class SweepSummary(HydraCallback):
    """Hydra callback (conf/config.yaml ``hydra.callbacks``) of the launching process of a multirun: traps
    SIGINT/SIGTERM/SIGUSR1/2 for the sweep's life (:mod:`~dropout_lab.interrupts`: an interrupted sweep
    exits with 128 + the signal), logs a progress line per finished job when the jobs run in this process
    (Hydra's basic launcher; ``gpu_pool`` logs its own, :mod:`~dropout_lab.pool`), and prints
    :func:`sweep_summary` once at the end. Hydra skips ``on_multirun_end`` when a job failed (its sweeper
    re-raises the job's error), so the line is also registered to print at exit and printed by whichever
    comes first."""

    def __init__(self) -> None:
        self.sweep_dir: Path | None = None
        self.pid, self.saved, self.progress, self.started = 0, {}, None, 0.0

    def __getstate__(self) -> dict:
        return {"sweep_dir": self.sweep_dir, "pid": self.pid, "saved": {}, "progress": None, "started": 0.0}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.sweep_dir, self.pid = Path(config.hydra.sweep.dir), os.getpid()
        self.saved = interrupts.install()
        atexit.register(self.on_multirun_end, config)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.time()

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if self.sweep_dir is None or os.getpid() != self.pid:
            return  # a single run, or a job in a worker process
        if self.progress is None:
            listed = self.sweep_dir / JOBS_FILE
            self.progress = Progress(len(json.loads(listed.read_text())) if listed.is_file() else 0)
        if self.progress.total:
            self.progress.update(job_return.status == JobStatus.COMPLETED, time.time() - self.started)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.sweep_dir is not None and os.getpid() == self.pid:
            print(sweep_summary(self.sweep_dir), flush=True)
            interrupts.restore(self.saved)
            self.sweep_dir = None
