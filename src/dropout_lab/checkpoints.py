"""Checkpoints of a job: written atomically inside the job folder at a training-epoch end at most every
``checkpoint_every`` seconds and at the final epoch, read only with ``torch.load(weights_only=True)``,
carrying the RNG state and the best-validation weights, and kept after the job as ``keep_checkpoint`` says
(docs/sweeps.md, "Resuming and failures"). Checkpoints hold tensors and plain data only (no
``torch.serialization.add_safe_globals`` allow-list is needed).

Files: ``<job>/checkpoints/last.ckpt`` (Lightning's full checkpoint: resume continues from it) and
``<job>/checkpoints/best.ckpt`` (the weights of the epoch with the highest ``val/acc``: ``state_dict``,
``epoch``, ``val/acc``; written when training ends).
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytorch_lightning import Callback
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins.environments import SLURMEnvironment
from pytorch_lightning.plugins.io import TorchCheckpointIO

from dropout_lab import compat, interrupts
from dropout_lab import metrics as M
from dropout_lab.errors import root_cause
from dropout_lab.job import publish

log = logging.getLogger(__name__)

LAST, BEST = "last", "best"


class UnsafeCheckpointError(ValueError):
    """A checkpoint holds objects other than tensors and plain Python data (it could run code)."""


def safe_load(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``: tensors, plain containers and numbers only.

    Raises:
        UnsafeCheckpointError: naming the file and the refused global, if the pickle asks for any
            other object (a crafted file calling ``os.system`` is refused before anything runs).
        RuntimeError, EOFError: from torch, for a truncated or otherwise corrupt file.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL [\w.]+", str(err))  # torch's "... unsupported GLOBAL posix.system ..."
        raise UnsafeCheckpointError(
            f"refusing to load {path}: it is not a plain tensor checkpoint (torch.load weights_only=True refused "
            f"{found.group(0) if found else 'its content'}). Run folders can be written by others; "
            "delete the file to retrain this job from scratch."
        ) from err


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO``, but saving atomically next to the target and loading safely.

    Lightning's own save (``lightning_fabric.utilities.cloud_io._atomic_save``) writes through an
    fsspec transaction whose temporary file is ``tempfile.mkstemp()`` in ``$TMPDIR`` (often
    ``/dev/shm``); a job killed mid-write leaves it there. Here the temporary file lives in the
    checkpoint's own folder (``.<name>.<random>.tmp``), is flushed and ``fsync``-ed, then given the umask's
    mode and renamed over the target (:func:`dropout_lab.job.publish`): a reader sees the old file or
    the new one, never half of one. A write that fails on an ``OSError`` (a full disk) re-raises it with the
    checkpoint's path, so the job's error names the file. A signal that arrives during the write is raised
    after the new checkpoint is in place (:func:`dropout_lab.interrupts.deferred`).
    Loading always goes through :func:`safe_load`.
    """

    #: seconds spent writing checkpoints through this plugin (the job's ``checkpoint_io`` time)
    seconds = 0.0

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        start = time.perf_counter()
        try:
            self._save(checkpoint, Path(path))
        finally:
            self.seconds += time.perf_counter() - start

    def _save(self, checkpoint: dict[str, Any], path: Path) -> None:
        with interrupts.deferred():  # a signal during the write is raised after it (an exception inside aborts)
            self._write(checkpoint, path)

    def _write(self, checkpoint: dict[str, Any], path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False) as f:
            try:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            except BaseException as err:
                os.unlink(f.name)
                cause = root_cause(err)
                if isinstance(cause, OSError) and not cause.filename:  # name the file a full disk refused
                    raise OSError(cause.errno, cause.strerror, str(path)) from err
                raise
        publish(f.name, path)

    def load_checkpoint(
        self, path: str | Path, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return safe_load(path, map_location or "cpu")


class RNGState(Callback):
    """Puts the global RNG states (Python ``random``, NumPy, torch CPU and CUDA) into every checkpoint
    and restores them on resume, so that a resumed run draws the same data order (the training batches
    reshuffle with torch's global generator) and the same dropout masks as an uninterrupted one.

    NumPy's key array is stored as an int64 tensor so the checkpoint stays loadable with
    ``weights_only=True``. Uses Lightning's collection of the states (:func:`dropout_lab.compat.rng_states`).
    """

    def state_dict(self) -> dict[str, Any]:
        states = compat.rng_states(include_cuda=torch.cuda.is_available())
        name, keys, *rest = states["numpy"]
        states["numpy"] = (name, torch.from_numpy(keys.astype(np.int64)), *rest)
        return states

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        name, keys, *rest = state_dict["numpy"]
        compat.set_rng_states({**state_dict, "numpy": (name, keys.numpy().astype(np.uint32), *rest)})


def final_epoch(trainer) -> bool:
    """Whether the training epoch that is ending is the run's last: ``trainer.max_epochs`` or
    ``trainer.max_steps`` reached, or a stop requested (early stopping)."""
    if trainer.should_stop:
        return True
    if trainer.max_steps not in (None, -1) and trainer.global_step >= trainer.max_steps:
        return True
    return trainer.max_epochs not in (None, -1) and trainer.current_epoch + 1 >= trainer.max_epochs


class LastCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` for ``last.ckpt`` (``monitor=None, save_top_k=1``: the newest epoch is
    the "top 1"), saving at a training-epoch end only when ``every`` seconds have passed since its last save
    (or since training started) and at the final epoch (:func:`final_epoch`). ``every=0``: every epoch.

    A flagship job's 0.2-second epochs wrote and fsynced a checkpoint 40 times (docs/bench_harness.md,
    "flagship regime"); a resumed job continues from the newest one, redoing at most ``every`` seconds.
    Not ``save_last=True, save_top_k=0``: in PL 2.6 ``ModelCheckpoint`` writes ``last`` only in a step where
    a top-k file was written, and with ``save_top_k=0`` there is none.

    Args:
        every: seconds between saves (``checkpoint_every`` in conf/config.yaml), >= 0.
        **kwargs: ``ModelCheckpoint``'s.
    """

    def __init__(self, every: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.every, self._saved_at = float(every), time.monotonic()

    def on_train_start(self, trainer, pl_module) -> None:
        self._saved_at = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, *args: Any, **kwargs: Any) -> None:
        """Nothing: ``last.ckpt`` is saved at epoch ends only (ModelCheckpoint checks its step and time triggers here)."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.every and time.monotonic() - self._saved_at < self.every and not final_epoch(trainer):
            return
        super().on_train_epoch_end(trainer, pl_module)
        self._saved_at = time.monotonic()


class BestWeights(Callback):
    """The weights of the epoch with the highest ``val/acc`` (the first such epoch), kept in memory at each
    improvement (a copy of the module's ``state_dict``: weights, metric states, method buffers), carried
    inside every ``last.ckpt`` (so a resumed run has them, in the same atomic file) and written to ``path``
    when training ends: ``{"state_dict", "epoch", "val/acc"}``. Replaces a second ``ModelCheckpoint`` that
    wrote and fsynced a file at every improvement.

    Args:
        path: the ``best.ckpt`` file to write.
    """

    def __init__(self, path: Path) -> None:
        self.path, self.score, self.epoch, self.weights = Path(path), -float("inf"), -1, None

    def on_validation_end(self, trainer, pl_module) -> None:
        score = trainer.callback_metrics.get(M.VAL_ACC)
        if trainer.sanity_checking or score is None or not float(score) > self.score:
            return
        self.score, self.epoch = float(score), trainer.current_epoch
        self.weights = {key: value.detach().clone() for key, value in pl_module.state_dict().items()}

    def state_dict(self) -> dict[str, Any]:
        return {"score": self.score, "epoch": self.epoch, "weights": self.weights}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.score, self.epoch, self.weights = state_dict["score"], state_dict["epoch"], state_dict["weights"]

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.weights is not None:
            trainer.strategy.checkpoint_io.save_checkpoint(
                {"state_dict": self.weights, "epoch": self.epoch, M.VAL_ACC: self.score}, self.path
            )


def checkpoint_callbacks(folder: Path, best: bool, every: float = 0.0) -> list[Callback]:
    """The Lightning callbacks of a training job's checkpoints: the RNG state in every checkpoint,
    ``folder/last.ckpt`` (:class:`LastCheckpoint`, at most every ``every`` seconds and at the final epoch)
    and, if ``best`` (the run validates), ``folder/best.ckpt`` (:class:`BestWeights`).
    ``save_on_train_epoch_end=True`` saves after the epoch's validation, the module's epoch-end hooks and
    the LR scheduler step; ``enable_version_counter=False`` overwrites instead of ``last-v1.ckpt``."""
    callbacks: list[Callback] = [RNGState()]
    if best:
        callbacks.append(BestWeights(folder / f"{BEST}.ckpt"))
    callbacks.append(
        LastCheckpoint(
            every,
            dirpath=folder,
            filename=LAST,
            monitor=None,
            save_top_k=1,
            enable_version_counter=False,
            save_on_train_epoch_end=True,
        )
    )
    return callbacks


def trainer_plugins() -> list:
    """The Trainer plugins of a training job: :class:`AtomicCheckpointIO` and, inside a Slurm job,
    Lightning's ``SLURMEnvironment(auto_requeue=False)``: submitit requeues a preempted or timed-out
    job (and the job resumes from ``last.ckpt``, :func:`dropout_lab.launch.requeued`), so Lightning's
    own SIGUSR1 handler (an ``hpc_ckpt_*.ckpt`` and a second ``scontrol requeue``) stays off."""
    return [AtomicCheckpointIO(), *([SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else [])]


def resume_from(folder: Path, resume: bool) -> Path | None:
    """The checkpoint a job continues from: ``folder/last.ckpt`` when ``resume`` and it loads.

    Temporary files left by a job killed while saving (``.last.ckpt.*.tmp``) are removed first. A
    truncated ``last.ckpt`` (from before atomic saves) is ignored with a warning: the job starts over.

    Raises:
        UnsafeCheckpointError: if ``last.ckpt`` holds anything but tensors and plain data.
    """
    for tmp in folder.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
    last = folder / f"{LAST}.ckpt"
    if not resume or not last.exists():
        return None
    try:
        safe_load(last)
    except (RuntimeError, EOFError) as err:
        log.warning("resume: %s is unreadable (%s); starting this job from scratch", last, err)
        return None
    return last


def finish(folder: Path, keep: str) -> None:
    """Delete the checkpoints a finished job does not keep (``keep``: ``keep_checkpoint``, :class:`dropout_lab.config.Settings`): ``none``
    deletes both, ``last`` keeps ``last.ckpt``, ``best`` keeps ``best.ckpt``."""
    for name in (LAST, BEST):
        if name != keep:
            (folder / f"{name}.ckpt").unlink(missing_ok=True)
