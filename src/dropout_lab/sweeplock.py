"""One owner per sweep folder, and no finished result silently retrained or trusted when stale.

* :class:`SweepGuard`, a Hydra callback (``hydra.callbacks.sweep_guard`` in ``conf/config.yaml``):
  a multirun holds ``<hydra.sweep.dir>/.sweep.lock`` (``filelock``) for its whole life, so a second
  sweep into the same folder stops before it launches anything; and a sweep into a folder that
  already holds finished jobs is refused unless ``resume=true``.
* :func:`finished`, called by every job before it builds anything: with ``resume=true`` a finished
  job (``metrics.json`` status ok) is skipped only if its stored config equals the newly composed
  one; otherwise it is refused with the keys that differ.

See docs/sweeps.md ("Resuming and failures").
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from dropout_lab.errors import ConfigError
from dropout_lab.job import SUMMARY_FILE, Job, changed_keys, flat

log = logging.getLogger(__name__)

LOCK_FILE = ".sweep.lock"


class FinishedJobError(ConfigError):
    """A job folder holds a finished result that this run would overwrite or wrongly reuse. Raised
    before anything is written, so the finished ``metrics.json`` stays as it was."""


def finished(config: dict[str, Any], out: Path) -> dict[str, float] | None:
    """The metrics of the finished job in ``out`` if this run, with resolved config ``config`` (plain containers),
    may reuse them; None if ``out`` holds no finished job (``metrics.json`` missing or status other than ok: the
    job runs).

    Raises:
        FinishedJobError: without ``resume=true`` (this run would overwrite a finished result), or
            with it when the stored config differs from ``config`` (naming the keys and values).
    """
    summary = Job(out).finished()
    if summary is None:
        return None
    if not config.get("resume"):
        raise FinishedJobError(
            "resume",
            config.get("resume"),
            f"{out} holds a finished job; pass resume=true to keep it "
            "(and run only unfinished jobs), or write elsewhere with a fresh hydra.sweep.dir=... / hydra.run.dir=...",
        )
    keys = changed_keys(summary.get("config") or {}, config)
    if keys:
        old, new = flat(summary.get("config") or {}), flat(config)
        shown = ", ".join(f"{k}: {old.get(k, '<missing>')!r} -> {new.get(k, '<missing>')!r}" for k in keys[:8])
        raise FinishedJobError(
            "resume",
            True,
            f"the finished job in {out} ran with another config ({shown}"
            f"{', ...' if len(keys) > 8 else ''}); use a fresh hydra.sweep.dir=... for the new config, "
            f"or delete {out / SUMMARY_FILE} to retrain this job",
        )
    log.info("resume: %s finished before with the same config (status ok); skipped, summary untouched", out)
    return summary["metrics"]


class SweepGuard(Callback):
    """Hydra callback guarding a multirun's ``hydra.sweep.dir``.

    ``on_multirun_start`` (in the launching process, before any job) takes a non-blocking
    ``filelock.FileLock`` on ``<sweep>/.sweep.lock`` (released at ``on_multirun_end``, or by the OS
    when the process dies), then refuses to start if the folder holds finished jobs and
    ``resume`` is not true.

    Raises:
        SystemExit: with the message, if another sweep holds the lock, or the folder holds finished
            jobs and ``resume`` is not true. (Hydra 1.3 turns an ``Exception`` raised in a callback into
            a warning, ``hydra/_internal/callbacks.py``; ``SystemExit`` stops the command, status 1.)
    """

    def __init__(self) -> None:
        self.lock: FileLock | None = None

    def __getstate__(self) -> dict:
        return {"lock": None}  # submitit pickles Hydra's callbacks into every job; the lock stays here

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(config.hydra.sweep.dir)
        sweep.mkdir(parents=True, exist_ok=True)
        self.lock = FileLock(sweep / LOCK_FILE)
        try:
            self.lock.acquire(timeout=0)
        except Timeout:
            raise SystemExit(
                f"hydra.sweep.dir={sweep} is in use by another running sweep (it holds {sweep / LOCK_FILE}); "
                "wait for it to end or pass a fresh hydra.sweep.dir=..."
            ) from None
        done = [job.name for job in sorted(sweep.iterdir()) if job.is_dir() and Job(job).finished()]
        if done and not config.get("resume"):
            self.on_multirun_end(config)
            raise SystemExit(
                f"resume={config.get('resume')}: hydra.sweep.dir={sweep} holds {len(done)} finished "
                f"job(s) (e.g. {done[0]}); pass resume=true to keep them and run only the unfinished "
                "jobs, or a fresh hydra.sweep.dir=... to start a new sweep"
            )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.lock is not None:
            self.lock.release()
