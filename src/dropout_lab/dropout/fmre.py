"""Feature-map reconstruction error dropout (source 000 "FMRE dynamic dropout"). Criterion after ThiNet:
Luo, Wu & Lin, "ThiNet: A Filter Level Pruning Method for Deep Neural Network Compression", ICCV 2017,
arXiv:1707.06342, §3.2 eq. (2)-(5): a channel matters as much as the next layer's output changes
when it is removed (docs/methods/fmre.md)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dropout_lab.checks import COUNT
from dropout_lab.dropout.base import SiteSpec
from dropout_lab.dropout.scored import ScoredDropout, scored_spec
from dropout_lab.dropout.spec import Arg


class FMREDropout(ScoredDropout):
    """Per-unit rates from the reconstruction error of the next layer's output when unit j alone is
    removed: s_j = mean_n ||Z_j||^2 with Z_j = next(x) - next(x with x_j = 0), the pre-activation
    contribution of unit j (bias cancels; exact by linearity of ``site.next``, no loop of forwards).

    * next Linear with F inputs: ||Z_j||^2 = x_j^2 ||W[:, j]||^2;
    * next Linear on the flattened map (conv site, e.g. LeNet5 conv2 -> fc1): Z_c = W[:, block c] x_c;
      a Linear with K inputs per channel is taken to read the map adaptive-average-pooled to
      sqrt(K) x sqrt(K) (ResNet's global pooling before ``fc``: Z_c = W[:, c] mean_hw x_c; AlexNet's 6x6
      pooling) when the map has another size;
    * next Conv2d: Z_c = W[:, c] * x_c for all c at once with one grouped convolution.

    Scored on the first ``sub_batch`` samples of the pre-mask input every ``update_every`` training
    forwards (ThiNet samples locations from a sub-set of images; here every location of the sub-batch).
    Chosen reading of "reconstruction error": removal error of the next layer's output, not the
    redundancy of c given the other channels (docs/methods/fmre.md).

    Shapes: (N, F) or (N, C, H, W) -> same.

    Args:
        sub_batch: samples used for the score (>= 1).
        Other args: as :class:`~dropout_lab.dropout.scored.ScoredDropout` (defaults: ``SPEC`` below).

    Raises:
        ValueError: if ``site.next`` is not a Linear or an ungrouped Conv2d taking the site's units,
            if ``sub_batch < 1``, or for a bad key.
    """

    def __init__(self, p: float, site: SiteSpec, sub_batch: int, **kwargs) -> None:
        super().__init__(p, site, **kwargs)
        self.sub_batch = int(sub_batch)
        nxt, n = site.next, site.num_features
        per_unit = nxt.in_features // n if isinstance(nxt, nn.Linear) and nxt.in_features % n == 0 else 0
        ok = (per_unit > 0 and (per_unit == 1 if site.kind == "fc" else math.isqrt(per_unit) ** 2 == per_unit)) or (
            isinstance(nxt, nn.Conv2d) and nxt.in_channels == n and nxt.groups == 1
        )
        if not ok:
            raise ValueError(
                f"dropout=fmre needs the layer after site {site.name!r} to be a Linear or an ungrouped Conv2d "
                f"taking its {n} units; site.next is {type(nxt).__name__}: choose other dropout.sites"
            )

    def score_input(self, x: Tensor) -> Tensor:
        """s_j = mean_n ||Z_j||^2 over the first ``sub_batch`` samples -> (F,)."""
        x, nxt = x[: self.sub_batch], self.site.next
        w = nxt.weight.detach()
        if isinstance(nxt, nn.Conv2d):  # (Out, C, k, k) -> (C*Out, 1, k, k): group c convolves x_c with W[:, c]
            C, Out = x.shape[1], w.shape[0]
            wg = w.transpose(0, 1).reshape(C * Out, 1, *w.shape[2:])
            z = F.conv2d(x, wg, None, nxt.stride, nxt.padding, nxt.dilation, groups=C)
            return z.unflatten(1, (C, Out)).square().flatten(2).sum(2).mean(0)
        if x.ndim == 2 and w.shape[1] == x.shape[1]:
            return x.square().mean(0) * w.square().sum(0)
        side = math.isqrt(w.shape[1] // x.shape[1])  # next reads the map pooled to side x side, flattened
        if x.shape[2:] != (side, side):
            x = F.adaptive_avg_pool2d(x, side)  # linear per channel, so Z_c stays the contribution of x_c
        flat = x.flatten(2)  # (n, C, side^2); unit c owns columns c*side^2..(c+1)*side^2 of next
        z = torch.einsum("nck,ock->noc", flat, w.view(w.shape[0], x.shape[1], -1))
        return z.square().sum(1).mean(0)


SPEC = scored_spec(
    "fmre",
    FMREDropout,
    "source 000; Luo et al. 2017 (ThiNet)",
    "next layer's output change when a unit is removed (exact, one einsum)",
    sub_batch=Arg(32, COUNT, "samples scored"),
)
