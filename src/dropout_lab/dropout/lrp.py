"""LRP-guided dropout (source 002: "Enhancing Generalization in Neural Networks: Innovations in Dropout
Techniques with Sector-wise and LRP-guided Approaches", csulb-datascience/Sector-wise-and-LRP-guided):
after each parameter update, Layer-wise Relevance Propagation scores every unit and the top-p fraction
by absolute relevance is dropped at the next step. Relevance: the LRP-epsilon rule of Bach et al.,
"On Pixel-Wise Explanations for Non-Linear Classifier Decisions by Layer-Wise Relevance Propagation",
PLoS ONE 10(7): e0130140, 2015 (eq. 58), in the form of Montavon et al., "Layer-Wise Relevance
Propagation: An Overview", 2019, sec. 10.2 ("LRP as gradient x input" implementation); docs/methods/lrp.md."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from dropout_lab.checks import COUNT, NONNEGATIVE, choice
from dropout_lab.dropout import passes
from dropout_lab.dropout.base import DropoutContext, DropoutMethod, SiteSpec
from dropout_lab.dropout.passes import SharedPass
from dropout_lab.dropout.spec import Arg, MethodSpec, rate_p, register


def _epsilon_hook(eps: float):
    def hook(module: nn.Module, inputs: Any, z: Tensor) -> Tensor:
        # forward value z unchanged; gradient w.r.t. z multiplied by r = z / (z + eps * sign(z))
        stab = z + eps * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)
        r = (z / stab).detach()
        return z * r + (z * (1.0 - r)).detach()

    return hook


@contextmanager
def epsilon_rule(model: nn.Module, eps: float) -> Iterator[None]:
    """Within the block, backpropagation through ``model`` computes LRP-epsilon relevance divided by activation.

    Every ``nn.Linear`` and ``nn.Conv2d`` output z gets a forward hook that keeps its value and scales
    its gradient by z / (z + eps sign(z)) (sign(0) = +1). With g = dR/da so defined, the gradient at
    an activation a is g = R / a, so relevance is R = a * g: ReLU and max pooling pass relevance to
    the active / winning inputs, average pooling, flatten, additions and (uncanonised) BatchNorm use the
    z-rule of their affine map (LRP-0), and Linear/Conv2d use the epsilon rule
    R_i = sum_j a_i w_ij R_j / (z_j + eps sign z_j) (Bach et al. 2015, eq. 58). Exact for networks of
    these layers with ReLU activations (positively homogeneous); other activations get gradient x input.
    """
    handles = [
        m.register_forward_hook(_epsilon_hook(eps)) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def site_relevance(model: nn.Module, sites: Sequence[nn.Module], x: Tensor, y: Tensor, eps: float) -> list[Tensor]:
    """LRP-epsilon relevance of the outputs of ``sites`` for the logit of each sample's label.

    Relevance starts as the target logit f_{y_n}(x_n) of every row (one-hot per row; the reference
    code seeds only the last row), runs through the network's own forward (ReLUs included) in eval
    mode inside :func:`~dropout_lab.dropout.passes.extra_pass` (BatchNorm statistics, modes and
    parameter gradients untouched), and is summed over the batch (and over H, W at conv sites).

    Args:
        model: the network, (N, ...) -> logits (N, K).
        sites: modules whose outputs are scored (dropout method modules; the identity in eval mode).
        x: inputs (N, ...); y: integer labels (N,).
        eps: epsilon stabiliser of the rule, >= 0 (0 gives LRP-0; z = 0 then yields 0 relevance).

    Returns:
        one tensor per site of shape (F,) (units or channels): signed relevance summed over the batch.

    Raises:
        RuntimeError: if a site's output does not reach the logits.
    """
    outputs: list[Tensor | None] = [None] * len(sites)

    def keep(i: int):
        def hook(module: nn.Module, inputs: Any, out: Tensor) -> None:
            outputs[i] = out

        return hook

    handles = [site.register_forward_hook(keep(i)) for i, site in enumerate(sites)]
    try:
        with passes.extra_pass(model, train=False, grad=True), epsilon_rule(model, eps):
            logits = model(x)
            target = logits.gather(1, y.view(-1, 1)).sum()
            grads = torch.autograd.grad(target, outputs)
    finally:
        for h in handles:
            h.remove()
    return [
        (a.detach() * g).sum(0).flatten(1).sum(1) if a.ndim > 2 else (a.detach() * g).sum(0)
        for a, g in zip(outputs, grads)
    ]


class LRPDropout(SharedPass, DropoutMethod):
    """Drop the top-p fraction of units (fc) or channels (conv) by |LRP relevance|, recomputed after
    each update (source 002).

    Algorithm: at ``on_train_batch_end`` of every ``update_every``-th step (after the optimizer
    step, so relevance is that of the updated weights, used from the next step on; the paper's rule
    is ``update_every = 1``), the first instance computes :func:`site_relevance` on the same batch for
    every site of the model at once; each site drops its k = round(p F) units with the largest
    |summed relevance| (``drop_target: high``, the paper; ``low`` drops the least relevant, the
    README's variant). The mask is shared by every sample of the batch and held until the next
    update; before the first update nothing is dropped.

    Scaling: kept units are multiplied by F / (F - k) (= 1/(1-p) when pF is an integer, the reference's
    scale), so evaluation is the identity. This keeps the layer's total input unchanged only when all
    units carry the same activation; because the dropped units are chosen by relevance the deterministic
    cut is not unbiased (with ``high`` the kept activations are on average smaller than the full ones),
    and no per-unit rescaling can fix that without knowing the dropped values; we keep the reference's
    scale so that results stay comparable with it.

    Shapes: (N, F) or (N, C, H, W) -> same shape; mask (F,).

    Args:
        p: fraction of units dropped, in [0, 1).
        site: the :class:`~dropout_lab.dropout.base.SiteSpec`.
        eps: epsilon of the LRP-epsilon rule (>= 0).
        update_every: recompute relevance every n optimizer steps (n >= 1).
        drop_target: ``high`` (drop the most relevant, paper) or ``low``.

    """

    def __init__(self, p: float, site: SiteSpec, eps: float, update_every: int, drop_target: str) -> None:
        super().__init__(p, site)
        self.eps, self.update_every, self.drop_target = float(eps), int(update_every), drop_target
        self.k = round(self.p * site.num_features)
        self.register_buffer("mask", torch.ones(site.num_features))
        self.register_buffer("relevance", torch.zeros(site.num_features))

    def set_mask(self, relevance: Tensor) -> None:
        """Store ``relevance`` (F,) and drop the k units with the largest (``high``) or smallest
        (``low``) absolute relevance."""
        self.relevance.copy_(relevance)
        self.mask.fill_(1.0)
        if self.k:
            idx = relevance.abs().topk(self.k, largest=self.drop_target == "high").indices
            self.mask[idx] = 0.0

    def sample(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(x * mask, mask)`` with the batch-shared mask (F,) -> (F, 1, 1) at conv sites: 0 for the
        dropped units, F / (F - k) for the kept ones (before the first update: all ones)."""
        mask = self.mask * (self.mask.numel() / self.mask.sum().clamp(min=1.0))
        mask = mask.view(-1, *(1,) * (x.ndim - 2)).to(x.dtype)
        return x * mask, mask

    def on_train_batch_end(self, ctx: DropoutContext) -> None:
        """After the optimizer step of every ``update_every``-th step (``ctx.due(every, warmup=1)``: the
        step counter has already advanced), the leading instance computes relevance on this batch for
        every site (:class:`~dropout_lab.dropout.passes.SharedPass`) -> masks."""
        if not (self.leads and ctx.due(every=self.update_every, warmup=1)):
            return
        x, y = ctx.batch
        for method, rel in zip(self.peers, site_relevance(ctx.module.model, self.peers, x, y, self.eps)):
            method.set_mask(rel)

    def stats(self) -> dict[str, float]:
        """Adds ``relevance_abs_mean`` (mean |relevance| per unit of the last update, summed over its batch)."""
        return super().stats() | {"relevance_abs_mean": float(self.relevance.abs().mean())}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, k={self.k}, eps={self.eps}, update_every={self.update_every}, drop_target={self.drop_target}"


SPEC = register(
    MethodSpec(
        key="lrp",
        cls=LRPDropout,
        source="source 002; Bach et al. 2015",
        summary="LRP-epsilon relevance (batch-summed), top p by abs(relevance) dropped",
        p=rate_p(0.2, "fraction of units dropped (the most relevant, one mask per batch)"),
        args={
            "eps": Arg(0.01, NONNEGATIVE, "LRP-epsilon stabiliser"),
            "update_every": Arg(1, COUNT, "optimizer steps between relevance passes (paper: 1)"),
            "drop_target": Arg(
                "high", choice("high", "low"), "high: most relevant dropped (paper) | low", tune="choice(low, high)"
            ),
        },
        drop_fraction="0 before the first relevance pass, then exactly round(p F) / F",
        p_eq="= drop fraction (mask 0 or F / (F - k))",
    )
)
