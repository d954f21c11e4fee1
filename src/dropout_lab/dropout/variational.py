"""Variational (shared-mask) dropout: Gal & Ghahramani, "A Theoretically Grounded Application of
Dropout in Recurrent Neural Networks", NeurIPS 2016, arXiv:1512.05287, sec. 3-4 (one mask per
sequence, reused at every time step); source 001's temporal dropout, slide 14.
Method page: docs/methods/variational.md."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from dropout_lab.checks import COUNT, exactly
from dropout_lab.dropout.base import DropoutMethod, SiteSpec
from dropout_lab.dropout.spec import Arg, MethodSpec, rate_p, register
from dropout_lab.dropout.standard import bernoulli_mask


class VariationalDropout(DropoutMethod):
    """Dropout whose mask is sampled once per sample and shared along chosen axes; identity in eval.

    y = x * r / (1 - p), r ~ Bernoulli(1 - p) of shape ``x.shape`` with size 1 along ``shared_dims``
    (Gal & Ghahramani 2016, sec. 4: the same mask at every time step of a sequence).

    The models here have no sequence axis: at an fc site (N, F) there is no axis to share, so the
    method would be bit-identical to ``standard``; at a conv site (N, C, H, W) sharing along H and W
    is ``spatial``. Both are refused (a sweep must never show two rows that are one computation).
    With ``shared_dims`` set to another set of axes (e.g. ``[2]``: one mask per column of a map) the
    method is distinct and allowed. The recorded drop fraction is the fraction of zeros in the
    (smaller) mask.

    Args:
        p: drop probability in [0, 1).
        site: the :class:`~dropout_lab.dropout.base.SiteSpec`.
        shared_dims: axes of the input along which the mask is shared (config key
            ``dropout.shared_dims``); None means the paper's time axis, which these sites lack.

    Raises:
        ValueError: if the site has no axis to share along (the message names
            the identical method and ``dropout.sites``); at the first forward, if an axis is >= the
            input's rank.
    """

    def __init__(self, p: float, site: SiteSpec, shared_dims: Sequence[int] | None) -> None:
        super().__init__(p, site)
        self.shared_dims = None if shared_dims is None else tuple(sorted({int(d) for d in shared_dims}))
        same = {"fc": (None, "standard", "(N, F)"), "conv": ((2, 3), "spatial", "(N, C, H, W)")}[site.kind]
        if self.shared_dims in (None, same[0]):
            raise ValueError(
                f"dropout=variational at {site.kind} site {site.name} (inputs {same[2]}) has no sequence axis to share its "
                f"mask along: it would be bit-identical to dropout={same[1]}. Use dropout={same[1]}, or set "
                "dropout.sites to sites with such an axis, or dropout.shared_dims to other axes"
            )

    def sample(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if max(self.shared_dims) >= x.dim():
            raise ValueError(
                f"dropout.shared_dims={list(self.shared_dims)} has an axis beyond the input of shape {tuple(x.shape)} at site {self.site.name}"
            )
        mask = bernoulli_mask(x, self.p, self.shared_dims)
        return x * mask, mask

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, shared_dims={self.shared_dims}"


SPEC = register(
    MethodSpec(
        key="variational",
        cls=VariationalDropout,
        source="Gal & Ghahramani 2016; source 001 temporal",
        summary="one mask per sample shared along `shared_dims`; refused where it would equal `standard` (fc) or "
        "`spatial` (conv), i.e. on every model here",
        p=rate_p(0.5),
        args={
            "shared_dims": Arg(
                None, exactly(None, "the paper's time axis") | COUNT, "axes (>= 1) the mask is shared along"
            )
        },
        sites="fc",
        drop_fraction="~ p (zeros of the shared mask); refused where it equals standard/spatial",
    )
)
