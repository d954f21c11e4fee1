"""``train(cfg)``: one job. Its composed Hydra config becomes objects once, at the top
(:func:`dropout_lab.config.settings` and :func:`~dropout_lab.config.build`); :func:`fit` trains and tests those
objects, and the run summary is written whatever happens."""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from dropout_lab import checkpoints, hparams, interrupts, launch, sweeplock
from dropout_lab import metrics as M
from dropout_lab.analysis import evaluate
from dropout_lab.config import Parts, Settings, build, settings
from dropout_lab.controller import DropoutController
from dropout_lab.errors import JobError, headline, root_cause
from dropout_lab.job import Job
from dropout_lab.loggers import close, log_metrics
from dropout_lab.module import Classifier
from dropout_lab.summary import PREDICTIONS_FILE, History, build_summary, flat_hparams
from dropout_lab.validate import validate

log = logging.getLogger(__name__)


def fit(job: Settings, parts: Parts, history: History, timings: dict[str, float] | None = None) -> dict[str, float]:
    """Train and test one job (its :class:`~dropout_lab.config.Settings` and built
    :class:`~dropout_lab.config.Parts`); return the final ``trainer.callback_metrics`` as floats.

    If ``<output_dir>/checkpoints/last.ckpt`` exists and ``job.resume`` (a job killed mid-way, re-run with
    ``resume=true``), training continues from it: model, optimizer, scheduler, method states, callbacks and RNG
    (:mod:`~dropout_lab.checkpoints`). The test uses the last epoch's weights, or the best validation epoch's with
    ``eval.checkpoint=best``. With ``eval.mc_samples`` > 0 the test metrics include Monte-Carlo dropout ones
    (:func:`~dropout_lab.analysis.evaluate`). ``timings`` receives the seconds of each part
    (:data:`~dropout_lab.summary.TIMINGS`; ``setup_trainer`` adds to what :func:`~dropout_lab.config.build` put).
    """
    timings = {} if timings is None else timings
    start = time.perf_counter()
    folder = job.output_dir / "checkpoints"
    resume_from = checkpoints.resume_from(folder, job.resume)
    if resume_from is not None:
        log.info("resume: continuing from %s", resume_from)
    else:  # one hparams session per run: a resumed run keeps the one written at its start
        row = flat_hparams(job.config)
        for logger in parts.loggers:  # HParams session with the sweep's columns; no placeholder points
            hparams.log_session(logger, row, trial_id=str(job.output_dir))
    # history first: its training clock stops before the controller's epoch-end stats logging
    callbacks = [
        history,
        DropoutController(parts.methods, parts.datamodule.num_train),
        *checkpoints.checkpoint_callbacks(folder, best=job.validates, every=job.checkpoint_every),
        *parts.callbacks,
    ]
    trainer = parts.trainer(logger=parts.loggers or False, callbacks=callbacks, plugins=checkpoints.trainer_plugins())
    io = trainer.strategy.checkpoint_io
    timings["setup_trainer"] = timings.get("setup_trainer", 0.0) + time.perf_counter() - start
    start = time.perf_counter()
    trainer.fit(parts.module, datamodule=parts.datamodule, ckpt_path=resume_from)
    timings["checkpoint_io"] = io.seconds
    timings["fit"], start = time.perf_counter() - start - io.seconds, time.perf_counter()
    metrics = {key: float(value) for key, value in trainer.callback_metrics.items()}
    # a job killed after its last epoch resumes with nothing left to fit: take the restored best
    metrics.setdefault(M.VAL_ACC_BEST, float(parts.module.val_acc_best.compute()))
    best = folder / f"{checkpoints.BEST}.ckpt"
    metrics |= run_test(
        trainer,
        parts.module,
        parts.datamodule,
        best if job.test_on == checkpoints.BEST else None,
        best=best if job.test_on == checkpoints.LAST else None,
        predictions=job.output_dir / PREDICTIONS_FILE,
        mc_samples=job.mc_samples,
        seed=job.seed,
    )
    timings["test"] = time.perf_counter() - start
    return metrics


def run_test(
    trainer: pl.Trainer,
    module: Classifier,
    datamodule,
    weights: Path | None = None,
    best: Path | None = None,
    predictions: Path | None = None,
    mc_samples: int = 0,
    seed: int = 0,
) -> dict[str, float]:
    """Test ``module`` (with the ``state_dict`` of checkpoint ``weights`` if given, else its current
    weights): ``test/*`` metrics (accuracy, loss = NLL, ECE, Brier; :class:`~dropout_lab.module.Classifier`)
    including each evaluation variant (EDropout's pruned network), then with ``mc_samples`` = T > 0
    the Monte-Carlo ones (seeded with ``seed``, the job's, so a re-test gives the same numbers), logged to every
    ``trainer.loggers``. With ``best`` (the best-validation checkpoint, when the test itself used other
    weights) the same deterministic metrics of that network follow as ``test_best/*``, so that selection
    and test can use one network either way (docs/sweeps.md, "One network for selection and test").
    With ``predictions`` (a path; training jobs write ``<output_dir>/predictions.npz``) the per-example
    predictions of each tested network are saved there (``y``; ``pred``/``p_true`` and, with ``best``,
    ``pred_best``/``p_true_best``: predicted class int16, probability of the true class float16). Returns the
    metrics as floats. (Not ``trainer.test(ckpt_path=...)``: that also restores the callbacks, rolling the
    per-epoch history back to the checkpoint's epoch.)"""
    if weights is not None:
        module.load_state_dict(checkpoints.safe_load(weights)["state_dict"])  # weights, metric states, method buffers
    trainer.test(module, datamodule=datamodule, verbose=False)
    metrics = {key: float(value) for key, value in trainer.callback_metrics.items()}
    per_example = dict(module.test_predictions)
    if mc_samples:
        pl.seed_everything(seed, verbose=False)
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
    :func:`~dropout_lab.validate.validate`. An explicit ``threads`` sets torch's CPU threads in any run. Before
    the job allocates, glibc's malloc is set to keep freed memory (:func:`~dropout_lab.launch.keep_freed_memory`).

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
    done = sweeplock.finished(OmegaConf.to_container(cfg, resolve=True), out)  # raises before anything is written
    if done is not None:
        return done
    out.mkdir(parents=True, exist_ok=True)
    history, start, timings = History(), time.time(), {}
    with interrupts.trap():
        interrupts.busy.set()
        try:
            validate(cfg)
            launch.keep_freed_memory()  # before the job allocates: CPU tensors reuse freed memory (no page faults)
            placed = {}
            if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
                launch.check_multirun(cfg)
                placed = launch.place_job(cfg, HydraConfig.get())
            if not placed and cfg.get("threads"):  # a single run or a non-joblib launcher
                placed = {"threads": launch.torch_threads(cfg)}
                torch.set_num_threads(placed["threads"])
            if placed:
                log.info("worker placement: %s", placed)
            job = settings(cfg)  # the config becomes objects here, once: lower layers never see it
            metrics = fit(job, build(cfg, timings), history, timings)
        except BaseException as err:
            signum = interrupts.signal_of(err)
            status = "interrupted" if signum or not isinstance(err, Exception) else "failed"
            summary = build_summary(
                OmegaConf.to_container(cfg, resolve=True),
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
    summary = build_summary(job.config, "ok", history, metrics, time.time() - start, timings=timings)
    timings["summary"] = time.perf_counter() - begun  # the dict is the summary's: written with it
    path = Job(out).write(summary)
    checkpoints.finish(out / "checkpoints", job.keep_checkpoint)
    log.info(
        "test/acc=%.4f val/acc_best=%.4f; summary in %s",
        metrics.get(M.test("acc"), float("nan")),
        metrics.get(M.VAL_ACC_BEST, float("nan")),
        path,
    )
    return metrics
