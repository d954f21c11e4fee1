"""Optimal Brain Damage dropout (source 000 "OBD dropout"). Saliency: LeCun, Denker & Solla, "Optimal
Brain Damage", NIPS 2, 1990, eq. (5)-(7): s_k = h_kk u_k^2 / 2 with the diagonal Hessian h_kk; here
estimated with Hutchinson's estimator diag(H) = E[v * Hv], v Rademacher (Hutchinson 1990; Bekas, Kokiopoulou
& Saad 2007), not with the Fisher approximation, which would make it Taylor (docs/methods/obd.md)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dropout_lab.checks import COUNT, RATE
from dropout_lab.dropout.base import DropoutContext, SiteSpec
from dropout_lab.dropout.passes import SharedPass, extra_pass
from dropout_lab.dropout.scored import ScoredDropout, incoming_weight, scored_spec
from dropout_lab.dropout.spec import Arg


class OBDDropout(SharedPass, ScoredDropout):
    """Per-unit rates from the OBD saliency of each unit's incoming weights:
    s_j = max(0, sum_k 0.5 * h_kk * w_k^2) over the row/filter k of ``site.prev``'s weight (bias excluded).

    Every ``update_every`` optimizer steps, before the forward, one Hessian pass on the current batch
    serves all OBD sites of the model (:class:`~dropout_lab.dropout.passes.SharedPass`): in :func:`~dropout_lab.dropout.passes.extra_pass` (eval mode:
    every dropout method is the identity, BatchNorm uses running statistics; optimizer gradients
    untouched) it computes g = dL/dW with ``create_graph=True`` for the incoming weights W of every
    site, then for each of ``probes`` Rademacher vectors v the Hessian-vector product Hv by a second
    backward and averages v * Hv. L is the cross-entropy of the model's logits. Negative diagonal
    sums (non-convex regions, probe noise) are clamped to 0 (least important).

    Cost per update: one forward, one backward with graph and ``probes`` double backwards. Defaults
    (``probes: 2``, ``ema: 0.98``, ``update_every: 5``) make independent rankings agree (Spearman >= 0.8
    on LeNet5); measured stability and cost: docs/methods/obd.md.

    Shapes: (N, F) or (N, C, H, W) -> same.

    Args:
        probes: Rademacher probes per update (>= 1).
        Other args: as :class:`~dropout_lab.dropout.scored.ScoredDropout` (defaults: ``SPEC`` below).

    Raises:
        ValueError: if ``site.prev`` has no weight with one row/filter per unit, if ``probes < 1``,
            or for a bad key.
    """

    def __init__(self, p: float, site: SiteSpec, probes: int, **kwargs) -> None:
        super().__init__(p, site, **kwargs)
        incoming_weight(site, self.spec.key)
        self.probes = int(probes)

    def on_train_batch_start(self, ctx: DropoutContext) -> None:
        """On due steps (``ctx.due(every=update_every)``) the leading instance runs one Hessian pass
        on the batch for every OBD site (:class:`~dropout_lab.dropout.passes.SharedPass`)."""
        if self.leads and ctx.due(every=self.update_every):
            x, y = ctx.batch
            for peer, s in zip(
                self.peers,
                hessian_saliency(ctx.module.model, [p.site.prev.weight for p in self.peers], x, y, self.probes),
            ):
                peer.update_scores(s)


def hessian_saliency(model: nn.Module, weights: list[Tensor], x: Tensor, y: Tensor, probes: int) -> list[Tensor]:
    """OBD saliency per unit for each weight in ``weights`` (each (F, ...), rows = units).

    Args:
        model: maps x (N, ...) to logits (N, classes).
        weights: parameters of ``model`` (a tensor listed twice is estimated once).
        x, y: a batch and its integer labels (N,).
        probes: number of Rademacher vectors.

    Returns:
        one (F,) tensor per weight: max(0, sum over the row of 0.5 * diag(H) * w^2), with diag(H) of the
        cross-entropy estimated by Hutchinson's E[v * Hv].
    """
    asked, weights = (
        weights,
        list(dict.fromkeys(weights)),
    )  # sites sharing a prev layer (ResNet layer4) share one estimate
    with extra_pass(model, train=False, grad=True):
        loss = F.cross_entropy(model(x), y)
        grads = torch.autograd.grad(loss, weights, create_graph=True)
        diag = [torch.zeros_like(w) for w in weights]
        for i in range(probes):
            vs = [torch.randint_like(w, 2) * 2 - 1 for w in weights]
            hvs = torch.autograd.grad(grads, weights, grad_outputs=vs, retain_graph=i < probes - 1)
            for d, v, hv in zip(diag, vs, hvs):
                d.add_(v * hv)
    saliency = {
        w: (0.5 * d / probes * w.detach().square()).flatten(1).sum(1).clamp(min=0) for d, w in zip(diag, weights)
    }
    return [saliency[w] for w in asked]


SPEC = scored_spec(
    "obd",
    OBDDropout,
    "source 000; LeCun, Denker & Solla 1990",
    "saliency 0.5 h_kk w^2, Hessian diagonal by Hutchinson probes every `update_every` steps",
    update_every=Arg(5, COUNT, "optimizer steps between Hessian passes"),
    probes=Arg(2, COUNT, "Rademacher probes per pass (with ema 0.98: rank correlation >= 0.8 between estimates)"),
    ema=Arg(0.98, RATE, "long memory: one pass's ranking is mostly probe and batch noise (Spearman 0.3 on LeNet5)"),
)
