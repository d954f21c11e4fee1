"""The per-method search space of the Optuna preset (conf/hparams_search/dropout_p.yaml).

hydra-optuna-sweeper takes one ``hydra.sweeper.params`` table per study and resolves it while composing,
before the chosen method is known, so the preset keeps a table per method under ``search_space`` and names
:func:`method_search_space` as the sweeper's ``custom_search_space`` hook, which picks the method's row.
"""

from __future__ import annotations

from omegaconf import DictConfig


def method_search_space(cfg: DictConfig, trial) -> None:
    """Suggest, in Optuna ``trial``, every parameter of ``cfg.search_space[<dropout.name>]`` (values in the
    sweeper's override syntax: ``interval(0.05, 0.8)``, ``tag(log, interval(1e-4, 1e-2))``, ``choice(3, 5)``).

    Called by hydra-optuna-sweeper once per trial with the sweep's config; the suggested values become the
    trial job's overrides (``dropout.p=0.31...``).

    Raises:
        ConfigError: if the method has no row in ``search_space`` (naming the key and the fix).
    """
    from dropout_lab import compat
    from dropout_lab.errors import ConfigError

    name = cfg.dropout.name
    if name not in cfg.search_space:
        raise ConfigError(
            f"search_space.{name}",
            None,
            "add a row for this method to conf/hparams_search/dropout_p.yaml, e.g. {dropout.p: 'interval(0.05, 0.8)'}",
        )
    distributions, _ = compat.optuna_params([f"{key}={value}" for key, value in cfg.search_space[name].items()])
    for key, distribution in distributions.items():
        trial._suggest(key, distribution)  # what the sweeper itself does for hydra.sweeper.params
