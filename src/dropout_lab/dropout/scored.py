"""Shared machinery of the score-driven (source 000) dropout methods: a per-unit importance score
becomes a per-unit drop probability (docs/methods/scored.md).

A subclass of :class:`ScoredDropout` only says how to score units; it does one of:

* override :meth:`ScoredDropout.score_input` (score from the pre-mask input and the neighbouring
  layers' weights, e.g. ``l2_dynamic``, ``fmre``): called inside ``forward`` on update steps;
* set ``uses_output_grad = True`` and override :meth:`ScoredDropout.score_grad` (score from the
  pre-mask activation a and the gradient of the site's *output* dL/dy, e.g. ``grad_dynamic``,
  ``taylor``): a tensor hook on the output calls it during backward and reduces to per-unit values
  inside the hook, so scores from step t set the masks of step t+1 and nothing larger than (F,) is
  kept between steps;
* call :meth:`ScoredDropout.update_scores` itself from a training hook (e.g. ``obd``, which runs a
  Hessian pass in :func:`~dropout_lab.dropout.passes.extra_pass`).

Rates. ``p`` is the mean drop rate: the per-unit rates span [``initial_rate``, ``max_rate``], a range
centred on ``p``. Give neither bound (rates in [p/3, 5p/3], the seed's 0.1..0.5 around 0.3), one bound
(the other mirrors it around ``p``) or both (their midpoint must equal ``p``). With the default rank
normalisation the mean rate over a site is exactly ``p``, so a sweep over ``dropout.p`` compares
methods at the same mean rate as ``standard``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from dropout_lab.checks import COUNT, RATE, choice, exactly
from dropout_lab.dropout.base import DropoutContext, DropoutMethod, SiteSpec
from dropout_lab.dropout.spec import Arg, MethodSpec, rate_p, register

NORMALISATIONS = ("rank", "minmax")
DROP_TARGETS = ("low", "high")


def rate_range(p: float, initial_rate: float | None, max_rate: float | None) -> tuple[float, float]:
    """The per-unit rate range [lo, hi], centred on the mean rate ``p``.

    Args:
        p: mean drop rate (``dropout.p``).
        initial_rate: lower bound, or None.
        max_rate: upper bound, or None.

    Returns:
        ``(lo, hi)``: ``(p/3, 5p/3)`` if both are None; the given bound and its mirror ``2p - bound``
        if one is None; both if both are given.

    Raises:
        ValueError: if both are given and their midpoint is not ``p``, if lo > hi, if lo < 0 or
            hi >= 1 (naming ``dropout.initial_rate`` / ``dropout.max_rate``).
    """
    if initial_rate is None and max_rate is None:
        lo, hi = p / 3.0, 5.0 * p / 3.0
    elif max_rate is None:
        lo, hi = float(initial_rate), 2.0 * p - float(initial_rate)
    elif initial_rate is None:
        lo, hi = 2.0 * p - float(max_rate), float(max_rate)
    else:
        lo, hi = float(initial_rate), float(max_rate)
        if abs((lo + hi) / 2.0 - p) > 1e-9:
            raise ValueError(
                f"dropout.initial_rate={lo} and dropout.max_rate={hi} must be centred on the mean rate "
                f"dropout.p={p} (set dropout.p={(lo + hi) / 2:g}, or give only one bound)"
            )
    if not 0.0 <= lo <= hi < 1.0:
        raise ValueError(
            f"dropout.initial_rate={lo:g}, dropout.max_rate={hi:g} (mean dropout.p={p}) must satisfy "
            "0 <= initial_rate <= max_rate < 1"
        )
    return lo, hi


def normalise_scores(score: Tensor, how: str) -> Tensor:
    """Map scores (F,) to u (F,) in [0, 1], 1 = most important.

    ``rank``: u_j = rank_j / (F - 1) (ties broken by index; F = 1 gives 0.5), mean exactly 0.5;
    ``minmax``: u_j = (s_j - min) / (max - min), all 0.5 when the scores are equal.
    """
    if how == "rank":
        if score.numel() == 1:
            return torch.full_like(score, 0.5)
        ranks = score.argsort().argsort().to(score.dtype)
        return ranks / (score.numel() - 1)
    span = score.max() - score.min()
    return torch.where(
        span > 0, (score - score.min()) / span.clamp(min=torch.finfo(score.dtype).tiny), torch.full_like(score, 0.5)
    )


def incoming_weight(site: SiteSpec, key: str) -> Tensor:
    """The weight of ``site.prev`` whose first axis indexes the site's units: a Linear's (F, in) rows
    or a Conv2d's (C, in/groups, k, k) filters.

    Raises:
        ValueError: naming ``dropout=<key>`` if ``site.prev`` is missing, has no ``weight`` or its
            first axis is not ``site.num_features``.
    """
    weight = getattr(site.prev, "weight", None)
    if not isinstance(weight, Tensor) or weight.ndim < 2 or weight.shape[0] != site.num_features:
        raise ValueError(
            f"dropout={key} needs the layer before site {site.name!r} to have a weight with one row/filter per "
            f"unit ({site.num_features}); site.prev is {type(site.prev).__name__}: choose other dropout.sites"
        )
    return weight


class ScoredDropout(DropoutMethod):
    """Per-unit (fc, (N, F)) or per-channel (conv, (N, C, H, W)) dropout whose rates follow an importance score.

    Algorithm (docs/methods/scored.md): S <- ema * S + (1 - ema) * s for each new score s (F,) >= 0 (the first
    score initialises S); u = normalise(S) in [0, 1]; p_j = lo + (hi - lo) * (1 - u_j) for
    ``drop_target=low`` (unimportant units dropped more, pruning-aligned) or ``lo + (hi - lo) * u_j``
    for ``high``; until the first score all rates equal ``p`` (warm-up). Training forward: per-sample
    Bernoulli keep mask r ~ Bernoulli(1 - p_j), one draw per unit (per channel at conv sites),
    y = x * r / (1 - p_j) (unbiased per unit); evaluation: identity.

    Buffers (in the state_dict): ``score`` (F,) EMA, ``rates`` (F,) current drop rates, ``scored``
    (bool scalar, a score exists).

    Args:
        p: mean drop rate in [0, 1) (see :func:`rate_range`).
        site: the :class:`~dropout_lab.dropout.base.SiteSpec`.
        initial_rate: lowest per-unit rate, or None (derived from ``p``).
        max_rate: highest per-unit rate, or None (derived from ``p``).
        drop_target: ``low`` | ``high``.
        ema: EMA factor in [0, 1) (0 = use the latest score only).
        update_every: score on every n-th optimizer step (``ctx.due(every=n)``), n >= 1.
        normalise: ``rank`` | ``minmax`` (:func:`normalise_scores`).

    Raises:
        ValueError: for ``initial_rate``/``max_rate`` inconsistent with ``p`` (:func:`rate_range`).
    """

    #: True: forward hooks its output on update steps and calls :meth:`score_grad` during backward
    uses_output_grad: ClassVar[bool] = False

    def __init__(
        self,
        p: float,
        site: SiteSpec,
        initial_rate: float | None,
        max_rate: float | None,
        drop_target: str,
        ema: float,
        update_every: int,
        normalise: str,
    ) -> None:
        super().__init__(p, site)
        self.lo, self.hi = rate_range(self.p, initial_rate, max_rate)
        self.drop_target, self.ema, self.update_every, self.normalise = (
            drop_target,
            float(ema),
            int(update_every),
            normalise,
        )
        F = site.num_features
        self.register_buffer("score", torch.zeros(F))
        self.register_buffer("rates", torch.full((F,), self.p))
        self.register_buffer("scored", torch.zeros((), dtype=torch.bool))
        self._due = True  # this step scores (set per step by on_train_batch_start; every forward without a controller)

    # -- what subclasses provide -------------------------------------------------------------------
    def score_input(self, x: Tensor) -> Tensor | None:
        """Per-unit score (F,) >= 0 from the detached pre-mask input ``x`` ((N, F) or (N, C, H, W)),
        called under no_grad on update steps; None (the default) if the method scores elsewhere."""
        return None

    def score_grad(self, a: Tensor, g: Tensor) -> Tensor:
        """Per-unit score (F,) >= 0 from the pre-mask activation ``a`` and the output gradient
        ``g`` = dL/dy (same shape as ``a``); used when ``uses_output_grad``."""
        raise NotImplementedError

    # -- machinery ---------------------------------------------------------------------------------
    @torch.no_grad()
    def update_scores(self, s: Tensor) -> None:
        """Fold a new score ``s`` (F,) into the EMA and recompute the rates (no host sync)."""
        s = s.detach().to(self.score)
        self.score.copy_(torch.where(self.scored, self.ema * self.score + (1.0 - self.ema) * s, s))
        self.scored.fill_(True)
        u = normalise_scores(self.score, self.normalise)
        weight = 1.0 - u if self.drop_target == "low" else u
        self.rates.copy_(self.lo + (self.hi - self.lo) * weight)

    def _capture(self, a: Tensor):
        def hook(g: Tensor) -> None:
            self.update_scores(self.score_grad(a, g))

        return hook

    def on_train_batch_start(self, ctx: DropoutContext) -> None:
        """Schedule this step's score: due every ``update_every`` optimizer steps (``ctx.due``)."""
        self._due = ctx.due(every=self.update_every)

    def sample(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per-sample Bernoulli keep mask with the per-unit rates, scaled by 1/(1 - p_j); on a due
        training step also scores (:meth:`score_input` now, or :meth:`score_grad` in backward).

        Returns:
            ``(y, mask)``: ``y = x * mask``; ``mask`` (N, F) or (N, C, 1, 1), 0 or 1/(1 - p_j).

        Raises:
            ValueError: if ``x`` is not (N, F, ...) with F = ``site.num_features``.
        """
        if x.ndim < 2 or x.shape[1] != self.site.num_features:
            raise ValueError(
                f"{self.site.name}: expected (N, {self.site.num_features}, ...) input, got {tuple(x.shape)}"
            )
        due = self.recording and self._due
        if due:
            with torch.no_grad():
                s = self.score_input(x.detach())
            if s is not None:
                self.update_scores(s)
        rates = self.rates.view(-1, *([1] * (x.ndim - 2))).to(x.dtype)
        mask = (torch.rand((x.shape[0], *rates.shape), device=x.device) >= rates) / (1.0 - rates)
        y = x * mask
        if due and self.uses_output_grad and torch.is_grad_enabled():
            if not y.requires_grad:  # a site on the input data (MLP input_dropout): dL/dy is still wanted
                y.requires_grad_()
            y.register_hook(self._capture(x.detach()))
        return y, mask

    def stats(self) -> dict[str, float]:
        """Base stats plus ``rate_mean``, ``rate_min``, ``rate_max`` of the current per-unit rates and
        ``score_mean``, ``score_max`` of the EMA score (0 before the first score)."""
        return super().stats() | {
            "rate_mean": float(self.rates.mean()),
            "rate_min": float(self.rates.min()),
            "rate_max": float(self.rates.max()),
            "score_mean": float(self.score.mean()),
            "score_max": float(self.score.max()),
        }

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rates=[{self.lo:g}, {self.hi:g}], drop_target={self.drop_target}, update_every={self.update_every}"


__all__ = ["ScoredDropout", "incoming_weight", "normalise_scores", "rate_range"]


#: the arguments every score-driven method shares (docs/methods/scored.md); each spec adds its own
SCORED_ARGS: dict[str, Arg] = {
    "initial_rate": Arg(
        None,
        exactly(None, "p/3") | RATE,
        "lowest per-unit rate (0.1 at p = 0.3); a value: max_rate mirrors it around p",
    ),
    "max_rate": Arg(None, exactly(None, "5p/3") | RATE, "highest per-unit rate (0.5 at p = 0.3)"),
    "drop_target": Arg(
        "low",
        choice(*DROP_TARGETS),
        "low: unimportant units dropped more | high: important ones",
        tune="choice(low, high)",
    ),
    "normalise": Arg("rank", choice(*NORMALISATIONS), "scores to rates by rank or min-max"),
    "ema": Arg(0.9, RATE, "score EMA factor per update"),
    "update_every": Arg(1, COUNT, "optimizer steps between score updates"),
}


def scored_spec(key: str, cls: type, source: str, summary: str, **args: Arg) -> MethodSpec:
    """The :class:`~dropout_lab.dropout.spec.MethodSpec` of a score-driven method: ``p`` the mean per-unit rate
    (default 0.3), :data:`SCORED_ARGS` with ``args`` replacing or adding entries, registered."""
    return register(
        MethodSpec(
            key=key,
            cls=cls,
            source=source,
            summary=summary,
            p=rate_p(0.3, "mean per-unit drop rate"),
            args=SCORED_ARGS | args,
            sites="fc",
            drop_fraction="~ p (per-unit rates in [initial_rate, max_rate], mean exactly p with rank normalisation)",
            p_eq="slightly above p (unequal unit rates: 1 - 1 / mean_j 1/(1 - p_j))",
        )
    )
