"""Statistical tolerances for tests of stochastic layers: bounds from the binomial or normal standard
error at a fixed number of standard errors, never hand-tuned constants."""

from __future__ import annotations

import math

#: standard errors allowed: two-sided false-alarm rate ~6e-7 per check with fixed seeds
Z = 5.0


def binomial_tol(p: float, n: int, z: float = Z) -> float:
    """Half-width for a fraction of ``n`` Bernoulli(p) trials: z * sqrt(p (1 - p) / n)."""
    return z * math.sqrt(p * (1.0 - p) / n)


def mean_tol(std: float, n: int, z: float = Z) -> float:
    """Half-width for the mean of ``n`` i.i.d. samples with standard deviation ``std``: z * std / sqrt(n)."""
    return z * std / math.sqrt(n)
