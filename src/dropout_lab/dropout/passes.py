"""Extra forward passes that leave training untouched, and one pass shared by all sites of a method
(used by ``obd``, ``lrp``, ``shapley`` and ``edropout``; docs/methods/scored.md).

A method that needs its own forward (Hutchinson probes, Shapley coalitions, a relevance pass,
candidate masks) wraps it in :func:`extra_pass`. A method whose one pass serves every site it
occupies (one Hessian pass, one relevance pass) mixes in :class:`SharedPass`: its first instance
(:attr:`SharedPass.leads`) runs the pass for all :attr:`SharedPass.peers` (EDropout is one instance
for all sites, so it needs no mixin). Inside :func:`extra_pass`:

* BatchNorm running statistics are not changed (snapshot and restore of every running buffer);
* the train/eval flag of every module is restored on exit (``train=`` optionally sets one for the
  pass: ``False`` makes every dropout method the identity and BatchNorm use running statistics);
* the optimizer's gradients are not touched: with ``grad=False`` the pass runs under
  :func:`torch.no_grad`; with ``grad=True`` each parameter's ``.grad`` is set aside before the pass
  and put back after it (use :func:`torch.autograd.grad` inside; a ``backward()`` there is discarded);
* :func:`active` is True, so dropout methods neither record drop fractions nor capture scores from
  the extra pass (see :meth:`~dropout_lab.dropout.base.DropoutMethod.record`).

Design: extra forwards with BatchNorm buffers frozen, restoring the mode they found (docs/methods/scored.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from dropout_lab import compat

_depth = 0


def active() -> bool:
    """True while an :func:`extra_pass` is running (nested passes included)."""
    return _depth > 0


@contextmanager
def extra_pass(model: nn.Module, *, train: bool | None = None, grad: bool = False) -> Iterator[nn.Module]:
    """Run extra forwards (and, with ``grad=True``, their own backward) through ``model`` without side effects.

    Args:
        model: the network (any ``nn.Module``).
        train: None keeps every module's current train/eval flag for the pass; True/False calls
            ``model.train(train)`` for the pass. The flags found on entry are restored on exit.
        grad: False runs the pass under :func:`torch.no_grad`; True enables autograd and restores
            every parameter's ``.grad`` (the same tensor object, or None) on exit.

    Yields:
        ``model``.

    Example::

        with extra_pass(model, train=False, grad=True):
            loss = F.cross_entropy(model(x), y)
            g = torch.autograd.grad(loss, params, create_graph=True)
    """
    global _depth
    modes = [(m, m.training) for m in model.modules()]
    norms = [m for m in model.modules() if isinstance(m, compat.NORM_LAYERS) and m.track_running_stats]
    running = [{k: b.clone() for k, b in m.named_buffers(recurse=False) if b is not None} for m in norms]
    grads = [(p, p.grad) for p in model.parameters()]
    for p, _ in grads:
        p.grad = None
    if train is not None:
        model.train(train)
    _depth += 1
    try:
        with torch.set_grad_enabled(grad):
            yield model
    finally:
        _depth -= 1
        for m, mode in modes:
            m.training = mode
        with torch.no_grad():
            for m, saved in zip(norms, running):
                for k, b in saved.items():
                    getattr(m, k).copy_(b)
        for p, g in grads:
            p.grad = g


class SharedPass:
    """Mixin for a :class:`~dropout_lab.dropout.base.DropoutMethod` whose instances (one per site)
    share one extra pass: :meth:`attach` links the instances of one model, the first one
    (:attr:`leads`) runs the pass and hands each of :attr:`peers` its result. An instance built
    without :meth:`attach` is its own only peer. Put it before the method's base class
    (``class OBDDropout(SharedPass, ScoredDropout)``)."""

    _peers: list | None = None

    @classmethod
    def attach(cls, model: nn.Module, factory: Any, sites: list[Any]) -> list:
        """One instance per site (as the method's base class), all linked as peers."""
        methods = super().attach(model, factory, sites)
        for method in methods:
            method._peers = methods
        return methods

    @property
    def peers(self) -> list:
        """The instances of this method in the model, in forward order (``[self]`` if not attached)."""
        return self._peers or [self]

    @property
    def leads(self) -> bool:
        """True for the instance that runs the shared pass (the first peer)."""
        return self.peers[0] is self
