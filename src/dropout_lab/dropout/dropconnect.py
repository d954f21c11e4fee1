"""DropConnect: Wan, Zeiler, Zhang, LeCun & Fergus, "Regularization of Neural Networks using
DropConnect", ICML 2013, PMLR 28, sec. 3 (r = a((M * W) v), M_ij ~ Bernoulli(1 - p), one M per
example) and Algorithm 2 (inference by moment matching). Method page: docs/methods/dropconnect.md."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from dropout_lab.checks import BOOL, COUNT, choice
from dropout_lab.dropout.base import DropoutMethod, SiteSpec
from dropout_lab.dropout.spec import Arg, MethodSpec, rate_p, register

INFERENCE = ("mean", "gaussian")
#: element-wise activations whose input can be a masked layer's output (for ``inference: gaussian``)
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Hardtanh)


def _per_example(v: Tensor, weight: Tensor, keep: float) -> tuple[Tensor, Tensor]:
    """u_n = (M_n * W) v_n / keep with one mask M_n ~ Bernoulli(keep) of W's shape per row of ``v``
    (n, in); returns u (n, out), bias excluded, and the number of zeros in the masks (0-d)."""
    mask = torch.empty((v.shape[0], *weight.shape), dtype=v.dtype, device=v.device).bernoulli_(keep)
    zeros = mask.numel() - mask.sum()
    return torch.bmm(mask * weight, v.unsqueeze(-1)).squeeze(-1).div(keep), zeros


def dropconnect_linear(
    v: Tensor, weight: Tensor, bias: Tensor | None, p: float, per_sample: bool = True, max_mask_elements: int = 2**24
) -> tuple[Tensor, Tensor]:
    """``(M * W) v / (1 - p) + b`` with ``M ~ Bernoulli(1 - p)`` of W's shape, and the fraction of
    zeros in the masks drawn (0-d tensor, no host sync).

    ``per_sample``: one mask per example (Wan et al. 2013), computed in chunks of at most
    ``max_mask_elements`` mask entries (``rows = max_mask_elements // W.numel()`` examples, at least 1);
    when the batch needs more than one chunk, each chunk is recomputed in the backward pass
    (:func:`torch.utils.checkpoint.checkpoint` restores the RNG, so the same masks are redrawn), so
    memory stays O(max_mask_elements) whatever the batch size. Else one mask for the mini-batch.

    Args:
        v: layer input (N, in).
        weight: (out, in); bias: (out,) or None.
        p: drop probability of each weight, in (0, 1).

    Returns:
        (N, out) output and the realised drop fraction.
    """
    keep = 1.0 - p
    if not per_sample:
        mask = torch.empty_like(weight).bernoulli_(keep)
        return F.linear(v, weight * mask.div(keep), bias), 1.0 - mask.mean()
    rows = max(1, max_mask_elements // weight.numel())
    if v.shape[0] <= rows:
        out, zeros = _per_example(v, weight, keep)
    else:
        parts = [checkpoint(_per_example, chunk, weight, keep, use_reentrant=False) for chunk in v.split(rows)]
        out, zeros = torch.cat([o for o, _ in parts]), torch.stack([z for _, z in parts]).sum()
    out = out if bias is None else out + bias
    return out, zeros / (v.shape[0] * weight.numel())


def dropconnect(
    v: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    p: float,
    training: bool = True,
    per_sample: bool = True,
    max_mask_elements: int = 2**24,
) -> Tensor:
    """A Linear layer with DropConnect (:func:`dropconnect_linear`); the plain ``F.linear`` unless
    ``training`` and ``p > 0``. Shapes: (N, in) -> (N, out)."""
    if not (training and p > 0):
        return F.linear(v, weight, bias)
    return dropconnect_linear(v, weight, bias, p, per_sample, max_mask_elements)[0]


def logits_layer(model: nn.Module) -> nn.Module | None:
    """The model's output layer as DropConnect sees it: its last registered ``nn.Linear``."""
    return next((m for m in reversed(list(model.modules())) if isinstance(m, nn.Linear)), None)


class DropConnect(DropoutMethod):
    """Bernoulli masks on the weights of the ``nn.Linear`` that follows the site (``site.next``).

    Training: u_n = (M_n * W) v_n / (1 - p) + b with M_n ~ Bernoulli(1 - p), one (out, in) mask per
    example (``per_sample: true``, the paper; chunked at ``max_mask_elements``, see
    :func:`dropconnect_linear`) or one per mini-batch (``per_sample: false``). The masked product runs
    inside autograd in a forward hook on ``site.next`` (the parameter is never overwritten), so a
    dropped weight gets exactly zero gradient from that example. The site's own forward is the
    identity: activations are not masked. The hook replaces the layer's plain output, so that product
    is computed once more per training step.

    Sites (:meth:`attach`): one method per masked layer (two sites feeding the same Linear, e.g.
    AlexNet's ``drop_features`` and ``classifier.0`` with ``sites=all``, give one mask); the logits
    layer (:func:`logits_layer`) is not masked unless ``mask_logits: true``: the paper masks hidden
    layers and keeps a separate unmasked softmax layer.

    Inference (eval, ``mc_sampling`` off): ``inference: mean`` uses the plain weights W (the mean
    network, a(E[u])); ``inference: gaussian`` is the paper's Algorithm 2: u ~ N(W v + b,
    p / (1 - p) (W * W)(v * v)) (moment matching of the inverted-scaled sum); the activation module
    that actually consumes the layer's output (found at run time: the first module of
    :data:`ACTIVATIONS` whose input is that output) is applied to ``inference_samples`` draws and
    averaged, and that average replaces the activation's output. A layer whose output no activation
    consumes (the logits) gets E[u] = W v + b, i.e. ``mean``.

    The recorded drop fraction is the fraction of zeros in the drawn masks (= p_eq, a Bernoulli mask).

    Args:
        p: drop probability of each weight, in [0, 1).
        site: the :class:`~dropout_lab.dropout.base.SiteSpec`; ``site.next`` must be an ``nn.Linear``.
        per_sample: one mask per example (True) or per mini-batch (False).
        max_mask_elements: mask entries held at once with ``per_sample`` (memory bound; 2^24 floats
            = 64 MiB per tensor).
        mask_logits: also mask the model's logits layer.
        inference: ``mean`` or ``gaussian``.
        inference_samples: draws per unit for ``gaussian``.

    Shapes: the site (N, *) -> (N, *) unchanged; ``site.next``: (N, in) -> (N, out).

    Raises:
        ValueError: if the site has no following ``nn.Linear``, or every selected site feeds the logits
            layer (naming ``dropout.sites`` and ``dropout.mask_logits``).
    """

    def __init__(
        self,
        p: float,
        site: SiteSpec,
        per_sample: bool,
        max_mask_elements: int,
        mask_logits: bool,
        inference: str,
        inference_samples: int,
    ) -> None:
        super().__init__(p, site)
        if not isinstance(site.next, nn.Linear):
            raise ValueError(
                f"dropconnect masks the weights of the nn.Linear after the site, but site {site.name} is followed by "
                f"{type(site.next).__name__ if site.next is not None else 'nothing'}: use dropout.sites=fc"
            )
        self.per_sample, self.max_mask_elements, self.mask_logits = (
            bool(per_sample),
            int(max_mask_elements),
            bool(mask_logits),
        )
        self.inference, self.inference_samples = inference, int(inference_samples)
        self._pending: tuple[Tensor, Tensor, Tensor] | None = None  # gaussian inference: (output, mean, std)
        self._hook = site.next.register_forward_hook(self._linear_forward)

    @classmethod
    def attach(cls, model: nn.Module, factory: Any, sites: list[Any]) -> list[DropoutMethod]:
        """One method per distinct masked layer, the logits layer skipped unless ``mask_logits``; with
        ``inference: gaussian`` each method also watches the model's activation modules."""
        logits, layers, chosen = logits_layer(model), [], []
        for site in sites:
            layer = site.spec(model).next
            if any(layer is seen for seen in layers) or (
                layer is logits and not factory.keywords.get("mask_logits", False)
            ):
                continue
            layers.append(layer)
            chosen.append(site)
        if not chosen:
            names = ", ".join(next(n for n, m in model.named_modules() if m is s) for s in sites)
            raise ValueError(
                f"dropout=dropconnect: the selected sites ({names}) all feed the logits layer, which DropConnect does not "
                "mask (Wan et al. keep the softmax layer unmasked): choose dropout.sites with a hidden nn.Linear after "
                "them, or set dropout.mask_logits=true"
            )
        methods = super().attach(model, factory, chosen)
        for method in methods:
            if method.inference == "gaussian":
                for module in model.modules():
                    if isinstance(module, ACTIVATIONS):
                        module.register_forward_hook(method._activation_forward)
        return methods

    def sample(self, x: Tensor) -> tuple[Tensor, None]:
        """The site passes activations through; the masks are drawn (and recorded) in the layer's hook."""
        return x, None

    def _linear_forward(self, linear: nn.Linear, args: tuple[Any, ...], output: Tensor) -> Tensor | None:
        """Forward hook on ``site.next``: the DropConnect output replaces the plain one while sampling;
        with ``gaussian`` inference it notes the moments for :meth:`_activation_forward`."""
        if self.p == 0.0:
            return None
        (v,) = args
        if self.stochastic:
            out, drop_fraction = dropconnect_linear(
                v, linear.weight, linear.bias, self.p, self.per_sample, self.max_mask_elements
            )
            if self.recording:
                self.record(drop_fraction)
            return out
        if self.inference == "gaussian":
            var = F.linear(v.square(), linear.weight.square()) * (self.p / (1.0 - self.p))
            self._pending = (output, output.detach().clone(), var.sqrt())
        return None

    def _activation_forward(self, activation: nn.Module, args: tuple[Any, ...], output: Tensor) -> Tensor | None:
        """Wan et al. Algorithm 2 at the activation that consumes the masked layer's output: the mean
        of ``activation(u)`` over ``inference_samples`` draws u ~ N(mean, std^2)."""
        if self._pending is None or args[0] is not self._pending[0]:
            return None
        _, mean, std = self._pending
        self._pending = None
        total = torch.zeros_like(mean)
        for _ in range(self.inference_samples):
            total += activation.forward(mean + std * torch.randn_like(mean))  # forward: not these hooks again
        return total / self.inference_samples

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, per_sample={self.per_sample}, inference={self.inference}"


SPEC = register(
    MethodSpec(
        key="dropconnect",
        cls=DropConnect,
        source="Wan et al. 2013",
        summary="Bernoulli masks on the next hidden Linear's weights, one per example (chunked; `per_sample: false` "
        "for one per batch), logits layer unmasked, mean or Gaussian (Algorithm 2) inference",
        p=rate_p(0.5, "drop probability of each weight"),
        args={
            "per_sample": Arg(True, BOOL, "one mask per example as in the paper (false: one per mini-batch)"),
            "max_mask_elements": Arg(
                2**24, COUNT, "mask entries held at once (2^24 floats = 64 MiB); larger batches are chunked"
            ),
            "mask_logits": Arg(False, BOOL, "also mask the logits layer (the paper does not)"),
            "inference": Arg(
                "mean",
                choice(*INFERENCE),
                "mean (plain weights) | gaussian (Algorithm 2, at the layer's own activation)",
            ),
            "inference_samples": Arg(256, COUNT, "draws per unit for inference=gaussian"),
        },
        drop_fraction="~ p (zeros of the weight masks)",
    )
)
