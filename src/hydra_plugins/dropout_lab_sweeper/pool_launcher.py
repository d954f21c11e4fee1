"""``hydra/launcher=gpu_pool``: Hydra's joblib launcher, one loky worker per slot (:mod:`dropout_lab.pool`).
Hydra loads launchers only from the ``hydra_plugins`` namespace package, hence this file."""

from __future__ import annotations

from collections.abc import Sequence

from hydra.core.utils import JobReturn

from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher


class PoolLauncher(JoblibLauncher):
    """``JoblibLauncher`` (same options; ``n_jobs`` workers, ``pre_dispatch``/``batch_size`` unused: one job per
    free worker) whose dead worker costs its own job only (:func:`dropout_lab.pool.launch`)."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from dropout_lab.pool import launch  # not at import: Hydra's plugin scan imports this module everywhere

        return launch(self, job_overrides, initial_job_idx)
