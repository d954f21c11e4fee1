"""The LightningModule: logits + cross-entropy, accuracy, and the dropout regularisers in the loss."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.functional.classification import multiclass_calibration_error

from dropout_lab import compat
from dropout_lab import metrics as M
from dropout_lab.dropout.base import DropoutMethod, overrides

#: bins of the expected calibration error (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017,
#: eq. 3: equal-width confidence bins)
ECE_BINS = 15

compat.install()


def calibration(probs: Tensor, y: Tensor, num_classes: int) -> dict[str, float]:
    """Accuracy, negative log-likelihood, expected calibration error and Brier score of predicted class
    probabilities.

    Args:
        probs: (N, num_classes) float, rows summing to 1.
        y: (N,) int64 labels.
        num_classes: classes.

    Returns:
        ``acc`` (fraction), ``nll`` (nats per sample, ``probs`` clamped at 1e-12), ``ece`` (fraction,
        :data:`ECE_BINS` bins, ``torchmetrics`` ``multiclass_calibration_error``) and ``brier``
        (mean over samples of sum_k (p_k - 1[k = y])^2, in [0, 2]; Brier, Monthly Weather Review 1950, eq. 1).
    """
    onehot = F.one_hot(y, num_classes).to(probs.dtype)
    return {
        "acc": (probs.argmax(1) == y).float().mean().item(),
        "nll": F.nll_loss(probs.clamp_min(1e-12).log(), y).item(),
        "ece": multiclass_calibration_error(probs, y, num_classes, n_bins=ECE_BINS).item(),
        "brier": (probs - onehot).pow(2).sum(1).mean().item(),
    }


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two optimizer groups: weight matrices and conv kernels with ``weight_decay``, biases and
    normalisation parameters (1-D tensors) without, as Keras' kernel regularisers in source 003 do;
    one group when ``weight_decay`` is 0 (the same update, one fused kernel call instead of two).

    Note: with SGD and Adam this is L2 in the gradient (decay term ``weight_decay * w``; Keras' l2(λ)
    corresponds to ``weight_decay = 2λ``); AdamW decouples it.
    """
    if not weight_decay:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": 0.0}]
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def fast_kwargs(optimizer: Callable, device: torch.device) -> dict:
    """``{"fused": True}`` when torch has a fused kernel of this optimizer for ``device`` (Adam, AdamW, SGD,
    Adagrad on CPU and CUDA), else ``{"foreach": True}`` where torch has foreach kernels (CUDA), else ``{}``;
    nothing overrides a ``fused``/``foreach`` the user set. One fused Adam step on LeNet5 (CPU) is 72 ATen ops
    instead of 260 (docs/bench_step.md)."""
    cls = getattr(optimizer, "func", optimizer)
    keywords = getattr(optimizer, "keywords", {})
    accepted = inspect.signature(cls).parameters
    if "fused" in keywords or "foreach" in keywords:
        return {}
    if "fused" in accepted and device.type in compat.fused_devices():
        return {"fused": True}
    if "foreach" in accepted and device.type in compat.foreach_devices():
        return {"foreach": True}
    return {}


class Classifier(compat.FastHookName, pl.LightningModule):
    """Image classifier with a pluggable dropout method.

    Logs ``train/loss``, ``train/acc``, ``val/loss``, ``val/acc``, ``val/acc_best``, ``hp_metric``
    (= best validation accuracy, for TensorBoard's HParams tab), and at test time, under
    :attr:`test_prefix` (``test`` unless the caller sets another, e.g. ``test_best``): ``acc``, ``loss``
    (mean cross-entropy = NLL), ``ece`` and ``brier`` (:func:`calibration`) of the deterministic network;
    accuracies are fractions in [0, 1]. After a test, :attr:`test_predictions` holds the per-example
    predictions: ``pred`` (N,) int16 predicted class and ``p_true`` (N,) float16 probability of the true class. For every evaluation variant a dropout method exposes
    (:meth:`~dropout_lab.dropout.base.DropoutMethod.eval_variants`, e.g. EDropout's ``full``) the test loop
    also evaluates the model inside that variant's context and logs ``test/acc_<name>`` and
    ``test/loss_<name>``; ``test/acc`` and ``val/acc`` are the model in its own eval mode (for EDropout the
    pruned network P, COMMON contract 2). The training loss is cross-entropy plus every dropout
    method's :meth:`~dropout_lab.dropout.base.DropoutMethod.extra_loss`.

    Args:
        model: network mapping (N, C, H, W) to logits (N, num_classes).
        optimizer: ``functools.partial`` of a torch optimizer; its ``weight_decay`` keyword (if any)
            is applied to weights only (:func:`param_groups`).
        scheduler: ``functools.partial`` of an LR scheduler stepped once per epoch, or None.
        num_classes: number of classes.
        dataset_size: training samples N (scales the dropout regularisers).

    The training step synchronises nothing with the host: its loss and accuracy are summed on the device
    (``train_loss_sum``, ``train_correct``) and read once per epoch; the optimizer is torch's fused kernel where there is one
    (:func:`fast_kwargs`).

    Raises:
        FloatingPointError: at the end of a training epoch whose mean loss is NaN or infinite.
    """

    def __init__(
        self, model: nn.Module, optimizer: Callable, scheduler: Callable | None, num_classes: int, dataset_size: int
    ) -> None:
        super().__init__()
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.dataset_size = dataset_size
        self.methods = [m for m in model.modules() if isinstance(m, DropoutMethod)]
        self.regularised = [m for m in self.methods if overrides(m, "extra_loss")]
        self.val_acc, self.test_acc = (MulticlassAccuracy(num_classes, average="micro") for _ in range(2))
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        #: this epoch's sum of loss x batch size and of correct predictions, on the device; samples counted on the host
        self.register_buffer("train_loss_sum", torch.zeros(()), persistent=False)
        self.register_buffer("train_correct", torch.zeros((), dtype=torch.long), persistent=False)
        self.train_samples = 0
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # in checkpoints, so a resumed run keeps its best so far
        self.variants = {name: enter for m in self.methods for name, enter in m.eval_variants().items()}
        self.variant_acc = nn.ModuleDict(
            {name: MulticlassAccuracy(num_classes, average="micro") for name in self.variants}
        )
        self.variant_loss = nn.ModuleDict({name: MeanMetric() for name in self.variants})
        self.num_classes = num_classes
        self.test_prefix = M.TEST
        self.test_predictions: dict[str, Tensor] = {}
        self._test_probs: list[tuple[Tensor, Tensor]] = []

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def _step(self, batch: tuple[Tensor, Tensor], acc: MulticlassAccuracy, mean_loss: MeanMetric) -> Tensor:
        x, y = batch
        logits = self.model(x)
        loss = F.cross_entropy(logits, y)
        acc.update(logits, y)
        mean_loss.update(loss.detach())
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        logits = self.model(x)
        loss = F.cross_entropy(logits, y)
        self.train_loss_sum.add_(loss.detach(), alpha=len(y))
        self.train_correct.add_((logits.argmax(1) == y).sum())
        self.train_samples += len(y)
        for method in self.regularised:
            reg = method.extra_loss(self.dataset_size)
            if reg is not None:
                loss = loss + reg
        return loss

    def on_train_epoch_end(self) -> None:
        n = max(self.train_samples, 1)
        loss, acc = self.train_loss_sum / n, self.train_correct / n
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss.item()} in epoch {self.current_epoch}")
        self.log_dict({M.TRAIN_LOSS: loss, M.TRAIN_ACC: acc})
        self.train_loss_sum.zero_()
        self.train_correct.zero_()
        self.train_samples = 0

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, self.val_acc, self.val_loss)

    def on_validation_epoch_end(self) -> None:
        acc = self.val_acc.compute()
        self.val_acc_best.update(acc)
        best = self.val_acc_best.compute()
        self.log_dict({M.VAL_ACC: acc, M.VAL_LOSS: self.val_loss.compute(), M.VAL_ACC_BEST: best, M.HP_METRIC: best})
        self.val_acc.reset()
        self.val_loss.reset()

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.model(x)
        self.test_acc.update(logits, y)
        self.test_loss.update(F.cross_entropy(logits, y))
        self._test_probs.append((F.softmax(logits.float(), dim=1), y))
        for name, enter in self.variants.items():
            with enter():
                self._step(batch, self.variant_acc[name], self.variant_loss[name])

    def on_test_epoch_end(self) -> None:
        prefix = self.test_prefix
        probs, y = (torch.cat(t) for t in zip(*self._test_probs))
        self._test_probs = []
        scores = calibration(probs, y, self.num_classes)
        self.test_predictions = {
            "pred": probs.argmax(1).to(torch.int16).cpu(),
            "p_true": probs.gather(1, y[:, None]).squeeze(1).to(torch.float16).cpu(),
        }
        self.log_dict(
            {
                M.test("acc", prefix): self.test_acc.compute(),
                M.test("loss", prefix): self.test_loss.compute(),
                M.test("ece", prefix): scores["ece"],
                M.test("brier", prefix): scores["brier"],
            }
        )
        self.test_acc.reset()
        self.test_loss.reset()
        for name in self.variants:
            self.log_dict(
                {
                    M.variant("acc", name, prefix): self.variant_acc[name].compute(),
                    M.variant("loss", name, prefix): self.variant_loss[name].compute(),
                }
            )
            self.variant_acc[name].reset()
            self.variant_loss[name].reset()

    def configure_optimizers(self):
        decay = self.optimizer.keywords.get("weight_decay", 0.0)
        optimizer = self.optimizer(param_groups(self.model, decay), **fast_kwargs(self.optimizer, self.device))
        if self.scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler(optimizer), "interval": "epoch"}}
