"""Gaussian dropout: Srivastava et al., "Dropout: A Simple Way to Prevent Neural Networks from
Overfitting", JMLR 15, 2014, sec. 10 (multiplicative N(1, sigma^2) noise, sigma^2 = p / (1 - p));
Wang & Manning, "Fast dropout training", ICML 2013. Method page: docs/methods/gaussian.md."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dropout_lab.dropout.base import DropoutMethod
from dropout_lab.dropout.spec import MethodSpec, rate_p, register


def gaussian_mask(x: Tensor, p: float) -> Tensor:
    """Multiplicative noise ``e ~ N(1, p / (1 - p))`` of ``x``'s shape, dtype and device."""
    return torch.randn_like(x).mul_(math.sqrt(p / (1.0 - p))).add_(1.0)


class GaussianDropout(DropoutMethod):
    """y = x * e, e ~ N(1, p / (1 - p)) per element: the mean and variance of inverted Bernoulli
    dropout at drop probability ``p`` (Srivastava et al. 2014, sec. 10); identity in eval.

    No unit is set to zero, so the recorded ``drop_fraction`` is 0; ``p_eq`` = Var(e) / (1 + Var(e))
    of the noise actually drawn, which is ``p`` in expectation.

    Args:
        p: drop probability whose Bernoulli variance the noise matches, in [0, 1).
        site: the :class:`~dropout_lab.dropout.base.SiteSpec`.

    Shapes: (N, *) -> (N, *).
    """

    def sample(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mask = gaussian_mask(x, self.p)
        return x * mask, mask


SPEC = register(
    MethodSpec(
        key="gaussian",
        cls=GaussianDropout,
        source="Srivastava et al. 2014 sec. 10",
        summary="multiplicative N(1, p/(1-p)) noise",
        p=rate_p(0.5, "Bernoulli rate whose variance the noise matches"),
        p_is_rate=False,
        drop_fraction="0 (nothing zeroed)",
        p_eq="~ p (noise variance)",
    )
)
