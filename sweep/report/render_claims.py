"""The claims sections of REPORT.md: the headline table, judged claims, what a run lacks, the ReLU."""
from __future__ import annotations

import math

import pandas as pd

from . import fmt
from .claims import ABSENT, UNTESTABLE, settle_design, verdict_rule

JUDGED_HEADERS = ["id", "claim (A vs B)", "reference", "ours: A", "ours: B",
                  "effect A − B [95% CI]", "p", "Holm p", "verdict", "pairs used (set aside)"]
JUDGED_ALIGN = "lllrrrrrll"


def comparison(c: pd.Series) -> str:
    """'A: transform=augment · B: transform=none' (plus what may differ)."""
    text = f"A: {c['a']} · B: {c['b']}"
    return text + (f" ({c['free']} may differ)" if c["free"] else "")


def pvalue(p: float) -> str:
    if not isinstance(p, float) or math.isnan(p):
        return fmt.DASH
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}" if p < 0.01 else f"{p:.3f}"


def verdict_text(c: pd.Series) -> str:
    """The verdict in bold, with its scope (one seed) or why it could not be tested."""
    if c["verdict"] == UNTESTABLE:
        return f"**{UNTESTABLE}** ({c['why']})"
    scope = " (over settings, one seed)" if c["unit"] == "settings" else ""
    return f"**{c['verdict']}**{scope}"


def pairs_text(c: pd.Series) -> str:
    used = f"{int(c['used'])}" + (f", {_seeds_cell(c)} seeds" if c["unit"] == "seeds" else "")
    aside = (f" ({int(c['set_aside'])} set aside: {c['aside_why']})" if c["set_aside"]
             else f" ({c['aside_why']})" if c["aside_why"] else "")
    return used + aside


def _metric(c: pd.Series) -> str:
    """How the row's numbers print: an accuracy |difference| or gap as pts, a loss as nats."""
    return "gap" if c["metric"] == "gap" or (c["gap"] and not c["metric"].endswith("loss")) \
        else c["metric"]


def judged_row(c: pd.Series) -> list:
    """One row of a judged or untestable claim."""
    level = f" [{c['level']}]" if c["level"] else ""
    note = f"<br>note: {c['note']}" if c["note"] else ""
    claim = f"{c['claim']}{level}<br>*{comparison(c)}*{note}"
    if c["verdict"] == UNTESTABLE:
        return [c["id"], claim, c["reference"], fmt.DASH, fmt.DASH, fmt.DASH, fmt.DASH, fmt.DASH,
                verdict_text(c), pairs_text(c)]
    metric = _metric(c)
    p_raw = c["p"] if isinstance(c["p"], float) and not math.isnan(c["p"]) else c["q"]
    return [c["id"], claim, c["reference"], fmt.value(metric, c["a_mean"], c["a_half"]),
            fmt.value(metric, c["b_mean"], c["b_half"]),
            fmt.effect(metric, c["effect"], c["low"], c["high"]), pvalue(p_raw),
            pvalue(c["p_adj"]), verdict_text(c), pairs_text(c)]


def claims_tables(claims: pd.DataFrame) -> list[str]:
    """The judged table, then one line naming the claims this run cannot judge."""
    judged, absent = claims[claims["verdict"] != ABSENT], claims[claims["verdict"] == ABSENT]
    out = []
    if len(judged):
        out.append(fmt.table(JUDGED_HEADERS, [judged_row(c) for _, c in judged.iterrows()],
                             JUDGED_ALIGN))
    if len(absent):
        names = "; ".join(f"{c['id']} {c['claim']}" for _, c in absent.iterrows())
        out += ["", f"**{ABSENT}** ({len(absent)} of {len(claims)}; each needs trials of both "
                f"sides that agree on every other setting, see `claims.csv`): {names}."]
    return out


def headline(claims: pd.DataFrame) -> str:
    """One row per reference claim: its figure, the faithful and corrected verdicts, effects."""
    rows = claims[~claims["relu"] & claims["level"].ne("")]
    if rows.empty:
        return ""
    body = []
    for text, group in rows.groupby("claim", sort=False):
        by = {r["level"]: r for _, r in group.iterrows()}
        cells = [by.get(level) for level in ("faithful", "corrected")]
        body.append([text, group.iloc[0]["reference"],
                     *[verdict_text(c) if c is not None else fmt.DASH for c in cells],
                     " · ".join(_effect_cell(c) for c in cells if c is not None),
                     " · ".join(_seeds_cell(c) for c in cells if c is not None)])
    return fmt.table(["reference claim", "reference figure", "faithful verdict",
                      "corrected verdict", "effect [95% CI] (faithful · corrected)", "seeds used"],
                     body)


def render_headline(s) -> str:
    """The reference's claims at a glance (when both final-ReLU levels ran): REPORT.md opens
    with it; the full table with raw and adjusted p-values is section 3."""
    table = headline(s.claims)
    if not table:
        return ""
    return "\n".join(["**The reference's claims at a glance.** Faithful keeps the reference's "
                      "ReLU on the logits, corrected removes it; the rule, the family-wise "
                      "correction and every figure are in section 3.", "", table])


def _effect_cell(c: pd.Series) -> str:
    if c["verdict"] in (ABSENT, UNTESTABLE) or not c["n"]:
        return fmt.DASH
    return fmt.effect(_metric(c), c["effect"], c["low"], c["high"])


def _seeds_cell(c: pd.Series) -> str:
    if c["unit"] != "seeds":
        return fmt.DASH
    needed = c.get("seeds_needed")
    if isinstance(needed, float) and math.isfinite(needed):
        return f"{int(c['n'])} (~{int(needed)} to settle)"
    if c.get("verdict") == "inconclusive":
        return f"{int(c['n'])} (> 50 to settle)"
    settled, rnd = c.get("settled_at"), c.get("settled_round")
    if not isinstance(settled, float) or math.isnan(settled) or settled <= 0:
        return f"{int(c['n'])}"
    when = "before any round" if rnd == 0 else f"in round {int(rnd)}"
    return f"{int(c['n'])} (decisive at {int(settled)} seeds, {when})"


def render_claims(s, images: dict) -> str:
    """The reference's claims with our paired effects, the rule, the family and the correction."""
    design = settle_design(s.metas)
    claims = s.claims[~s.claims["relu"]]
    levels = ("[faithful] keeps the reference's ReLU on the logits, [corrected] removes it."
              if claims["level"].ne("").any() else "")
    out = ["## 3. The reference report's claims, judged", "",
           f"**Rule.** {verdict_rule(design['alpha'], design['looks'])}", "",
           "Columns A and B are our means over the informative pairs (± 95% t-interval); effects "
           "on accuracy are in percentage points (pts), on loss in nats. *p* is the raw (or "
           "sequential) p-value, *Holm p* the family-adjusted one the verdict uses. Each row "
           "states the comparison it makes; a note marks where the reference changed two things "
           f"at once. {levels}"]
    if (claims["unit"] == "settings").any():
        out += ["", "**One seed.** Rows marked *(over settings, one seed)* have one seed: their "
                "interval and test run over the grid's other settings on that seed, not over "
                "seeds. They say how consistent an effect is across settings, not that it would "
                "replicate with another seed."]
    if "gap_clean" in s.claims and (claims["metric"] == "gap").any() and not _clean_gap(s):
        out += ["", "**Gap claims** here use train-mode training accuracy (this run predates "
                "`train_eval_acc`); dropout and augmentation lower it mechanically."]
    if "claims" in images:
        out += ["", f"![Paired effects of the claims]({images['claims']})", "",
                "The chart shows the accuracy claims that could be tested (loss claims are in "
                "the table only), each signed so that right of zero favours the claim."]
    return "\n".join(out + [""] + claims_tables(claims))


def _clean_gap(s) -> bool:
    return bool(s.trials.get("final_train_eval_acc", pd.Series(dtype=float)).notna().any())


def render_relu(s) -> str:
    """Paired effect of dropping the ReLU on the logits (only when both levels ran)."""
    rows = s.claims[s.claims["relu"]]
    if rows.empty:
        return ""
    return "\n".join([
        "## What the ReLU on the logits costs", "",
        "The reference's networks end in a ReLU, so every logit is clipped at zero before the "
        "cross-entropy. Pairs below differ only in `final_relu` (same rule and family as "
        "section 3): A is without the ReLU, B with it.", "", *claims_tables(rows)])


def render_settle(s) -> str:
    """How `sweep.settle` added seeds: the design, each round, and what a fixed design costs."""
    plans = [m["settle"] for m in s.metas.values() if isinstance(m.get("settle"), dict)]
    if len(s.metas) != 1 or not plans:
        return ""
    plan = plans[0]
    from .load import CONFIG
    from .sequential import REFERENCE

    configs = s.trials.groupby(list(CONFIG), dropna=False).ngroups
    fixed = configs * int(plan["max_seeds"])
    rows = [[r["round"], f"{r['seeds_from']}–{r['seeds_to'] - 1}", r["configs"], r["trials"],
             len(r["open_claims"]), fmt.seconds(r.get("wall_seconds")), r["status"]]
            for r in plan["rounds"]]
    out = ["## Settling: seeds added until the verdicts are decisive", "",
           f"`python -m sweep.settle` judged the claims after the run's first "
           f"{plan['initial_seeds']} seeds and then added seeds, in rounds, only to the "
           f"configurations that claims still open pair, up to K = {plan['max_seeds']} seeds "
           f"(looks at {', '.join(map(str, plan['looks']))} seeds; family-wise alpha "
           f"{plan['alpha']:g}). Rule: {REFERENCE}; each claim's sequential p-value stays valid "
           "whenever it stops, and Holm combines them. A claim stops receiving seeds once its "
           "Holm-adjusted sequential p is ≤ alpha (column *seeds used* in the tables: settled "
           "at N). Intervals are plain t-intervals over the seeds used (not adjusted for the "
           "stopping, so slightly optimistic for early-stopped claims).", ""]
    if rows:
        out += [fmt.table(["round", "seeds added", "configurations", "trials", "open claims",
                           "wall time", "status"], rows, "rlrrrrl"), ""]
    else:
        out += ["No round was needed: nothing was open, or the run already had K seeds.", ""]
    out.append(f"Cost: {len(s.trials)} trials in all, against {fixed} for a fixed design of "
               f"{plan['max_seeds']} seeds for each of the {configs} configurations "
               f"({len(s.trials) / max(fixed, 1):.0%}). Settling is {plan.get('status', '?')}.")
    return "\n".join(out)
