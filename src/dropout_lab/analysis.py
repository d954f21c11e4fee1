"""Measurements taken beside training: source 003's activation variance per dropout site, and
Monte-Carlo dropout evaluation (Gal & Ghahramani 2016) with calibration."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dropout_lab import metrics as M
from dropout_lab.dropout.base import DropoutMethod, NoDropout
from dropout_lab.dropout.sites import Site
from dropout_lab.module import calibration


class ActivationVariance(pl.Callback):
    """Per-site activation variance on a fixed validation batch, after every training epoch.

    Source 003's ``ActivationVarianceLogger`` (methods.md §13): the first ``samples`` validation
    inputs go through the network in eval mode (dropout off, as Keras ``predict``); a forward hook on
    every :class:`~dropout_lab.dropout.sites.Site` captures the activation arriving there, shape
    (S, F) or (S, C, H, W), and the callback logs

    * ``actvar/<site>/var``: variance over all its elements (the seed's ``np.var(act)``);
    * ``actvar/<site>/unit_var``: the variance of each unit (fc) or channel (conv, over S, H, W)
      across the batch, averaged over units.

    Values go to the logger (TensorBoard) at the epoch's step and, through ``History``, into the
    per-epoch ``history`` of ``metrics.json``.

    Args:
        samples: size of the fixed validation batch (source 003: 32).
    """

    def __init__(self, samples: int = 32) -> None:
        self.samples = samples
        self.batch: Tensor | None = None

    def on_fit_start(self, trainer, pl_module):
        x, _ = next(iter(trainer.datamodule.val_dataloader()))
        self.batch = x[: self.samples]

    @torch.no_grad()
    def measure(self, model: nn.Module) -> dict[str, float]:
        """Run the fixed batch through ``model`` in eval mode; return ``actvar/...`` values."""
        captured: dict[str, Tensor] = {}
        hooks = [
            m.register_forward_hook(lambda mod, inp, out, name=name: captured.__setitem__(name, inp[0].detach()))
            for name, m in model.named_modules()
            if isinstance(m, Site)
        ]
        was_training = model.training
        try:
            model.eval()(self.batch.to(next(model.parameters()).device))
        finally:
            model.train(was_training)
            for hook in hooks:
                hook.remove()
        out = {}
        for name, act in captured.items():
            units = act.transpose(0, 1).flatten(1) if act.ndim > 2 else act.T  # (F or C, samples[*H*W])
            out[f"actvar/{name}/var"] = act.float().var(unbiased=False).item()
            out[f"actvar/{name}/unit_var"] = units.float().var(dim=1, unbiased=False).mean().item()
        return out

    def on_train_epoch_end(self, trainer, pl_module):
        for key, value in self.measure(pl_module.model).items():
            pl_module.log(key, value)


@torch.no_grad()
def evaluate(model: nn.Module, batches, num_classes: int, mc_samples: int) -> dict[str, float]:
    """Monte-Carlo dropout test metrics (the deterministic network's are logged by the test loop,
    :class:`~dropout_lab.module.Classifier`).

    The model stays in eval mode (BatchNorm uses its running statistics) while every
    :class:`DropoutMethod` is switched to ``mc_sampling``; the predictive distribution is the mean of T
    softmax outputs (Gal & Ghahramani, ICML 2016, eq. 8). Without a stochastic method (only ``none``)
    one pass stands for all T.

    Args:
        model: network, (N, C, H, W) -> logits (N, num_classes).
        batches: iterable of (x, y) on the model's device.
        num_classes: classes.
        mc_samples: T >= 1.

    Returns:
        ``test/mc_acc``, ``test/mc_nll`` (nats per sample), ``test/mc_ece``, ``test/mc_brier``
        (:func:`~dropout_lab.module.calibration`).
    """
    methods = [m for m in model.modules() if isinstance(m, DropoutMethod)]
    passes = mc_samples if any(not isinstance(m, NoDropout) for m in methods) else min(mc_samples, 1)
    was_training = model.training
    model.eval()
    probs, labels = [], []
    try:
        for m in methods:
            m.mc_sampling = True
        for x, y in batches:
            probs.append(torch.stack([F.softmax(model(x).float(), dim=1) for _ in range(passes)]).mean(0))
            labels.append(y)
    finally:
        for m in methods:
            m.mc_sampling = False
        model.train(was_training)
    return {f"{M.TEST}/mc_{k}": v for k, v in calibration(torch.cat(probs), torch.cat(labels), num_classes).items()}
