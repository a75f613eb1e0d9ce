"""REPORT.md from a Summary: pure text, relative image links, GitHub tables.

`render_markdown(summary, images)` returns the whole document; the provenance and search
sections live in `render_run.py`. Accuracies are shown as percentages with one decimal.
"""
from __future__ import annotations

import pandas as pd

from . import fmt
from .render_claims import render_claims, render_relu
from .render_run import render_provenance, render_search
from .summary import Summary, status_text

TOP = 25
MEANING = {
    "fANOVA": "fANOVA reads each importance as the share of the variance in test accuracy that a "
              "random forest attributes to that hyperparameter.",
    "PED-ANOVA": "PED-ANOVA reads each importance as how differently a hyperparameter is "
                 "distributed among the best trials than among all: what the best trials share, "
                 "not how much a bad setting hurts.",
}
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
    best = s.ranking.iloc[0]
    best_cfg = {a: best[a] for a in s.axes}
    lines = [f"# CIFAR-10 sweep report: {s.name}", "",
             f"A {' + '.join(kinds)} run of {len(s.trials)} trials "
             f"({status_text(s.trials['status'])}) over {len(s.ranking)} configurations. "
             f"Best configuration: {_config_text(best_cfg) or 'the only one'} with "
             f"{fmt.pct_ci(best['mean'], best['half'])} final test accuracy (n={best['n_done']}).",
             "", f"Every trial shares: {_config_text(s.constants) or 'nothing'}."]
    if (s.trials["status"] == "running").any():
        lines += ["", "> **Note:** some trials are still running; this report is a snapshot."]
    if any(m.get("status") == "interrupted" for m in s.metas.values()):
        lines += ["", "> **Note:** the run was interrupted before every trial finished."]
    elif any(m.get("status") == "running" for m in s.metas.values()):
        lines += ["", "> **Note:** run.json says the sweep is still running."]
    sections = ["Ranking of configurations", "Each axis", "The seed report's claims, judged",
                "Hyperparameter importance", "Provenance"]
    if (s.claims["relu"]).any():
        sections.insert(3, "What the ReLU on the logits costs")
    if s.searches:
        sections.insert(-1, "Search")
    anchors = [f"{i}. [{t}](#{i}-{fmt.anchor(t)})" for i, t in enumerate(sections, 1)]
    return "\n".join([*lines, "", "## Contents", "", *anchors])


def render_ranking(s: Summary) -> str:
    """Configurations by mean final test accuracy (top TOP; all in ranking.csv)."""
    headers = ["#", "seed label", *[fmt.NAMES.get(a, a) for a in s.axes], "test acc (mean ± CI)",
               "std", "n", "test loss", "train acc", "gap (train − test)", "trials"]
    rows = [[r["rank"], r["label"] or fmt.DASH, *[fmt.level(r[a]) for a in s.axes],
             fmt.pct_ci(r["mean"], r["half"]), fmt.pts(r["std"], signed=False), r["n_done"],
             fmt.num(r["test_loss"]), fmt.pct(r["train_acc"]), fmt.pts(r["gap"]), r["statuses"]]
            for _, r in s.ranking.head(TOP).iterrows()]
    more = (f" Showing the top {TOP} of {len(s.ranking)}; all are in `ranking.csv`."
            if len(s.ranking) > TOP else " The same table is in `ranking.csv`.")
    return "\n".join([
        "## 1. Ranking of configurations", "",
        "Configurations (all config columns except seed) ranked by mean final test accuracy. "
        f"{CI_NOTE} Means use completed trials only; diverged, pruned and error trials are "
        f"counted in the last column and never dropped.{more}", "",
        fmt.table(headers, rows, "rl" + "l" * len(s.axes) + "rrrrrrl"), *render_failures(s)])


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


def _marginal_table(table: pd.DataFrame) -> str:
    rows = [[fmt.level(r["level"]), r["n_done"], fmt.pct(r["mean"]),
             fmt.DASH if fmt.missing(r["half"]) else f"[{fmt.pct(r['low'])}, {fmt.pct(r['high'])}]",
             fmt.pts(r["std"], signed=False), r["statuses"]] for _, r in table.iterrows()]
    return fmt.table(["level", "n finished", "mean test acc", "95% CI", "std", "trials"], rows,
                     "lrrrrl")


def render_axes(s: Summary, images: dict) -> str:
    """Per axis: learning curves, marginal means with CIs, then the interaction heatmaps."""
    out = ["## 2. Each axis", "",
           "For every axis with at least two levels: learning curves averaged over all other axes "
           "and seeds (band: ±1 std over trials; completed trials only), and each level's mean "
           "final test accuracy with a 95% t-interval over its trials. Marginal means average "
           "over whatever else varies with the level, so in an unbalanced run (like the seed "
           "preset) they are confounded; the paired claims in section 3 are the fair comparison."]
    if not s.marginals and not s.scatters:
        out += ["", "No axis takes two values in this run, so there is nothing to compare."]
    if s.lam_mirrors:
        out += ["", "λ (`lam`) is not compared on its own here nor in the importance: it only "
                "follows the regulariser (0 without one), so its levels repeat the regulariser's."]
    if "marginals" in images:
        out += ["", f"![Mean test accuracy per level]({images['marginals']})"]
    for axis, table in s.marginals.items():
        out += ["", f"### {heading(axis)}", ""]
        if f"curves:{axis}" in images:
            out += [f"![Learning curves by {axis}]({images[f'curves:{axis}']})", ""]
        out.append(_marginal_table(table))
    for axis in s.scatters:
        out += ["", f"### {heading(axis)}, continuous", "",
                fmt.image(images, f"scatter:{axis}", f"Test accuracy vs {axis}")]
    return "\n".join(out + render_interactions(s, images))


def render_interactions(s: Summary, images: dict) -> list[str]:
    """Heatmap and table of mean test accuracy for each pair of axes that both vary."""
    if not s.interactions:
        return []
    out = ["", "### Interactions", "", "Mean final test accuracy of completed trials in each cell "
           "(n = trials in the cell, pooled over every other axis and seed)."]
    for (rows, cols), (means, counts) in s.interactions.items():
        headers = [f"{rows} \\ {cols}", *[fmt.level(c) for c in means.columns]]
        body = [[fmt.level(r), *[f"{fmt.pct(means.loc[r, c])} (n={counts.loc[r, c]})"
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
    parts = [render_header(s), render_ranking(s), render_axes(s, images), render_claims(s, images),
             render_relu(s), render_importance(s, images), render_search(s, images),
             render_provenance(s)]
    body, number = [], 4
    for part in filter(None, parts):
        if part.startswith("## ") and not part.startswith(("## 1.", "## 2.", "## 3.")):
            part = f"## {number}. {part[3:]}"
            number += 1
        body.append(part)
    return "\n\n".join(body) + "\n"
