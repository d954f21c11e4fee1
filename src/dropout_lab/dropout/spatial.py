"""SpatialDropout: Tompson, Goroshin, Jain, LeCun & Bregler, "Efficient Object Localization Using
Convolutional Networks", CVPR 2015, arXiv:1411.4280, sec. 3.2 (drop whole feature maps); the mask of
``torch.nn.Dropout2d``. Method page: docs/methods/spatial.md."""

from __future__ import annotations

from torch import Tensor

from dropout_lab.dropout.base import DropoutMethod
from dropout_lab.dropout.spec import MethodSpec, rate_p, register
from dropout_lab.dropout.standard import bernoulli_mask


def channel_mask(x: Tensor, p: float) -> Tensor:
    """Inverted Bernoulli mask of shape (N, C, 1, ..., 1) for ``x`` of shape (N, C, *): shared along
    every axis after the channel axis (built explicitly: ``F.dropout2d`` changes meaning on 2-D/3-D
    inputs)."""
    return bernoulli_mask(x, p, tuple(range(2, x.dim())))


class SpatialDropout(DropoutMethod):
    """Channel dropout: y = x * r / (1 - p), r ~ Bernoulli(1 - p) of shape (N, C, 1, 1); identity in eval.

    At an fc site (N, F) this is standard per-unit dropout. The recorded drop fraction is the
    fraction of dropped (sample, channel) pairs.

    Args:
        p: drop probability in [0, 1).
        site: the :class:`~dropout_lab.dropout.base.SiteSpec`.

    Shapes: (N, C, H, W) -> (N, C, H, W) (any (N, C, *)).
    """

    def sample(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mask = channel_mask(x, self.p)
        return x * mask, mask


SPEC = register(
    MethodSpec(
        key="spatial",
        cls=SpatialDropout,
        source="Tompson et al. 2015",
        summary="whole-channel dropout (Dropout2d's mask)",
        p=rate_p(0.2, "drop probability (of a channel)", tune="interval(0.05, 0.6)"),
        default_sites="conv",
        sites="conv",
        drop_fraction="~ p (dropped sample-channel pairs)",
    )
)
