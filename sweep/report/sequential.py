"""Group-sequential p-values: claims re-judged after every round of added seeds keep their error.

`sweep.settle` adds seeds in rounds and re-judges the claims after each, stopping a claim once it
is decisive. Testing at every look at the full level would inflate the error (optional stopping),
so each claim gets one *sequential* p-value from all its looks:

* at look j the claim has its first n_j seeds and a two-sided one-sample t-test p-value p_j of
  its per-seed effects;
* the statistic is S = min_j p_j / w_j over the looks seen so far, with weights w_j = (n_j/K)^12
  that grow steeply with the look (early looks spend little error, the last keeps nearly the
  power of a fixed K-seed design: the O'Brien & Fleming 1979 idea, spent as in Lan & DeMets 1983);
* the sequential p-value is q = P0(S_K <= S), where S_K is S over *every planned* look, under
  the null of iid normal per-seed effects with mean 0 (t statistics do not depend on the scale, so
  this null distribution is one Monte-Carlo table per schedule, seeded).

S only falls as looks are added, so q only falls, and P0(q <= x) <= P0(S_K <= S_K's x-quantile)
= x at whatever look a claim stops: q is a valid p-value under optional stopping and Holm can
combine the claims' q values. tests/test_settle.py checks this by simulation.
"""
from __future__ import annotations

import functools
import math
import warnings

import numpy as np
from scipy import stats

from .stats import SPREAD_FLOOR

# Steep weights: early looks stop only on overwhelming evidence, and the last look keeps the
# power of a fixed K-seed design (80.2% vs 80.3% at one SD and K = 10; tests/test_settle.py).
WEIGHT_POWER = 12.0


def design_mismatch(plan: dict) -> str | None:
    """Why a settled run's design cannot be judged by this rule (its looks were chosen under the
    weight power run.json records), or None when it can."""
    power = plan.get("weight_power")
    if power is None or float(power) != WEIGHT_POWER:
        return (f"this run was settled with sequential weight power {power} (run.json); this "
                f"version's rule uses {WEIGHT_POWER:g}, and a design cannot change between looks")
    return None
NULL_DRAWS = 200_000
NULL_SEED = 20_231
REFERENCE = ("group-sequential test over the planned looks, steep O'Brien-Fleming-type weights "
             "(n_j/K)^12 calibrated by Monte Carlo (O'Brien & Fleming 1979, Biometrics 35:549; "
             "Lan & DeMets 1983, Biometrika 70:659)")


def schedule(initial: int, max_seeds: int) -> tuple[int, ...]:
    """Seed counts at which claims are judged: the run's seeds, then rounds of ~1.5x, up to K."""
    assert 1 <= initial <= max_seeds, "schedule needs 1 <= initial <= max_seeds"
    looks = [initial]
    while looks[-1] < max_seeds:
        looks.append(min(max_seeds, max(looks[-1] + 2, round(looks[-1] * 1.5))))
    return tuple(looks)


def weights(looks: tuple[int, ...]) -> np.ndarray:
    """w_j = (n_j / K)^WEIGHT_POWER; a look with fewer than 2 seeds cannot test: weight 0."""
    n = np.asarray(looks, dtype=float)
    return np.where(n >= 2, (n / n[-1]) ** WEIGHT_POWER, 0.0)


def look_pvalues(effects: np.ndarray, looks: tuple[int, ...]) -> np.ndarray:
    """(studies, looks) two-sided t-test p-values of each row's first n_j effects (nan: n < 2).

    `effects` is (studies, K) with nan where a seed is missing; vectorised for the simulations.
    """
    x = np.atleast_2d(np.asarray(effects, dtype=float))
    out = np.full((x.shape[0], len(looks)), math.nan)
    for j, n in enumerate(looks):
        with warnings.catch_warnings():  # rows with < 2 seeds: nan, reported as such below
            warnings.simplefilter("ignore", RuntimeWarning)
            out[:, j] = _look(x[:, :n], n)
    return out


def _look(part: np.ndarray, n: int) -> np.ndarray:
    """Two-sided t-test p-value of each row's finite values (nan with fewer than 2)."""
    count = np.isfinite(part).sum(1)
    mean = np.nanmean(part, 1)
    std = np.nanstd(part, 1, ddof=1) if n >= 2 else np.full(len(part), math.nan)
    spread = np.maximum(std, SPREAD_FLOOR)  # ties of quantised accuracies are not certainty
    with np.errstate(invalid="ignore", divide="ignore"):
        p = 2.0 * stats.t.sf(np.abs(mean) / (spread / np.sqrt(count)), np.maximum(count - 1, 1))
    p = np.where(mean == 0.0, 1.0, p)
    return np.where(count >= 2, p, math.nan)


def statistic(pvalues: np.ndarray, looks: tuple[int, ...]) -> np.ndarray:
    """S = min over looks of p_j / w_j (inf where no look could test)."""
    w = weights(looks)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where((w > 0) & np.isfinite(pvalues), pvalues / w, np.inf)
    return ratio.min(axis=1)


@functools.cache
def null_statistic(looks: tuple[int, ...]) -> np.ndarray:
    """Sorted S over every planned look for NULL_DRAWS studies with zero effect (seeded)."""
    rng = np.random.default_rng(NULL_SEED)
    draws = rng.standard_normal((NULL_DRAWS, looks[-1]))
    return np.sort(statistic(look_pvalues(draws, looks), looks))


def sequential_p(pvalues: np.ndarray, looks: tuple[int, ...]) -> np.ndarray:
    """q = P0(S_K <= S) for each row of look p-values (nan where no look could test).

    With one look this is the look's own p-value (a fixed design needs no correction).
    """
    p = np.atleast_2d(np.asarray(pvalues, dtype=float))
    testing = [j for j, n in enumerate(looks) if n >= 2]
    if len(looks) == 1 or len(testing) <= 1:  # one look that can test: its own p-value
        return p[:, testing[0]] if testing and p.size else np.full(len(p), math.nan)
    s, null = statistic(p, looks), null_statistic(tuple(looks))
    q = (np.searchsorted(null, s, side="right") + 1) / (len(null) + 1)
    return np.where(np.isfinite(s), np.minimum(q, 1.0), math.nan)


def simulate(effect: float, looks: tuple[int, ...], studies: int, rng: np.random.Generator,
             alpha: float) -> dict:
    """Simulated single-claim studies (effect in units of the per-seed effect's spread): the
    share decisive by the last look and the share decisive in the wrong direction."""
    draws = rng.standard_normal((studies, looks[-1])) + effect
    q = sequential_p(look_pvalues(draws, looks), looks)
    decisive = q <= alpha
    wrong = decisive & (np.sign(draws.mean(1)) != np.sign(effect)) if effect else decisive
    return {"decisive": float(decisive.mean()), "wrong": float(wrong.mean())}
