"""``train(cfg)``: the one consumer of the composed Hydra config. Builds data, model, dropout,
Lightning module, logger and trainer; fits, tests and writes the run summary."""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from dropout_lab.dropout.controller import DropoutController
from dropout_lab.dropout.sites import attach, split_config
from dropout_lab.module import Classifier
from dropout_lab.summary import HPARAM_METRICS, History, build_summary, flat_hparams, target_name, write_summary

log = logging.getLogger(__name__)


def build_model(cfg: DictConfig, datamodule) -> nn.Module:
    """Instantiate ``cfg.model`` and check that it takes the dataset's input.

    A dummy batch of shape (2, in_channels, image_size, image_size) goes through the model in eval
    mode; it must give logits of shape (2, num_classes).

    Raises:
        ValueError: naming the model and the dataset, if construction or the dummy forward fails or
            the output has the wrong shape.
    """
    model_name, shape = target_name(cfg.model), (datamodule.in_channels, datamodule.image_size, datamodule.image_size)
    what = f"model '{model_name}' cannot take dataset '{datamodule.name}' (inputs of shape (N, {', '.join(map(str, shape))}), {datamodule.num_classes} classes)"
    try:
        model = instantiate(cfg.model)
        with torch.no_grad():
            out = model.eval()(torch.zeros(2, *shape))
    except (RuntimeError, ValueError, InstantiationException) as err:  # Hydra wraps errors raised in constructors
        raise ValueError(f"{what}: {err}") from err
    if tuple(out.shape) != (2, datamodule.num_classes):
        raise ValueError(f"{what}: it returns logits of shape {tuple(out.shape)}")
    return model.train()


def fit(cfg: DictConfig, history: History) -> dict[str, float]:
    """Train and test one configuration; return the final ``trainer.callback_metrics`` as floats.

    Every check that can fail on bad input (``dropout.p``/``sites``, missing data files, the
    model/dataset match) runs before the first training step.
    """
    split_config(cfg.dropout)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.dataset)
    datamodule.setup("fit")
    model = build_model(cfg, datamodule)
    if cfg.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
    methods = attach(model, cfg.dropout)
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    module = Classifier(model, instantiate(cfg.optimizer), scheduler, datamodule.num_classes, datamodule.num_train)
    logger = instantiate(cfg.logger)
    logger.log_hyperparams(flat_hparams(cfg), {key: 0.0 for key in HPARAM_METRICS})
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=logger, callbacks=[DropoutController(methods, datamodule.num_train), history])
    trainer.fit(module, datamodule=datamodule)  # Ctrl-C: Lightning shuts down and raises SystemExit
    metrics = {key: float(value) for key, value in trainer.callback_metrics.items()}
    trainer.test(module, datamodule=datamodule, verbose=False)  # resets callback_metrics to the test ones
    return metrics | {key: float(value) for key, value in trainer.callback_metrics.items()}


def train(cfg: DictConfig) -> dict[str, float]:
    """Run one job and write ``<output_dir>/metrics.json`` whatever happens.

    Returns:
        the final metrics (``val/acc_best``, ``test/acc``, ...), accuracies as fractions.

    Raises:
        whatever the job raised, after writing a summary with ``status: failed`` (or ``interrupted``)
        and the traceback, so that a sweep's report can list it.
    """
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    history, start = History(), time.time()
    try:
        metrics = fit(cfg, history)
    except BaseException as err:
        status = "failed" if isinstance(err, Exception) else "interrupted"
        write_summary(out, build_summary(cfg, status, history, {}, time.time() - start, error=traceback.format_exc()))
        log.error("job %s in %s: %s", status, out, err)
        raise
    path = write_summary(out, build_summary(cfg, "ok", history, metrics, time.time() - start))
    log.info("test/acc=%.4f val/acc_best=%.4f; summary in %s", metrics.get("test/acc", float("nan")), metrics.get("val/acc_best", float("nan")), path)
    return metrics
