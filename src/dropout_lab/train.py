"""``train(cfg)``: the one consumer of the composed Hydra config. Builds data, model, dropout,
Lightning module, logger and trainer; fits, tests and writes the run summary."""

from __future__ import annotations

import json
import logging
import time
import traceback
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar
from torch import nn

from dropout_lab import launch
from dropout_lab.analysis import EVAL_METRICS, ActivationVariance, evaluate
from dropout_lab.dropout.controller import DropoutController
from dropout_lab.dropout.sites import attach, split_config
from dropout_lab.module import Classifier
from dropout_lab.summary import HPARAM_METRICS, SUMMARY_FILE, History, build_summary, flat_hparams, target_name, write_summary

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
    model/dataset match) runs before the first training step. If ``<output_dir>/checkpoints/last.ckpt``
    exists (a job killed mid-way, re-run with ``resume=true``), training continues from it.
    With ``eval.mc_samples`` > 0 the test metrics include Monte-Carlo dropout ones
    (:func:`~dropout_lab.analysis.evaluate`); ``callbacks.activation_variance`` adds
    :class:`~dropout_lab.analysis.ActivationVariance`.
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
    mc_samples = int((cfg.get("eval") or {}).get("mc_samples", 0))
    last = Path(cfg.output_dir) / "checkpoints" / "last.ckpt"
    resume_from = last if cfg.get("resume") and _readable(last) else None
    if resume_from is not None:
        log.info("resume: continuing from %s", resume_from)
    else:  # one hparams session per run: a resumed run keeps the one written at its start
        declared = HPARAM_METRICS + (EVAL_METRICS if mc_samples else ())  # no placeholder for a metric never logged
        logger.log_hyperparams(flat_hparams(cfg), {key: 0.0 for key in declared})
    callbacks = [DropoutController(methods, datamodule.num_train), history,
                 ModelCheckpoint(dirpath=last.parent, save_last=True, save_top_k=0)]
    # Lightning's default (rich) redraws 100 times a second in a thread, and teardown waits a redraw period (0.5 s at 2/s, twice a job)
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(TQDMProgressBar(refresh_rate=50))
    extra = cfg.get("callbacks") or {}
    if extra.get("activation_variance"):
        callbacks.append(ActivationVariance(int(extra.get("activation_samples", 32))))
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks)
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)  # Ctrl-C: Lightning raises SystemExit
    metrics = {key: float(value) for key, value in trainer.callback_metrics.items()}
    # a job killed after its last epoch resumes with nothing left to fit: take the restored best
    metrics.setdefault("val/acc_best", float(module.val_acc_best.compute()))
    trainer.test(module, datamodule=datamodule, verbose=False)  # resets callback_metrics to the test ones
    metrics |= {key: float(value) for key, value in trainer.callback_metrics.items()}
    if mc_samples:
        scores = evaluate(module.model, datamodule.test_dataloader(), datamodule.num_classes, mc_samples)
        logger.log_metrics(scores, step=trainer.global_step)
        logger.save()
        metrics |= scores
    return metrics


def _readable(checkpoint: Path) -> bool:
    """True if ``checkpoint`` exists and loads (a kill -9 during its write leaves a truncated file:
    then the job starts from scratch rather than failing)."""
    if not checkpoint.exists():
        return False
    try:
        torch.load(checkpoint, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unreadable file means "no checkpoint"
        log.warning("resume: %s is unreadable (%s); starting this job from scratch", checkpoint, err)
        return False
    return True


def _previous_summary(out: Path) -> dict | None:
    try:
        return json.loads((out / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return None


def train(cfg: DictConfig) -> dict[str, float]:
    """Run one job and write ``<output_dir>/metrics.json`` whatever happens.

    With ``resume=true`` a job whose summary says ``status: ok`` is skipped (its summary untouched,
    its metrics returned) and any other job continues from its last checkpoint (:func:`fit`). In a
    multirun the job is first checked (:func:`~dropout_lab.launch.check_multirun`) and placed on its
    worker's GPU / CPU threads (:func:`~dropout_lab.launch.place_job`).

    Returns:
        the final metrics (``val/acc_best``, ``test/acc``, ...), accuracies as fractions.

    Raises:
        whatever the job raised, after writing a summary with ``status: failed`` (or ``interrupted``)
        and the traceback, so that a sweep's report can list it.
    """
    out = Path(cfg.output_dir)
    if cfg.get("resume"):
        done = _previous_summary(out)
        if done and done.get("status") == "ok":
            log.info("resume: %s finished before (status ok); skipped, summary untouched", out)
            return done["metrics"]
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode == RunMode.MULTIRUN:
            launch.check_multirun(cfg)
            placed = launch.place_job(cfg, hydra_cfg)
            if placed:
                log.info("worker placement: %s", placed)
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
    if not cfg.get("keep_checkpoint", False):  # a finished job is skipped on resume: its last.ckpt has no further use
        (out / "checkpoints" / "last.ckpt").unlink(missing_ok=True)
    log.info("test/acc=%.4f val/acc_best=%.4f; summary in %s", metrics.get("test/acc", float("nan")), metrics.get("val/acc_best", float("nan")), path)
    return metrics
