"""The dropout-method interface shared by every method in :mod:`dropout_lab.dropout`.

A model declares its dropout *sites* (:class:`~dropout_lab.dropout.sites.Site`); the ``dropout``
config group names one :class:`DropoutMethod` subclass, which :func:`dropout_lab.config.attach`
instantiates once per occupied site (or once per model for model-level methods). Three tiers:

* layer-local methods implement only :meth:`DropoutMethod.sample` (the stochastic part); the one
  :meth:`DropoutMethod.forward` here handles evaluation, ``p = 0``, Monte-Carlo sampling and recording;
* methods with state, schedules or scores also implement some of the training-time hooks
  (``on_train_batch_start``, ``on_after_backward``, ``on_before_optimizer_step``,
  ``on_train_batch_end``, ``on_train_epoch_end``), which
  :class:`~dropout_lab.controller.DropoutController` calls with a :class:`DropoutContext`;
* methods with learnable rates add a regulariser through :meth:`DropoutMethod.extra_loss`.

Conventions (as ``torch.nn.Dropout``): ``p`` is the drop probability, kept units are rescaled at
training time so that evaluation is the identity, and a method is stochastic only while
``self.training`` (or while ``mc_sampling`` is switched on for Monte-Carlo evaluation). What ``p``
means for each method and how it maps to the recorded rate: docs/methods/README.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from dropout_lab.checks import RATE
from dropout_lab.dropout import passes
from dropout_lab.dropout.spec import Arg, MethodSpec, register

SiteKind = Literal["fc", "conv"]

HOOKS = (
    "on_train_batch_start",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_train_batch_end",
    "on_train_epoch_end",
)


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

    def due(self, every: int = 1, warmup: int = 0) -> bool:
        """The one schedule test for "every ``every`` steps after ``warmup`` steps": True when
        ``global_step >= warmup`` and ``(global_step - warmup) % every == 0`` (so step ``warmup``
        itself is due); False if ``every <= 0``."""
        return every > 0 and self.global_step >= warmup and (self.global_step - warmup) % every == 0

    def every(self, n: int) -> bool:
        """``due(every=n)``: True on every ``n``-th optimizer step, step 0 included."""
        return self.due(every=n)

    @property
    def progress(self) -> float:
        """Fraction of the planned run done, ``global_step / max_steps`` in [0, 1] (schedules relative
        to the run length: curriculum, scheduled DropBlock)."""
        return min(1.0, self.global_step / max(self.max_steps, 1))


class DropoutMethod(nn.Module):
    """Base class of every dropout method; one instance per occupied site.

    :meth:`forward` is written once, here (input and output of the same shape: (N, F) at fc sites,
    (N, C, H, W) at conv sites):

    * not :attr:`stochastic` (eval without Monte-Carlo sampling): :meth:`deterministic`, the
      identity unless a method has a deterministic test-time form (e.g. learned gates);
    * :meth:`rate` == 0: the identity, and while training a drop fraction of 0 is recorded;
    * else ``y, mask = self.sample(x)``; while training (outside an
      :func:`~dropout_lab.dropout.passes.extra_pass`) :meth:`record_sample` records the mask.

    Subclasses implement :meth:`sample`. Recording accumulates on the device (no host sync) in
    persistent buffers, over all training forwards of the run (a resumed run keeps them, as they are in
    the state_dict); :meth:`stats` gives their means. Hooks, :meth:`extra_loss` and extra
    :meth:`stats` are optional.

    Args:
        p: drop probability in [0, 1) (see :attr:`p_meaning` for methods where it is something else).
        site: where the method sits (:class:`SiteSpec`).

    A subclass is declared to the harness by its :class:`~dropout_lab.dropout.spec.MethodSpec` (what ``p`` means,
    its arguments with defaults and accepted values, its default sites), which :func:`~dropout_lab.dropout.spec.register`
    sets as :attr:`spec`. The spec checks each argument on its own (before training, and in
    :meth:`~dropout_lab.dropout.spec.MethodSpec.build`); a constructor checks only what needs several arguments
    or the site, raising ``ValueError`` naming the keys.
    """

    #: the method's declaration, set by :func:`~dropout_lab.dropout.spec.register`
    spec: ClassVar[Any]

    def __init__(self, p: float, site: SiteSpec) -> None:
        super().__init__()
        self.p = float(p)
        self.site = site
        #: when True the method stays stochastic in eval mode (Monte-Carlo dropout evaluation)
        self.mc_sampling = False
        # sums over recorded training forwards (persistent: checkpoints and resumes keep them)
        self.register_buffer("drop_fraction_sum", torch.zeros(()))
        self.register_buffer("p_eq_sum", torch.zeros(()))
        self.register_buffer("recorded", torch.zeros((), dtype=torch.long))

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

    @property
    def recording(self) -> bool:
        """True when a forward pass is recorded: training, outside an extra pass."""
        return self.training and not passes.active()

    def rate(self) -> float:
        """The rate in force now; 0 makes :meth:`forward` the identity. Default ``p``; scheduled
        methods return their current scheduled value."""
        return self.p

    def forward(self, x: Tensor) -> Tensor:
        if not self.stochastic:
            return self.deterministic(x)
        if self.rate() == 0.0:
            if self.recording:
                self.record(0.0, 0.0)
            return x
        y, mask = self.sample(x)
        if self.recording and mask is not None:
            self.record_sample(x, y, mask)
        return y

    def deterministic(self, x: Tensor) -> Tensor:
        """The evaluation forward (not :attr:`stochastic`): the identity (inverted scaling makes the
        expected training output equal ``x``). Methods with a test-time transform override it."""
        return x

    def sample(self, x: Tensor) -> tuple[Tensor, Tensor | float | None]:
        """The stochastic forward: ``(y, mask)``, ``y`` of the shape of ``x``.

        ``mask`` is the multiplicative mask (broadcastable to ``x``, ``y = x * mask``), or a float /
        0-d tensor drop fraction when there is no mask, or None when the method records elsewhere
        (DropConnect masks weights in a hook). Called only when :attr:`stochastic` and ``rate() > 0``.
        """
        raise NotImplementedError(f"{type(self).__name__} implements neither sample() nor forward()")

    def record_sample(self, x: Tensor, y: Tensor, mask: Tensor | float) -> None:
        """Record one training forward from :meth:`sample`'s output: a mask gives its
        :func:`mask_rates`; a number is a drop fraction whose ``p_eq`` is itself (a Bernoulli mask).
        Override for another measure (e.g. ``biased``: live units only)."""
        if isinstance(mask, Tensor) and mask.dim() > 0:
            self.record(*mask_rates(mask))
        else:
            self.record(mask, mask)

    def record(self, drop_fraction: Tensor | float, p_eq: Tensor | float | None = None) -> None:
        """Accumulate one forward's drop fraction and equivalent Bernoulli rate (default: the drop
        fraction) on the device, without a host sync; ignored inside an
        :func:`~dropout_lab.dropout.passes.extra_pass`.

        Args:
            drop_fraction: fraction of units zeroed, in [0, 1] (float or 0-d tensor).
            p_eq: ``Var / (1 + Var)`` of the mask (:func:`mask_rates`), in [0, 1].
        """
        if passes.active():
            return
        p_eq = drop_fraction if p_eq is None else p_eq
        self.drop_fraction_sum.add_(drop_fraction.detach() if isinstance(drop_fraction, Tensor) else drop_fraction)
        self.p_eq_sum.add_(p_eq.detach() if isinstance(p_eq, Tensor) else p_eq)
        self.recorded.add_(1)

    def stats(self) -> dict[str, float]:
        """``p`` and, once a training forward was recorded, the means over all recorded training
        forwards of the run: ``drop_fraction`` (fraction of units zeroed) and ``p_eq`` (equivalent
        Bernoulli rate). Subclasses add what they learn. Reads the device (host sync): call per epoch.
        """
        out = {"p": float(self.p)}
        n = int(self.recorded)
        if n:
            out["drop_fraction"] = float(self.drop_fraction_sum) / n
            out["p_eq"] = float(self.p_eq_sum) / n
        return out

    def reset_stats(self) -> None:
        """Forget per-epoch statistics that subclasses add to :meth:`stats` (called by the controller
        after logging). The recorded drop fractions are never reset: they cover the whole run."""

    def extra_loss(self, dataset_size: int) -> Tensor | None:
        """Regulariser added to the training loss, already scaled by 1/``dataset_size``; None if none."""
        return None

    def eval_variants(self) -> dict[str, Any]:
        """Named alternative networks the test loop also evaluates, as ``{name: f}`` where ``f()``
        returns a context manager inside which the model is that variant (e.g. EDropout's
        ``{"full": ...}``, logged as ``test/acc_full``). Default: none."""
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


def mask_rates(mask: Tensor, where: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Drop fraction and equivalent Bernoulli rate of a multiplicative mask, as 0-d tensors in [0, 1]
    on the mask's device (no host sync).

    ``drop_fraction = mean(mask == 0)``; ``p_eq = V / (1 + V)`` with ``V = Var(m) / E[m]^2`` (for the
    unbiased masks, E[m] = 1 and V is the mask's variance), computed as ``1 - E[m]^2 / E[m^2]``.
    Inverted Bernoulli dropout at rate p has V = p / (1 - p), so p_eq = p = drop_fraction; Gaussian
    noise N(1, s^2) has p_eq = s^2 / (1 + s^2) (Srivastava et al. 2014, sec. 10) and no zeros. The
    mask's scale cancels, so un-rescaled masks (MaxDropout) are measured the same way. An all-zero
    mask gives p_eq = 1.

    Args:
        mask: multiplicative mask of any shape (broadcastable to the input).
        where: optional boolean tensor of the mask's shape: only these elements count (``biased``
            counts live units only); an empty selection gives (0, 0).
    """
    m = mask.detach().float()
    if where is None:  # every element counts: the same sums without a weight tensor (half the kernels per forward)
        n = float(max(m.numel(), 1))
        drop, mean, second = (m == 0).float().sum() / n, m.sum() / n, m.square().sum() / n
        counted = torch.tensor(float(m.numel() > 0), device=m.device)
    else:
        w = where.expand_as(m).float()
        n = w.sum().clamp(min=1.0)
        drop = ((m == 0).float() * w).sum() / n
        mean, second = (m * w).sum() / n, (m.square() * w).sum() / n
        counted = (w.sum() > 0).float()
    p_eq = torch.where(second > 0, 1.0 - mean.square() / second.clamp(min=torch.finfo(m.dtype).tiny), counted)
    return drop, p_eq


def overrides(method: DropoutMethod, hook: str) -> bool:
    """True if ``method``'s class overrides the base implementation of ``hook``."""
    return getattr(type(method), hook) is not getattr(DropoutMethod, hook)


class NoDropout(DropoutMethod):
    """The ``none`` baseline: identity at every site, realised drop fraction 0 recorded at every
    training forward.

    Shapes: (N, *) -> (N, *). ``p`` is accepted (so sweeps over ``dropout.p`` compose) and ignored.
    """

    def rate(self) -> float:
        """Always 0: the base forward is the identity and records 0."""
        return 0.0


SPEC = register(
    MethodSpec(
        key="none",
        cls=NoDropout,
        source="baseline",
        summary="identity (p ignored)",
        p=Arg(0.0, RATE, "ignored (no dropout)"),
        p_is_rate=False,
        default_sites="all",
        sites="all",
        ignored=("p",),
        search={"seed": "range(0, 20)"},
        drop_fraction="0",
        p_eq="0",
    )
)
