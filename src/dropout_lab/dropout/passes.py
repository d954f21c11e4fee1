"""Extra forward passes that leave training untouched (used by ``obd`` here; ``shapley``, ``lrp`` and
``edropout`` build on it).

A method that needs its own forward (Hutchinson probes, Shapley coalitions, a relevance pass,
candidate masks) wraps it in :func:`extra_pass`. Inside it:

* BatchNorm running statistics are not changed (snapshot and restore of every running buffer);
* the train/eval flag of every module is restored on exit (``train=`` optionally sets one for the
  pass: ``False`` makes every dropout method the identity and BatchNorm use running statistics);
* the optimizer's gradients are not touched: with ``grad=False`` the pass runs under
  :func:`torch.no_grad`; with ``grad=True`` each parameter's ``.grad`` is set aside before the pass
  and put back after it (use :func:`torch.autograd.grad` inside; a ``backward()`` there is discarded);
* :func:`active` is True, so dropout methods neither record drop fractions nor capture scores from
  the extra pass (see :meth:`~dropout_lab.dropout.base.DropoutMethod.record`).

Design note: methods.md "Cross-cutting design notes" (extra forwards with BatchNorm buffers frozen,
restoring the mode they found).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

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
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats]
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
