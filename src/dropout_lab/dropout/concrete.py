"""Concrete dropout: Gal, Hron & Kendall, "Concrete Dropout", NeurIPS 2017, arXiv:1705.07832,
(the relaxed Bernoulli mask and the KL regulariser of the dropout probability);
reference code yaringal/ConcreteDropout. Not source 001's snippet (docs/methods/concrete.md lists its
bugs). Method page: docs/methods/concrete.md."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from dropout_lab.checks import POSITIVE, number
from dropout_lab.dropout.base import DropoutMethod, SiteSpec, mask_rates
from dropout_lab.dropout.spec import Arg, MethodSpec, register


class ConcreteDropout(DropoutMethod):
    """Dropout with a learnable drop probability p = sigmoid(p_logit) per site.

    Training: relaxed drop indicator z = sigmoid((logit p + log u - log(1 - u)) / t), u ~ U(0, 1)
    (the concrete relaxation); y = x (1 - z) / (1 - p). Masks are per element at fc sites (N, F) and per channel
    (N, C, 1, 1) at conv sites (the paper's spatial variant). Eval is the identity (inverted scaling);
    ``mc_sampling`` keeps sampling as the paper's MC evaluation does.

    Regulariser (KL(q || prior) / N for the ELBO averaged per example), from
    :meth:`extra_loss`:

        (1 / N) [ l^2 / 2 * ||W||^2 / (1 - p) + K (p log p + (1 - p) log(1 - p)) ],

    W the weight of ``site.next`` (bias excluded), l the prior length-scale, K the input dimension of
    the mask (F at fc sites, C at conv sites). ||W||^2 / (1 - p) is the paper's (1 - p) ||M||^2 written
    for inverted scaling (M = W / (1 - p)). The reference code uses l^2 / N and 2 / N, the same terms
    doubled. Do not also put weight decay on W (double counting; our default optimizers have none).

    The recorded drop fraction is the mean relaxed indicator z (near-binary at t = 0.1), ``p_eq`` the
    mask's Var / (1 + Var); ``stats()`` adds ``p_learned``.

    Args:
        p: initial drop probability, in (0, 1) (the reference initialises at 0.1).
        site: the :class:`~dropout_lab.dropout.base.SiteSpec`; ``site.next`` must have a ``weight``.
        temperature: relaxation temperature t (paper: 0.1).
        length_scale: prior length-scale l (reference regression example: 1e-4).

    Shapes: (N, F) -> (N, F) or (N, C, H, W) -> (N, C, H, W).

    Raises:
        ValueError: if ``site.next`` has no weight.
    """

    eps: ClassVar[float] = 1e-7

    def __init__(self, p: float, site: SiteSpec, temperature: float, length_scale: float) -> None:
        super().__init__(p, site)
        if not isinstance(getattr(site.next, "weight", None), Tensor):
            raise ValueError(
                f"concrete dropout regularises the weight of the layer after site {site.name} "
                f"({type(site.next).__name__}), which has none: choose dropout.sites with a Linear/Conv2d after them (e.g. fc)"
            )
        self.temperature, self.length_scale = float(temperature), float(length_scale)
        self.p_logit = nn.Parameter(torch.tensor(math.log(self.p) - math.log1p(-self.p)))

    def drop_prob(self) -> Tensor:
        """The current p = sigmoid(p_logit), a 0-d tensor in the graph."""
        return torch.sigmoid(self.p_logit)

    def sample(self, x: Tensor) -> tuple[Tensor, Tensor]:
        shape = x.shape if self.site.kind == "fc" else (*x.shape[:2], *(1,) * (x.dim() - 2))
        u = torch.rand(shape, dtype=x.dtype, device=x.device)
        z = torch.sigmoid((self.p_logit + torch.log(u + self.eps) - torch.log(1 - u + self.eps)) / self.temperature)
        mask = (1 - z) / (1 - self.drop_prob())
        return x * mask, mask

    def record_sample(self, x: Tensor, y: Tensor, mask: Tensor) -> None:
        """Drop fraction: the mean relaxed indicator z = 1 - mask (1 - p); p_eq from the mask."""
        z = 1 - mask.detach() * (1 - self.drop_prob().detach())
        self.record(z.mean(), mask_rates(mask)[1])

    def extra_loss(self, dataset_size: int) -> Tensor:
        """The regulariser above for a training set of ``dataset_size`` examples; a 0-d tensor."""
        p = self.drop_prob()
        weight = self.length_scale**2 / 2 * self.site.next.weight.square().sum() / (1 - p)
        entropy = self.site.num_features * (p * torch.log(p) + (1 - p) * torch.log1p(-p))
        return (weight + entropy) / dataset_size

    def stats(self) -> dict[str, float]:
        return super().stats() | {"p_learned": float(self.drop_prob().detach())}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, temperature={self.temperature}, length_scale={self.length_scale}"


SPEC = register(
    MethodSpec(
        key="concrete",
        cls=ConcreteDropout,
        source="Gal, Hron & Kendall 2017",
        summary="learnable p per site, relaxed Bernoulli, regulariser / N",
        p=Arg(
            0.1,
            number(0, 1, low_open=True, high_open=True),
            "initial drop probability (learned)",
            "interval(0.05, 0.5)",
        ),
        p_is_rate=False,
        args={
            "temperature": Arg(0.1, POSITIVE, "relaxation temperature (paper)"),
            "length_scale": Arg(
                1e-4,
                POSITIVE,
                "prior length-scale l (reference example); weight term l^2/2 ||W||^2/(1-p)/N",
                tune="tag(log, interval(1.0e-6, 1.0e-2))",
            ),
        },
        drop_fraction="mean relaxed indicator z ~ learned p",
        p_eq="from the relaxed mask (< drop fraction: z is not binary)",
    )
)
