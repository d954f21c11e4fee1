"""Learnable sparse masks: hard-concrete gates with an expected-L0 penalty. Louizos, Welling & Kingma,
"Learning Sparse Neural Networks through L0 Regularization", ICLR 2018, arXiv:1712.01312, sec. 3-4
(eq. 10-13 for the gate, eq. 12 and the group-sparsity form of sec. 4 for the penalty); docs/methods/sparse_mask.md."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from dropout_lab.checks import BOOL, NONNEGATIVE
from dropout_lab.dropout.base import DropoutContext, DropoutMethod, SiteSpec
from dropout_lab.dropout.spec import Arg, MethodSpec, rate_p, register

#: temperature beta and stretch interval (gamma, zeta) of the paper's experiments (sec. 4)
BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1
#: the reference code's bounds on log alpha (AMLab-Amsterdam/L0_regularization, ``constrain_parameters``)
LOG_ALPHA_MIN, LOG_ALPHA_MAX = math.log(1e-2), math.log(1e2)


def group_size(layer: nn.Module | None, num_features: int) -> int:
    """Weights of ``layer`` that read one unit/channel of its input: ``weight.numel() / num_features``
    for a Linear (out_features) or Conv2d (out_channels * kh * kw) whose input has ``num_features``
    units/channels, and for a Linear after a flattened conv map (out_features * H * W); 1 otherwise
    (unknown or absent layer), which turns the penalty into a count of open gates."""
    weight = getattr(layer, "weight", None)
    if not isinstance(layer, (nn.Linear, nn.Conv2d)) or weight is None or weight.numel() % num_features:
        return 1
    return weight.numel() // num_features


class SparseMask(DropoutMethod):
    """Hard-concrete gates z_j in [0, 1] per unit (fc) or channel (conv), learned with an L0 penalty.

    Training (eq. 10-11): u ~ U(0, 1), s = sigmoid((log u - log(1 - u) + log_alpha_j) / beta),
    z_j = min(1, max(0, s (zeta - gamma) + gamma)); y = x * z, one gate per sample and unit
    (``per_sample``; the reference's default shares one sample per minibatch). Evaluation (eq. 13):
    the deterministic gate z_j = min(1, max(0, sigmoid(log_alpha_j) (zeta - gamma) + gamma)), which can
    be exactly 0 (a pruned unit). Gates are learned multiplicative masks, so there is no 1/(1-p)
    rescaling and evaluation is not the identity.

    The penalty (:meth:`extra_loss`) is the expected L0 norm of the weights the gates control,
    lambda * sum_j |g_j| P(z_j != 0) / N with P(z_j != 0) = sigmoid(log_alpha_j - beta log(-gamma / zeta))
    (eq. 12) and |g_j| = :func:`group_size` of the next layer (group sparsity, sec. 4; set
    ``group_weighted=False`` for a plain count of open gates). The paper's extra L2 term weighted by
    P(z_j != 0) is left to the optimizer's ``weight_decay``.

    Initialisation: log_alpha_j = beta log(-gamma / zeta) - logit(p), so that P(z_j = 0) = p at the
    start (the reference instead sets log_alpha = logit(1 - p), which gives P(z = 0) = 0.17 at p = 0.5).
    log_alpha is clamped to [log 0.01, log 100] after each optimizer step as in the reference code,
    so p above ~0.96 starts at the lower bound.

    Shapes: (N, F) or (N, C, H, W) -> same shape; gates (N, F) or (N, C, 1, 1).

    Args:
        p: initial P(gate = 0), in [0, 1).
        site: the :class:`~dropout_lab.dropout.base.SiteSpec`.
        lam: lambda, the penalty weight per controlled weight (the reference's ``lamba``, 1.0 there).
        per_sample: one gate sample per sample (True) or one per minibatch (False, the reference default).
        group_weighted: weight each gate's P(z != 0) by its group size |g_j|.

    """

    def __init__(self, p: float, site: SiteSpec, lam: float, per_sample: bool, group_weighted: bool) -> None:
        super().__init__(p, site)
        self.lam, self.per_sample = float(lam), bool(per_sample)
        p0 = min(max(self.p, 1e-6), 1 - 1e-6)
        init = BETA * math.log(-GAMMA / ZETA) - math.log(p0 / (1 - p0))
        self.log_alpha = nn.Parameter(torch.full((site.num_features,), init).clamp(LOG_ALPHA_MIN, LOG_ALPHA_MAX))
        self.group = group_size(site.next, site.num_features) if group_weighted else 1

    def prob_open(self) -> Tensor:
        """P(z_j != 0) per unit, shape (F,) (eq. 12)."""
        return torch.sigmoid(self.log_alpha - BETA * math.log(-GAMMA / ZETA))

    def eval_gates(self) -> Tensor:
        """The deterministic test-time gates, shape (F,), in [0, 1] (eq. 13)."""
        return (torch.sigmoid(self.log_alpha) * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)

    def sample_gates(self, n: int) -> Tensor:
        """Hard-concrete samples, shape (n, F), in [0, 1] (eq. 10-11, reparameterised in log_alpha)."""
        u = torch.rand(n, self.log_alpha.numel(), device=self.log_alpha.device).clamp(1e-6, 1 - 1e-6)
        s = torch.sigmoid((u.log() - (-u).log1p() + self.log_alpha) / BETA)
        return (s * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)

    def deterministic(self, x: Tensor) -> Tensor:
        """Evaluation: ``x`` times the deterministic gates (eq. 13; not the identity); at p = 0 (no
        gates, as every method at p = 0) the identity."""
        return x * self.eval_gates().view(1, -1, *(1,) * (x.ndim - 2)) if self.p > 0 else x

    def sample(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(x * z, z)`` with hard-concrete gates z (N, F) or (1, F) (``per_sample``), (..., 1, 1) at conv
        sites; the base records mean(z == 0) and p_eq = V / (1 + V), V = Var(z) / E[z]^2
        (:func:`~dropout_lab.dropout.base.mask_rates`)."""
        z = self.sample_gates(len(x) if self.per_sample else 1)
        z = z.view(*z.shape, *(1,) * (x.ndim - 2))
        return x * z, z

    def extra_loss(self, dataset_size: int) -> Tensor | None:
        """lambda * sum_j |g_j| P(z_j != 0) / N: a scalar tensor with gradient to log_alpha; None at
        p = 0 (no gates)."""
        if self.p == 0:
            return None
        return self.lam * self.group * self.prob_open().sum() / max(dataset_size, 1)

    @torch.no_grad()
    def on_train_batch_end(self, ctx: DropoutContext) -> None:
        """Clamp log_alpha to [log 0.01, log 100] after the optimizer step (reference constraint)."""
        self.log_alpha.clamp_(LOG_ALPHA_MIN, LOG_ALPHA_MAX)

    def stats(self) -> dict[str, float]:
        """Adds ``gate_zero_fraction`` (eval gates exactly 0), ``gate_mean`` (mean eval gate) and
        ``expected_l0_fraction`` (mean P(z != 0)); ``drop_fraction`` is the sampled gates equal to 0."""
        with torch.no_grad():
            gates = self.eval_gates()
            return super().stats() | {
                "gate_zero_fraction": float((gates == 0).float().mean()),
                "gate_mean": float(gates.mean()),
                "expected_l0_fraction": float(self.prob_open().mean()),
            }

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, lam={self.lam}, group={self.group}, per_sample={self.per_sample}"


SPEC = register(
    MethodSpec(
        key="sparse_mask",
        cls=SparseMask,
        source="source 000; Louizos, Welling & Kingma 2018",
        summary="hard-concrete gates with an L0 penalty / N, deterministic gate at eval",
        p=rate_p(0.2, "initial P(gate = 0) (gates are learned)"),
        p_is_rate=False,
        eval_identity=False,
        args={
            "lam": Arg(
                1.0,
                NONNEGATIVE,
                "lambda per controlled weight, scaled by 1/N (reference: 1.0)",
                tune="tag(log, interval(0.1, 10.0))",
            ),
            "per_sample": Arg(True, BOOL, "one gate sample per sample; false: one per minibatch (reference default)"),
            "group_weighted": Arg(
                True, BOOL, "weight P(z != 0) by the number of next-layer weights each gate controls"
            ),
        },
        drop_fraction="sampled gates exactly 0 (p at the start, then learned); p = 0: no gates",
        p_eq="V / (1 + V), V = Var(z) / E[z]^2 of the gates: above the drop fraction",
    )
)
