"""Gaussian dropout: Srivastava et al., "Dropout: A Simple Way to Prevent Neural Networks from
Overfitting", JMLR 15, 2014, sec. 10 (multiplicative N(1, sigma^2) noise, sigma^2 = p / (1 - p));
Wang & Manning, "Fast dropout training", ICML 2013."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from dropout_lab.dropout.base import DropoutMethod, SiteSpec


class GaussianDropout(DropoutMethod):
    """y = x * e, e ~ N(1, p / (1 - p)) per element: the mean and variance of inverted Bernoulli
    dropout at drop probability ``p`` (Srivastava et al. 2014, sec. 10); identity in eval.

    No unit is set to zero, so the recorded ``drop_fraction`` is 0. ``stats()`` adds
    ``equivalent_p`` = v / (1 + v), v the realised mean of (e - 1)^2: the Bernoulli drop probability
    with the same noise variance as the noise actually drawn (it matches ``p`` in expectation).

    Args:
        p: drop probability whose Bernoulli variance the noise matches, in [0, 1).
        site: the :class:`~dropout_lab.dropout.base.SiteSpec`.

    Shapes: (N, *) -> (N, *).

    Raises:
        ValueError: if ``p`` is outside [0, 1).
    """

    default_sites: ClassVar[str] = "fc"

    def __init__(self, p: float, site: SiteSpec) -> None:
        super().__init__(p, site)
        self.std = math.sqrt(self.p / (1.0 - self.p))
        self._var_sum: Tensor | float = 0.0

    def forward(self, x: Tensor) -> Tensor:
        if not self.stochastic or self.p == 0.0:
            if self.training:
                self.record(0.0)
            return x
        noise = torch.randn_like(x).mul_(self.std)
        if self.training:
            self.record(0.0)
            self._var_sum = self._var_sum + noise.square().mean().detach()
        return x * noise.add_(1.0)

    def stats(self) -> dict[str, float]:
        out = super().stats()
        if self._drop_n:
            var = float(self._var_sum) / self._drop_n
            out["equivalent_p"] = var / (1.0 + var)
        return out

    def reset_stats(self) -> None:
        super().reset_stats()
        self._var_sum = 0.0
