"""Flipover: Liang, Niu, Yan & Wang, "Flipover outperforms dropout in deep learning", Visual Computing
for Industry, Biomedicine, and Art 7:4, 2024, doi:10.1186/s42492-024-00153-y.
Method page: docs/methods/flipover.md."""

from __future__ import annotations

import torch
from torch import Tensor

from dropout_lab.checks import POSITIVE
from dropout_lab.dropout.base import DropoutMethod, SiteSpec
from dropout_lab.dropout.spec import Arg, MethodSpec, rate_p, register


def flip_mask(x: Tensor, p: float, flip_factor: float = 1.0) -> Tensor:
    """Multiplier of ``x``'s shape: ``-flip_factor s`` with probability ``p``, else ``s``, with
    ``s = 1 / (1 - p (1 + flip_factor))`` so that its mean is 1. Needs ``p (1 + flip_factor) < 1``."""
    scale = 1.0 / (1.0 - p * (1.0 + flip_factor))
    return torch.where(torch.rand_like(x) < p, -flip_factor * scale, scale).to(x.dtype)


class Flipover(DropoutMethod):
    """Flip a random fraction ``p`` of the units to a negative multiple of themselves, rescaled so the
    expectation is kept; identity in eval.

    ``m = 1`` with probability ``1 - p`` and ``m = -flip_factor`` with probability ``p`` per element;
    ``y = x * m / (1 - p (1 + flip_factor))``, so ``E[y] = x`` (the paper selects units as dropout does
    and multiplies them by a negative factor; its factor and rescaling are not in the abstract, see
    docs/methods/flipover.md). Flipped elements get gradient ``-flip_factor / (1 - p (1 + flip_factor))``.
    No zeros are introduced, so the recorded drop fraction is 0; ``p_eq`` = Var(m) / (1 + Var(m)) of
    the multiplier (1 - (1 - p (1 + a))^2 / (1 - p + p a^2) in expectation, 0.75 at p = 0.25, a = 1).

    Shapes: (N, *) -> (N, *), element-wise (as ``torch.nn.functional.dropout``).

    Args:
        p: flip probability, in [0, 1 / (1 + flip_factor)).
        site: the :class:`~dropout_lab.dropout.base.SiteSpec`.
        flip_factor: magnitude alpha > 0 of the negative multiplier (1: a sign flip).

    Raises:
        ValueError: if ``p >= 1 / (1 + flip_factor)``
            (the expectation-keeping scale would be infinite or negative).
    """

    def __init__(self, p: float, site: SiteSpec, flip_factor: float) -> None:
        super().__init__(p, site)
        if self.p * (1.0 + flip_factor) >= 1.0:
            raise ValueError(
                f"dropout.p={self.p} with dropout.flip_factor={flip_factor}: need p < 1 / (1 + flip_factor) "
                f"= {1.0 / (1.0 + flip_factor):g}, else E[m] = 1 - p (1 + flip_factor) <= 0 cannot be rescaled"
            )
        self.flip_factor = float(flip_factor)

    def sample(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mask = flip_mask(x, self.p, self.flip_factor)
        return x * mask, mask

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, flip_factor={self.flip_factor}"


SPEC = register(
    MethodSpec(
        key="flipover",
        cls=Flipover,
        source="Liang et al. 2024",
        summary="flip the sign of a fraction p, rescaled to keep the expectation",
        p=rate_p(0.1, "flip probability", tune="interval(0.02, 0.4)"),
        p_is_rate=False,
        args={
            "flip_factor": Arg(
                1.0,
                POSITIVE,
                "magnitude of the negative multiplier (1 = sign flip); need p < 1 / (1 + flip_factor)",
                tune="interval(0.5, 2.0)",
            )
        },
        drop_fraction="0 (nothing zeroed)",
        p_eq="1 - (1 - p(1+a))^2 / (1 - p + p a^2): 0.36 at p = 0.1, a = 1",
    )
)
