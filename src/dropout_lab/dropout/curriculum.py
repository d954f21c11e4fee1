"""Curriculum dropout: Morerio, Cavazza, Volpi, Vidal & Murino, "Curriculum Dropout", ICCV 2017,
arXiv:1703.06229: the retain probability decays per optimisation step as
theta(t) = (1 - theta_bar) exp(-gamma t) + theta_bar, from 1 (no dropout) towards theta_bar = 1 - p."""

from __future__ import annotations

import math

from torch import Tensor

from dropout_lab.dropout.base import DropoutContext, SiteSpec
from dropout_lab.dropout.standard import StandardDropout


class CurriculumDropout(StandardDropout):
    """Standard inverted dropout at the scheduled rate p(t) = 1 - theta(t) = p (1 - exp(-gamma t)).

    ``t`` is Lightning's ``global_step`` (optimizer steps), read in ``on_train_batch_start`` so the
    schedule survives a resume; before the first hook call t = 0 (no dropout). Not seed 001's linear
    per-epoch ramp. Eval is the identity; with ``mc_sampling`` the last scheduled rate is used.

    Args:
        p: target drop probability 1 - theta_bar, in [0, 1).
        site: the :class:`~dropout_lab.dropout.base.SiteSpec`.
        gamma: decay rate per optimizer step (config key ``dropout.gamma``); the paper's reference
            code uses 1e-3.

    Shapes: (N, *) -> (N, *).

    Raises:
        ValueError: if ``p`` is outside [0, 1) or ``gamma`` is not positive.
    """

    def __init__(self, p: float, site: SiteSpec, gamma: float = 1e-3) -> None:
        super().__init__(p, site)
        if not gamma > 0:
            raise ValueError(f"dropout.gamma={gamma} must be > 0 (decay rate of the keep probability per step)")
        self.gamma = float(gamma)
        self.current_p = 0.0

    def keep_prob(self, step: int) -> float:
        """theta(t) = (1 - theta_bar) exp(-gamma t) + theta_bar with theta_bar = 1 - p (Morerio et al. 2017)."""
        theta_bar = 1.0 - self.p
        return (1.0 - theta_bar) * math.exp(-self.gamma * step) + theta_bar

    def on_train_batch_start(self, ctx: DropoutContext) -> None:
        self.current_p = 1.0 - self.keep_prob(ctx.global_step)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(x, self.current_p)

    def stats(self) -> dict[str, float]:
        return super().stats() | {"current_p": self.current_p}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, gamma={self.gamma}"
