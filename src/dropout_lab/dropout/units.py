"""Unit-scope views shared by the layer methods that treat a conv channel as one unit (adaptive,
biased, sector-wise): at an fc site a unit is a feature of (N, F); at a conv site it is a channel of
(N, C, H, W), scored by its mean over positions and masked as a whole."""

from __future__ import annotations

from torch import Tensor


def unit_activations(x: Tensor) -> Tensor:
    """Per-unit activations: (N, F) -> (N, F) unchanged; (N, C, *spatial) -> (N, C), the mean over
    the spatial positions of each channel."""
    return x if x.dim() == 2 else x.flatten(2).mean(2)


def per_unit(mask: Tensor, x: Tensor) -> Tensor:
    """Broadcast a per-unit tensor of shape (N, F) (or (F,)) against ``x`` of shape (N, F, *spatial):
    trailing singleton dimensions are appended, so a conv channel is masked/scaled as a whole."""
    return mask.reshape(*mask.shape, *([1] * (x.dim() - 2)))
