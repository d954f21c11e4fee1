"""The dropout-method interface shared by every method in :mod:`dropout_lab.dropout`.

A model declares its dropout *sites* (:class:`~dropout_lab.dropout.sites.Site`); the ``dropout``
config group names one :class:`DropoutMethod` subclass, which :func:`~dropout_lab.dropout.sites.attach`
instantiates once per occupied site (or once per model for model-level methods). Three tiers:

* layer-local methods implement only :meth:`DropoutMethod.forward`;
* methods with state, schedules or scores also implement some of the training-time hooks
  (``on_train_batch_start``, ``on_after_backward``, ``on_before_optimizer_step``,
  ``on_train_batch_end``, ``on_train_epoch_end``), which
  :class:`~dropout_lab.dropout.controller.DropoutController` calls with a :class:`DropoutContext`;
* methods with learnable rates add a regulariser through :meth:`DropoutMethod.extra_loss`.

Conventions (as ``torch.nn.Dropout``): ``p`` is the drop probability, kept units are rescaled at
training time so that evaluation is the identity, and a method is stochastic only while
``self.training`` (or while ``mc_sampling`` is switched on for Monte-Carlo evaluation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from dropout_lab.dropout import passes

SiteKind = Literal["fc", "conv"]

HOOKS = (
    "on_train_batch_start",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_train_batch_end",
    "on_train_epoch_end",
)


def check_p(p: float, key: str = "dropout.p") -> float:
    """Validate a drop probability.

    Args:
        p: probability of dropping a unit.
        key: config key named in the error message.

    Returns:
        ``float(p)``.

    Raises:
        ValueError: if ``p`` is not in [0, 1) (``p = 1`` would drop everything and make the inverted
            scale 1/(1-p) infinite).
    """
    if not 0.0 <= float(p) < 1.0:
        raise ValueError(
            f"{key}={p} is outside [0, 1): p is the drop probability (as in torch.nn.Dropout)"
        )
    return float(p)


@dataclass(frozen=True)
class SiteSpec:
    """Where a dropout method sits in a model, handed to the method's constructor.

    Attributes:
        name: dotted module path of the :class:`~dropout_lab.dropout.sites.Site` in the model.
        kind: ``"fc"`` (unit scope, input of shape (N, F)) or ``"conv"`` (channel scope, input of
            shape (N, C, H, W)).
        num_features: F (units) or C (channels).
        prev: the layer whose output the site receives (Linear, Conv2d, a block or a stage), or None.
        next: the layer that consumes the site's output, or None.
    """

    name: str
    kind: SiteKind
    num_features: int
    prev: nn.Module | None = None
    next: nn.Module | None = None


@dataclass
class DropoutContext:
    """What the training-time hooks see, built by the controller once per hook call.

    Attributes:
        global_step: optimizer steps taken so far (Lightning's ``trainer.global_step``).
        epoch: current epoch, from 0.
        max_steps: planned optimizer steps for the whole run (``trainer.estimated_stepping_batches``).
        dataset_size: number of training samples N (for regularisers scaled by 1/N).
        module: the LightningModule; ``module.model`` is the network.
        batch: the current ``(x, y)`` batch, or None outside a batch hook.
        outputs: what ``training_step`` returned (a dict with ``loss``), or None.
    """

    global_step: int
    epoch: int
    max_steps: int
    dataset_size: int
    module: Any
    batch: Any = None
    outputs: Any = None

    def every(self, n: int) -> bool:
        """True on every ``n``-th optimizer step (step 0 included); False if ``n <= 0``."""
        return n > 0 and self.global_step % n == 0


class DropoutMethod(nn.Module):
    """Base class of every dropout method; one instance per occupied site.

    Subclasses implement :meth:`forward` (input and output of the same shape: (N, F) at fc sites,
    (N, C, H, W) at conv sites) and call :meth:`record` with the fraction of units they dropped, so
    the realised drop fraction can be logged. Hooks, :meth:`extra_loss` and :meth:`stats` are
    optional.

    Args:
        p: drop probability in [0, 1).
        site: where the method sits (:class:`SiteSpec`).

    Raises:
        ValueError: if ``p`` is outside [0, 1).
    """

    #: sites the method occupies when the config says ``sites: default``
    default_sites: ClassVar[str] = "fc"
    ignored_args: ClassVar[tuple[str, ...]] = ()

    def __init__(self, p: float, site: SiteSpec) -> None:
        super().__init__()
        self.p = check_p(p)
        self.site = site
        #: when True the method stays stochastic in eval mode (Monte-Carlo dropout evaluation)
        self.mc_sampling = False
        self._drop_sum: Tensor | None = None
        self._drop_n = 0

    @classmethod
    def attach(cls, model: nn.Module, factory: Any, sites: list[Any]) -> list[DropoutMethod]:
        """Install one instance per site and return them.

        Model-level methods (one state for the whole network) override this.

        Args:
            model: the network.
            factory: ``functools.partial`` of the class with the config's arguments; call it with
                ``site=SiteSpec``.
            sites: the :class:`~dropout_lab.dropout.sites.Site` modules the method occupies.
        """
        methods = []
        for site in sites:
            method = factory(site=site.spec(model))
            site.method = method
            methods.append(method)
        return methods

    @property
    def stochastic(self) -> bool:
        """True when the forward pass should sample (training, or Monte-Carlo evaluation)."""
        return self.training or self.mc_sampling

    def record(self, drop_fraction: Tensor | float) -> None:
        """Accumulate the fraction of units dropped by one forward pass (no host sync); ignored inside
        an :func:`~dropout_lab.dropout.passes.extra_pass`."""
        if passes.active():
            return
        value = drop_fraction.detach() if isinstance(drop_fraction, Tensor) else drop_fraction
        self._drop_sum = value if self._drop_sum is None else self._drop_sum + value
        self._drop_n += 1

    def stats(self) -> dict[str, float]:
        """Statistics since the last :meth:`reset_stats`: ``drop_fraction`` (mean realised fraction
        of dropped units per training forward) and the nominal ``p``. Subclasses add what they learn.
        """
        out = {"p": float(self.p)}
        if self._drop_n:
            out["drop_fraction"] = float(self._drop_sum) / self._drop_n
        return out

    def reset_stats(self) -> None:
        """Forget the accumulated drop fractions (called by the controller after logging)."""
        self._drop_sum, self._drop_n = None, 0

    def extra_loss(self, dataset_size: int) -> Tensor | None:
        """Regulariser added to the training loss, already scaled by 1/``dataset_size``; None if none."""
        return None

    def eval_variants(self) -> dict[str, Any]:
        """Named alternative networks the test loop also evaluates, as ``{name: f}`` where ``f()``
        returns a context manager inside which the model is that variant (e.g. EDropout's
        ``{"pruned": ...}``, logged as ``test/acc_pruned``). Default: none."""
        return {}

    def extra_repr(self) -> str:
        return f"p={self.p}, site={self.site.name}"

    # Training-time hooks, dispatched by DropoutController only to methods that override them.
    def on_train_batch_start(self, ctx: DropoutContext) -> None:
        """Before the forward pass of a training batch (schedules, masks from scores)."""

    def on_after_backward(self, ctx: DropoutContext) -> None:
        """After ``loss.backward()``, gradients available (hook-captured scores)."""

    def on_before_optimizer_step(self, ctx: DropoutContext) -> None:
        """Before ``optimizer.step()`` (gradient masking)."""

    def on_train_batch_end(self, ctx: DropoutContext) -> None:
        """After the optimizer step (post-update relevance, weight restore)."""

    def on_train_epoch_end(self, ctx: DropoutContext) -> None:
        """At the end of a training epoch, after validation (per-epoch scores)."""


def overrides(method: DropoutMethod, hook: str) -> bool:
    """True if ``method``'s class overrides the base implementation of ``hook``."""
    return getattr(type(method), hook) is not getattr(DropoutMethod, hook)


class NoDropout(DropoutMethod):
    """The ``none`` baseline: identity at every site, realised drop fraction 0.

    Shapes: (N, *) -> (N, *). ``p`` is accepted (so sweeps over ``dropout.p`` compose) and ignored.
    """

    default_sites: ClassVar[str] = "all"
    ignored_args: ClassVar[tuple[str, ...]] = ("p",)

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            self.record(0.0)
        return x

