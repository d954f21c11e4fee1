"""Batch-wise augmentation and resizing on the training device (no per-sample PIL pipeline).

One implementation serves every datamodule: the in-memory sets pass a :class:`BatchTransform` to
:class:`~dropout_lab.data.batches.TensorBatches`, Flowers-102 applies it after the batch reaches the device.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

AUGMENT_KEYS = ("flip", "crop_padding", "cutout")


def draw(x: Tensor, generator: torch.Generator | None, fn, *args, **kwargs) -> Tensor:
    """``fn(*args, **kwargs)`` (``torch.rand``/``torch.randint``/``torch.randperm``) from ``generator`` (a CPU generator: drawn
    on the CPU and moved to ``x``'s device), or from torch's generator of ``x``'s device when None."""
    if generator is None:
        return fn(*args, device=x.device, **kwargs)
    return fn(*args, generator=generator, **kwargs).to(x.device, non_blocking=True)


def random_flip(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Mirror each image left-right with probability 1/2, drawn from ``generator`` (None: torch's global
    one). Shapes: (N, C, H, W) -> (N, C, H, W)."""
    flip = draw(x, generator, torch.rand, len(x)) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def random_crop(x: Tensor, padding: int, fill: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Pad by ``padding`` pixels with ``fill`` and crop back to (H, W) at a uniform random offset per image
    (torchvision's ``RandomCrop(size, padding)``, batch-wise).

    Args:
        x: images, (N, C, H, W).
        padding: pixels added on each side.
        fill: per-channel pad value, (C,) (black in normalised units: -mean/std).
        generator: the offsets' generator (None: torch's global one).
    """
    n, c, h, w = x.shape
    padded = fill.view(1, c, 1, 1).to(x).expand(n, c, h + 2 * padding, w + 2 * padding).clone()
    padded[:, :, padding : padding + h, padding : padding + w] = x
    dy, dx = (draw(x, generator, torch.randint, 0, 2 * padding + 1, (n, 1)) for _ in range(2))
    rows = (dy + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    cols = (dx + torch.arange(w, device=x.device)).view(n, 1, 1, w)
    return padded[
        torch.arange(n, device=x.device).view(n, 1, 1, 1), torch.arange(c, device=x.device).view(1, c, 1, 1), rows, cols
    ]


def cutout(x: Tensor, size: int, generator: torch.Generator | None = None) -> Tensor:
    """Cutout (DeVries & Taylor, "Improved Regularization of Convolutional Neural Networks with Cutout",
    arXiv 1708.04552, Sec. 3): zero one ``size`` x ``size`` square per image (after normalisation, as the
    reference code), its centre uniform over the image (drawn from ``generator``; None: torch's global
    one), clipped at the border.
    Shapes: (N, C, H, W) -> (N, C, H, W).
    """
    n, _, h, w = x.shape
    cy = draw(x, generator, torch.randint, 0, h, (n, 1))
    cx = draw(x, generator, torch.randint, 0, w, (n, 1))
    ys, xs = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    inside_y = (ys >= cy - size // 2) & (ys < cy + size - size // 2)
    inside_x = (xs >= cx - size // 2) & (xs < cx + size - size // 2)
    hole = inside_y.view(n, 1, h, 1) & inside_x.view(n, 1, 1, w)
    return x.masked_fill(hole, 0.0)


class BatchTransform:
    """Training augmentation (optional) followed by a resize to ``size`` (optional), on whole batches.

    Args:
        size: output side in pixels, or None to keep the input size; bilinear (``F.interpolate``,
            antialiased when shrinking).
        augment: None, or a mapping with ``flip`` (bool), ``crop_padding`` (pixels, 0 = off) and
            ``cutout`` (square side in pixels, 0 = off), applied in that order at the input resolution.
        mean, std: the dataset's normalisation constants (the crop pads with black: -mean/std).

    Shapes: (N, C, H, W) -> (N, C, size, size).

    Raises:
        ValueError: for an unknown augmentation key, a negative padding or cutout, or a size below 1.
    """

    def __init__(self, size: int | None, augment: Mapping | None, mean: Sequence[float], std: Sequence[float]) -> None:
        augment = dict(augment or {})
        unknown = set(augment) - set(AUGMENT_KEYS)
        if unknown:
            raise ValueError(f"dataset.augment has unknown keys {sorted(unknown)}; allowed: {', '.join(AUGMENT_KEYS)}")
        self.flip = bool(augment.get("flip", False))
        self.crop_padding, self.cutout = int(augment.get("crop_padding", 0)), int(augment.get("cutout", 0))
        if self.crop_padding < 0 or self.cutout < 0:
            raise ValueError(
                f"dataset.augment.crop_padding and cutout must be >= 0, got {self.crop_padding}, {self.cutout}"
            )
        if size is not None and size < 1:
            raise ValueError(f"dataset.image_size must be at least 1, got {size}")
        self.size = size
        self.fill = -torch.tensor(mean) / torch.tensor(std)

    @property
    def identity(self) -> bool:
        """True when the transform does nothing (and need not be called)."""
        return not (self.flip or self.crop_padding or self.cutout or self.size)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment (random draws from ``generator``; None: torch's global one) and resize ``x``."""
        if self.flip:
            x = random_flip(x, generator)
        if self.crop_padding:
            x = random_crop(x, self.crop_padding, self.fill, generator)
        if self.cutout:
            x = cutout(x, self.cutout, generator)
        if self.size and x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(
                x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=self.size < x.shape[-1]
            )
        return x
