"""Unit-scope views shared by the methods that treat a conv channel as one unit (adaptive, biased, sector-wise,
Taylor): at an fc site a unit is a feature of (N, F); at a conv site it is a channel of (N, C, H, W), scored by
its mean (:func:`unit_activations`) or sum (:func:`unit_sums`) over positions and masked as a whole
(:func:`broadcast_units`)."""

from __future__ import annotations

from torch import Tensor


def unit_activations(x: Tensor) -> Tensor:
    """Per-unit activations: (N, F) -> (N, F) unchanged; (N, C, *spatial) -> (N, C), the mean over
    the spatial positions of each channel."""
    return x if x.dim() == 2 else x.flatten(2).mean(2)


def unit_sums(t: Tensor) -> Tensor:
    """Per-unit sums: (N, F) -> (N, F) unchanged; (N, C, *spatial) -> (N, C), the sum over the spatial positions of
    each channel (the Taylor criterion of Molchanov et al. 2017 sums a x dL/dy over a feature map's positions)."""
    return t if t.dim() == 2 else t.flatten(2).sum(2)


def broadcast_units(mask: Tensor, x: Tensor) -> Tensor:
    """Broadcast a per-unit tensor of shape (N, F) (or (F,)) against ``x`` of shape (N, F, *spatial):
    trailing singleton dimensions are appended, so a conv channel is masked/scaled as a whole."""
    return mask.reshape(*mask.shape, *([1] * (x.dim() - 2)))
