"""L2-norm dynamic dropout (source 000 "L2 dynamic dropout"; related: Gomez et al., "Learning Sparse
Networks Using Targeted Dropout", arXiv:1905.13678, 2019, which drops low-norm units; docs/methods/l2_dynamic.md)."""

from __future__ import annotations

from torch import Tensor

from dropout_lab.dropout.base import SiteSpec
from dropout_lab.dropout.scored import ScoredDropout, incoming_weight, scored_spec


class L2DynamicDropout(ScoredDropout):
    """Per-unit rates from the L2 norm of each unit's incoming weights: s_j = ||W_prev[j]||_2, the row
    of the preceding Linear (F, in) or the filter of the preceding Conv2d (C, in, k, k) (bias excluded).

    Recomputed from the current weights every ``update_every`` training forwards. With BatchNorm
    between the layer and the site the norm is functionally meaningless (docs/methods/l2_dynamic.md); LeNet5 and
    the MLP have none.

    Shapes: (N, F) or (N, C, H, W) -> same. Args: as :class:`~dropout_lab.dropout.scored.ScoredDropout`.

    Raises:
        ValueError: if ``site.prev`` has no weight with one row/filter per unit, or for a bad key.
    """

    def __init__(self, p: float, site: SiteSpec, **kwargs) -> None:
        super().__init__(p, site, **kwargs)
        incoming_weight(site, self.spec.key)

    def score_input(self, x: Tensor) -> Tensor:
        """s_j = ||W_prev[j]||_2 -> (F,) (``x`` is unused)."""
        return incoming_weight(self.site, self.spec.key).detach().flatten(1).norm(dim=1)


SPEC = scored_spec("l2_dynamic", L2DynamicDropout, "source 000", "per-unit rates from the L2 norm of incoming weights")
