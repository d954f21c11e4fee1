"""The per-method search space of the Optuna preset (conf/hparams_search/dropout_p.yaml).

hydra-optuna-sweeper takes one ``hydra.sweeper.params`` table per study and resolves it while composing,
before the chosen method is known, so the preset names :func:`method_search_space` as the sweeper's
``custom_search_space`` hook, which suggests the chosen method's own search space, declared in its spec
(:meth:`~dropout_lab.dropout.spec.MethodSpec.search_space`: the ``tune`` range of ``p`` and of its arguments).
"""

from __future__ import annotations

from omegaconf import DictConfig


def method_search_space(cfg: DictConfig, trial) -> None:
    """Suggest, in Optuna ``trial``, every parameter of the search space of method ``cfg.dropout.name`` (values in
    the sweeper's override syntax: ``interval(0.05, 0.8)``, ``tag(log, interval(1e-4, 1e-2))``, ``choice(3, 5)``).

    Called by hydra-optuna-sweeper once per trial with the sweep's config; the suggested values become the
    trial job's overrides (``dropout.p=0.31...``).

    Raises:
        ConfigError: for an unknown method, or one whose spec tunes nothing (naming the fix).
    """
    from dropout_lab import compat
    from dropout_lab.dropout import spec
    from dropout_lab.errors import ConfigError

    space = spec.get(cfg.dropout.name).search_space()
    if not space:
        raise ConfigError("dropout", cfg.dropout.name, "its spec tunes nothing: give p or an argument a tune range")
    distributions, _ = compat.optuna_params([f"{key}={value}" for key, value in space.items()])
    for key, distribution in distributions.items():
        compat.suggest(trial, key, distribution)
