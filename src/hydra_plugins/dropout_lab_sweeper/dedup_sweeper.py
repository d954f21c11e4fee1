"""dropout-lab's sweeper: Hydra's BasicSweeper that launches every effective configuration once, writes
the sweep's TensorBoard HParams spec and its job list. Importing this module (Hydra's plugin scan does,
before it composes any config) makes it the default: it replaces Hydra's ``hydra/sweeper: basic`` entry in
the ConfigStore, so every ``-m`` run uses it, and presets can still pick another sweeper
(``override /hydra/sweeper: optuna``). Its options are BasicSweeper's (``max_batch_size``, ``params``).

A sweep over ``dropout=none,standard dropout.p=0.1,0.3`` asks for ``none`` twice, but ``none``
ignores ``p``, so both jobs would train the same network. Before launching, :class:`DedupSweeper`
plans every job (:func:`~dropout_lab.dedup.plan`: Hydra composes one config per distinct set of config
groups, and each job follows from it by its ``key=value`` overrides, checked value by value) and keeps the
first job of each :func:`~dropout_lab.job.identity`. A job whose config fails
:func:`~dropout_lab.validate.validate` is launched as it is, to fail alone with its own summary, and is
left out of the dedup and the HParams spec. Each job is then composed once, by the launcher. It only filters the job list, so it works with every launcher
(basic, ``gpu_pool``, ``slurm``) and with ``resume=true`` (the same jobs are kept again). Hydra loads
sweepers only from the ``hydra_plugins`` namespace package, hence this file.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from dropout_lab.compat import BasicSweeper

log = logging.getLogger(__name__)


class DedupSweeper(BasicSweeper):
    """BasicSweeper (Cartesian product of the sweep lists, ``max_batch_size`` jobs a batch) without
    duplicate jobs; writes ``<sweep dir>/hparams_spec.json`` (:func:`~dropout_lab.hparams.write_spec`)
    from the kept, valid jobs' configs and ``<sweep dir>/jobs.json`` (each job's folder, when the sweep's
    ``hydra.sweep.subdir`` is dropout-lab's ``dl_job_dir``) before the first launch.

    Args: as BasicSweeper (``max_batch_size``, ``params``).
    """

    def split_arguments(self, overrides: list, max_batch_size: int | None) -> list[list[list[str]]]:
        """BasicSweeper's job list, each effective configuration once, in batches of ``max_batch_size``."""
        # imported here, not at the top: Hydra's plugin scan imports this module in every Hydra process
        from dropout_lab.dedup import plan
        from dropout_lab.hparams import spec_of, write_spec

        start = time.perf_counter()
        (jobs,) = BasicSweeper.split_arguments(overrides, None)
        load = lambda job: self.hydra_context.config_loader.load_sweep_config(self.config, job)  # noqa: E731
        kept, valid, first = [], [], {}
        for job in plan(load, jobs):
            if job.valid and job.key in first:
                log.info(
                    "dedup: skipping %s (same configuration as %s)", " ".join(job.overrides), " ".join(first[job.key])
                )
                continue
            kept.append(job.overrides)  # an invalid job is launched to fail alone, with its own summary
            if job.valid:
                first[job.key] = job.overrides
                valid.append(job)
        if len(kept) < len(jobs):
            log.info(
                "dedup: %d of %d jobs duplicate another job and are not launched", len(jobs) - len(kept), len(jobs)
            )
        sweep = Path(self.config.hydra.sweep.dir)
        if valid:
            write_spec(
                sweep, spec_of([job.row for job in valid], list(dict.fromkeys(m for job in valid for m in job.metrics)))
            )
        self.write_jobs(sweep, kept)
        log.info("sweep of %d jobs prepared in %.1f s", len(kept), time.perf_counter() - start)
        return list(self.split_overrides_to_chunks(kept, max_batch_size)) if kept else []

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Nothing to do: :func:`~dropout_lab.dedup.plan` composed one config per structure and applied every
        job's overrides (composing whole any job whose key it could not find, so Hydra names it), where
        BasicSweeper composes every job once more here."""

    def write_jobs(self, sweep: Path, jobs: list[list[str]]) -> None:
        """``sweep/jobs.json``: the folder of each job (:func:`~dropout_lab.job.folder_name`), if the
        sweep names its job folders with ``dl_job_dir``."""
        from dropout_lab.job import JOBS_FILE, folder_name

        if "dl_job_dir" not in str(OmegaConf.to_container(self.config.hydra.sweep, resolve=False).get("subdir")):
            return
        exclude = list(self.config.hydra.job.config.override_dirname.exclude_keys)
        sweep.mkdir(parents=True, exist_ok=True)
        (sweep / JOBS_FILE).write_text(json.dumps([folder_name(list(job), exclude) for job in jobs], indent=0))


#: ``hydra/sweeper: basic`` (Hydra's default) with :class:`DedupSweeper` as its target
ConfigStore.instance().store(
    group="hydra/sweeper",
    name="basic",
    provider="dropout_lab",
    node={"_target_": f"{__name__}.DedupSweeper", "max_batch_size": None, "params": None},
)
