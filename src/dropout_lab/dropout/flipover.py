"""Flipover: Liang, Niu, Yan & Wang, "Flipover outperforms dropout in deep learning", Visual Computing
for Industry, Biomedicine, and Art 7:4, 2024, doi:10.1186/s42492-024-00153-y."""

from __future__ import annotations

import torch
from torch import Tensor

from dropout_lab.dropout.base import DropoutMethod, SiteSpec


class Flipover(DropoutMethod):
    """Flip a random fraction ``p`` of the units to a negative multiple of themselves, rescaled so the
    expectation is kept; identity in eval.

    ``m = 1`` with probability ``1 - p`` and ``m = -flip_factor`` with probability ``p`` per element;
    ``y = x * m / (1 - p (1 + flip_factor))``, so ``E[y] = x`` (the paper selects units as dropout does
    and multiplies them by a negative factor; its factor and rescaling are not in the abstract, see
    ``docs/methods_layer_b.md``). No zeros are introduced. Flipped elements get gradient
    ``-flip_factor / (1 - p (1 + flip_factor))``. The recorded "drop fraction" is the realised fraction
    of flipped elements.

    Shapes: (N, *) -> (N, *), element-wise (as ``torch.nn.functional.dropout``).

    Args:
        p: flip probability, in [0, 1 / (1 + flip_factor)).
        site: the :class:`~dropout_lab.dropout.base.SiteSpec`.
        flip_factor: magnitude alpha > 0 of the negative multiplier (1: a sign flip).

    Raises:
        ValueError: if ``p`` is outside [0, 1), ``flip_factor <= 0``, or ``p >= 1 / (1 + flip_factor)``
            (the expectation-keeping scale would be infinite or negative).
    """

    def __init__(self, p: float, site: SiteSpec, flip_factor: float = 1.0) -> None:
        super().__init__(p, site)
        if not flip_factor > 0.0:
            raise ValueError(f"dropout.flip_factor={flip_factor} must be > 0")
        if self.p * (1.0 + flip_factor) >= 1.0:
            raise ValueError(
                f"dropout.p={self.p} with dropout.flip_factor={flip_factor}: need p < 1 / (1 + flip_factor) "
                f"= {1.0 / (1.0 + flip_factor):g}, else E[m] = 1 - p (1 + flip_factor) <= 0 cannot be rescaled"
            )
        self.flip_factor = float(flip_factor)
        self.scale = 1.0 / (1.0 - self.p * (1.0 + self.flip_factor))

    def forward(self, x: Tensor) -> Tensor:
        if not self.stochastic or self.p == 0.0:
            return x
        flip = torch.rand_like(x) < self.p
        if self.training:
            self.record(flip.float().mean())
        return x * torch.where(flip, -self.flip_factor * self.scale, self.scale)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, flip_factor={self.flip_factor}"
