"""The ``logger`` config group (conf/logger/*.yaml) as Lightning loggers, in lightning-hydra-template's
layout: ``cfg.logger`` maps a name to a logger node (``{tensorboard: {_target_: ...}, csv: {...}}``), so
``logger=csv``, ``logger=[tensorboard,csv]``, ``logger=many`` and ``logger=none`` / ``~logger`` all compose.

train.py calls, in order: :func:`instantiate_loggers` (the list it hands to ``Trainer(logger=...)``),
:func:`dropout_lab.hparams.log_session` for each logger once at the start of a run, :func:`log_metrics` for metrics computed after
``trainer.test`` (Monte-Carlo evaluation), and :func:`close` when the job ends, whatever happened.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.loggers import Logger

from dropout_lab.errors import ConfigError


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    """One Lightning logger per node with a ``_target_`` in ``cfg`` (the ``logger`` group); ``[]`` for
    ``logger=null`` / ``~logger``.

    Raises:
        ConfigError: if ``cfg`` is not a mapping of logger nodes (naming ``logger.<name>`` and the fix).
        hydra.errors.InstantiationException: if a logger's package is missing (``pip install -e ".[mlflow]"``).
    """
    if not cfg:
        return []
    if not isinstance(cfg, Mapping) or "_target_" in cfg:
        raise ConfigError(
            "logger",
            cfg,
            "expected named loggers, {<name>: {_target_: <Lightning logger class>, ...}}, as conf/logger/csv.yaml",
        )
    for name, node in cfg.items():
        if not isinstance(node, Mapping) or "_target_" not in node:
            raise ConfigError(
                f"logger.{name}", node, "a logger needs a _target_ (a Lightning logger class), as conf/logger/*.yaml"
            )
    return [instantiate(node) for node in cfg.values()]


def log_metrics(loggers: list[Logger], metrics: Mapping[str, float], step: int) -> None:
    """Log ``metrics`` at ``step`` to every logger and write them out (``save``)."""
    for logger in loggers:
        logger.log_metrics(dict(metrics), step=step)
        logger.save()


def close() -> None:
    """Finish what a job leaves open in this process: wandb's current run (Lightning's WandbLogger does not
    finish it, so the next job of a sequential multirun would log into it; lightning-hydra-template's
    ``task_wrapper`` does the same). Other loggers are finalised by the Trainer."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()
