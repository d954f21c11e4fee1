"""The dropout methods as plain ``nn.Module`` layers for any PyTorch model, without Lightning's Trainer or
Hydra's composition (in the style of timm's ``layers/drop.py``)::

    from dropout_lab.methods import create

    net = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), create("flipover", p=0.3, num_features=256), nn.Linear(256, 10))

A layer method is one whose effect is its own forward pass: no training-time hook, no regulariser in the loss
and no model-level state (``standard``, ``gaussian``, ``spatial``, ``flipover``, ``maxdropout``, ``biased``,
``sector``, ``none``, ...; :func:`layer_methods` lists them, read from ``conf/dropout/``). It drops in training
mode, is the identity in eval mode, and records its realised drop fraction and equivalent rate
(``layer.stats()``). The other methods need the harness's callback (``python train.py dropout=<key>``).
Each key's defaults come from its ``conf/dropout/<key>.yaml``, the one declaration of the method's
arguments; keyword arguments replace them.
"""

from __future__ import annotations

import importlib
from typing import Any

import yaml

from dropout_lab.dropout.base import HOOKS, DropoutMethod, SiteSpec
from dropout_lab.options import CONF, options

#: config keys of a method's YAML that are not constructor arguments
_NOT_ARGS = ("_target_", "_partial_", "name", "sites", "defaults")


def _spec(name: str, folder: str = "dropout") -> tuple[type[DropoutMethod], dict[str, Any]]:
    """The class and the default arguments of ``conf/<folder>/<name>.yaml`` (the bases of its defaults list,
    ``/base/dropout/scored@_here_``, first)."""
    node = yaml.safe_load((CONF / folder / f"{name}.yaml").read_text())
    args: dict[str, Any] = {}
    for base in node.get("defaults", []):
        if isinstance(base, str) and base != "_self_":
            path = base.split("@")[0].lstrip("/")
            args |= _spec(path.rsplit("/", 1)[1], path.rsplit("/", 1)[0])[1]
    args |= {k: v for k, v in node.items() if k not in _NOT_ARGS}
    module, _, cls = node["_target_"].rpartition(".") if "_target_" in node else ("", "", "")
    return (getattr(importlib.import_module(module), cls) if module else None), args


def is_layer(cls: type[DropoutMethod]) -> bool:
    """Whether ``cls`` works as a plain layer: no training hook, no loss term, no model-level ``attach``."""
    return (
        all(getattr(cls, hook) is getattr(DropoutMethod, hook) for hook in HOOKS)
        and cls.extra_loss is DropoutMethod.extra_loss
        and cls.attach.__func__ is DropoutMethod.attach.__func__
    )


def layer_methods() -> list[str]:
    """The keys of ``conf/dropout/`` whose method :func:`is_layer`."""
    return [name for name in options("dropout") if is_layer(_spec(name)[0])]


def create(name: str, p: float | None = None, num_features: int = 0, kind: str = "fc", **kwargs: Any) -> DropoutMethod:
    """A dropout layer of method ``name`` for inputs of shape (N, F) (``kind="fc"``, F = ``num_features``) or
    (N, C, H, W) (``kind="conv"``, C = ``num_features``); output of the input's shape.

    Args:
        name: a key of ``conf/dropout/`` (:func:`layer_methods`).
        p: the method's ``p`` (docs/methods/README.md says what it means for each); default the YAML's.
        num_features: units or channels (methods that act per unit use it; 0 when unknown).
        kind: ``fc`` or ``conv``.
        **kwargs: the method's other arguments (default: the YAML's).

    Raises:
        ValueError: for an unknown key, or a method that needs the harness (naming the layer methods).
        TypeError, ValueError: from the method's constructor, for arguments it refuses.
    """
    if name not in options("dropout"):
        raise ValueError(f"dropout method {name!r}: unknown; the layer methods are {', '.join(layer_methods())}")
    cls, args = _spec(name)
    if not is_layer(cls):
        raise ValueError(
            f"dropout method {name!r} needs the harness's training hooks or loss term (python train.py dropout={name}); "
            f"the layer methods are {', '.join(layer_methods())}"
        )
    args |= kwargs | ({"p": p} if p is not None else {})
    return cls(site=SiteSpec(name=name, kind=kind, num_features=num_features), **args)
