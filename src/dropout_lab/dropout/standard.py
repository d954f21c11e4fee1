"""Standard (inverted) dropout: Srivastava et al., "Dropout: A Simple Way to Prevent Neural Networks
from Overfitting", JMLR 15, 2014, eq. (2)-(4); inverted scaling as in ``torch.nn.Dropout``."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from dropout_lab.dropout.base import DropoutMethod


class StandardDropout(DropoutMethod):
    """Inverted dropout: y = x * r / (1 - p), r ~ Bernoulli(1 - p) per element; identity in eval.

    Shapes: (N, *) -> (N, *). Reuses :func:`torch.nn.functional.dropout`. The realised drop fraction
    is measured on the non-zero inputs (a zero input is indistinguishable from a dropped one).

    Args:
        p: drop probability in [0, 1).
        site: the :class:`~dropout_lab.dropout.base.SiteSpec`.

    Raises:
        ValueError: if ``p`` is outside [0, 1).
    """

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(x, self.p)

    def drop(self, x: Tensor, p: float) -> Tensor:
        """Element-wise inverted dropout of ``x`` (N, *) at rate ``p`` (subclasses with schedules pass
        their current rate); records the realised fraction (0 when ``p = 0``) while training."""
        if not self.stochastic:
            return x
        if p == 0.0:
            if self.training:
                self.record(0.0)
            return x
        y = F.dropout(x, p, training=True)
        if self.training:
            nonzero = x != 0
            self.record(((y == 0) & nonzero).sum() / nonzero.sum().clamp(min=1))
        return y
