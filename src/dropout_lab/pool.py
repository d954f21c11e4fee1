"""The ``gpu_pool`` launcher's loop: Hydra's joblib launcher with one single-worker loky executor per slot,
so that a worker that dies costs its own job only.

Hydra's ``JoblibLauncher`` runs all jobs through one ``joblib.Parallel`` over one loky executor; when a
worker dies (the kernel's out-of-memory killer, any signal) loky marks the whole executor broken, kills
the other workers (their jobs lose their summaries) and the sweep aborts with a ``TerminatedWorkerError``.
Here each slot owns a ``ProcessPoolExecutor(max_workers=1)`` from the same library (loky, as joblib uses):
a dead worker breaks only its slot; its job gets a ``failed`` summary naming the signal
(:func:`worker_died`) and a fresh worker takes the slot. Jobs run as in Hydra's launcher
(:func:`dropout_lab.compat.execute_job`: compose, then ``run_job``), in order, each on
the first free slot.

Signals: the launcher forwards SIGINT/SIGTERM/SIGUSR1/2 to its workers, gives their jobs up to
:data:`GRACE` seconds to write ``interrupted`` summaries, then stops them and exits with 128 + the signal
(:mod:`~dropout_lab.interrupts`); a worker whose launcher is gone stops itself
(:func:`~dropout_lab.interrupts.watch_parent`), so a killed launcher leaves no orphans holding slot locks.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import signal
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, setup_globals
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from dropout_lab import compat, interrupts
from dropout_lab.errors import JobError
from dropout_lab.progress import Progress

log = logging.getLogger(__name__)

#: seconds the jobs of an interrupted sweep get to write their summaries before their workers are stopped
GRACE = 30.0


class Slot:
    """One worker process: a loky ``ProcessPoolExecutor(max_workers=1)`` whose worker watches this process
    (:func:`~dropout_lab.interrupts.watch_parent`); ``pid`` is the worker's process id."""

    def __init__(self) -> None:
        from joblib.externals.loky import ProcessPoolExecutor

        self.executor = ProcessPoolExecutor(max_workers=1, initializer=interrupts.watch_parent, initargs=(os.getpid(),))
        self.pid: int = self.executor.submit(os.getpid).result()

    def signal(self, signum: int) -> None:
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        self.executor.shutdown(wait=False, kill_workers=True)


def worker_pids(launcher: int) -> list[int]:
    """The loky worker processes of process ``launcher`` (from ``/proc``; Linux), for tests and the chaos script."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmd = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == launcher and b"popen_loky_posix" in cmd:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie that no init reaps counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def death(err: BaseException) -> str:
    """What killed a worker, from loky's ``TerminatedWorkerError`` message (``... exit codes of the
    workers are {SIGKILL(-9)}``): ``worker killed by signal 9 (SIGKILL); likely out of memory`` (the kernel's
    out-of-memory killer sends SIGKILL), ``worker killed by signal 11 (SIGSEGV)``, or ``worker exited with status N``."""
    found = re.search(r"\{\w+\((-?\d+)\)", str(err))
    if found is None:
        return f"worker died: {type(err).__name__}"
    code = int(found.group(1))
    if code < 0:
        oom = "; likely out of memory (the kernel's OOM killer sends SIGKILL)" if -code == signal.SIGKILL else ""
        return f"worker killed by signal {-code} ({signal.Signals(-code).name}){oom}"
    return f"worker exited with status {code}"


def job_config(launcher: Any, overrides: Sequence[str], idx: int) -> tuple[DictConfig, Path]:
    """The job's config as its worker composed it (without ``hydra``; ``output_dir`` set) and its folder,
    composed again here (only for a job whose worker died, which cannot say)."""
    sweep_config = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id, sweep_config.hydra.job.num = f"{sweep_config.hydra.job.name}_{idx}", idx
    HydraConfig.instance().set_config(sweep_config)
    folder = Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)
    cfg = copy.deepcopy(sweep_config)
    with read_write(cfg), open_dict(cfg):
        del cfg["hydra"]
        OmegaConf.update(cfg, "output_dir", str(folder.resolve()), force_add=True)
    return cfg, folder


def worker_died(launcher: Any, overrides: Sequence[str], idx: int, err: BaseException, started: float) -> JobReturn:
    """Write a ``failed`` summary for a job whose worker died (unless the job wrote its own since it started,
    e.g. ``interrupted``) and return its failed ``JobReturn``. The job's last checkpoint stays, so
    ``resume=true`` continues it."""
    from dropout_lab.job import Job
    from dropout_lab.summary import build_summary

    cause = death(err)
    cfg, folder = job_config(launcher, overrides, idx)
    job = Job(folder)
    summary = job.summary_path
    if not summary.exists() or summary.stat().st_mtime < started:
        folder.mkdir(parents=True, exist_ok=True)
        config = OmegaConf.to_container(cfg, resolve=True)
        job.write(build_summary(config, "failed", None, {}, time.time() - started, error=cause, trace=str(err)))
    log.error("job %s: %s; summary in %s", folder.name, cause, summary)
    return JobReturn(overrides=list(overrides), cfg=cfg, status=JobStatus.FAILED, _return_value=JobError(cause))


def workers(launcher: Any, jobs: int) -> int:
    """The pool's size: the launcher's ``n_jobs`` (joblib's ``-1``: every core), at most ``jobs``."""
    n_jobs = int(launcher.joblib.get("n_jobs") or -1)
    return max(1, min(len(os.sched_getaffinity(0)) if n_jobs < 1 else n_jobs, jobs))


def launch(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    """Run ``job_overrides`` on :func:`workers` slots, each job on the first free slot; return one
    ``JobReturn`` per job, in order. A job whose worker died returns ``FAILED`` (:func:`worker_died`).

    Raises:
        Interrupted: when this process gets SIGINT/SIGTERM/SIGUSR1/2, after forwarding it to the workers
            and waiting up to :data:`GRACE` seconds for their jobs' summaries.
    """
    setup_globals()
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    n = workers(launcher, len(job_overrides))
    log.info("gpu_pool: %d jobs on %d workers; sweep output dir: %s", len(job_overrides), n, sweep_dir)
    state = Singleton.get_state()
    todo = deque(enumerate(job_overrides))
    slots: list[Slot | None] = [None] * n
    running: dict[Future, tuple[int, int, Sequence[str], float]] = {}
    results: list[JobReturn | None] = [None] * len(job_overrides)
    progress = Progress(len(job_overrides))
    with interrupts.trap():
        try:
            while todo or running:
                busy = {slot for slot, *_ in running.values()}
                for k in (k for k in range(n) if k not in busy and todo):
                    slots[k] = slots[k] or Slot()
                    idx, overrides = todo.popleft()
                    future = slots[k].executor.submit(
                        compat.execute_job,
                        initial_job_idx + idx,
                        overrides,
                        launcher.hydra_context,
                        launcher.config,
                        launcher.task_function,
                        state,
                    )
                    running[future] = (k, idx, overrides, time.time())
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    k, idx, overrides, started = running.pop(future)
                    try:
                        results[idx] = future.result()
                    except interrupts.Interrupted as err:  # this job alone was signalled; the others run on
                        results[idx] = JobReturn(overrides=list(overrides), status=JobStatus.FAILED, _return_value=err)
                    except Exception as err:  # noqa: BLE001 - loky's TerminatedWorkerError / BrokenProcessPool
                        results[idx] = worker_died(launcher, overrides, initial_job_idx + idx, err, started)
                        slots[k].close()
                        slots[k] = None
                    progress.update(results[idx].status == JobStatus.COMPLETED, time.time() - started)
        except interrupts.Interrupted as stop:
            log.warning("%s: stopping %d running job(s) (up to %.0f s for their summaries)", stop, len(running), GRACE)
            for k in {slot for slot, *_ in running.values()}:
                slots[k].signal(stop.signum)
            wait(running, timeout=GRACE)
            raise
        finally:
            for slot in slots:
                if slot is not None:
                    slot.close()
    return results
