"""The dropout methods as plain ``nn.Module`` layers for any PyTorch model, without Lightning's Trainer or
Hydra's composition (in the style of timm's ``layers/drop.py``)::

    from dropout_lab.methods import create

    net = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), create("flipover", p=0.3, num_features=256), nn.Linear(256, 10))

A layer method is one whose effect is its own forward pass: no training-time hook, no regulariser in the loss
and no model-level state (``standard``, ``gaussian``, ``spatial``, ``flipover``, ``maxdropout``, ``biased``,
``sector``, ``none``, ...; :func:`layer_methods` lists them, read from the specs). It drops in training
mode, is the identity in eval mode, and records its realised drop fraction and equivalent rate
(``layer.stats()``). The other methods need the harness's callback (``python train.py dropout=<key>``).
Each key's defaults and accepted values come from its spec (:mod:`dropout_lab.dropout.spec`), the one
declaration of the method's arguments; keyword arguments replace the defaults and are checked first.
"""

from __future__ import annotations

from typing import Any

from dropout_lab.dropout import spec
from dropout_lab.dropout.base import HOOKS, DropoutMethod, SiteSpec


def is_layer(cls: type[DropoutMethod]) -> bool:
    """Whether ``cls`` works as a plain layer: no training hook, no loss term, no model-level ``attach``."""
    return (
        all(getattr(cls, hook) is getattr(DropoutMethod, hook) for hook in HOOKS)
        and cls.extra_loss is DropoutMethod.extra_loss
        and cls.attach.__func__ is DropoutMethod.attach.__func__
    )


def layer_methods() -> list[str]:
    """The keys of the methods whose class :func:`is_layer`."""
    return [key for key, method in spec.specs().items() if is_layer(method.cls)]


def create(name: str, p: float | None = None, num_features: int = 0, kind: str = "fc", **kwargs: Any) -> DropoutMethod:
    """A dropout layer of method ``name`` for inputs of shape (N, F) (``kind="fc"``, F = ``num_features``) or
    (N, C, H, W) (``kind="conv"``, C = ``num_features``); output of the input's shape.

    Args:
        name: a method key (:func:`layer_methods`).
        p: the method's ``p`` (docs/methods/README.md says what it means for each); default the spec's.
        num_features: units or channels (methods that act per unit use it; 0 when unknown).
        kind: ``fc`` or ``conv``.
        **kwargs: the method's other arguments (default: the spec's).

    Raises:
        BadValue (a ValueError): for an unknown key, or a value the method's spec refuses (naming ``dropout.<arg>``).
        ValueError: for a method that needs the harness (naming the layer methods), or a combination of
            arguments the constructor refuses.
    """
    method = spec.get(name)
    if not is_layer(method.cls):
        raise ValueError(
            f"dropout method {name!r} needs the harness's training hooks or loss term (python train.py dropout={name}); "
            f"the layer methods are {', '.join(layer_methods())}"
        )
    args = kwargs | ({"p": p} if p is not None else {})
    return method.build(SiteSpec(name=name, kind=kind, num_features=num_features), **args)
