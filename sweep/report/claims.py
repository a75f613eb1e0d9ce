"""The reference report's claims as data, judged on a run by paired comparison with error control.

A claim names two sides as filters on config columns, a metric and which way it should go. Trials
of the two sides are paired when they agree on every other config column and on the seed. A pair
is *informative* only when both sides learned (LEARNED: final test accuracy above 15%; chance is
10%): a model stuck at chance tests nothing, so such pairs are set aside and counted. The effect
is A - B; with several seeds the unit of replication is the seed (each seed's effect is its mean
over the informative settings) and the test is a one-sample t-test over seeds; with one seed the
test runs over the grid's other settings on that seed and the verdict says so. The claims of one
report form one family: their p-values (sequential ones when `sweep.settle` added seeds in
rounds, see sequential.py) are Holm-adjusted and a verdict is decisive when the adjusted p is at
most alpha. Nothing here is hard-coded to a result: flip the numbers and the verdict flips.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .claims_data import CLAIMS, RELU_CLAIMS, Claim
from .load import CONFIG, LEARNED
from .sequential import look_pvalues, sequential_p, weights
from .stats import ALPHA, holm, mean_ci

HOLDS, FAILS, UNSURE = "holds", "does not hold", "inconclusive"
ABSENT, UNTESTABLE = "not in this run", "not testable"
RELU_LEVELS = {True: "faithful", False: "corrected"}  # final ReLU kept as the reference / removed

__all__ = ["CLAIMS", "RELU_CLAIMS", "Claim", "judge", "judge_all", "settle_design", "verdict_rule"]


def verdict_rule(alpha: float, looks: tuple[int, ...] | None) -> str:
    """The rule, the family and the correction, in the words the report prints."""
    seq = (f" Seeds were added in rounds (looks at {', '.join(map(str, looks))} seeds), so each "
           "claim's p-value is a group-sequential one that keeps its error under this optional "
           "stopping (see *Settling*)." if looks and len(looks) > 1 else "")
    return (f"A pair counts only when both sides learned (final test accuracy > {LEARNED:.0%}); "
            "a claim with no such pair is **not testable**. The effect is the mean of A − B; with "
            "several seeds each seed's effect is averaged over the informative settings and the "
            "test is a one-sample t-test over seeds (95% interval over seeds); with one seed the "
            "interval and test run over the grid's other settings on that one seed. "
            f"All claims of this report form one family: their p-values are Holm-adjusted and a "
            f"verdict is decisive (**holds** / **does not hold**, by the sign of the effect) when "
            f"the adjusted p ≤ {alpha:g}, which keeps the chance of any wrong decisive verdict in "
            f"the report at most {alpha:g}; otherwise **inconclusive**.{seq}")


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
    sides = [claim.a, claim.b or {}, *claim.rivals]
    skip = {k for side in sides for k in side} | set(claim.free) | set(claim.gap[:1])
    return [c for c in (*CONFIG, "run", "seed") if c not in skip]


def side_values(trials: pd.DataFrame, filters: dict, claim: Claim) -> pd.DataFrame:
    """Per setting (pairing key): the side's value and whether it learned there."""
    chosen, key = select(trials, filters), pairing_key(claim)
    if not claim.gap:  # learned is judged per trial: a chance-level trial of a free axis (lam)
        learned = chosen["final_test_acc"] > LEARNED  # or replicate never enters the value
        ok = learned.groupby([chosen[k] for k in key]).any()
        value = chosen[learned].groupby(key)[claim.metric].mean()
        return pd.DataFrame({"value": value.reindex(ok.index), "ok": ok})
    axis, first, second = claim.gap
    cells = [select(chosen, {axis: lvl}).groupby(key) for lvl in (first, second)]
    both = pd.concat([pd.DataFrame({f"v{i}": c[claim.metric].mean(),
                                    f"ok{i}": c["final_test_acc"].mean() > LEARNED})
                      for i, c in enumerate(cells)], axis=1, join="inner")
    # a lr-sensitivity is informative when the side learned at either level: learning at one and
    # not the other is a real (large) sensitivity; at chance at both it measures nothing
    return pd.DataFrame({"value": (both["v0"] - both["v1"]).abs(), "ok": both["ok0"] | both["ok1"]})


def describe(filters: dict) -> str:
    """'transform=augment, data_fraction=1' for a filter dict."""
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in filters.items())


def missing_reason(trials: pd.DataFrame, claim: Claim, b: dict) -> str:
    """What the run would need for the comparison to be made."""
    levels = f" at both {claim.gap[0]} {claim.gap[1]:g} and {claim.gap[2]:g}" if claim.gap else ""
    sides = [claim.a] + ([b] if b is not None else [])
    rows = [select(trials, side) for side in sides]
    for side, chosen in zip(sides, rows):
        if chosen.empty:
            return f"needs finished trials with {describe(side)}{levels}"
    differing = [c for c in pairing_key(claim) if len(rows) == 2
                 and not set(rows[0][c]) & set(rows[1][c])]
    detail = "; ".join(f"{c} {sorted(set(rows[0][c]))} vs {sorted(set(rows[1][c]))}"
                       for c in differing)
    return (f"needs {' and '.join(describe(s) for s in sides)} trials{levels} that agree on every "
            f"other setting and seed" + (f" (here they differ in {detail})" if detail else ""))


@dataclass
class Comparison:
    """One A-vs-B (or A-alone) comparison: the informative pairs' effects and what was set aside."""

    status: str  # "ok", ABSENT or UNTESTABLE
    why: str = ""
    effects: pd.Series = field(default_factory=lambda: pd.Series(dtype=float))
    unit: str = "seeds"  # what the test replicates over: "seeds", or "settings" (one seed)
    seeds_run: int = 0
    used: int = 0
    set_aside: int = 0
    aside_why: str = ""
    a_values: pd.Series = field(default_factory=lambda: pd.Series(dtype=float))
    b_values: pd.Series = field(default_factory=lambda: pd.Series(dtype=float))


def compare(trials: pd.DataFrame, claim: Claim, b: dict | None, relu_filter: dict) -> Comparison:
    """Pair side A with side b (or take A alone when b is None) over informative pairs."""
    a_side = {**claim.a, **relu_filter}
    a = side_values(trials, a_side, claim).add_prefix("a_")
    if b is None:
        pairs = a.assign(b_value=0.0, b_ok=True)
    else:
        pairs = pd.concat([a, side_values(trials, {**b, **relu_filter}, claim).add_prefix("b_")],
                          axis=1, join="inner")
    if pairs.empty:
        return Comparison(ABSENT, missing_reason(trials, claim, b))
    pairs = common_settings(pairs)
    never = [describe(s) for s, col in ((claim.a, "a_ok"), (b, "b_ok"))
             if s is not None and not pairs[col].any()]
    good = pairs[pairs["a_ok"] & pairs["b_ok"]]
    aside = _aside_text(pairs, claim.a, b)
    if good.empty:
        why = (" and ".join(never) + " never learned" if never
               else "no pair where both sides learned")
        return Comparison(UNTESTABLE, why, set_aside=len(pairs), aside_why=aside)
    diffs = good["a_value"] - good["b_value"]
    seeds = diffs.index.get_level_values("seed")
    multi = seeds.nunique() >= 2
    effects = diffs.groupby(seeds).mean() if multi else diffs.reset_index(drop=True)
    return Comparison("ok", effects=effects, unit="seeds" if multi else "settings",
                      seeds_run=pairs.index.get_level_values("seed").nunique(), used=len(good),
                      set_aside=len(pairs) - len(good), aside_why=aside,
                      a_values=good["a_value"], b_values=good["b_value"])


def common_settings(pairs: pd.DataFrame) -> pd.DataFrame:
    """The pairs of the seeds that cover every setting the first seed covers, at those settings:
    seeds that sweep.settle added for another claim may cover only some of this claim's settings,
    and an effect averaged over other settings would not be the same quantity."""
    if "seed" not in pairs.index.names or pairs.index.nlevels < 2:
        return pairs
    seeds = pairs.index.get_level_values("seed")
    settings = pairs.index.droplevel("seed")
    first = set(settings[seeds == seeds.min()])
    keep = [s for s in seeds.unique() if first <= set(settings[seeds == s])]
    return pairs[seeds.isin(keep) & settings.isin(list(first))]


def _aside_text(pairs: pd.DataFrame, a: dict, b: dict | None) -> str:
    """'A at chance in 3, B in 2' for the pairs set aside."""
    parts = [f"{describe(side)} at chance in {int((~pairs[col]).sum())}"
             for side, col in ((a, "a_ok"), (b, "b_ok")) if side is not None
             and (~pairs[col]).any()]
    return "; ".join(parts)


def look_ps(comp: Comparison, looks: tuple[int, ...]) -> np.ndarray:
    """The comparison's p-value at each planned look (nan where it had too few seeds).

    A fixed design (one look) takes the plain test, over seeds or (one seed) over settings; a
    sequential design counts seeds only, so a test over settings is never one of its looks."""
    if len(looks) == 1:
        return np.array([mean_ci(comp.effects).p])
    if comp.unit != "seeds":
        return np.full(len(looks), math.nan)
    row = seed_row(comp, looks)
    ps = look_pvalues(row[None, :], looks)[0]
    return np.where(np.asarray(looks) <= comp.seeds_run, ps, math.nan)


def seed_row(comp: Comparison, looks: tuple[int, ...]) -> np.ndarray:
    """Per-seed effects laid out by seed number (nan where a seed is missing)."""
    width = max(looks[-1], int(comp.effects.index.max()) + 1)
    row = np.full(width, math.nan)
    row[comp.effects.index.astype(int)] = comp.effects.to_numpy()
    return row


def look_means(comp: Comparison, looks: tuple[int, ...]) -> list[float]:
    """The mean per-seed effect at each look (the direction the evidence had there)."""
    if len(looks) == 1 or comp.unit != "seeds":
        return [math.nan] * len(looks)
    row = seed_row(comp, looks)
    return [float(np.nanmean(row[:n])) if np.isfinite(row[:n]).any() else math.nan
            for n in looks]


def _side_stats(values: pd.Series) -> tuple[float, float]:
    ci = mean_ci(values)
    return ci.mean, ci.half


def judge(trials: pd.DataFrame, claim: Claim, looks: tuple[int, ...] | None = None,
          relu_filter: dict | None = None) -> dict:
    """One claims-table row before the family correction: sides, effect, raw p per look."""
    relu_filter = relu_filter or {}
    row = {"claim": claim.text, "reference": claim.reference, "metric": claim.metric,
           "better": claim.better, "a": describe(claim.a),
           "b": " / ".join(describe(r) for r in claim.rivals) if claim.rivals
           else describe(claim.b) if claim.b is not None else "0",
           "gap": bool(claim.gap), "free": ", ".join(claim.free), "relu": "relu" in claim.tags,
           "level": RELU_LEVELS.get(relu_filter.get("final_relu"), ""), "note": claim.note}
    comps = [compare(trials, claim, b, relu_filter) for b in (claim.rivals or (claim.b,))]
    looks = looks or (0,)
    if claim.rivals:
        return {**row, **_best_of(claim, comps, looks)}
    comp = comps[0]
    if comp.status != "ok":
        return {**row, **_untested(comp), "ps": [math.nan] * len(looks)}
    effect = mean_ci(comp.effects)
    sign = 1.0 if claim.better == "higher" else -1.0
    return {**row, **_counts(comp), "effect": effect.mean, "low": effect.low,
            "high": effect.high, "n": effect.n, "unit": comp.unit,
            "a_mean": _side_stats(comp.a_values)[0], "a_half": _side_stats(comp.a_values)[1],
            "b_mean": _side_stats(comp.b_values)[0], "b_half": _side_stats(comp.b_values)[1],
            "ps": list(look_ps(comp, looks)), "means": look_means(comp, looks),
            "claimed_sign": sign}


def _untested(comp: Comparison) -> dict:
    verdict = UNTESTABLE if comp.status == UNTESTABLE else ABSENT
    return {"verdict": verdict, "why": comp.why, "n": 0, "used": 0,
            "set_aside": comp.set_aside, "aside_why": comp.aside_why, "unit": ""}


def _counts(comp: Comparison) -> dict:
    return {"used": comp.used, "set_aside": comp.set_aside, "aside_why": comp.aside_why,
            "verdict": "", "why": ""}


def _best_of(claim: Claim, comps: list[Comparison], looks: tuple[int, ...]) -> dict:
    """A against every rival. Holds when A beats each (intersection-union: the largest p); does
    not hold when some rival beats A (Bonferroni over the rivals). Rivals that never learned are
    left out (beating a model at chance tests nothing); A never learning makes it not testable."""
    tested = [c for c in comps if c.status == "ok"]
    if not tested:
        first = next((c for c in comps if c.status == UNTESTABLE), comps[0])
        return {**_untested(first), "ps": [math.nan] * len(looks)}
    sign = 1.0 if claim.better == "higher" else -1.0
    effects = [mean_ci(c.effects) for c in tested]
    ps = np.array([look_ps(c, looks) for c in tested])
    favour = np.array([sign * e.mean > 0 for e in effects])
    worst = int(np.argmin([sign * e.mean for e in effects]))
    left_out = [c.why for c in comps if c.status != "ok"]
    combined = ps.max(axis=0) if favour.all() else np.minimum(1.0, len(tested) * ps[~favour].min(0))
    e, comp = effects[worst], tested[worst]
    return {"effect": e.mean, "low": e.low, "high": e.high, "n": e.n, "unit": comp.unit,
            "a_mean": _side_stats(comp.a_values)[0], "a_half": _side_stats(comp.a_values)[1],
            "b_mean": _side_stats(comp.b_values)[0], "b_half": _side_stats(comp.b_values)[1],
            "used": sum(c.used for c in tested), "set_aside": sum(c.set_aside for c in comps),
            "aside_why": "; ".join(filter(None, [c.aside_why for c in comps]
                                          + [f"rival left out: {w}" for w in left_out])),
            "verdict": "", "why": "", "ps": list(combined), "claimed_sign": sign,
            "b": f"closest rival of {len(tested)}: " + _rival_name(claim, comps, comp)}


def _rival_name(claim: Claim, comps: list[Comparison], comp: Comparison) -> str:
    return describe(claim.rivals[next(i for i, c in enumerate(comps) if c is comp)])


def judge_all(finished: pd.DataFrame, *, looks: tuple[int, ...] | None = None,
              alpha: float = ALPHA) -> pd.DataFrame:
    """Every claim (per final-ReLU level when both ran, plus the ReLU rows), Holm over the family.

    `looks` is the planned seed schedule of a settled run (sweep.settle), else None (one look).
    """
    trials = with_gap(finished)
    table = pd.DataFrame([judge(trials, c, looks, f) for c, f in claim_specs(trials)])
    table = decide(table, looks or (0,), alpha)
    return table.assign(id=[f"C{i}" for i in range(1, len(table) + 1)])


def with_gap(trials: pd.DataFrame) -> pd.DataFrame:
    """Adds gap = train_eval_acc − test_acc (eval mode); older runs fall back to train-mode acc."""
    clean = trials.get("final_train_eval_acc", pd.Series(math.nan, index=trials.index))
    train = clean.where(np.isfinite(clean.astype(float)), trials["final_train_acc"])
    run = trials["run"] if "run" in trials else ""  # pairs never cross runs of a combined report
    return trials.assign(gap=train - trials["final_test_acc"],
                         gap_clean=np.isfinite(clean.astype(float)), run=run)


def decide(table: pd.DataFrame, looks: tuple[int, ...], alpha: float) -> pd.DataFrame:
    """Sequential p per look, Holm over the family at every look, verdicts and settling look."""
    ps = np.array([list(p) for p in table["ps"]], dtype=float)
    q_by_look = np.column_stack([sequential_p(np.where(np.arange(len(looks)) <= j, ps, np.nan),
                                              looks) if len(looks) > 1 else ps[:, 0]
                                 for j in range(len(looks))]) if len(table) else ps
    final = np.isfinite(q_by_look[:, -1])  # at earlier looks a claim not yet testable counts as
    q_by_look = np.where(final[:, None] & ~np.isfinite(q_by_look), 1.0, q_by_look)  # q = 1
    adjusted = np.column_stack([holm(q_by_look[:, j]) for j in range(len(looks))])
    table = table.assign(p=ps[:, 0] if len(looks) == 1 else np.nan, q=q_by_look[:, -1],
                         p_adj=adjusted[:, -1])
    first = [next((j for j in range(len(looks)) if adjusted[i, j] <= alpha), None)
             for i in range(len(table))]
    table["settled_at"] = [math.nan if j is None else looks[j] for j in first]  # seeds
    table["settled_round"] = [math.nan if j is None else j for j in first]  # 0: the run's seeds
    table["deciding_sign"] = [_deciding_sign(r, looks) for _, r in table.iterrows()]
    table["verdict"] = [_verdict(r, alpha) for _, r in table.iterrows()]
    family = int(np.isfinite(table["p_adj"]).sum())
    table["seeds_needed"] = [seeds_needed(r, alpha / max(family, 1)) for _, r in table.iterrows()]
    return table.drop(columns=["ps", "means"], errors="ignore")


def seeds_needed(row: pd.Series, level: float, most: int = 50) -> float:
    """For an inconclusive claim tested over seeds: the fewest seeds at which a fixed-design
    t-test at `level` (alpha over the family, Holm's strictest step) would find the observed
    mean effect with 80% power, given the observed seed-to-seed spread; nan past `most`. A
    rough guide only: effect and spread come from the few seeds run so far."""
    from scipy import stats as st

    if row.get("verdict") != UNSURE or row.get("unit") != "seeds" or not row.get("n", 0) >= 2:
        return math.nan
    spread = (row["high"] - row["low"]) / 2 / st.t.ppf(0.975, row["n"] - 1) * math.sqrt(row["n"])
    if not spread > 0 or not math.isfinite(row["effect"]):
        return math.nan
    d = abs(row["effect"]) / spread
    for n in range(2, most + 1):
        crit = st.t.ppf(1 - level / 2, n - 1)
        if st.nct.sf(crit, n - 1, d * math.sqrt(n)) >= 0.8:
            return float(n)
    return math.nan


def _deciding_sign(row: pd.Series, looks: tuple[int, ...]) -> float:
    """The sign of the mean effect at the look where the sequential statistic was reached
    (nan for fixed designs and best-of rows, where the final mean is the evidence)."""
    means = row.get("means")
    if len(looks) == 1 or not isinstance(means, list) or not np.isfinite(means).any():
        return math.nan
    ratio = np.asarray(row["ps"], dtype=float) / weights(looks)
    ratio = np.where(np.isfinite(ratio), ratio, np.inf)
    return float(np.sign(means[int(np.argmin(ratio))])) if np.isfinite(ratio).any() else math.nan


def _verdict(row: pd.Series, alpha: float) -> str:
    if row["verdict"]:  # not testable / not in this run
        return row["verdict"]
    if not np.isfinite(row["p_adj"]) or row["p_adj"] > alpha:
        return UNSURE
    if np.isfinite(row["deciding_sign"]) and row["deciding_sign"] != np.sign(row["effect"]):
        return UNSURE  # the decisive evidence pointed the other way than the final mean
    direction = row["claimed_sign"] * row["effect"]
    return HOLDS if direction > 0 else FAILS if direction < 0 else UNSURE


def settle_design(metas: dict) -> dict:
    """judge_all's looks and alpha from a settled run's run.json (fixed design otherwise)."""
    settles = [m["settle"] for m in metas.values() if isinstance(m.get("settle"), dict)]
    if settles and len(metas) != 1:
        from .load import ReportInputError

        raise ReportInputError("a settled run (sweep.settle) is judged with its sequential design "
                               "and cannot be combined with other runs; report it on its own")
    if not settles:
        return {"looks": None, "alpha": ALPHA}
    from .sequential import design_mismatch

    if why := design_mismatch(settles[0]):
        from .load import ReportInputError

        raise ReportInputError(why)
    return {"looks": tuple(int(n) for n in settles[0]["looks"]),
            "alpha": float(settles[0].get("alpha", ALPHA))}


def claim_specs(finished: pd.DataFrame) -> list[tuple[Claim, dict]]:
    """(claim, final-ReLU filter) in the order judge_all's rows have them."""
    levels = sorted(finished["final_relu"].unique(), reverse=True)
    filters = [{"final_relu": lvl} for lvl in levels] if len(levels) >= 2 else [{}]
    specs = [(c, f) for f in filters for c in CLAIMS]
    return specs + ([(c, {}) for c in RELU_CLAIMS] if len(levels) >= 2 else [])


def claim_configs(trials: pd.DataFrame, claim: Claim, relu_filter: dict) -> pd.DataFrame:
    """The trials (any seed) of the configurations a claim pairs: the sides' rows at settings
    shared by side A and another side (for a one-sample claim, all of A's rows)."""
    key = [c for c in pairing_key(claim) if c != "seed"]
    sides = [claim.a, *(claim.rivals or ([claim.b] if claim.b is not None else []))]
    chosen = [select(trials, {**side, **relu_filter}) for side in sides]
    settings = [set(c[key].itertuples(index=False, name=None)) for c in chosen]
    shared = settings[0] if len(sides) == 1 else settings[0] & set().union(*settings[1:])
    rows = [c[[tuple(r) in shared for r in c[key].itertuples(index=False, name=None)]]
            for c in chosen]
    return pd.concat(rows)
