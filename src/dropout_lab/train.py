"""``train(cfg)``: the one consumer of the composed Hydra config. Builds data, model, dropout,
Lightning module, logger and trainer; fits, tests and writes the run summary."""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dropout_lab import checkpoints, hparams, interrupts, launch, sweeplock
from dropout_lab import metrics as M
from dropout_lab.analysis import evaluate
from dropout_lab.callbacks import instantiate_callbacks
from dropout_lab.config import attach, build_model, split_config
from dropout_lab.controller import DropoutController
from dropout_lab.errors import JobError, headline, root_cause
from dropout_lab.job import Job
from dropout_lab.loggers import close, instantiate_loggers, log_metrics
from dropout_lab.module import Classifier
from dropout_lab.seeding import INIT, METHOD, ORDER, stream_seed
from dropout_lab.summary import PREDICTIONS_FILE, History, build_summary
from dropout_lab.validate import validate, validates

log = logging.getLogger(__name__)


def fit(cfg: DictConfig, history: History, timings: dict[str, float] | None = None) -> dict[str, float]:
    """Train and test one configuration; return the final ``trainer.callback_metrics`` as floats.

    Every check that can fail on bad input (``dropout.p``/``sites``, missing data files, the
    model/dataset match) runs before the first training step. If ``<output_dir>/checkpoints/last.ckpt``
    exists (a job killed mid-way, re-run with ``resume=true``), training continues from it: model,
    optimizer, scheduler, method states, callbacks and RNG (:mod:`~dropout_lab.checkpoints`). The test
    uses the last epoch's weights, or the best validation epoch's with ``eval.checkpoint=best``.
    With ``eval.mc_samples`` > 0 the test metrics include Monte-Carlo dropout ones
    (:func:`~dropout_lab.analysis.evaluate`); ``callbacks=[default,activation_variance]`` adds
    :class:`~dropout_lab.analysis.ActivationVariance`. ``timings`` receives the seconds of each part
    (:data:`~dropout_lab.summary.TIMINGS`).
    """
    timings = {} if timings is None else timings
    _, test_on = checkpoints.policy(cfg)  # raises on a bad keep_checkpoint or eval.checkpoint
    datamodule, module, methods = build(cfg, timings)
    start = time.perf_counter()
    loggers = instantiate_loggers(cfg.get("logger"))
    folder = Path(cfg.output_dir) / "checkpoints"
    resume_from = checkpoints.resume_from(folder, bool(cfg.get("resume")))
    if resume_from is not None:
        log.info("resume: continuing from %s", resume_from)
    else:  # one hparams session per run: a resumed run keeps the one written at its start
        for logger in loggers:  # HParams session with the sweep's columns; no placeholder points
            hparams.log_session(logger, cfg)
    # history first: its training clock stops before the controller's epoch-end stats logging
    callbacks = [
        history,
        DropoutController(methods, datamodule.num_train),
        *checkpoints.checkpoint_callbacks(folder, best=validates(cfg), every=cfg.get("checkpoint_every", 0)),
    ]
    callbacks += instantiate_callbacks(cfg.get("callbacks"), progress_bar=cfg.trainer.get("enable_progress_bar", True))
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        logger=loggers or False,
        callbacks=callbacks,
        plugins=checkpoints.trainer_plugins(),
    )
    io = trainer.strategy.checkpoint_io
    timings["setup_trainer"], start = time.perf_counter() - start, time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
    timings["checkpoint_io"] = io.seconds
    timings["fit"], start = time.perf_counter() - start - io.seconds, time.perf_counter()
    metrics = {key: float(value) for key, value in trainer.callback_metrics.items()}
    # a job killed after its last epoch resumes with nothing left to fit: take the restored best
    metrics.setdefault(M.VAL_ACC_BEST, float(module.val_acc_best.compute()))
    best = folder / f"{checkpoints.BEST}.ckpt"
    metrics |= run_test(
        cfg,
        trainer,
        module,
        datamodule,
        best if test_on == checkpoints.BEST else None,
        best=best if test_on == checkpoints.LAST else None,
        predictions=Path(cfg.output_dir) / PREDICTIONS_FILE,
    )
    timings["test"] = time.perf_counter() - start
    return metrics


def build(cfg: DictConfig, timings: dict[str, float] | None = None) -> tuple[Any, Classifier, list]:
    """Seed, then build ``cfg``'s datamodule (set up for ``fit``), model with its dropout methods
    attached, and the :class:`~dropout_lab.module.Classifier`; returns (datamodule, module, methods).
    :func:`fit` and ``eval.py`` (from a job's own ``.hydra/config.yaml``) build the same objects,
    so a checkpoint's ``state_dict`` loads into them without constructor arguments.

    Common random numbers (:mod:`~dropout_lab.seeding`): the datamodule's batch order has its own
    generator (stream ``order``), the network is built from stream ``init`` and the method is attached
    and trains on stream ``method`` (torch's global generator from then on), so every method of one
    seed starts from the same weights and sees the same batches. ``timings`` receives ``setup_data`` and
    ``setup_model`` (seconds)."""
    timings = {} if timings is None else timings
    start = time.perf_counter()
    split_config(cfg.dropout)
    pl.seed_everything(stream_seed(cfg.seed, INIT), workers=True, verbose=False)
    datamodule = instantiate(cfg.dataset, order_seed=stream_seed(cfg.seed, ORDER))
    datamodule.setup("fit")
    timings["setup_data"], start = time.perf_counter() - start, time.perf_counter()
    model = build_model(cfg, datamodule)
    if cfg.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
    pl.seed_everything(stream_seed(cfg.seed, METHOD), workers=True, verbose=False)
    methods = attach(model, cfg.dropout)
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    module = Classifier(model, instantiate(cfg.optimizer), scheduler, datamodule.num_classes, datamodule.num_train)
    timings["setup_model"] = time.perf_counter() - start
    return datamodule, module, methods


def run_test(
    cfg: DictConfig,
    trainer: pl.Trainer,
    module: Classifier,
    datamodule,
    weights: Path | None = None,
    best: Path | None = None,
    predictions: Path | None = None,
) -> dict[str, float]:
    """Test ``module`` (with the ``state_dict`` of checkpoint ``weights`` if given, else its current
    weights): ``test/*`` metrics (accuracy, loss = NLL, ECE, Brier; :class:`~dropout_lab.module.Classifier`)
    including each evaluation variant (EDropout's pruned network), then with ``eval.mc_samples`` = T > 0
    the Monte-Carlo ones (seeded with ``cfg.seed``, so a re-test gives the same numbers), logged to every
    ``trainer.loggers``. With ``best`` (the best-validation checkpoint, when the test itself used other
    weights) the same deterministic metrics of that network follow as ``test_best/*``, so that selection
    and test can use one network either way (docs/sweeps.md, "One network for selection and test").
    With ``predictions`` (a path; training jobs write ``<output_dir>/predictions.npz``) the per-example
    predictions of each tested network are saved there (``y``; ``pred``/``p_true`` and, with ``best``, ``pred_best``/``p_true_best``: predicted class int16,
    probability of the true class float16). Returns the metrics as floats.
    (Not ``trainer.test(ckpt_path=...)``: that also restores the callbacks, rolling the per-epoch
    history back to the checkpoint's epoch.)"""
    if weights is not None:
        module.load_state_dict(checkpoints.safe_load(weights)["state_dict"])  # weights, metric states, method buffers
    trainer.test(module, datamodule=datamodule, verbose=False)
    metrics = {key: float(value) for key, value in trainer.callback_metrics.items()}
    per_example = dict(module.test_predictions)
    mc_samples = int((cfg.get("eval") or {}).get("mc_samples", 0))
    if mc_samples:
        pl.seed_everything(cfg.seed, verbose=False)
        scores = evaluate(module.model, datamodule.test_dataloader(), datamodule.num_classes, mc_samples)
        log_metrics(trainer.loggers, scores, trainer.global_step)
        metrics |= scores
    if best is not None and best.exists():
        module.load_state_dict(checkpoints.safe_load(best)["state_dict"])
        module.test_prefix = M.TEST_BEST
        trainer.test(module, datamodule=datamodule, verbose=False)
        metrics |= {
            key: float(value) for key, value in trainer.callback_metrics.items() if key.startswith(f"{M.TEST_BEST}/")
        }
        per_example |= {f"{k}_best": v for k, v in module.test_predictions.items()}
        module.test_prefix = M.TEST
    if predictions is not None:
        y = torch.cat([y for _, y in datamodule.test_dataloader()]).to(torch.int16).cpu()
        np.savez_compressed(predictions, y=y.numpy(), **{k: v.numpy() for k, v in per_example.items()})
    return metrics


def train(cfg: DictConfig) -> dict[str, float]:
    """Run one job and write ``<output_dir>/metrics.json`` whatever happens.

    With ``resume=true`` a job whose summary says ``status: ok`` and whose stored config equals
    ``cfg`` is skipped (its summary untouched, its metrics returned; see
    :func:`~dropout_lab.sweeplock.finished`) and any other job continues from its last checkpoint
    (:func:`fit`). A finished job is kept from being retrained: without ``resume=true``, or with a
    changed config, :class:`~dropout_lab.sweeplock.FinishedJobError` is raised before anything is
    written. After the job the checkpoints ``keep_checkpoint`` does not name are deleted. In a
    multirun the job is first checked (:func:`~dropout_lab.launch.check_multirun`) and placed on its
    worker's GPU / CPU threads (:func:`~dropout_lab.launch.place_job`), after the config passed
    :func:`~dropout_lab.validate.validate`. An explicit ``threads`` sets torch's CPU threads in any run.

    Returns:
        the final metrics (``val/acc_best``, ``test/acc``, ...), accuracies as fractions.

    Raises:
        FinishedJobError: before anything is written, for a finished job re-run without ``resume=true``
            or with a changed config.
        ConfigError: for a bad config value, before anything is built; or whatever else the job raised
            (a refused multirun or GPU slot included); either after writing a summary with
            ``status: failed`` (or ``interrupted``), the root cause as ``error`` and the traceback, so that a
            sweep's report can list it. A failure whose root cause lies deeper (a full disk under
            ``torch.save``) is re-raised as :class:`~dropout_lab.errors.JobError` with that cause as its message.
        Interrupted: for SIGINT, SIGTERM, SIGUSR1/2 (:mod:`~dropout_lab.interrupts`), after the ``interrupted``
            summary; the process exits with 128 + the signal's number.
    """
    out = Path(cfg.output_dir)
    if launch.requeued() and not cfg.get("resume"):  # preempted / timed out on Slurm: the same path as resume=true
        log.info("requeued by Slurm (SLURM_RESTART_COUNT=%d): resume=true", launch.requeued())
        OmegaConf.update(cfg, "resume", True)
    done = sweeplock.finished(cfg, out)  # raises FinishedJobError before anything is written
    if done is not None:
        return done
    out.mkdir(parents=True, exist_ok=True)
    history, start, timings = History(), time.time(), {}
    with interrupts.trap():
        interrupts.busy.set()
        try:
            validate(cfg)
            placed = {}
            if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
                launch.check_multirun(cfg)
                placed = launch.place_job(cfg, HydraConfig.get())
            if not placed and cfg.get("threads"):  # a single run or a non-joblib launcher
                placed = {"threads": launch.torch_threads(cfg)}
                torch.set_num_threads(placed["threads"])
            if placed:
                log.info("worker placement: %s", placed)
            metrics = fit(cfg, history, timings)
        except BaseException as err:
            signum = interrupts.signal_of(err)
            status = "interrupted" if signum or not isinstance(err, Exception) else "failed"
            summary = build_summary(
                cfg,
                status,
                history,
                {},
                time.time() - start,
                error=str(interrupts.Interrupted(signum)) if signum else headline(err),
                trace=traceback.format_exc(),
                timings=timings,
            )
            path = Job(out).write(summary)  # a failure's message is printed once, by Hydra; an interruption's here
            log.error("job %s%s; summary in %s", status, f" ({summary['error']})" if signum else "", path)
            if signum is not None and not isinstance(err, interrupts.Interrupted):
                raise interrupts.Interrupted(signum) from err
            if isinstance(err, Exception) and (root_cause(err) is not err or isinstance(err, OSError)):
                raise JobError(summary["error"]) from err  # the console's last line is the cause, not torch's wrapper
            raise
        finally:
            close()
            interrupts.busy.clear()
    begun = time.perf_counter()
    summary = build_summary(cfg, "ok", history, metrics, time.time() - start, timings=timings)
    timings["summary"] = time.perf_counter() - begun  # the dict is the summary's: written with it
    path = Job(out).write(summary)
    checkpoints.finish(out / "checkpoints", checkpoints.policy(cfg)[0])
    log.info(
        "test/acc=%.4f val/acc_best=%.4f; summary in %s",
        metrics.get(M.test("acc"), float("nan")),
        metrics.get(M.VAL_ACC_BEST, float("nan")),
        path,
    )
    return metrics
