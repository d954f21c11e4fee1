"""One job per effective configuration: what a sweep job computes, independent of the arguments its
dropout method ignores (``none`` ignores ``p``: :attr:`~dropout_lab.dropout.base.DropoutMethod.ignored_args`).

Used by the default sweeper (``hydra_plugins.dropout_lab_sweeper.DedupSweeper``, which launches each
effective configuration once) and by the report (which keeps one row per configuration and seed of
older sweeps that trained duplicates).
"""

from __future__ import annotations

import json
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from dropout_lab.launch import NEUTRAL_KEYS


def ignored_args(dropout: DictConfig | dict) -> tuple[str, ...]:
    """The arguments the method of a ``dropout`` config node ignores (its class' ``ignored_args``)."""
    return tuple(getattr(get_class(dropout["_target_"]), "ignored_args", ()))


def p_is_rate(dropout: DictConfig | dict) -> bool | None:
    """Whether the method's ``p`` is a drop probability (its class' ``p_is_rate``; None if it does not say)."""
    return getattr(get_class(dropout["_target_"]), "p_is_rate", None)


def effective_config(cfg: DictConfig | dict) -> str:
    """What a job computes, as canonical JSON: the config without ``hydra``, the
    :data:`~dropout_lab.launch.NEUTRAL_KEYS` and the arguments its dropout method ignores
    (interpolations of a DictConfig stay unresolved, e.g. ``output_dir``)."""
    node: dict[str, Any] = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else json.loads(json.dumps(cfg))
    for key in ("hydra", *NEUTRAL_KEYS):
        node.pop(key, None)
    for arg in ignored_args(node["dropout"]):
        node["dropout"].pop(arg, None)
    return json.dumps(node, sort_keys=True, default=str)
