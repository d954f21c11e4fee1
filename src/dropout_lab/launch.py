"""Sweep plumbing that lives outside the training loop: the job folder resolver, the worker's GPU claim
under the joblib ``gpu_pool`` launcher and its CPU threads, glibc's malloc kept from returning a step's
memory to the kernel (:func:`keep_freed_memory`), the refusal of DDP inside a multirun, and Slurm requeues
(:func:`requeued`, :class:`SlurmAccounting`).

Resolvers registered on import (``dropout_lab.train`` imports this module, so they exist before
Hydra composes ``conf/config.yaml`` and in every joblib/submitit worker):

* ``${dl_job_dir:${hydra.overrides.task},${hydra.job.config.override_dirname.exclude_keys}}``: the
  job folder name (:func:`dropout_lab.job.folder_name`);
* ``${dl_pool_size:K}``: ``K`` jobs per visible GPU (``auto``: sized from the job's memory, :func:`pool_size`),
  or one job per CPU core without a GPU;
* ``${dl_sweep_name:${hydra.runtime.choices.experiment},<stamp>,<default>}``: the sweep folder (:func:`sweep_name`).
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from dropout_lab.errors import ConfigError
from dropout_lab.job import folder_name

log = logging.getLogger(__name__)

#: this worker's GPU-slot lock, held open for the life of the process (a loky worker runs many jobs)
_claim: tuple[TextIO, int, int] | None = None


#: jobs one GPU takes at most, however large (each job also needs a CPU core to feed it)
MAX_JOBS_PER_GPU = 8


def mps_active() -> bool:
    """True if a CUDA MPS control daemon is running for this user (its pipe in ``$CUDA_MPS_PIPE_DIRECTORY``,
    default ``/tmp/nvidia-mps``). Without MPS, jobs sharing a GPU are time-sliced; with it their kernels run
    concurrently (start it with ``nvidia-cuda-mps-control -d``, stop with ``echo quit | nvidia-cuda-mps-control``)."""
    return (Path(os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps")) / "control").exists()


def pool_size(jobs_per_gpu: int | str = "auto", job_memory_gb: float = 3.0) -> int:
    """Workers for the ``gpu_pool`` launcher: jobs per GPU x visible GPUs, else the CPU cores this process
    may use (``os.sched_getaffinity``).

    ``jobs_per_gpu="auto"`` sizes it from the job's memory footprint: as many ``job_memory_gb`` jobs as fit
    in 90 % of the smallest visible GPU's memory, at least 1 and at most :data:`MAX_JOBS_PER_GPU` and the
    CPU cores per GPU. The default 3 GB covers a LeNet5/MLP MNIST job with its CUDA context and the data on
    the GPU (8 such jobs on a 40 GB GPU, 4 on a 16 GB one; ``scripts/bench_gpu.py`` prints the measured peak).

    Raises:
        ValueError: for ``jobs_per_gpu`` other than a positive int or "auto", or ``job_memory_gb`` <= 0.
    """
    import torch

    gpus = torch.cuda.device_count()
    cores = len(os.sched_getaffinity(0))
    if not gpus:
        return cores
    if jobs_per_gpu == "auto":
        if float(job_memory_gb) <= 0:
            raise ValueError(f"hydra.launcher job_memory_gb={job_memory_gb}: must be > 0 (GB one job needs on the GPU)")
        smallest = min(torch.cuda.get_device_properties(i).total_memory for i in range(gpus)) / 2**30
        per_gpu = min(int(0.9 * smallest // float(job_memory_gb)), MAX_JOBS_PER_GPU, max(cores // gpus, 1))
        return max(per_gpu, 1) * gpus
    if not str(jobs_per_gpu).isdigit() or int(jobs_per_gpu) < 1:
        raise ValueError(f"dl_pool_size jobs_per_gpu={jobs_per_gpu!r}: must be a positive int or 'auto'")
    return int(jobs_per_gpu) * gpus


def sweep_name(experiment: str | None, stamp: str, default: str) -> str:
    """The sweep folder under ``outputs/multirun/``: ``<experiment>/<stamp>`` for a preset's sweep, else ``default``
    (the one place a sweep folder is derived; ``conf/config.yaml`` ``hydra.sweep.dir``)."""
    return f"{experiment}/{stamp}" if experiment else default


for _name, _fn in (
    ("dl_job_dir", lambda o, e: folder_name(list(o), list(e or []))),
    ("dl_pool_size", pool_size),
    ("dl_sweep_name", sweep_name),
):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)


#: seconds a worker waits for a free slot before giving up (a worker of a sweep killed a moment ago may still
#: be writing its summary before it exits and frees its lock)
SLOT_WAIT = 5.0


def claim_slot(n_slots: int, n_gpus: int, lock_dir: str | None = None, wait: float = SLOT_WAIT) -> tuple[int, int]:
    """Claim one of ``n_slots`` worker slots for the rest of this process' life.

    Slot ``k`` runs on GPU ``k % n_gpus``; it is claimed with a non-blocking ``fcntl.flock`` on
    ``<lock_dir>/dropout-lab-slot<k>-of<n_slots>.lock`` (``$DROPOUT_LAB_LOCK_DIR``, else the temp
    folder), trying every slot again for up to ``wait`` seconds while all are held. The open file stays
    in this module, so the lock lasts as long as the loky worker and the OS drops it when the worker dies.
    A second call returns the same claim.

    Returns:
        (slot, gpu index), gpu = -1 without GPUs.

    Raises:
        RuntimeError: if every slot is still held after ``wait`` seconds (another sweep with the same pool
            size runs on this machine).
    """
    global _claim
    if _claim is not None:
        return _claim[1], _claim[2]
    folder = Path(lock_dir or os.environ.get("DROPOUT_LAB_LOCK_DIR") or tempfile.gettempdir())
    deadline = time.monotonic() + wait
    while True:
        for slot in range(n_slots):
            handle = open(folder / f"dropout-lab-slot{slot}-of{n_slots}.lock", "w")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            _claim = (handle, slot, slot % n_gpus if n_gpus else -1)
            return _claim[1], _claim[2]
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"all {n_slots} gpu_pool slots in {folder} are held by other processes; "
                "is another sweep running on this machine? (set DROPOUT_LAB_LOCK_DIR to separate them)"
            )
        time.sleep(0.2)


def requested_processes(trainer: DictConfig | dict) -> int:
    """How many processes ``trainer`` (the Lightning Trainer config) would start: devices x num_nodes,
    or 2 for any ``ddp*``/``fsdp``/``deepspeed`` strategy. ``devices: -1 | auto`` count every GPU."""
    import torch

    devices, strategy = trainer.get("devices", 1), str(trainer.get("strategy", "auto")).lower()
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    if devices in (-1, "auto"):
        devices = torch.cuda.device_count() if trainer.get("accelerator", "auto") in ("gpu", "cuda", "auto") else 1
    n = len(devices) if OmegaConf.is_list(devices) or isinstance(devices, (list, tuple)) else int(devices or 1)
    n *= int(trainer.get("num_nodes", 1) or 1)
    return max(n, 2) if strategy.startswith(("ddp", "fsdp", "deepspeed")) else n


def check_multirun(cfg: DictConfig) -> None:
    """Refuse a multi-process trainer inside a Hydra multirun (call before training).

    Lightning's DDP launcher re-runs ``sys.argv`` for every extra rank (PL 2.6.6
    ``lightning_fabric/strategies/launchers/subprocess_script.py``, PL issue #11300), so in a
    ``-m`` run each rank would start the whole sweep again.

    Raises:
        ConfigError: naming ``trainer.devices``/``trainer.strategy``/``trainer.num_nodes`` and the fix.
    """
    n = requested_processes(cfg.trainer)
    if n > 1:
        t = cfg.trainer
        raise ConfigError(
            "trainer.devices",
            t.get("devices"),
            f"with trainer.strategy={t.get('strategy', 'auto')} trainer.num_nodes={t.get('num_nodes', 1)} "
            f"asks for {n} processes inside a Hydra multirun (-m). Lightning relaunches the whole command line for every extra "
            "DDP process, so each would start the sweep again. Use one device per job (trainer.devices=1, the default) with "
            "hydra/launcher=gpu_pool or hydra/launcher=slurm, or run multi-GPU training as a single run without -m.",
        )


def torch_threads(cfg: DictConfig, n_jobs: int = 1) -> int:
    """Torch CPU threads for one job: ``cfg.threads`` when set, else ``max(1, cores // n_jobs)`` (``cores``:
    ``os.sched_getaffinity``), so that ``n_jobs`` jobs of one worker each do not oversubscribe the cores.
    ``threads`` compares 1 worker with 2 at equal threads per job (``scripts/bench_workers.py``)."""
    return int(cfg.get("threads") or max(1, len(os.sched_getaffinity(0)) // n_jobs))


#: glibc ``mallopt`` parameters (malloc.h) and the values :func:`keep_freed_memory` sets: blocks up to 1 GiB
#: come from the heap instead of a fresh ``mmap`` each (glibc's dynamic threshold stops at 32 MiB, below a
#: convolution's batch-1000 im2col buffer), and the heap's free top is returned to the kernel only beyond 1 GiB
MALLOPT = {"M_MMAP_THRESHOLD": (-3, 1 << 30), "M_TRIM_THRESHOLD": (-1, 1 << 30)}
#: environment variables through which a user sets glibc's malloc themselves; any of them leaves it alone
MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep the memory a training step frees for the next step, instead of returning it to
    the kernel and taking it back, zero-filled, one page fault per 4 KiB page (``mallopt``: :data:`MALLOPT`);
    process-wide (setting the same values again is a no-op); ``train`` calls it before a job builds anything.
    Returns whether it applied.

    Why: with glibc's defaults every CPU tensor above its mmap threshold is a fresh ``mmap`` and the heap's free
    top is trimmed back to the kernel, so the same activations are faulted in again at every step. A
    flagship-shaped LeNet5 job (40 epochs of 16 batches of 64, a 1,000-image validation pass per epoch, two
    10k-image tests) took 735,700 minor page faults and 1.3-1.6 s of kernel time out of 8-10 s; with these
    two settings, under 1,000 faults and 0.1 s (docs/bench_harness.md, "flagship regime"). The peak resident
    memory is unchanged (the process holds its peak instead of shrinking between steps); the arithmetic is the same,
    bit for bit (tests/test_malloc.py). Tensors on a GPU are unaffected (CUDA's caching allocator holds them).
    PyTorch's performance tuning guide makes the same point for CPU training with jemalloc/tcmalloc.

    Nothing is changed (returns False) off glibc (macOS, musl) or when the user has configured malloc through
    the environment (:data:`MALLOC_ENV`).
    """
    import ctypes
    import platform

    if any(name in os.environ for name in MALLOC_ENV) or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    return all(libc.mallopt(param, value) == 1 for param, value in MALLOPT.values())


def place_job(cfg: DictConfig, hydra_cfg: Any) -> dict[str, Any]:
    """Set up a job for its launcher before training; return what was decided (for the log).

    Under a joblib launcher (``hydra/launcher=gpu_pool`` or ``joblib``) the worker claims a slot
    (:func:`claim_slot`, ``n_jobs`` slots) and, with GPUs, trains on GPU ``slot % n_gpus`` only
    (``trainer.devices=[i]``, ``trainer.accelerator=gpu``; with several jobs per GPU the result says whether
    CUDA MPS is active, :func:`mps_active`); in both cases it sets torch's threads to
    :func:`torch_threads` (``cores // n_jobs`` unless ``threads`` is set).
    Other launchers are left alone (Slurm isolates GPUs itself); ``train`` applies an explicit ``threads`` there.
    """
    target = str(hydra_cfg.launcher.get("_target_", ""))
    if not target.endswith(("JoblibLauncher", "PoolLauncher")):
        return {}
    import torch

    n_jobs = int(hydra_cfg.launcher.n_jobs)
    n_jobs = len(os.sched_getaffinity(0)) if n_jobs < 1 else n_jobs  # joblib's -1 = all cores
    gpus = torch.cuda.device_count()
    slot, gpu = claim_slot(n_jobs, gpus)
    threads = torch_threads(cfg, n_jobs)
    torch.set_num_threads(threads)  # on GPUs too: the CPU side of each job must not oversubscribe either
    if gpu >= 0:
        OmegaConf.update(cfg, "trainer.accelerator", "gpu", force_add=True)
        OmegaConf.update(cfg, "trainer.devices", [gpu], force_add=True)
        sharing = -(-n_jobs // gpus)
        return {"slot": slot, "gpu": gpu, "jobs_per_gpu": sharing, "threads": threads} | (
            {"mps": mps_active()} if sharing > 1 else {}
        )
    return {"slot": slot, "threads": threads}


def requeued() -> int:
    """How many times Slurm has requeued this job (``$SLURM_RESTART_COUNT``; 0 outside Slurm or on
    the first run). A preempted or timed-out job that submitit requeues (``hydra.launcher.max_num_timeout``),
    or one requeued by hand with ``scontrol requeue``, runs the same config again; ``train`` then
    sets ``resume=true`` so the job continues from its ``last.ckpt`` like any resumed job."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0)


class SlurmAccounting(Callback):
    """Hydra callback (``hydra.callbacks.slurm_accounting``): on a cluster without Slurm accounting
    (``sacct`` fails: "Slurm accounting storage is disabled"), submitit cannot read job states and
    logs "Bypassing sacct error ..., status may be inaccurate" at every poll. It still finds finished
    jobs by their result files, so the warnings carry no news: say so once and silence them
    (logger ``submitit`` to ERROR). sacct's own stderr line ("Slurm accounting storage is
    disabled") still shows at each poll: submitit does not capture it. Does nothing for other
    launchers or where ``sacct`` works."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if (
            "submitit" not in str(config.hydra.launcher.get("_target_", "")).lower()
            or "Local" in config.hydra.launcher._target_
        ):
            return
        sacct = shutil.which("sacct")
        proc = subprocess.run([sacct, "-n", "-j", "1"], capture_output=True, text=True) if sacct else None
        if proc is None or proc.returncode != 0:
            reason = (
                (proc.stderr or proc.stdout).strip().splitlines()[0]
                if proc and (proc.stderr or proc.stdout).strip()
                else "no sacct"
            )
            log.info(
                "Slurm accounting is off (%s): submitit tracks jobs by their result files; its sacct warnings are silenced",
                reason,
            )
            import submitit  # noqa: F401 - configures its logger on import, so set the level after it

            logging.getLogger("submitit").setLevel(logging.ERROR)
