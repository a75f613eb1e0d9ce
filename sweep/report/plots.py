"""The report's figures, drawn from a Summary with matplotlib's object API (Agg, no pyplot state).

Each `plot_*` takes already-summarised tables and a path, writes one PNG and returns nothing;
every figure has a title, labelled axes with units and a legend (or a colour bar for heatmaps).
"""
from __future__ import annotations

import math
import textwrap
from functools import partial

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .fmt import NAMES, level, sort_levels

VERDICT_COLOURS = {"holds": "tab:green", "does not hold": "tab:red", "inconclusive": "tab:gray"}
PANELS = (("train_loss", "train loss"), ("test_loss", "test loss"),
          ("train_acc", "train accuracy (%)"), ("test_acc", "test accuracy (%)"))


def _save(fig: Figure, path) -> None:
    fig.savefig(path, dpi=100)


def axis_name(axis: str) -> str:
    return NAMES.get(axis, axis)


def plot_curves(curves: pd.DataFrame, axis: str, path) -> None:
    """Train/test loss and accuracy vs epoch, one line per level, band = ±1 std over trials."""
    fig = Figure(figsize=(11, 7.5), layout="constrained")
    axes = fig.subplots(2, 2)
    for ax, (metric, ylabel) in zip(axes.flat, PANELS):
        scale = 100.0 if metric.endswith("acc") else 1.0
        for i, lvl in enumerate(sort_levels(axis, curves["level"])):
            part = curves[(curves["level"] == lvl) & (curves["metric"] == metric)]
            mean, std = part["mean"] * scale, part["std"].fillna(0.0) * scale
            ax.plot(part["epoch"], mean, marker="o", ms=3, color=f"C{i}", label=level(lvl))
            ax.fill_between(part["epoch"], mean - std, mean + std, color=f"C{i}", alpha=0.2)
        ax.set(title=ylabel.split(" (")[0], xlabel="epoch", ylabel=ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, title=axis_name(axis), loc="outside right center")
    fig.suptitle(f"Learning curves by {axis_name(axis)}: trials that learned, at settings every "
                 "level shares (mean over trials, band ±1 std)")
    _save(fig, path)


def tick_label(row: pd.Series) -> str:
    """A marginal's level, marked when nothing of it is compared (it never learned)."""
    if row["n_done"]:
        return level(row["level"])
    return f"{level(row['level'])}\n(never learned)" if row["n_chance"] else level(row["level"])


def plot_marginals(marginals: dict, path) -> None:
    """Each axis's levels: mean final test accuracy with 95% t-interval error bars."""
    n = len(marginals)
    cols = min(n, 3)
    fig = Figure(figsize=(4.2 * cols, 3.6 * math.ceil(n / cols)), layout="constrained")
    axes = list(np.atleast_1d(fig.subplots(math.ceil(n / cols), cols)).flat)
    for ax, (axis, table) in zip(axes, marginals.items()):
        x = np.arange(len(table))
        ax.errorbar(x, table["mean"] * 100, yerr=table["half"].fillna(0) * 100, fmt="o",
                    color="C0", ecolor="black", capsize=5, label="mean, 95% t-interval")
        ax.set_xticks(x, [tick_label(r) for _, r in table.iterrows()], rotation=20)
        ax.set_xlim(-0.6, len(table) - 0.4)
        ax.set(title=axis_name(axis), xlabel=axis_name(axis), ylabel="test accuracy (%)")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize="small", loc="best")
    for ax in axes[n:]:
        ax.set_visible(False)
    title = ("Mean final test accuracy per level: trials that learned, at settings every level "
             "shares")
    fig.suptitle(textwrap.fill(title, width=int(11 * 4.2 * cols)))  # one panel: wrapped, not cut
    _save(fig, path)


def plot_heatmap(means: pd.DataFrame, counts: pd.DataFrame, rows: str, cols: str, path,
                 chance: pd.DataFrame | None = None) -> None:
    """Mean final test accuracy for every (rows, cols) cell, annotated with % and n, and
    'at chance' where `chance` marks that no trial of the cell learned."""
    size = (1.9 * len(means.columns) + 3, 0.8 * len(means.index) + 2)
    fig = Figure(figsize=size, layout="constrained")
    ax = fig.subplots()
    grid = means.to_numpy(dtype=float)
    image = ax.imshow(grid * 100, cmap="viridis", aspect="auto")
    for (i, j), v in np.ndenumerate(grid):
        text = "no trial" if np.isnan(v) else f"{100 * v:.1f}%\nn={counts.iloc[i, j]}"
        text += "\nat chance" if chance is not None and chance.iloc[i, j] else ""
        colour = "dimgray" if np.isnan(v) else "white" if v < np.nanmean(grid) else "black"
        ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=9)
    ax.set_xticks(range(len(means.columns)), [level(c) for c in means.columns])
    ax.set_yticks(range(len(means.index)), [level(r) for r in means.index])
    ax.set(xlabel=axis_name(cols), ylabel=axis_name(rows),
           title=f"Mean final test accuracy: {axis_name(rows)} × {axis_name(cols)}")
    fig.colorbar(image, ax=ax, label="mean test accuracy (%)")
    _save(fig, path)


def plot_scatter(points: pd.DataFrame, axis: str, path) -> None:
    """Final test accuracy against a continuous axis (log scale; zeros, e.g. λ without a
    regulariser, are left out and counted in the legend)."""
    fig = Figure(figsize=(6.5, 4), layout="constrained")
    ax = fig.subplots()
    zeros = int((points["value"] <= 0).sum())
    shown = points[points["value"] > 0] if zeros < len(points) else points
    label = "finished trial" + (f" ({zeros} at {axis_name(axis)} ≤ 0 not shown)" if zeros else "")
    ax.scatter(shown["value"], shown["final_test_acc"] * 100, s=18, label=label)
    log = bool((shown["value"] > 0).all())
    if log:
        ax.set_xscale("log")
    ax.set(xlabel=axis_name(axis) + (" (log scale)" if log else ""), ylabel="test accuracy (%)",
           title=f"Final test accuracy vs {axis_name(axis)}")
    ax.legend()
    ax.grid(alpha=0.3)
    _save(fig, path)


def plotted_claims(claims: pd.DataFrame) -> pd.DataFrame:
    """The claims the forest plot shows: judged ones on an accuracy scale (not loss)."""
    return claims[(claims["n"] > 0) & ~claims["metric"].str.endswith("loss")]


def plot_claims(claims: pd.DataFrame, path) -> None:
    """Forest plot of accuracy-type claims: paired effect in the claimed direction with 95% CI."""
    rows = plotted_claims(claims).iloc[::-1]
    fig = Figure(figsize=(11, 0.45 * len(rows) + 1.8), layout="constrained")
    ax = fig.subplots()
    for y, (_, row) in enumerate(rows.iterrows()):
        sign = 100.0 if row["better"] == "higher" else -100.0
        mid, ends = sign * row["effect"], sorted((sign * row["low"], sign * row["high"]))
        err = [[mid - ends[0]], [ends[1] - mid]] if np.isfinite(ends[0]) else None
        ax.errorbar(mid, y, xerr=err, fmt="o", capsize=4, color=VERDICT_COLOURS[row["verdict"]],
                    label=row["verdict"])
    ax.axvline(0, color="black", lw=0.8)
    names = [f"{r['id']} {r['claim'][:56]}" + ("…" if len(r["claim"]) > 56 else "")
             + (f" [{r['level']}]" if r.get("level") else "") for _, r in rows.iterrows()]
    ax.set_yticks(range(len(rows)), names)
    ax.set(xlabel="paired effect in the claimed direction (pts; > 0 favours the claim)",
           ylabel="claim", title="Reference claims on accuracy: paired effect with 95% CI")
    handles = {h.get_label(): h for h in ax.get_legend_handles_labels()[0]}
    ax.legend(handles.values(), handles.keys(), title="verdict", fontsize="small",
              loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3, axis="x")
    _save(fig, path)


def plot_importance(values: dict, evaluator: str, path) -> None:
    """Horizontal bars of each axis's importance for final test accuracy."""
    names = list(values)[::-1]
    fig = Figure(figsize=(6.5, 0.45 * len(names) + 1.5), layout="constrained")
    ax = fig.subplots()
    ax.barh([axis_name(n) for n in names], [100 * values[n] for n in names], color="C2",
            label=evaluator)
    ax.set(xlabel="importance (% of total)", ylabel="hyperparameter",
           title="Hyperparameter importance for final test accuracy")
    ax.legend(loc="lower right", fontsize="small")
    _save(fig, path)


def plot_history(history: pd.DataFrame, name: str, path) -> None:
    """The study's objective (validation accuracy; test accuracy in searches made before the
    hold-out existed) per trial number with the running best (an optimisation history)."""
    fig = Figure(figsize=(7.5, 4), layout="constrained")
    ax = fig.subplots()
    done = history["status"].eq("completed")
    ax.scatter(history["number"][done], history["value"][done] * 100, s=18, label="completed")
    ax.scatter(history["number"][~done], history["value"][~done] * 100, s=18, marker="x",
               color="tab:gray", label="pruned / diverged / error (last value)")
    ax.step(history["number"], history["best"] * 100, where="post", color="tab:red",
            label="best so far")
    ax.set(xlabel="trial number", ylabel="objective: accuracy (%)",
           title=f"Optimisation history: {name}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    ax.grid(alpha=0.3)
    _save(fig, path)


def render_plots(summary, out_dir) -> dict:
    """Draw every figure the summary supports into out_dir; return {key: file name}."""
    images = {}

    def draw(key: str, name: str, plot, *args) -> None:
        plot(*args, out_dir / name)
        images[key] = name

    for axis, table in summary.curves.items():
        if len(table):
            draw(f"curves:{axis}", f"curves_{axis}.png", plot_curves, table, axis)
    if summary.marginals:
        draw("marginals", "marginals.png", plot_marginals, summary.marginals)
    for (rows, cols), (means, counts) in summary.interactions.items():
        heatmap = partial(plot_heatmap, chance=summary.at_chance.get((rows, cols)))
        draw(f"heatmap:{rows}:{cols}", f"heatmap_{rows}_x_{cols}.png", heatmap, means, counts,
             rows, cols)
    for axis, points in summary.scatters.items():
        draw(f"scatter:{axis}", f"scatter_{axis}.png", plot_scatter, points, axis)
    if len(plotted_claims(summary.claims)):
        draw("claims", "claims.png", plot_claims, summary.claims)
    if summary.importance.values:
        draw("importance", "importance.png", plot_importance, summary.importance.values,
             summary.importance.evaluator)
    for i, (name, info) in enumerate(summary.searches.items()):
        draw(f"history:{name}", f"history_{i + 1}.png", plot_history, info.history, name)
    return images
