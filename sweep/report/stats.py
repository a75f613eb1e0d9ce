"""The statistics the report needs, on scipy.stats: intervals, one-sample tests, Holm.

`mean_ci` is a mean with a two-sided Student-t interval; `one_sample` adds the two-sided p-value
of "mean = 0" (the paired comparisons are tests of mean differences); `holm` adjusts a family of
p-values so that the family-wise error rate stays at the level they are compared with.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
# Accuracies on 10 000 test images move in steps of 1e-4, so two seeds can tie exactly; a zero
# sample spread then means ties, not certainty, and the tests use at least this spread.
SPREAD_FLOOR = 1e-4
ALPHA = 1.0 - CONFIDENCE  # the report's family-wise error rate unless a run says otherwise


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with `df` degrees of freedom."""
    assert 0.0 < p < 1.0 and df > 0, "t_quantile needs 0 < p < 1 and df > 0"
    return float(stats.t.ppf(p, df))


@dataclass(frozen=True)
class Interval:
    """Mean, sample std (ddof 1), n, the half-width of the t-interval (nan when n < 2) and the
    two-sided p-value of mean = 0 (nan when n < 2 or the values do not vary)."""

    mean: float
    std: float
    n: int
    half: float
    p: float = math.nan

    @property
    def low(self) -> float:
        return self.mean - self.half

    @property
    def high(self) -> float:
        return self.mean + self.half


def mean_ci(values, confidence: float = CONFIDENCE) -> Interval:
    """Mean of the finite values with a two-sided Student-t interval and the test of mean = 0."""
    data = np.asarray(values, dtype=float)
    data = data[np.isfinite(data)]
    n = int(data.size)
    if n == 0:
        return Interval(math.nan, math.nan, 0, math.nan)
    if n == 1:
        return Interval(float(data[0]), math.nan, 1, math.nan)
    mean, std = float(data.mean()), float(data.std(ddof=1))
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n)
    return Interval(mean, std, n, half, t_pvalue(mean, std, n))


def t_pvalue(mean: float, std: float, n: int) -> float:
    """Two-sided p-value of the one-sample t-test of mean = 0."""
    if n < 2 or not math.isfinite(std):
        return math.nan
    if mean == 0.0:
        return 1.0
    spread = max(std, SPREAD_FLOOR)
    return float(2.0 * stats.t.sf(abs(mean) / (spread / math.sqrt(n)), n - 1))


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (nan stays nan and is not counted in the family).

    Rejecting every hypothesis whose adjusted p is <= alpha keeps the family-wise error rate at
    alpha under any dependence (Holm 1979). Written here because scipy has no Holm (its
    `false_discovery_control` is Benjamini-Hochberg, which controls the FDR, not the FWER).
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, math.nan)
    known = np.flatnonzero(np.isfinite(p))
    order = known[np.argsort(p[known], kind="stable")]
    m, running = len(order), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out
