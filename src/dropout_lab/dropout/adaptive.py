"""Adaptive (importance-EMA) dropout: source 001, slide 4, with its rates turned into a sampled,
unbiased per-unit mask. Nearest paper: Ba & Frey, "Adaptive dropout for training deep neural
networks", NIPS 2013 ("standout": units with larger activations are kept more often).
Method page: docs/methods/adaptive.md."""

from __future__ import annotations

import torch
from torch import Tensor

from dropout_lab.checks import RATE, number
from dropout_lab.dropout.base import DropoutMethod, SiteSpec
from dropout_lab.dropout.spec import Arg, MethodSpec, rate_p, register
from dropout_lab.dropout.units import broadcast_units


class AdaptiveDropout(DropoutMethod):
    """Per-unit drop rates that fall with each unit's running importance; identity in eval.

    Each training forward (source 001, slide 4, then anchoring and clipping, see
    docs/methods/adaptive.md):

    1. importance EMA (buffer ``importance``, shape (F,), initialised to 1):
       ``I <- (1 - momentum) I + momentum * mean|a|`` over the batch (and positions at conv sites);
    2. seed shape ``w_j = 1 - I_j / max_k I_k`` (the most important unit gets 0);
    3. anchored rates ``p_j = p + c (w_j - mean(w))`` with ``c = min(p, (rate_max - p) / max(w - mean w),
       (p - rate_min) / max(mean w - w))``: the seed's slope ``p`` (``p_j = p w_j`` up to a shift), shrunk
       just enough that every ``p_j`` lies in ``[rate_min, rate_max]``; the mean rate is exactly ``p``;
    4. ``y = x * r / (1 - p_j)``, ``r ~ Bernoulli(1 - p_j)`` per sample and unit (per channel at conv
       sites), so ``E[y] = x`` unit by unit.

    Shapes: (N, F) -> (N, F) at fc sites; (N, C, H, W) -> (N, C, H, W) at conv sites (one mask entry
    and one importance per channel). Records the realised fraction of dropped units (mask entries).

    Args:
        p: mean drop rate over the units, in [0, 1).
        site: the :class:`~dropout_lab.dropout.base.SiteSpec`.
        momentum: EMA weight of the new batch statistic (the seed's ``adaptation_rate``), in (0, 1].
        rate_min: lowest per-unit rate, 0 <= rate_min <= p.
        rate_max: highest per-unit rate, p <= rate_max < 1.

    Raises:
        ValueError: if not ``rate_min <= p <= rate_max``.
    """

    def __init__(self, p: float, site: SiteSpec, momentum: float, rate_min: float, rate_max: float) -> None:
        super().__init__(p, site)
        if not 0.0 <= rate_min <= self.p <= rate_max < 1.0:
            raise ValueError(
                f"dropout.rate_min={rate_min}, dropout.p={self.p}, dropout.rate_max={rate_max}: "
                "need 0 <= rate_min <= p <= rate_max < 1"
            )
        self.momentum, self.rate_min, self.rate_max = float(momentum), float(rate_min), float(rate_max)
        self.register_buffer("importance", torch.ones(site.num_features))

    def unit_rates(self) -> Tensor:
        """Current per-unit drop rates, shape (F,), in [rate_min, rate_max] with mean ``p`` (step 2-3)."""
        tiny = torch.finfo(self.importance.dtype).tiny
        w = 1.0 - self.importance / self.importance.max().clamp(min=tiny)
        d = w - w.mean()
        c = ((self.rate_max - self.p) / d.max().clamp(min=tiny)).clamp(max=self.p)
        c = torch.minimum(c, (self.p - self.rate_min) / (-d.min()).clamp(min=tiny))
        return self.p + c * d

    def sample(self, x: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            if self.training:
                batch_mean = x.detach().abs().transpose(0, 1).flatten(1).mean(1)
                self.importance.lerp_(batch_mean.to(self.importance.dtype), self.momentum)
            rates = self.unit_rates().to(x.dtype)
            mask = broadcast_units(
                (torch.rand(x.shape[:2], device=x.device, dtype=x.dtype) >= rates) / (1.0 - rates), x
            )
        return x * mask, mask

    def stats(self) -> dict[str, float]:
        """Base stats plus the current lowest and highest per-unit rate (``unit_rate_lo``/``_hi``)."""
        rates = self.unit_rates()
        return super().stats() | {"unit_rate_lo": float(rates.min()), "unit_rate_hi": float(rates.max())}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, momentum={self.momentum}, rates in [{self.rate_min}, {self.rate_max}]"


SPEC = register(
    MethodSpec(
        key="adaptive",
        cls=AdaptiveDropout,
        source="source 001 (nearest: Ba & Frey 2013)",
        summary="per-unit rates from an importance EMA, per-unit rescaling",
        p=rate_p(0.5, "mean drop probability over the units"),
        args={
            "momentum": Arg(
                0.01,
                number(0, 1, low_open=True),
                "EMA weight of the new batch mean |a| (source: adaptation_rate)",
                tune="tag(log, interval(1.0e-3, 1.0e-1))",
            ),
            "rate_min": Arg(0.0, RATE, "lowest per-unit rate; need rate_min <= p <= rate_max"),
            "rate_max": Arg(0.9, RATE, "highest per-unit rate"),
        },
        drop_fraction="= p (unit rates average p)",
        p_eq="slightly above p (unequal unit rates)",
    )
)
