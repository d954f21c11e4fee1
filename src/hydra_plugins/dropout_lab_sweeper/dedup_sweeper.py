"""dropout-lab's sweeper: Hydra's BasicSweeper that launches every effective configuration once and
writes the sweep's TensorBoard HParams spec. Importing this module (Hydra's plugin scan does, before
it composes any config) makes it the default: it replaces Hydra's ``hydra/sweeper: basic`` entry in
the ConfigStore, so every ``-m`` run uses it, and presets can still pick another sweeper
(``override /hydra/sweeper: optuna``). Its options are BasicSweeper's (``max_batch_size``, ``params``).

A sweep over ``dropout=none,standard dropout.p=0.1,0.3`` asks for ``none`` twice, but ``none``
ignores ``p``, so both jobs would train the same network. Before launching, :class:`DedupSweeper`
composes every job's config (as the launcher will) and keeps the first job of each
:func:`~dropout_lab.dedup.effective_config`. It only filters the job list, so it works with every
launcher (basic, joblib ``gpu_pool``, submitit ``slurm``) and with ``resume=true`` (the same jobs are
kept again). Hydra loads sweepers only from the ``hydra_plugins`` namespace package, hence this file.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore

log = logging.getLogger(__name__)


class DedupSweeper(BasicSweeper):
    """BasicSweeper (Cartesian product of the sweep lists, ``max_batch_size`` jobs a batch) without
    duplicate jobs; writes ``<sweep dir>/hparams_spec.json`` (:func:`~dropout_lab.hparams.write_spec`)
    from the kept jobs' configs before the first launch.

    Args: as BasicSweeper (``max_batch_size``, ``params``).
    """

    def split_arguments(self, overrides: list, max_batch_size: int | None) -> list[list[list[str]]]:
        """BasicSweeper's job list, each effective configuration once, in batches of ``max_batch_size``."""
        # imported here, not at the top: Hydra's plugin scan imports this module in every Hydra process
        from dropout_lab.dedup import effective_config
        from dropout_lab.hparams import write_spec

        (jobs,) = BasicSweeper.split_arguments(overrides, None)
        kept, configs, first = [], [], {}
        for job in jobs:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(job))
            key = effective_config(cfg)
            if key in first:
                log.info("dedup: skipping %s (same configuration as %s)", " ".join(job), " ".join(first[key]))
                continue
            first[key] = job
            kept.append(job)
            configs.append(cfg)
        if len(kept) < len(jobs):
            log.info("dedup: %d of %d jobs duplicate another job and are not launched", len(jobs) - len(kept), len(jobs))
        write_spec(Path(self.config.hydra.sweep.dir), configs)
        return list(self.split_overrides_to_chunks(kept, max_batch_size)) if kept else []


#: ``hydra/sweeper: basic`` (Hydra's default) with :class:`DedupSweeper` as its target
ConfigStore.instance().store(group="hydra/sweeper", name="basic", provider="dropout_lab",
                             node={"_target_": f"{__name__}.DedupSweeper", "max_batch_size": None, "params": None})
