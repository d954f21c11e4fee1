"""First-order Taylor importance dropout (source 000 "Taylor expansion dropout"). Criterion: Molchanov,
Tyree, Karras, Aila & Kautz, "Pruning Convolutional Neural Networks for Resource Efficient Inference",
ICLR 2017, arXiv:1611.06440, eq. (8) (|mean over positions of a * dL/da|, averaged over examples);
see also Molchanov et al., "Importance Estimation for Neural Network Pruning", CVPR 2019,
arXiv:1906.10771 (docs/methods/taylor.md)."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from dropout_lab.dropout.scored import ScoredDropout, scored_spec
from dropout_lab.dropout.units import unit_sums


class TaylorDropout(ScoredDropout):
    """Per-unit rates from the first-order Taylor estimate of the loss change when a unit is removed:
    s_j = mean_n |sum_{h,w} a_{n,j,h,w} * dL/dy_{n,j,h,w}| (1611.06440 eq. 8, summed instead of averaged
    over positions; a rank-invariant change).

    ``a`` is the pre-mask activation and ``dL/dy`` the gradient of the site's output (docs/methods/scored.md:
    dL/da would be 0 for dropped units and bias their score to 0). No per-layer L2 normalisation is
    needed: rates come from ranks within the site. Scores of step t set the masks of step t+1.

    Shapes: (N, F) or (N, C, H, W) -> same. Args and errors: as
    :class:`~dropout_lab.dropout.scored.ScoredDropout`.
    """

    uses_output_grad: ClassVar[bool] = True

    def score_grad(self, a: Tensor, g: Tensor) -> Tensor:
        """s_j = mean_n |sum_{h,w} a * g| -> (F,)."""
        return unit_sums(a * g).abs().mean(0)


SPEC = scored_spec(
    "taylor",
    TaylorDropout,
    "source 000; Molchanov et al. 2017",
    "abs(a dL/dy): pre-mask activation a times the gradient of the site's output y (dL/da is 0 where dropped)",
)
