"""REPORT.md from a Summary: pure text, relative image links, GitHub tables.

`render_markdown(summary, images)` returns the whole document; the provenance and search
sections live in `render_run.py`. Accuracies are shown as percentages with one decimal.
"""
from __future__ import annotations

import pandas as pd

from . import fmt
from .render_claims import render_claims, render_headline, render_relu, render_settle
from .render_run import render_provenance, render_search
from .stats import ALPHA
from .summary import (LEARNED, Summary, best_set, finished, setting_columns, status_text,
                      untested_reason)

TOP = 25
MEANING = {
    "PED-ANOVA": "PED-ANOVA reads each importance as how differently a hyperparameter is "
                 "distributed among the best trials than among all: what the best trials share, "
                 "not how much a bad setting hurts.",
}
SHOWN = 3  # configurations named in a sentence before "and k more"
CI_NOTE = ("± is the half-width of a 95% Student-t interval over the trials (seeds) averaged; "
           "std is their sample standard deviation.")


def heading(axis: str) -> str:
    """'learning rate (`lr`)', or just 'transform' where the column name reads well."""
    name = fmt.NAMES.get(axis, axis)
    return name if name == axis else f"{name} (`{axis}`)"


def _config_text(config: dict) -> str:
    return ", ".join(f"{fmt.NAMES.get(k, k)} {fmt.level(v)}" for k, v in config.items())


def render_header(s: Summary) -> str:
    """Title, one-paragraph overview, warnings and contents."""
    kinds = sorted({str(m["kind"]) for m in s.metas.values() if m.get("kind")}) or ["sweep"]
    lines = [f"# CIFAR-10 sweep report: {s.name}", "",
             f"A {' + '.join(kinds)} run of {len(s.trials)} trials "
             f"({status_text(s.trials['status'])}) over {len(s.ranking)} configurations. "
             + best_text(s), "", f"Every trial shares: {_config_text(s.constants) or 'nothing'}."]
    if len(s.metas) > 1:
        parts = [f"`{name}` ({meta.get('path', '?')}, {int((s.trials['run'] == name).sum())} trials)"
                 for name, meta in s.metas.items()]
        lines += ["", f"This report combines {len(parts)} runs: {', '.join(parts)}; the `run` "
                  "column of the ranking says which run each configuration came from, and trials "
                  "are paired only within a run."]
    if (s.trials["status"] == "running").any():
        lines += ["", "> **Note:** some trials are still running; this report is a snapshot."]
    if any(m.get("status") == "interrupted" for m in s.metas.values()):
        lines += ["", "> **Note:** the run was interrupted before every trial finished."]
    elif any(m.get("status") == "running" for m in s.metas.values()):
        lines += ["", "> **Note:** run.json says the sweep is still running."]
    sections = ["Ranking of configurations", "Each axis", "The reference report's claims, judged",
                "Hyperparameter importance", "Provenance"]
    if (s.claims["relu"]).any():
        sections.insert(3, "What the ReLU on the logits costs")
    if render_settle(s):
        sections.insert(sections.index("Hyperparameter importance"),
                        "Settling: seeds added until the verdicts are decisive")
    if s.searches:
        sections.insert(-1, "Search")
    anchors = [f"{i}. [{t}](#{i}-{fmt.anchor(t)})" for i, t in enumerate(sections, 1)]
    glance = render_headline(s)
    return "\n".join([*lines, *(["", glance] if glance else []), "", "## Contents", "", *anchors])


def config_name(s: Summary, row: pd.Series) -> str:
    """A configuration by its label (the reference experiment it reproduces), else by its
    varying axes."""
    return row["label"] or _config_text({a: row[a] for a in s.axes}) or "the only configuration"


def _listed(names: list[str], more: str = "") -> str:
    """'a, b and c' for up to SHOWN names, then 'and k more'."""
    shown = names[:SHOWN] + ([f"{len(names) - SHOWN} more{more}"] if len(names) > SHOWN else [])
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} and {shown[-1]}"


def best_text(s: Summary) -> str:
    """The header's sentence on the best configurations: the set the top cannot be told from."""
    best, why = best_set(s.ranking), untested_reason(s.trials, s.ranking)
    top = s.ranking.iloc[0]
    if why:
        return (f"{why[0].upper()}{why[1:]} (highest mean: {config_name(s, top)}, "
                f"{fmt.pct_ci(top['mean'], top['half'])}, n={top['n_done']}).")
    if len(best) == 1:
        return (f"Best configuration: {config_name(s, top)} with "
                f"{fmt.pct_ci(top['mean'], top['half'])} {rank_text(s.rank_by)} (n={top['n_done']}); "
                "every other configuration is distinguishably worse (≈ top in section 1).")
    names = [f"{config_name(s, r)} ({fmt.pct_ci(r['mean'], r['half'])})"
             for _, r in best.iterrows()]
    return (f"Best configurations: {len(best)} not distinguishable from the top one "
            f"(≈ top in section 1): {_listed(names)}.")


def rank_text(column: str) -> str:
    """'final test accuracy' for final_test_acc, 'best validation accuracy' for best_val_acc."""
    when, split = column.split("_")[0], column.split("_")[1]
    return f"{when} {'validation' if split == 'val' else 'test'} accuracy"


def render_ranking(s: Summary) -> str:
    """Configurations by the mean of the rank column (top TOP; all in ranking.csv)."""
    tested = len(best_set(s.ranking)) > 0
    near = ["≈ top"] if tested else []
    combined = len(s.metas) > 1  # a combined report says which run each row came from
    headers = ["#", *(["run"] if combined else []), "reference label",
               *[fmt.NAMES.get(a, a) for a in s.axes], f"{rank_text(s.rank_by)} (mean ± CI)",
               *near, "std", "n", "test loss", "train acc (eval mode)",
               "gap (train − test)", "trials"]
    rows = [[r["rank"], *([r["runs"]] if combined else []), r["label"] or fmt.DASH,
             *[fmt.level(r[a]) for a in s.axes],
             fmt.pct_ci(r["mean"], r["half"]), *([NEAR[r["near_top"]]] if tested else []),
             fmt.pts(r["std"], signed=False), r["n_done"], fmt.num(r["test_loss"]),
             fmt.pct(r["train_acc"]), fmt.pts(r["gap"]), r["statuses"]]
            for _, r in s.ranking.head(TOP).iterrows()]
    more = (f" Showing the top {TOP} of {len(s.ranking)}; all are in `ranking.csv`."
            if len(s.ranking) > TOP else " The same table is in `ranking.csv`.")
    return "\n".join([
        "## 1. Ranking of configurations", "",
        f"Configurations (all config columns except seed) ranked by mean {rank_text(s.rank_by)}. "
        f"{CI_NOTE} Means use completed trials only; diverged, pruned and error trials are "
        f"counted in the last column and never dropped.{more}", "", best_rule(s), "",
        fmt.table(headers, rows, "r" + "l" * combined + "l" + "l" * len(s.axes)
                  + "r" * (6 + tested) + "l"), "",
        "Re-run one trial (its first seed) of each ranked configuration, without Ray "
        "(`--save model.pt` keeps the weights):", "", "```",
        *[f"#{r['rank']:<3} {r['command']}" for _, r in s.ranking.head(TOP).iterrows()], "```",
        *render_failures(s)])


NEAR = {"top": "yes", "yes": "yes", "no": fmt.DASH, "untested": "untested"}


def best_rule(s: Summary) -> str:
    """The rule behind the ≈ top column, in one sentence (or why there is no column)."""
    why = untested_reason(s.trials, s.ranking)
    if why:
        return f"No **≈ top** column: {why}."
    return ("**≈ top**: the top configuration is compared with every other by a paired t-test "
            "over seeds (a pair shares the seed), Holm-adjusted over those comparisons; yes = "
            f"adjusted p > {ALPHA:.2g}, so not distinguishable from the top (untested: fewer than "
            "two seeds shared with it).")


def render_failures(s: Summary) -> list[str]:
    """Every diverged or errored trial by name (pruned ones are only counted: a search prunes)."""
    failed = s.trials[s.trials["status"].isin(("diverged", "error"))]
    if failed.empty:
        return []
    rows = [[r["trial_id"], r["status"], *[fmt.level(r[a]) for a in s.axes], r["seed"],
             fmt.count(r.get("epochs_done"))] for _, r in failed.head(TOP).iterrows()]
    more = f" (first {TOP} of {len(failed)})" if len(failed) > TOP else ""
    headers = ["trial", "status", *[fmt.NAMES.get(a, a) for a in s.axes], "seed", "epochs done"]
    return ["", f"Trials that diverged or failed{more}, left out of the means above:", "",
            fmt.table(headers, rows)]


def _left_out(row: pd.Series) -> str:
    parts = [f"{row['n_chance']} never learned" if row["n_chance"] else "",
             f"{row['n_unshared']} at unshared settings" if row["n_unshared"] else ""]
    return ", ".join(p for p in parts if p) or fmt.DASH


def _marginal_table(table: pd.DataFrame) -> str:
    rows = [[fmt.level(r["level"]), r["n_done"], fmt.pct(r["mean"]),
             fmt.DASH if fmt.missing(r["half"]) else f"[{fmt.pct(r['low'])}, {fmt.pct(r['high'])}]",
             fmt.pts(r["std"], signed=False), r["statuses"], _left_out(r)]
            for _, r in table.iterrows()]
    return fmt.table(["level", "n compared", "mean test acc", "95% CI", "std", "trials",
                      "left out"], rows, "lrrrrll")


def fair_rule() -> str:
    """Section 2's rule for comparing like with like, in two sentences."""
    return (f"Only trials that learned (final test accuracy above {LEARNED:.0%}; chance is 10%) "
            "count, and each axis's levels are compared at the same settings: the combinations of "
            "every other config column (seed excluded; λ goes with the regulariser) that occur "
            "at every level that learned. An axis with no such setting gets no curve or mean.")


def render_never_learned(s: Summary) -> list[str]:
    """One line: how many finished trials never learned, and which configurations they are."""
    if s.never_learned.empty:
        return []
    stuck = [(a, v) for a, c in s.comparisons.items() for v in c.stuck]
    done = finished(s.trials)
    groups = [f"all {int(done[a].eq(v).sum())} with {fmt.NAMES.get(a, a)} {fmt.level(v)}"
              for a, v in stuck]
    covered = s.never_learned[[any(r[a] == v for a, v in stuck)
                               for _, r in s.never_learned.iterrows()]]
    rest = s.never_learned.drop(covered.index)
    if len(rest) and rest["label"].all():
        groups.append(_listed([f"{r['label']} ({r['n']})" for _, r in rest.iterrows()]))
    elif len(rest):
        example = config_name(s, rest.iloc[0])
        groups.append(f"{example} ({rest.iloc[0]['n']})" if len(rest) == 1 else
                      f"{len(rest)} other configurations (such as {example})")
    return ["", f"{int(s.never_learned['n'].sum())} of {len(done)} completed trials never learned "
            f"and are left out of the curves and means: {_listed(groups)}."]


def _axis_lines(s: Summary, axis: str, images: dict) -> list[str]:
    """An axis's curve, its settings line and marginal table, or the one line saying why not."""
    compared = s.comparisons[axis]
    if compared.reason:
        return [f"No curve or mean: {compared.reason}."]
    shown = [c for c in setting_columns(axis) if c in s.axes]
    n = len(compared.settings)
    where = (f"the one shared setting ({_config_text(compared.settings.iloc[0][shown].to_dict())})"
             if n == 1 else f"{n} shared settings")
    stuck = ", ".join(fmt.level(v) for v in compared.stuck)
    out = ([f"![Learning curves by {axis}]({images[f'curves:{axis}']})", ""]
           if f"curves:{axis}" in images else [])
    return out + [f"Compared at {where}" + (f"; {stuck} never learned." if stuck else "."), "",
                  _marginal_table(s.marginals[axis])]


def render_axes(s: Summary, images: dict) -> str:
    """Per axis: learning curves, marginal means with CIs, then the interaction heatmaps."""
    out = ["## 2. Each axis", "",
           "For every axis with at least two levels: learning curves (band: ±1 std over trials) "
           "and each level's mean final test accuracy with a 95% t-interval over its trials. "
           + fair_rule(), *render_never_learned(s)]
    if not s.comparisons and not s.scatters:
        out += ["", "No axis takes two values in this run, so there is nothing to compare."]
    if s.lam_mirrors:
        out += ["", "λ (`lam`) is not compared on its own here nor in the importance: it only "
                "follows the regulariser (0 without one), so its levels repeat the regulariser's."]
    if "marginals" in images:
        out += ["", f"![Mean test accuracy per level]({images['marginals']})"]
    for axis in s.comparisons:
        out += ["", f"### {heading(axis)}", "", *_axis_lines(s, axis, images)]
    for axis in s.scatters:
        out += ["", f"### {heading(axis)}, continuous", "",
                fmt.image(images, f"scatter:{axis}", f"Test accuracy vs {axis}")]
    return "\n".join(out + render_interactions(s, images))


def render_interactions(s: Summary, images: dict) -> list[str]:
    """Heatmap and table of mean test accuracy for each pair of axes that both vary."""
    if not s.interactions:
        return []
    out = ["", "### Interactions", "", "Mean final test accuracy of completed trials in each cell "
           "(n = trials in the cell, pooled over every other axis and seed); *at chance*: no "
           f"trial in the cell learned (none above {LEARNED:.0%})."]
    for (rows, cols), (means, counts) in s.interactions.items():
        chance = s.at_chance.get((rows, cols), pd.DataFrame(False, means.index, means.columns))
        headers = [f"{rows} \\ {cols}", *[fmt.level(c) for c in means.columns]]
        body = [[fmt.level(r), *[f"{fmt.pct(means.loc[r, c])} (n={counts.loc[r, c]}"
                                 + (", *at chance*)" if chance.loc[r, c] else ")")
                                 if counts.loc[r, c] else "no trial" for c in means.columns]]
                for r in means.index]
        out += ["", f"#### {rows} × {cols}", "",
                fmt.image(images, f"heatmap:{rows}:{cols}", f"{rows} x {cols}"), "",
                fmt.table(headers, body, "l" + "r" * len(means.columns))]
    return out


def render_importance(s: Summary, images: dict) -> str:
    """Importance table and bar chart, or the reason it was not computed."""
    imp = s.importance
    head = ["## Hyperparameter importance", ""]
    if not imp.values:
        return "\n".join(head + [f"Not computed: {imp.reason}."])
    rows = [[fmt.NAMES.get(k, k), f"{100 * v:.1f}%"] for k, v in imp.values.items()]
    return "\n".join(head + [
        f"Importance of each varying axis for final test accuracy over {imp.n_trials} finished "
        f"trials, from Optuna's `get_param_importances` with the {imp.evaluator} evaluator "
        f"(the trials replayed into an in-memory study). {MEANING[imp.evaluator.split()[0]]}", "",
        fmt.image(images, "importance", "Hyperparameter importance"), "",
        fmt.table(["hyperparameter", "importance"], rows, "lr")])


def render_markdown(s: Summary, images: dict) -> str:
    """The whole REPORT.md, sections numbered in order."""
    parts = [render_header(s), render_ranking(s), render_axes(s, images),
             render_claims(s, images), render_relu(s), render_settle(s),
             render_importance(s, images), render_search(s, images), render_provenance(s)]
    body, number = [], 4
    for part in filter(None, parts):
        if part.startswith("## ") and not part.startswith(("## 1.", "## 2.", "## 3.")):
            part = f"## {number}. {part[3:]}"
            number += 1
        body.append(part)
    return "\n\n".join(body) + "\n"
