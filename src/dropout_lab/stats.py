"""The statistics of a paired comparison of two methods over replicates (docs/sweeps.md#report;
../shared/comparison.md §3-4): exact power and minimum detectable effect of the paired t-test, seeds
needed, an exact sign-flip permutation test, equivalence (TOST) within a region of practical
equivalence, and the decision a report prints. Pure functions of arrays of paired differences; no
pandas, no files.

Power of the two-sided paired t-test at level a with n pairs and standardised effect d = delta / sd
(noncentral t with n - 1 degrees of freedom and noncentrality d sqrt(n); e.g. Cohen, "Statistical Power
Analysis", 1988, ch. 2)::

    power = nct.sf(t, n - 1, d sqrt(n)) + nct.sf(t, n - 1, -d sqrt(n)),   t = t.isf(a / 2, n - 1)

(the lower tail written by symmetry: ``nct.cdf(-t, ...)`` returns NaN for large noncentralities).

``statsmodels``' ``TTestPower().solve_power`` silently returns d = 3.215 (power 0.61) for n = 5,
a = 0.05/23, power 0.8, because ``scipy.special.nctdtr`` gives NaN in part of that range; here the
root is bracketed and checked (d = 3.914, ../shared/comparison.md §1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import optimize, stats

ALPHA = 0.05
POWER = 0.8
#: exact sign-flip test up to this many pairs (2^20 = 1,048,576 sign patterns), Monte Carlo above
EXACT_PAIRS = 20
#: Monte-Carlo sign patterns above :data:`EXACT_PAIRS` (fixed seed: a report is reproducible)
MC_RESAMPLES = 200_000
#: the decisions :func:`decide` returns
DECISIONS = ("better", "worse", "equivalent", "undecided")


def power(d: float, n: int, alpha: float) -> float:
    """Exact power of the two-sided paired t-test (module docstring).

    Args:
        d: standardised effect |mean difference| / sd of the differences (>= 0).
        n: pairs (>= 2).
        alpha: two-sided level.

    Raises:
        ValueError: for n < 2 or alpha outside (0, 1), or if scipy returns NaN.
    """
    if n < 2 or not 0 < alpha < 1:
        raise ValueError(f"power needs n >= 2 pairs and 0 < alpha < 1, got n={n}, alpha={alpha}")
    df, nc, crit = n - 1, abs(d) * math.sqrt(n), stats.t.isf(alpha / 2, n - 1)
    value = float(stats.nct.sf(crit, df, nc) + stats.nct.sf(crit, df, -nc))
    if math.isnan(value):
        raise ValueError(f"power: scipy's noncentral t returned NaN for d={d}, n={n}, alpha={alpha}")
    return value


def mde(n: int, alpha: float, target: float = POWER) -> float:
    """The standardised effect d that the paired t-test with ``n`` pairs detects with power ``target``
    at two-sided level ``alpha`` (multiply by the sd of the differences for the minimum detectable
    effect). n = 5, alpha = 0.05/23, power 0.8: d = 3.914.

    Raises:
        ValueError: for n < 2, or if the solution's power misses ``target`` by more than 1e-6.
    """
    power(0.0, n, alpha)  # argument checks
    hi = 1.0
    while power(hi, n, alpha) < target:
        hi *= 2
    d = optimize.brentq(lambda x: power(x, n, alpha) - target, 0.0, hi, xtol=1e-10)
    if abs(power(d, n, alpha) - target) > 1e-6:
        raise ValueError(f"mde: no effect reaches power {target} with n={n}, alpha={alpha}")
    return d


def seeds_needed(effect: float, sd: float, alpha: float, target: float = POWER, most: int = 100_000) -> int | None:
    """The fewest pairs (>= 2) for which the paired t-test detects a true difference ``effect`` with
    differences of standard deviation ``sd`` with power ``target`` at level ``alpha``.

    Returns:
        that n; 2 when ``sd`` is 0 and ``effect`` is not (any test of two pairs separates them); None when
        ``effect`` is 0 or more than ``most`` pairs would be needed. Never raises for finite inputs.
    """
    if not (math.isfinite(effect) and math.isfinite(sd)) or effect == 0:
        return None
    if sd <= 0:
        return 2
    d = abs(effect) / sd
    lo, hi = 2, 2
    while power(d, hi, alpha) < target:
        lo, hi = hi, hi * 2
        if hi > most:
            return None
    while lo < hi:  # smallest n in [lo, hi] with enough power (power grows with n)
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if power(d, mid, alpha) < target else (lo, mid)
    return hi


def sign_flip_p(diff: Sequence[float]) -> float:
    """Two-sided p-value of the sign-flip permutation test of mean(diff) = 0 (paired data, no
    normality assumed): exact over all 2^n sign patterns up to :data:`EXACT_PAIRS` pairs, else
    :data:`MC_RESAMPLES` random patterns (seed 0) (``scipy.stats.permutation_test`` with
    ``permutation_type="samples"``). Its smallest value is 2 / 2^n (0.0625 at n = 5)."""
    diff = np.asarray(diff, dtype=float)
    exact = len(diff) <= EXACT_PAIRS
    res = stats.permutation_test(
        (diff,),
        np.mean,
        permutation_type="samples",
        alternative="two-sided",
        n_resamples=np.inf if exact else MC_RESAMPLES,
        rng=None if exact else np.random.default_rng(0),
    )
    return float(res.pvalue)


def tost_p(diff: Sequence[float], rope: float) -> float:
    """p-value of the two one-sided paired t-tests (TOST; Schuirmann 1987) that the mean difference lies
    inside (-rope, rope): ``statsmodels.stats.weightstats.ttost_paired``. p < alpha is the same as the
    (1 - 2 alpha) t-interval lying inside the ROPE. NaN with fewer than 2 pairs; for differences without
    variance, 0 if their mean lies inside the ROPE, else 1."""
    from statsmodels.stats.weightstats import ttost_paired

    diff = np.asarray(diff, dtype=float)
    if len(diff) < 2:
        return math.nan
    if not diff.std(ddof=1) > 0:
        return 0.0 if abs(diff.mean()) < rope else 1.0
    return float(ttost_paired(diff, np.zeros_like(diff), -rope, rope)[0])


def describe(diff: Sequence[float], alpha: float = ALPHA) -> dict[str, float]:
    """Mean, sd (ddof 1), two-sided paired t-test p-value (``scipy.stats.ttest_1samp`` of the differences,
    which equals ``ttest_rel``) and its (1 - alpha) confidence interval, exact sign-flip p-value, and
    the probability of improvement (share of pairs with a positive difference, ties counted 1/2) of
    paired differences. NaN where n < 2 (t-test and CI) or the differences have no variance (t-test)."""
    diff = np.asarray(diff, dtype=float)
    n = len(diff)
    out = {
        "n": n,
        "mean": diff.mean() if n else math.nan,
        "sd": diff.std(ddof=1) if n > 1 else math.nan,
        "p_t": math.nan,
        "ci_low": math.nan,
        "ci_high": math.nan,
        "p_sign": math.nan,
        "p_improve": float(np.mean((diff > 0) + 0.5 * (diff == 0))) if n else math.nan,
    }
    if n < 2:
        return out
    half = stats.t.isf(alpha / 2, n - 1) * out["sd"] / math.sqrt(n)
    out |= {"ci_low": out["mean"] - half, "ci_high": out["mean"] + half, "p_sign": sign_flip_p(diff)}
    if out["sd"] > 0:
        out["p_t"] = float(stats.ttest_1samp(diff, 0.0).pvalue)
    return out


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values (``statsmodels`` ``multipletests(method="holm")``); NaN entries stay NaN
    and do not count in the family."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, math.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = multipletests(p[ok], alpha=ALPHA, method="holm")[1]
    return out


def decide(mean: float, p_holm: float, p_tost_holm: float, alpha: float = ALPHA) -> str:
    """The decision on one comparison, ``mean`` oriented so that positive is better (Benavoli et al.,
    "Time for a change", JMLR 2017; Kruschke, AMPPS 2018): ``equivalent`` when the Holm-adjusted TOST
    p-value is below ``alpha`` (the difference lies inside the ROPE), else ``better`` / ``worse`` when the
    Holm-adjusted t-test p-value is, else ``undecided`` (the data cannot tell: not "no difference")."""
    if p_tost_holm < alpha:
        return "equivalent"
    if p_holm < alpha:
        return "better" if mean > 0 else "worse"
    return "undecided"


def iman_davenport(chi2: float, n_blocks: int, k: int) -> tuple[float, float]:
    """Iman-Davenport's F = (N - 1) chi2 / (N (k - 1) - chi2) from Friedman's chi-square over N blocks and
    k methods, and its p-value on F(k - 1, (k - 1)(N - 1)) (Demšar, JMLR 2006, section 3.2.2)."""
    f = (n_blocks - 1) * chi2 / (n_blocks * (k - 1) - chi2) if n_blocks * (k - 1) > chi2 else math.inf
    return f, float(stats.f.sf(f, k - 1, (k - 1) * (n_blocks - 1)))


def nemenyi_cd(k: int, n_blocks: int, alpha: float = ALPHA) -> float:
    """Nemenyi critical difference of mean ranks, q_alpha sqrt(k (k + 1) / (6 N)), q_alpha the studentized
    range quantile / sqrt(2) (Demšar 2006, eq. 5). k = 24, N = 2: 25.7."""
    q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    return q * math.sqrt(k * (k + 1) / (6 * n_blocks))


def blocks_needed(k: int, cd: float, alpha: float = ALPHA) -> int:
    """The fewest independent blocks N for which the Nemenyi critical difference of k methods is below ``cd`` ranks."""
    q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    return math.floor(q * q * k * (k + 1) / (6 * cd * cd)) + 1
