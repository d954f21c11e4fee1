"""Biased dropout: Poernomo & Kang, "Biased Dropout and Crossmap Dropout: Learning towards effective
Dropout regularization in convolutional neural network", Neural Networks 104:60-67, 2018 (two
groups by activation magnitude, the low group dropped more). Also source 003's continuous variant,
:class:`BiasedSeed003`. Method page: docs/methods/biased.md."""

from __future__ import annotations

import torch
from torch import Tensor

from dropout_lab.checks import RATE, exactly
from dropout_lab.dropout.base import DropoutMethod, SiteSpec, mask_rates
from dropout_lab.dropout.spec import Arg, MethodSpec, rate_p, register
from dropout_lab.dropout.units import broadcast_units, unit_activations


def biased_mask(x: Tensor, p_high: float, p_low: float) -> Tensor:
    """Per-unit inverted Bernoulli mask (N, F[, 1, 1]) of Poernomo & Kang's two groups: per sample,
    units with ``|a|`` strictly above the median (channel means at conv sites) drop at ``p_high``,
    the others at ``p_low``; each kept unit is scaled by ``1 / (1 - p_group)``."""
    with torch.no_grad():
        score = unit_activations(x.detach()).abs()
        median = score.kthvalue(score.shape[1] - score.shape[1] // 2, dim=1, keepdim=True).values
        rate = torch.where(score > median, p_high, p_low)
        return broadcast_units((torch.rand_like(score) >= rate) / (1.0 - rate), x).to(x.dtype)


class LiveUnitRecording(DropoutMethod):
    """Records the drop fraction and p_eq over *live* units only (a unit whose input is 0 everywhere,
    e.g. a ReLU zero, is not counted: dropping it changes nothing). Base of the biased methods, whose
    masks depend on activation magnitudes and so drop ReLU zeros at the low-group rate."""

    def record_sample(self, x: Tensor, y: Tensor, mask: Tensor) -> None:
        live = broadcast_units(unit_activations(x.detach().abs()) > 0, x)
        self.record(*mask_rates(mask, live))


class BiasedDropout(LiveUnitRecording):
    """Two groups per sample by activation magnitude; the high group is dropped at ``p - delta``, the
    low group at ``p + delta``, each group rescaled by its own keep probability; identity in eval.

    Split rule (harness choice, the abstract does not fix it): per sample, the units whose ``|a|`` is
    strictly above the median (the ``ceil(F/2)``-th smallest ``|a|``) form the high group, the others
    the low group. With distinct magnitudes that is ``floor(F/2)`` high units; units tied with the
    median (e.g. when more than half are ReLU zeros) join the low group. Then
    ``y = x * r / (1 - p_g)`` with ``r ~ Bernoulli(1 - p_g)`` and ``p_g`` the unit's group rate, so
    ``E[y | x] = x`` element by element. Expected dropped fraction ``p + delta (n_low - n_high) / F``:
    exactly ``p`` for even F and distinct magnitudes, higher when zeros tie at the median. The
    recorded rates count live units only (:class:`LiveUnitRecording`).

    Shapes: (N, F) -> (N, F) at fc sites; (N, C, H, W) -> (N, C, H, W) at conv sites, where a
    channel is one unit, ranked by its mean ``|a|`` over positions and masked as a whole.

    Args:
        p: mean drop rate, in [0, 1).
        site: the :class:`~dropout_lab.dropout.base.SiteSpec`.
        delta: half the gap between the two group rates: ``p_high = p - delta``, ``p_low = p + delta``;
            None (default) = ``0.4 p`` (0.2 at p = 0.5), so that every p below 0.71 is valid in a sweep.

    Raises:
        ValueError: if not ``delta <= p`` and ``p + delta < 1``.
    """

    def __init__(self, p: float, site: SiteSpec, delta: float | None) -> None:
        super().__init__(p, site)
        delta = 0.4 * self.p if delta is None else delta
        if not (0.0 <= delta <= self.p and self.p + delta < 1.0):
            raise ValueError(
                f"dropout.delta={delta} with dropout.p={self.p}: need 0 <= delta <= p and p + delta < 1 "
                "(group rates p - delta and p + delta)"
            )
        self.delta = float(delta)
        self.p_high, self.p_low = self.p - self.delta, self.p + self.delta

    def sample(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mask = biased_mask(x, self.p_high, self.p_low)
        return x * mask, mask

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p_high={self.p_high:g}, p_low={self.p_low:g}"


class BiasedSeed003(LiveUnitRecording):
    """Source 003's continuous biased dropout (not the paper's two groups): per sample, min-max normalise
    the activations, ``z = (a - min a) / (max a - min a)``; drop each unit with ``p_i = p (1 - z_i)`` and
    scale survivors by ``1 / (1 - p_i)``; identity in eval. Unbiased per element; the smallest unit is
    dropped with probability ``p``, the largest never, so the mean rate ``mean(p_i)`` is below ``p``.

    Shapes: (N, F) -> (N, F) at fc sites (the seed's last axis); (N, C, H, W) at conv sites with
    channels as units (normalised over the channel means, masked per channel).

    Args:
        p: the largest per-unit drop rate (seed: ``base_dropout_rate``), in [0, 1).
        site: the :class:`~dropout_lab.dropout.base.SiteSpec`.

    """

    def sample(self, x: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            a = unit_activations(x.detach())
            lo, hi = a.amin(1, keepdim=True), a.amax(1, keepdim=True)
            rate = self.p * (1.0 - (a - lo) / (hi - lo).clamp(min=torch.finfo(a.dtype).tiny))
            mask = broadcast_units((torch.rand_like(a) >= rate) / (1.0 - rate), x).to(x.dtype)
        return x * mask, mask


SPEC = register(
    MethodSpec(
        key="biased",
        cls=BiasedDropout,
        source="Poernomo & Kang 2018",
        summary="two groups by activation, higher rate for the low group",
        p=rate_p(0.5, "mean drop probability of the two groups"),
        args={
            "delta": Arg(
                None,
                exactly(None, "0.4 p") | RATE,
                "group rates p - delta (high group), p + delta; need delta <= p, p + delta < 1",
            )
        },
        drop_fraction="live units only: p with distinct magnitudes, p - delta when ReLU zeros fill the low group",
        p_eq="live units only; slightly above the drop fraction",
    )
)
SEED003 = register(
    MethodSpec(
        key="biased_seed003",
        cls=BiasedSeed003,
        source="source 003",
        summary="continuous rate from the normalised activation (source 003's variant of `biased`)",
        p=rate_p(0.5, "largest per-unit drop rate"),
        p_is_rate=False,
        drop_fraction="live units only, below p (mean of p (1 - z))",
        p_eq="live units only",
    )
)
