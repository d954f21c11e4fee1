"""The one Lightning callback that drives every dropout method's training-time hooks and logs its stats."""

from __future__ import annotations

import math
import sys
from typing import Any

import pytorch_lightning as pl

from dropout_lab.dropout.base import HOOKS, DropoutContext, DropoutMethod, overrides


class DropoutController(pl.Callback):
    """Dispatch the hooks of :class:`DropoutMethod` modules and log their :meth:`~DropoutMethod.stats`.

    Only methods that override a hook are called for it, so layer-local methods cost nothing here.
    At each training-epoch end it logs ``dropout/<site>/<stat>`` per site, and ``dropout/drop_fraction``
    and ``dropout/p_eq`` (means over sites of the per-site means over all training forwards so far:
    the run's mean at the last epoch) to the loggers and ``trainer.callback_metrics``, then calls
    :meth:`~DropoutMethod.reset_stats` for the methods' per-epoch extras.

    Args:
        methods: the method modules returned by :func:`~dropout_lab.config.attach`.
        dataset_size: number of training samples N.
    """

    def __init__(self, methods: list[DropoutMethod], dataset_size: int) -> None:
        self.methods = methods
        self.dataset_size = dataset_size
        self.hooked = {hook: [m for m in methods if overrides(m, hook)] for hook in HOOKS}
        self.max_steps = 1

    def on_train_start(self, trainer, pl_module):
        # computed once (it re-reads the dataloader lengths); infinite training counts as sys.maxsize steps
        steps = trainer.estimated_stepping_batches
        self.max_steps = max(int(steps) if math.isfinite(steps) else sys.maxsize, 1)

    def _dispatch(
        self, hook: str, trainer: pl.Trainer, module: pl.LightningModule, batch: Any = None, outputs: Any = None
    ) -> None:
        if not self.hooked[hook]:
            return
        ctx = DropoutContext(
            global_step=trainer.global_step,
            epoch=trainer.current_epoch,
            max_steps=self.max_steps,
            dataset_size=self.dataset_size,
            module=module,
            batch=batch,
            outputs=outputs,
        )
        for method in self.hooked[hook]:
            getattr(method, hook)(ctx)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._dispatch("on_train_batch_start", trainer, pl_module, batch)

    def on_after_backward(self, trainer, pl_module):
        self._dispatch("on_after_backward", trainer, pl_module)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self._dispatch("on_before_optimizer_step", trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._dispatch("on_train_batch_end", trainer, pl_module, batch, outputs)

    def on_train_epoch_end(self, trainer, pl_module):
        self._dispatch("on_train_epoch_end", trainer, pl_module)
        metrics, rates = {}, {"drop_fraction": [], "p_eq": []}
        for method in self.methods:
            stats = method.stats()
            metrics.update({f"dropout/{method.site.name}/{key}": value for key, value in stats.items()})
            for key, values in rates.items():
                if key in stats:
                    values.append(stats[key])
            method.reset_stats()
        metrics |= {f"dropout/{key}": sum(values) / len(values) for key, values in rates.items() if values}
        if metrics:
            pl_module.log_dict(metrics, on_step=False, on_epoch=True)
