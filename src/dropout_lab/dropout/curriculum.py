"""Curriculum dropout: Morerio, Cavazza, Volpi, Vidal & Murino, "Curriculum Dropout", ICCV 2017,
arXiv:1703.06229: the retain probability decays per optimisation step as
theta(t) = (1 - theta_bar) exp(-gamma t) + theta_bar, from 1 (no dropout) towards theta_bar = 1 - p.
Method page: docs/methods/curriculum.md."""

from __future__ import annotations

import math

from dropout_lab.checks import POSITIVE
from dropout_lab.dropout.base import DropoutContext, SiteSpec
from dropout_lab.dropout.spec import Arg, MethodSpec, rate_p, register
from dropout_lab.dropout.standard import StandardDropout


class CurriculumDropout(StandardDropout):
    """Standard inverted dropout at the scheduled rate p(t) = 1 - theta(t) = p (1 - exp(-gamma t)).

    The decay is relative to the run: ``gamma = decay / T`` with T the planned optimizer steps
    (``ctx.max_steps``). The paper's gamma = 1e-3 per step over its ~64k-step runs is ``decay``
    = gamma T = 64: the rate is within 1 % of ``p`` after 7 % of the run (ln 100 / 64), whatever the
    run length. A fixed per-step gamma would not reach ``p`` in a short run (gamma T = 0.16 gives
    p(T) = 0.15 p). ``t`` is Lightning's ``global_step``, read in ``on_train_batch_start`` so the
    schedule survives a resume; before the first hook call t = 0 (no dropout). Not source 001's linear
    per-epoch ramp. Eval is the identity; with ``mc_sampling`` the last scheduled rate is used.

    Args:
        p: target drop probability 1 - theta_bar, in [0, 1).
        site: the :class:`~dropout_lab.dropout.base.SiteSpec`.
        decay: gamma x T, e-foldings of the schedule over the planned run (config key
            ``dropout.decay``; 64 = the paper's schedule at its length).

    Shapes: (N, *) -> (N, *).

    """

    def __init__(self, p: float, site: SiteSpec, decay: float) -> None:
        super().__init__(p, site)
        self.decay = float(decay)
        self.current_p = 0.0

    def keep_prob(self, progress: float) -> float:
        """theta = (1 - theta_bar) exp(-decay * progress) + theta_bar, theta_bar = 1 - p, at
        ``progress`` = t / T (Morerio et al. 2017, with gamma = decay / T)."""
        theta_bar = 1.0 - self.p
        return (1.0 - theta_bar) * math.exp(-self.decay * progress) + theta_bar

    def on_train_batch_start(self, ctx: DropoutContext) -> None:
        self.current_p = 1.0 - self.keep_prob(ctx.progress)

    def rate(self) -> float:
        return self.current_p

    def stats(self) -> dict[str, float]:
        return super().stats() | {"current_p": self.current_p}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, decay={self.decay}"


SPEC = register(
    MethodSpec(
        key="curriculum",
        cls=CurriculumDropout,
        source="Morerio et al. 2017",
        summary="keep prob theta(t) = (1-theta_bar) exp(-gamma t) + theta_bar, gamma = `decay` / planned steps",
        p=rate_p(0.5, "final drop probability (the schedule rises to it)"),
        args={
            "decay": Arg(
                64.0,
                POSITIVE,
                "gamma x planned steps: the paper's 1e-3 per step over ~64k steps; p is within 1 % after 7 % of a run",
                tune="tag(log, interval(16.0, 256.0))",
            )
        },
        drop_fraction="~ p (1 - 1/decay): 0.98 p at the default decay 64",
    )
)
