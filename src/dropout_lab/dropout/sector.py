"""Sector-wise dropout: "Enhancing Generalization in Neural Networks: Innovations in Dropout Techniques
with Sector-wise and LRP-guided Approaches" (csulb-datascience/Sector-wise-and-LRP-guided, source 002):
units split into sectors of n, exactly m dropped in each sector, survivors scaled by n / (n - m).
Method page: docs/methods/sector.md."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dropout_lab.checks import COUNT, BadValue
from dropout_lab.dropout.base import DropoutMethod, SiteSpec
from dropout_lab.dropout.spec import Arg, MethodSpec, rate_p, register
from dropout_lab.dropout.units import broadcast_units


class SectorDropout(DropoutMethod):
    """Stratified dropout: the F units are split into contiguous sectors of ``sector_size`` = n (the
    last one holds the ``F mod n`` remaining units, if any); in every sector of size s exactly
    ``m_s = round(p s)`` units, chosen uniformly without replacement per sample, are dropped and the
    others are scaled by ``s / (s - m_s)``; identity in eval.

    ``E[y] = x`` per unit, and the dropped fraction is the constant ``sum_s m_s / F`` (e.g. 25/84 for
    F = 84, n = 10, p = 0.3), recorded as realised. Vectorised: uniform noise per (sample, sector,
    slot), ``argsort`` within sectors, the first ``m_s`` slots scattered into the mask.

    Shapes: (N, F) -> (N, F) at fc sites; (N, C, H, W) -> (N, C, H, W) at conv sites, where the
    sectors are over channels and a channel is dropped as a whole.

    Args:
        p: target drop fraction per sector, in [0, 1).
        site: the :class:`~dropout_lab.dropout.base.SiteSpec` (its ``num_features`` is F).
        sector_size: n >= 1 units per sector (``group_size`` in the reference notebook).

    Raises:
        BadValue: if ``sector_size`` exceeds the site's units (one sector would be the whole layer,
            padded to ``sector_size`` slots: 100 MB and 150 ms a forward at large sizes).
        ValueError: if some sector would lose all its units
            (``round(p s) = s``), or ``p > 0`` rounds to no dropped unit at all.
    """

    def __init__(self, p: float, site: SiteSpec, sector_size: int) -> None:
        super().__init__(p, site)
        n, features = int(sector_size), site.num_features
        if n > features:
            raise BadValue(
                "dropout.sector_size",
                n,
                f"must be at most {features}, the units of site {site.name} (a smaller sector_size, or dropout.sites without that site)",
            )
        sizes = [n] * (features // n) + ([features % n] if features % n else [])
        drops = [math.floor(self.p * s + 0.5) for s in sizes]
        if any(m == s for m, s in zip(drops, sizes)):
            raise ValueError(
                f"dropout.p={self.p} with dropout.sector_size={n} drops every unit of a sector "
                f"(sizes {sorted(set(sizes))}, round(p * size) = size): lower p or raise sector_size"
            )
        if self.p > 0 and not any(drops):
            raise ValueError(f"dropout.p={self.p} with dropout.sector_size={n} drops no unit (round(p * size) = 0)")
        self.sector_size, self.num_dropped = n, sum(drops)
        size, dropped, slot = torch.tensor(sizes)[:, None], torch.tensor(drops)[:, None], torch.arange(n)
        self.register_buffer("valid", slot < size, persistent=False)  # (S, n): real units, not padding
        self.register_buffer("dropped_slot", slot < dropped, persistent=False)  # (S, n): first m_s slots
        scale = (size / (size - dropped)).expand(-1, n)[slot < size]
        self.register_buffer("scale", scale.float(), persistent=False)  # (F,)

    def sample(self, x: Tensor) -> tuple[Tensor, Tensor]:
        n_samples, (sectors, n) = x.shape[0], self.valid.shape
        noise = torch.rand(n_samples, sectors, n, device=x.device).masked_fill_(~self.valid, 2.0)
        slots = self.dropped_slot.expand(n_samples, -1, -1)
        drop = torch.zeros_like(slots).scatter_(2, noise.argsort(2), slots).flatten(1)[:, : self.scale.numel()]
        mask = broadcast_units(~drop * self.scale.to(x.dtype), x)
        return x * mask, mask

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, sector_size={self.sector_size}, dropped_per_sample={self.num_dropped}"


SPEC = register(
    MethodSpec(
        key="sector",
        cls=SectorDropout,
        source="source 002",
        summary="exactly round(p n) units dropped in every sector of n per sample",
        p=rate_p(0.5, "drop fraction per sector"),
        args={
            "sector_size": Arg(
                10,
                COUNT,
                "units per sector n; a last partial sector drops round(p * its size)",
                tune="choice(5, 10, 20)",
            )
        },
        drop_fraction="exactly sum round(p s) / F",
    )
)
