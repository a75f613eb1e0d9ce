"""The claims sections of REPORT.md: judged claims, what a run lacks, and the ReLU's cost."""
from __future__ import annotations

import pandas as pd

from . import fmt
from .claims import ABSENT, VERDICT_RULE

JUDGED_HEADERS = ["id", "claim (A vs B)", "seed", "ours: A", "ours: B", "effect A − B [95% CI]",
                  "verdict", "pairs"]
JUDGED_ALIGN = "lllrrrll"


def comparison(c: pd.Series) -> str:
    """'A: transform=augment · B: transform=none' (plus what may differ)."""
    text = f"A: {c['a']} · B: {c['b']}"
    return text + (f" ({c['free']} may differ)" if c["free"] else "")


def judged_row(c: pd.Series) -> list:
    """One row of a judged claim: both sides, the paired effect, the verdict."""
    metric = "gap" if c["gap"] else c["metric"]
    n, settings = int(c["n"]), int(c["settings"])
    pairs = f"{n} pair{'s' * (n != 1)}, {settings} setting{'s' * (settings != 1)}"
    return [c["id"], f"{c['claim']}<br>*{comparison(c)}*", c["seed"],
            fmt.value(metric, c["a_mean"], c["a_half"]),
            fmt.value(metric, c["b_mean"], c["b_half"]),
            fmt.effect(metric, c["effect"], c["low"], c["high"]), f"**{c['verdict']}**",
            f"{pairs}; {c['note']}" if c["note"] else pairs]


def claims_tables(claims: pd.DataFrame) -> list[str]:
    """The judged table, then the claims this run cannot judge and what they need."""
    judged, absent = claims[claims["verdict"] != ABSENT], claims[claims["verdict"] == ABSENT]
    out = []
    if len(judged):
        out.append(fmt.table(JUDGED_HEADERS, [judged_row(c) for _, c in judged.iterrows()],
                             JUDGED_ALIGN))
    if len(absent):
        rows = [[c["id"], c["claim"], comparison(c), c["seed"], c["note"]]
                for _, c in absent.iterrows()]
        out += ["", f"**{ABSENT}** ({len(absent)} of {len(claims)}):", "",
                fmt.table(["id", "claim", "comparison", "seed", "why not"], rows)]
    return out


def render_claims(s, images: dict) -> str:
    """The seed's claims with our paired effects and the verdict rule."""
    out = ["## 3. The seed report's claims, judged", "", f"**Rule.** {VERDICT_RULE}", "",
           "Columns A and B are our means over the paired settings (± 95% t-interval); effects on "
           "accuracy are in percentage points (pts), on loss in nats. Each row states the "
           "comparison it makes: the seed's own setup (baseline on 50% of the data), or equal "
           "data.", ""]
    if "claims" in images:
        out += [f"![Paired effects of the claims]({images['claims']})", "",
                "The chart shows the accuracy claims (loss claims are in the table only), each "
                "signed so that right of zero favours the claim.", ""]
    return "\n".join(out + claims_tables(s.claims[~s.claims["relu"]]))


def render_relu(s) -> str:
    """Paired effect of dropping the ReLU on the logits (only when both levels ran)."""
    rows = s.claims[s.claims["relu"]]
    if rows.empty:
        return ""
    return "\n".join([
        "## What the ReLU on the logits costs", "",
        "The seed's networks end in a ReLU, so every logit is clipped at zero before the "
        "cross-entropy. Pairs below differ only in `final_relu` (same rule as section 3): "
        "A is without the ReLU, B with it.", "", *claims_tables(rows)])
