"""MaxDropout: Santos, Colombo, Roder & Papa, "MaxDropout: Deep Neural Network Regularization Based on
Maximum Output Values", ICPR 2020, arXiv:2007.13723 (Algorithm 1); reference code
cfsantos/MaxDropout-torch ``model/MaxDropout.py``. Also source 003's "MaxDropout", a different method
kept as :class:`MaxKeepSeed003`. Method page: docs/methods/maxdropout.md."""

from __future__ import annotations

import torch
from torch import Tensor

from dropout_lab.checks import BOOL
from dropout_lab.dropout.base import DropoutMethod, SiteSpec
from dropout_lab.dropout.spec import Arg, MethodSpec, rate_p, register


def maxdropout_mask(x: Tensor, rate: Tensor | float, per_sample: bool = True) -> Tensor:
    """``[z <= 1 - rate]`` in ``x``'s dtype, ``z`` the min-max normalised ``x`` (per sample over all
    its elements, or over the whole tensor); no gradient flows through the mask."""
    with torch.no_grad():
        dims = tuple(range(1 if per_sample else 0, x.dim()))
        lo, hi = x.amin(dims, keepdim=True), x.amax(dims, keepdim=True)
        z = (x - lo) / (hi - lo).clamp(min=torch.finfo(x.dtype).tiny)
        return (z <= 1.0 - rate).to(x.dtype)


class MaxDropout(DropoutMethod):
    """Drop the largest activations: zero every element whose min-max normalised value exceeds
    ``1 - rate``; identity in eval.

    Per training forward (arXiv:2007.13723, Algorithm 1):

    * ``rate ~ U(0, p)`` once per forward (``sample_rate: true``, the paper's algorithm) or
      ``rate = p`` (``sample_rate: false``, the released code's fixed ``--drop``);
    * ``z = (x - min x) / (max x - min x)`` per sample over all its elements (``per_sample: true``) or
      over the whole mini-batch tensor (``per_sample: false``, the released code);
    * ``y = x * [z <= 1 - rate]``. No rescaling (as published), so the method is *not* unbiased and
      the dropped fraction is the share of elements in the top ``rate`` of the value range, usually
      far below ``p``; the realised fraction is recorded. The mask is a constant for autograd:
      dropped elements get zero gradient, kept ones gradient 1.

    The reference ResNet-18 builds the module inside ``forward`` and so also drops at test time;
    here eval is the identity (``mc_sampling`` switches sampling on explicitly).

    Shapes: (N, *) -> (N, *), element-wise (units at fc sites, every position of every channel at
    conv sites). A sample whose elements are all equal is left unchanged.

    Args:
        p: the paper's ``r``, the largest fraction of the value range that is dropped, in [0, 1).
        site: the :class:`~dropout_lab.dropout.base.SiteSpec`.
        sample_rate: draw ``rate ~ U(0, p)`` per forward (paper) instead of ``rate = p`` (code).
        per_sample: normalise each sample on its own (paper reading) instead of the whole batch (code).
    """

    def __init__(self, p: float, site: SiteSpec, sample_rate: bool, per_sample: bool) -> None:
        super().__init__(p, site)
        self.sample_rate, self.per_sample = bool(sample_rate), bool(per_sample)

    def sample(self, x: Tensor) -> tuple[Tensor, Tensor]:
        rate = torch.rand((), device=x.device, dtype=x.dtype) * self.p if self.sample_rate else self.p
        mask = maxdropout_mask(x, rate, self.per_sample)
        return x * mask, mask

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, sample_rate={self.sample_rate}, per_sample={self.per_sample}"


class MaxKeepSeed003(DropoutMethod):
    """Source 003's "MaxDropout" (not the paper's): with probability ``p`` per sample keep only the
    sample's maximum element(s), zero everything else and divide the kept value(s) by their count;
    otherwise pass the sample unchanged. Identity in eval.

    This *removes almost the whole layer* for the chosen samples, the opposite of
    :class:`MaxDropout` (which removes the largest values); kept for seed fidelity only. Not
    unbiased. Expected dropped fraction: ``p (1 - k/D)`` for D elements per sample with k maxima.

    Shapes: (N, *) -> (N, *); the maximum is taken over all D elements of a sample.

    Args:
        p: probability that a sample is reduced to its maximum, in [0, 1).
        site: the :class:`~dropout_lab.dropout.base.SiteSpec`.
    """

    def sample(self, x: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            flat = x.flatten(1)
            is_max = flat == flat.amax(1, keepdim=True)
            chosen = torch.rand(flat.shape[0], 1, device=x.device) < self.p
            mask = torch.where(chosen, is_max / is_max.sum(1, keepdim=True), torch.ones_like(flat)).view_as(x)
        return x * mask, mask


SPEC = register(
    MethodSpec(
        key="maxdropout",
        cls=MaxDropout,
        source="Santos et al. 2020",
        summary="drop the units above a per-step threshold of the normalised activation",
        p=rate_p(0.3, "largest fraction of the value range dropped"),
        p_is_rate=False,
        args={
            "sample_rate": Arg(True, BOOL, "rate ~ U(0, p) per forward (paper); false: rate = p (released code)"),
            "per_sample": Arg(True, BOOL, "min-max per sample; false: over the whole batch tensor (released code)"),
        },
        drop_fraction="data-dependent, far below p (0.01-0.05 at p = 0.3)",
        p_eq="= drop fraction (no rescaling, m in {0, 1})",
    )
)
SEED003 = register(
    MethodSpec(
        key="maxdropout_seed003",
        cls=MaxKeepSeed003,
        source="source 003",
        summary="keep only each sample's maximum unit, with probability p (source 003's variant of `maxdropout`)",
        p=rate_p(0.5, "probability that a sample is reduced to its maximum"),
        p_is_rate=False,
        drop_fraction="p (1 - k/D)",
    )
)
