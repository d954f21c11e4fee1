"""DropConnect: Wan, Zeiler, Zhang, LeCun & Fergus, "Regularization of Neural Networks using
DropConnect", ICML 2013, PMLR 28, sec. 3 (r = a((M * W) v), M_ij ~ Bernoulli(1 - p)) and
Algorithm 2 (inference by moment matching)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dropout_lab.dropout.base import DropoutMethod, SiteSpec

INFERENCE = ("mean", "gaussian")


class DropConnect(DropoutMethod):
    """Bernoulli masks on the weights of the ``nn.Linear`` that follows the site (``site.next``).

    Training: u = (M * W) v / (1 - p) + b with M_ij ~ Bernoulli(1 - p) (inverted scaling, so the mean
    weight is W). The masked product runs inside autograd in a forward hook on ``site.next`` (the
    parameter is never overwritten), so a dropped weight gets exactly zero gradient. The site's own
    forward is the identity: activations are not masked. The hook recomputes the layer's output, so the
    layer's unmasked product is computed once more per training step (a small Linear in our models).

    Masks: ``per_sample: false`` (default) draws one (out, in) mask per mini-batch (seed 003 and most
    re-implementations); ``per_sample: true`` draws one per example as in the paper, which holds
    B x out x in floats (e.g. LeNet fc2 120->84 at B = 128: 1.3 M floats = 5 MB; a 4096 x 4096 Linear at
    B = 128: 2.1 G floats = 8.6 GB), hence off by default.

    Inference (eval, ``mc_sampling`` off): ``inference: mean`` uses the plain weights W (the mean
    network, a(E[u])); ``inference: gaussian`` is the paper's Algorithm 2: u ~ N(W v + b,
    p / (1 - p) (W * W)(v * v)) (moment matching of the inverted-scaled sum), the activation
    ``inference_activation`` applied to ``inference_samples`` draws and averaged. The layer after
    ``site.next`` must be that activation (it is idempotent for ``relu`` on the non-negative average);
    at a site whose next layer outputs logits use ``identity`` (which equals ``mean``).

    The realised drop fraction is the fraction of zeros in the drawn mask(s).

    Args:
        p: drop probability of each weight, in [0, 1).
        site: the :class:`~dropout_lab.dropout.base.SiteSpec`; ``site.next`` must be an ``nn.Linear``.
        per_sample: one mask per example (True) or per mini-batch (False).
        inference: ``mean`` or ``gaussian``.
        inference_samples: draws per unit for ``gaussian`` inference.
        inference_activation: ``relu`` or ``identity``, for ``gaussian`` inference.

    Shapes: the site (N, *) -> (N, *) unchanged; ``site.next``: (N, in) -> (N, out).

    Raises:
        ValueError: if ``p`` is outside [0, 1), the site has no following ``nn.Linear``, or
            ``inference`` / ``inference_activation`` / ``inference_samples`` is invalid.
    """

    default_sites: ClassVar[str] = "fc"

    def __init__(self, p: float, site: SiteSpec, per_sample: bool = False, inference: str = "mean", inference_samples: int = 256, inference_activation: str = "relu") -> None:
        super().__init__(p, site)
        if not isinstance(site.next, nn.Linear):
            raise ValueError(
                f"dropconnect masks the weights of the nn.Linear after the site, but site {site.name} is followed by "
                f"{type(site.next).__name__ if site.next is not None else 'nothing'}: use dropout.sites=fc"
            )
        if inference not in INFERENCE:
            raise ValueError(f"dropout.inference={inference!r} is not one of {', '.join(INFERENCE)}")
        if inference_activation not in ("relu", "identity"):
            raise ValueError(f"dropout.inference_activation={inference_activation!r} is not one of relu, identity")
        if inference_samples < 1:
            raise ValueError(f"dropout.inference_samples={inference_samples} must be >= 1")
        self.per_sample, self.inference = bool(per_sample), inference
        self.inference_samples, self.inference_activation = int(inference_samples), inference_activation
        self._hook = site.next.register_forward_hook(self._linear_forward)

    def forward(self, x: Tensor) -> Tensor:
        return x

    def _linear_forward(self, linear: nn.Linear, args: tuple[Any, ...], output: Tensor) -> Tensor | None:
        """Forward hook on ``site.next``: the DropConnect output replaces the plain one."""
        if self.p == 0.0 or not (self.stochastic or self.inference == "gaussian"):
            return None
        (v,) = args
        weight, bias, keep = linear.weight, linear.bias, 1.0 - self.p
        if not self.stochastic:
            return self._gaussian_inference(v, weight, bias)
        if self.per_sample:
            mask = torch.empty((v.shape[0], *weight.shape), dtype=v.dtype, device=v.device).bernoulli_(keep)
            out = torch.bmm(mask * weight, v.unsqueeze(-1)).squeeze(-1).div(keep)
            out = out if bias is None else out + bias
        else:
            mask = torch.empty_like(weight).bernoulli_(keep)
            out = F.linear(v, weight * mask.div(keep), bias)
        if self.training:
            self.record(1.0 - mask.mean())
        return out

    def _gaussian_inference(self, v: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """Wan et al. Algorithm 2: average a(u) over draws u ~ N(mean, var) of each pre-activation."""
        mean = F.linear(v, weight, bias)
        std = (F.linear(v.square(), weight.square()) * (self.p / (1.0 - self.p))).sqrt()
        draws = mean + std * torch.randn((self.inference_samples, *mean.shape), dtype=mean.dtype, device=mean.device)
        return (draws.relu() if self.inference_activation == "relu" else draws).mean(0)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, per_sample={self.per_sample}, inference={self.inference}"
