"""Input sizes: the checks shared by the torchvision backbones whose strided stems need a minimum size, and
each model's minimum."""

from __future__ import annotations

import importlib
from collections.abc import Mapping


def require_min_size(model: str, image_size: int, min_size: int) -> None:
    """Refuse inputs smaller than ``min_size`` pixels per side before the model is built.

    Raises:
        ValueError: naming the model, both sizes and the fix (``dataset.image_size=224``, source 004).
    """
    if image_size < min_size:
        raise ValueError(
            f"{model} needs inputs of at least {min_size}x{min_size} pixels, got {image_size}x{image_size}; "
            "resize them on the device with dataset.image_size=224 (source 004)"
        )


def min_size(node: Mapping) -> int:
    """Smallest input side (pixels) the model of a ``conf/model`` node accepts: the ``MIN_SIZE`` of the
    module defining its ``_target_`` (alexnet 63, squeezenet 17), 1 for models without one (global pooling
    or a size-agnostic flatten)."""
    module = importlib.import_module(node["_target_"].rsplit(".", 1)[0])
    return int(getattr(module, "MIN_SIZE", 1))
