"""Gradient-driven dynamic dropout (source 000 "gradient dynamic dropout"; closest paper: Yang & Chen,
"Dynamic DropConnect: Enhancing Neural Network Robustness through Adaptive Edge Dropping Strategies",
arXiv:2502.19948, 2025, which sets per-weight rates from |dL/dW|). Harness form (docs/methods/grad_dynamic.md):
unit/channel level, rates from the magnitude of the loss gradient at the site's output."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from dropout_lab.dropout.scored import ScoredDropout, scored_spec


class GradDynamicDropout(ScoredDropout):
    """Per-unit rates from s_j = mean over batch (and space) of |dL/dy_j| (y: the site's output).

    The gradient of the output exists also for units dropped this step; scores of step t set the masks
    of step t+1 (:class:`~dropout_lab.dropout.scored.ScoredDropout`). Only ranks matter (default rank
    normalisation), so the loss reduction and batch size do not change the rates.

    Shapes: (N, F) or (N, C, H, W) -> same. Args and errors: as
    :class:`~dropout_lab.dropout.scored.ScoredDropout`.
    """

    uses_output_grad: ClassVar[bool] = True

    def score_grad(self, a: Tensor, g: Tensor) -> Tensor:
        """s_j = mean_{n,h,w} |g| -> (F,)."""
        return g.abs().transpose(0, 1).flatten(1).mean(1)


SPEC = scored_spec("grad_dynamic", GradDynamicDropout, "source 000", "per-unit rates from mean abs(dL/dy)")
