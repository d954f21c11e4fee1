"""Standard (inverted) dropout: Srivastava et al., "Dropout: A Simple Way to Prevent Neural Networks
from Overfitting", JMLR 15, 2014, eq. (2)-(4); inverted scaling as in ``torch.nn.Dropout``.
Method page: docs/methods/standard.md."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from dropout_lab.dropout.base import DropoutMethod
from dropout_lab.dropout.spec import MethodSpec, rate_p, register


def bernoulli_mask(x: Tensor, p: float, shared_dims: Sequence[int] = ()) -> Tensor:
    """An inverted Bernoulli mask for ``x``, constant along ``shared_dims``.

    Args:
        x: input of shape (N, *).
        p: drop probability in [0, 1).
        shared_dims: axes of ``x`` (never 0, the batch axis) of size 1 in the mask.

    Returns:
        mask of ``x``'s shape with the shared axes set to 1, values 0 (dropped, probability p) or
        1 / (1 - p) (kept), in ``x``'s dtype and device; broadcasts against ``x``.
    """
    shape = [1 if d in shared_dims else s for d, s in enumerate(x.shape)]
    return torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(1.0 - p).div_(1.0 - p)


class StandardDropout(DropoutMethod):
    """Inverted dropout: y = x * r / (1 - p), r ~ Bernoulli(1 - p) per element; identity in eval.

    Shapes: (N, *) -> (N, *). The recorded drop fraction is the fraction of zeros in the mask
    (ReLU zeros of the input do not count); ``p_eq`` equals it for this Bernoulli mask.

    Args:
        p: drop probability in [0, 1).
        site: the :class:`~dropout_lab.dropout.base.SiteSpec`.
    """

    def sample(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mask = bernoulli_mask(x, self.rate())
        return x * mask, mask


SPEC = register(
    MethodSpec(
        key="standard",
        cls=StandardDropout,
        source="Srivastava et al. 2014",
        summary="inverted dropout, `F.dropout`",
        p=rate_p(0.5),
        drop_fraction="~ p (zeros of the mask)",
    )
)
