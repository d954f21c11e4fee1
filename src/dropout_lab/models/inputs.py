"""Input sizes: the checks shared by the torchvision backbones whose strided stems need a minimum size, each
model's minimum, and building a model from its ``conf/model`` node (native ``input_size``)."""

from __future__ import annotations

import importlib
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn


def require_min_size(model: str, image_size: int, min_size: int) -> None:
    """Refuse inputs smaller than ``min_size`` pixels per side before the model is built.

    Raises:
        ValueError: naming the model, both sizes and the fix (``dataset.image_size=224``, seed 004).
    """
    if image_size < min_size:
        raise ValueError(f"{model} needs inputs of at least {min_size}x{min_size} pixels, got {image_size}x{image_size}; "
                         "resize them on the device with dataset.image_size=224 (seed 004)")


def min_size(node: DictConfig | dict) -> int:
    """Smallest input side (pixels) the model of a ``conf/model`` node accepts: the ``MIN_SIZE`` of the
    module defining its ``_target_`` (alexnet 63, squeezenet 17), 1 for models without one (global pooling
    or a size-agnostic flatten)."""
    module = importlib.import_module(node["_target_"].rsplit(".", 1)[0])
    return int(getattr(module, "MIN_SIZE", 1))


def build(node: DictConfig, **kwargs: Any) -> nn.Module:
    """Instantiate a ``conf/model`` node.

    ``input_size`` (the model's native input side, which ``dataset.image_size`` follows unless set) is not
    a constructor argument. ``kwargs`` override the node (``image_size=datamodule.image_size``).

    Raises:
        hydra.errors.InstantiationException: wrapping the constructor's error (e.g. an input below :func:`min_size`).
    """
    return instantiate({key: node[key] for key in node if key != "input_size"}, **kwargs)
