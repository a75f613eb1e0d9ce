"""The seed report's claims as data, judged on a run by paired comparison.

A claim names two sides as filters on config columns, a metric and which way it should go. Trials
of the two sides are paired when they agree on every other config column and on the seed
(replicates of one setting are averaged first); the effect is the mean paired difference A - B
with a 95% Student-t interval, and the verdict follows VERDICT_RULE. Nothing here is hard-coded
to a result: flip the numbers and the verdict flips.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .load import CONFIG
from .stats import mean_ci

VERDICT_RULE = (
    "Trials of side A and side B are paired when they agree on every other config column and on "
    "the seed (replicates of one setting are averaged first). The effect is the mean of A - B over "
    "the pairs with a 95% Student-t interval (n - 1 degrees of freedom). **holds**: the interval "
    "lies entirely on the claimed side of zero; **does not hold**: entirely on the other side; "
    "**inconclusive**: the interval contains zero, or there are fewer than two pairs (one seed).")
HOLDS, FAILS, UNSURE, ABSENT = "holds", "does not hold", "inconclusive", "not in this run"
CHANCE = 0.11  # test accuracy at or below this (10 classes: chance is 10%) means "never learned"


@dataclass(frozen=True)
class Claim:
    """A claimed comparison: side A's metric is `better` ("higher"/"lower") than side B's."""

    text: str
    seed: str
    a: dict
    b: dict
    metric: str = "final_test_acc"
    better: str = "higher"
    free: tuple = ()  # config columns allowed to differ between the sides (averaged within a side)
    gap: tuple = ()  # (axis, level, level): judge |metric(level) - metric(level)| per setting
    tags: tuple = field(default=())


def _transform_claims() -> list[Claim]:
    seed_fig = {"augment": "43% → 46%", "normalize": "43% → 51%",
                "augment+normalize": "highest of the four (no figure)"}
    claims = []
    for level, name in (("augment", "augmentation"), ("normalize", "normalisation"),
                        ("augment+normalize", "augmentation + normalisation")):
        claims.append(Claim(f"{name} beats the baseline (the seed's setup)", seed_fig[level],
                            {"transform": level, "data_fraction": 1.0},
                            {"transform": "none", "data_fraction": 0.5}))
        claims.append(Claim(f"{name} beats no transform (equal data)", seed_fig[level],
                            {"transform": level}, {"transform": "none"}))
    for other in ("augment", "normalize"):
        claims.append(Claim(f"augmentation + normalisation is the best transform: beats {other}",
                            "highest of the four", {"transform": "augment+normalize"},
                            {"transform": other}))
    return claims


CLAIMS: tuple[Claim, ...] = (
    *_transform_claims(),
    Claim("dropout reduces overfitting (smaller train − test accuracy gap)",
          "train 42% / test 50%", {"model": "dropout"}, {"model": "baseline"}, metric="gap",
          better="lower"),
    Claim("dropout improves test accuracy", "42% → 50%", {"model": "dropout"},
          {"model": "baseline"}),
    Claim("L2 beats L1 on test accuracy", "55% vs 48%", {"regulariser": "l2"},
          {"regulariser": "l1"}),
    Claim("L2 beats dropout on test accuracy", "55% vs 50%",
          {"regulariser": "l2", "model": "baseline"}, {"regulariser": "none", "model": "dropout"},
          free=("lam",)),
    Claim("L2 beats dropout on test loss", "1.2 vs 1.4", {"regulariser": "l2", "model": "baseline"},
          {"regulariser": "none", "model": "dropout"}, metric="final_test_loss", better="lower",
          free=("lam",)),
    Claim("SGD is more robust to the learning rate than Adam "
          "(smaller |acc(lr 1e-3) − acc(lr 1e-5)|)",
          "SGD 58.3 → 58.1 vs Adam 58 → 56", {"optimiser": "sgd"}, {"optimiser": "adam"},
          better="lower", gap=("lr", 1e-3, 1e-5)),
)
RELU_CLAIMS: tuple[Claim, ...] = (
    Claim("the ReLU on the logits costs test accuracy (without it is better)", "— (seed keeps it)",
          {"final_relu": False}, {"final_relu": True}, tags=("relu",)),
    Claim("the ReLU on the logits costs test loss (without it is lower)", "— (seed keeps it)",
          {"final_relu": False}, {"final_relu": True}, metric="final_test_loss", better="lower",
          tags=("relu",)),
)


def select(trials: pd.DataFrame, filters: dict) -> pd.DataFrame:
    """Rows matching every filter (floats compared with a relative tolerance)."""
    mask = pd.Series(True, index=trials.index)
    for column, value in filters.items():
        if isinstance(value, float):
            mask &= np.isclose(trials[column].astype(float), value, rtol=1e-9, atol=0.0)
        else:
            mask &= trials[column] == value
    return trials[mask]


def pairing_key(claim: Claim) -> list[str]:
    """The columns a pair must agree on: everything the claim does not set or free, plus seed."""
    skip = {*claim.a, *claim.b, *claim.free, *claim.gap[:1]}
    return [c for c in (*CONFIG, "seed") if c not in skip]


def side_values(trials: pd.DataFrame, filters: dict, claim: Claim) -> pd.Series:
    """Per setting (pairing key): the side's mean metric, or its |gap| between two levels."""
    chosen, key = select(trials, filters), pairing_key(claim)
    if not claim.gap:
        return chosen.groupby(key)[claim.metric].mean()
    axis, first, second = claim.gap
    cells = [select(chosen, {axis: lvl}).groupby(key)[claim.metric].mean().rename(i)
             for i, lvl in enumerate((first, second))]
    both = pd.concat(cells, axis=1, join="inner")
    return (both[0] - both[1]).abs()


def describe(filters: dict) -> str:
    """'transform=augment, data_fraction=1' for a filter dict."""
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in filters.items())


def missing_reason(trials: pd.DataFrame, claim: Claim) -> str:
    """What the run would need for the claim to be judged."""
    a, b = select(trials, claim.a), select(trials, claim.b)
    levels = f" at both {claim.gap[0]} {claim.gap[1]:g} and {claim.gap[2]:g}" if claim.gap else ""
    for side, rows in ((claim.a, a), (claim.b, b)):
        if rows.empty:
            return f"needs finished trials with {describe(side)}{levels}"
    differing = [c for c in pairing_key(claim) if not set(a[c]) & set(b[c])]
    detail = "; ".join(f"{c} {sorted(set(a[c]))} vs {sorted(set(b[c]))}" for c in differing)
    return (f"needs {describe(claim.a)} and {describe(claim.b)} trials{levels} that agree on every "
            f"other setting and seed" + (f" (here they differ in {detail})" if detail else ""))


def verdict(low: float, high: float, n: int, better: str) -> str:
    """Apply VERDICT_RULE to an effect interval [low, high] of A - B over n pairs."""
    if n < 2 or not np.isfinite(low):
        return UNSURE
    sign = 1.0 if better == "higher" else -1.0
    # rounded so that float noise around an exact tie (e.g. 0.05 - 0.05) reads as zero
    lo, hi = sorted((round(sign * low, 9), round(sign * high, 9)))
    return HOLDS if lo > 0 else FAILS if hi < 0 else UNSURE


def judge(trials: pd.DataFrame, claim: Claim) -> dict:
    """One claims-table row: both sides, the paired effect and the verdict."""
    row = {"claim": claim.text, "seed": claim.seed, "metric": claim.metric, "better": claim.better,
           "a": describe(claim.a), "b": describe(claim.b), "gap": bool(claim.gap),
           "free": ", ".join(claim.free), "relu": "relu" in claim.tags}
    pairs = pd.concat([side_values(trials, claim.a, claim).rename("a"),
                       side_values(trials, claim.b, claim).rename("b")], axis=1, join="inner")
    if pairs.empty:
        return {**row, "n": 0, "verdict": ABSENT, "note": missing_reason(trials, claim)}
    a, b, effect = mean_ci(pairs["a"]), mean_ci(pairs["b"]), mean_ci(pairs["a"] - pairs["b"])
    settings = len(pairs.index.droplevel("seed").unique()) if pairs.index.nlevels > 1 else 1
    notes = ["one pair (one seed): no interval" if effect.n < 2 else "", chance_note(trials, claim)]
    note = "; ".join(n for n in notes if n)
    return {**row, "n": effect.n, "settings": settings, "a_mean": a.mean, "a_half": a.half,
            "b_mean": b.mean, "b_half": b.half, "effect": effect.mean, "low": effect.low,
            "high": effect.high, "note": note,
            "verdict": verdict(effect.low, effect.high, effect.n, claim.better)}


def chance_note(trials: pd.DataFrame, claim: Claim) -> str:
    """A warning when a side never learned: its effect is then about failure, not the claim."""
    stuck = [describe(side) for side in (claim.a, claim.b)
             if select(trials, side)["final_test_acc"].mean() <= CHANCE]
    return (f"{' and '.join(stuck)} stays at chance (≤ {CHANCE:.0%} test accuracy), so this "
            "verdict reflects training that failed" if stuck else "")


def judge_all(finished: pd.DataFrame) -> pd.DataFrame:
    """Every seed claim (and the ReLU rows when both final_relu levels ran) over finished trials."""
    trials = finished.assign(gap=finished["final_train_acc"] - finished["final_test_acc"])
    claims = list(CLAIMS)
    if trials["final_relu"].nunique() >= 2:
        claims += RELU_CLAIMS
    table = pd.DataFrame([judge(trials, c) for c in claims])
    return table.assign(id=[f"C{i}" for i in range(1, len(table) + 1)])
