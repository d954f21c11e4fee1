"""Variational (shared-mask) dropout: Gal & Ghahramani, "A Theoretically Grounded Application of
Dropout in Recurrent Neural Networks", NeurIPS 2016, arXiv:1512.05287, sec. 3-4 (one mask per
sequence, reused at every time step); seed 001's temporal dropout, slide 14."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from dropout_lab.dropout.base import DropoutMethod, SiteSpec


def shared_mask(x: Tensor, p: float, shared_dims: Sequence[int]) -> Tensor:
    """An inverted Bernoulli mask for ``x`` that is constant along ``shared_dims``.

    Args:
        x: input of shape (N, *).
        p: drop probability in [0, 1).
        shared_dims: axes of ``x`` (never 0, the batch axis) of size 1 in the mask.

    Returns:
        mask of shape ``x.shape`` with the shared axes set to 1, values 0 (dropped, probability p)
        or 1 / (1 - p) (kept); broadcasts against ``x``.
    """
    shape = [1 if d in shared_dims else s for d, s in enumerate(x.shape)]
    return torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(1.0 - p).div_(1.0 - p)


class VariationalDropout(DropoutMethod):
    """Dropout whose mask is sampled once per sample and shared along chosen axes; identity in eval.

    y = x * r / (1 - p), r ~ Bernoulli(1 - p) of shape ``x.shape`` with size 1 along ``shared_dims``
    (Gal & Ghahramani 2016, sec. 4: the same mask at every time step of a sequence).

    Default axes by input rank (``shared_dims: null``): (N, T, F) sequences share along T (dim 1), one
    mask per (sample, feature) as in the paper; (N, C, H, W) maps share along H, W (dims 2, 3), which is
    channel dropout (:class:`~dropout_lab.dropout.spatial.SpatialDropout`); (N, F) at fc sites has no
    axis to share, so the method is standard per-unit dropout there (Gal & Ghahramani sec. 3: dropout
    in a feed-forward net is the same variational approximation). The realised drop fraction is the
    fraction of zeros in the (smaller) mask.

    Args:
        p: drop probability in [0, 1).
        site: the :class:`~dropout_lab.dropout.base.SiteSpec`.
        shared_dims: axes of the input along which the mask is shared (config key
            ``dropout.shared_dims``), or None for the rank-based default above.

    Raises:
        ValueError: if ``p`` is outside [0, 1) or ``shared_dims`` contains an axis < 1 (axis 0 is the
            batch: masks are per sample); at the first forward, if an axis is >= the input's rank.
    """

    def __init__(self, p: float, site: SiteSpec, shared_dims: Sequence[int] | None = None) -> None:
        super().__init__(p, site)
        if shared_dims is not None and any(int(d) < 1 for d in shared_dims):
            raise ValueError(f"dropout.shared_dims={list(shared_dims)}: axes must be >= 1 (axis 0 is the batch, masks are per sample)")
        self.shared_dims = None if shared_dims is None else tuple(int(d) for d in shared_dims)

    def dims(self, x: Tensor) -> tuple[int, ...]:
        """The axes of ``x`` that share one mask value."""
        if self.shared_dims is None:
            return {3: (1,), 4: (2, 3)}.get(x.dim(), ())
        if max(self.shared_dims) >= x.dim():
            raise ValueError(f"dropout.shared_dims={list(self.shared_dims)} has an axis beyond the input of shape {tuple(x.shape)} at site {self.site.name}")
        return self.shared_dims

    def forward(self, x: Tensor) -> Tensor:
        if not self.stochastic:
            return x
        mask = shared_mask(x, self.p, self.dims(x))
        if self.training:
            self.record((mask == 0).float().mean())
        return x * mask

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, shared_dims={self.shared_dims}"
