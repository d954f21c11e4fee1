"""SpatialDropout: Tompson, Goroshin, Jain, LeCun & Bregler, "Efficient Object Localization Using
Convolutional Networks", CVPR 2015, arXiv:1411.4280, sec. 3.2 (drop whole feature maps); the mask of
``torch.nn.Dropout2d``."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from dropout_lab.dropout.base import SiteSpec
from dropout_lab.dropout.variational import VariationalDropout


class SpatialDropout(VariationalDropout):
    """Channel dropout: y = x * r / (1 - p), r ~ Bernoulli(1 - p) of shape (N, C, 1, 1); identity in eval.

    The mask ``torch.nn.Dropout2d`` draws, built explicitly (methods.md sec. 4: ``F.dropout2d``
    changes meaning on 2-D/3-D inputs): it is shared along every axis after the channel axis, so at an
    fc site (N, F) it is standard per-unit dropout. The realised drop fraction is the fraction of
    dropped (sample, channel) pairs.

    Args:
        p: drop probability in [0, 1).
        site: the :class:`~dropout_lab.dropout.base.SiteSpec`.

    Shapes: (N, C, H, W) -> (N, C, H, W) (any (N, C, *)).

    Raises:
        ValueError: if ``p`` is outside [0, 1).
    """

    default_sites: ClassVar[str] = "conv"

    def __init__(self, p: float, site: SiteSpec) -> None:
        super().__init__(p, site)

    def dims(self, x: Tensor) -> tuple[int, ...]:
        """Every axis after the channel axis."""
        return tuple(range(2, x.dim()))
