"""The ``callbacks`` config group (conf/callbacks/*.yaml) as Lightning callbacks, in lightning-hydra-template's
layout: ``cfg.callbacks`` maps a name to a callback node, so ``callbacks=[default,lr_monitor,early_stopping]``,
``callbacks=many`` and ``callbacks=null`` compose. train.py adds the callbacks every run needs (dropout
controller, history, checkpoint) itself."""

from __future__ import annotations

from collections.abc import Mapping

from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning import Callback


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    """One Lightning callback per node with a ``_target_`` under ``cfg`` (the ``callbacks`` node), in
    config order; ``[]`` for none. Scalar keys (``activation_variance``, ``activation_samples``: switches
    train.py reads) are not callbacks and are skipped."""
    return [instantiate(node) for node in (cfg or {}).values() if isinstance(node, Mapping) and "_target_" in node]
