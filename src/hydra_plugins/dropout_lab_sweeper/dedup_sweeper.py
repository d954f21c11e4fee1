"""dropout-lab's sweeper, ``hydra/sweeper=dedup`` (conf/hydra/sweeper/dedup.yaml): Hydra's grid sweep (the
Cartesian product of the ``-m`` comma lists and ``hydra.sweeper.params``) that launches every effective
configuration once and writes the sweep's TensorBoard HParams spec and its job list. It is the default through
``hparams_search: grid`` in conf/config.yaml (conf/hparams_search/grid.yaml selects it), so
``hparams_search=dropout_p`` swaps in Optuna and ``hydra/sweeper=basic`` gives Hydra's own sweeper back.
Its options are BasicSweeper's (``max_batch_size``, ``params``).

A sweep over ``dropout=none,standard dropout.p=0.1,0.3`` asks for ``none`` twice, but ``none``
ignores ``p``, so both jobs would train the same network. Before launching, :class:`DedupSweeper`
plans every job (:func:`~dropout_lab.dedup.plan`: Hydra composes one config per distinct set of config
groups, and each job follows from it by its ``key=value`` overrides, checked value by value) and keeps the
first job of each :func:`~dropout_lab.job.identity`. A job whose config fails
:func:`~dropout_lab.validate.validate` is launched as it is, to fail alone with its own summary, and is
left out of the dedup and the HParams spec. Each job is then composed once, by the launcher. It only filters the
job list, so it works with every launcher (basic, ``gpu_pool``, ``slurm``) and with ``resume=true`` (the same jobs
are kept again). Hydra loads sweepers only from the ``hydra_plugins`` namespace package, hence this file.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

from dropout_lab import compat

log = logging.getLogger(__name__)


class DedupSweeper(Sweeper):
    """Hydra's grid sweep without duplicate jobs: launches each effective configuration once, ``max_batch_size``
    jobs a launch (all at once when None), after writing ``<sweep dir>/hparams_spec.json``
    (:func:`~dropout_lab.hparams.write_spec`) from the kept, valid jobs' configs and ``<sweep dir>/jobs.json``
    (each job's folder, when the sweep's ``hydra.sweep.subdir`` is dropout-lab's ``dl_job_dir``).

    Args:
        max_batch_size: jobs handed to the launcher at a time; None: all.
        params: sweep lists a preset declares (``hydra.sweeper.params``: ``{key: "a,b"}``), before the command's.
    """

    def __init__(self, max_batch_size: int | None = None, params: dict[str, str] | None = None) -> None:
        self.max_batch_size, self.params = max_batch_size, dict(params or {})
        self.config: DictConfig | None = None
        self.launcher: Any = None
        self.hydra_context: Any = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        """Keep Hydra's context and the sweep's config; instantiate the configured launcher."""
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        """Launch the jobs of ``params`` and the command's ``arguments`` (:meth:`jobs`), ``max_batch_size`` at a
        time; returns the launcher's results, one list per launch."""
        sweep = Path(self.config.hydra.sweep.dir)
        jobs = self.jobs([*(f"{key}={value}" for key, value in self.params.items()), *arguments])
        sweep.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep / "multirun.yaml")
        size = self.max_batch_size or max(len(jobs), 1)
        returns = []
        for first in range(0, len(jobs), size):
            results = self.launcher.launch(jobs[first : first + size], initial_job_idx=first)
            for result in results:
                _ = result.return_value  # raises a failed job's error, as Hydra's BasicSweeper does
            returns.append(results)
        return returns

    def jobs(self, arguments: list[str]) -> list[list[str]]:
        """The override lists of the sweep's jobs, each effective configuration once (:func:`~dropout_lab.dedup.plan`
        on Hydra's Cartesian product of ``arguments``); writes the HParams spec and ``jobs.json``."""
        # imported here, not at the top: Hydra's plugin scan imports this module in every Hydra process
        from dropout_lab.dedup import plan
        from dropout_lab.hparams import spec_of, write_spec

        start = time.perf_counter()
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        jobs = compat.grid(parser.parse_overrides(arguments))
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
        return kept

    def write_jobs(self, sweep: Path, jobs: list[list[str]]) -> None:
        """``sweep/jobs.json``: the folder of each job (:func:`~dropout_lab.job.folder_name`), if the
        sweep names its job folders with ``dl_job_dir``."""
        from dropout_lab.job import JOBS_FILE, folder_name

        if "dl_job_dir" not in str(OmegaConf.to_container(self.config.hydra.sweep, resolve=False).get("subdir")):
            return
        exclude = list(self.config.hydra.job.config.override_dirname.exclude_keys)
        sweep.mkdir(parents=True, exist_ok=True)
        (sweep / JOBS_FILE).write_text(json.dumps([folder_name(list(job), exclude) for job in jobs], indent=0))
