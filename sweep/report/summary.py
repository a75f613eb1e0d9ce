"""The pure middle of the report: DataFrames in, tables out; no files, no plotting.

`summarise(run)` builds a `Summary` from a loaded `Run`; every piece is a small function over the
trials or epochs frame, so the tests can check each number against a hand computation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .claims import judge_all
from .fmt import sort_levels
from .importance import Importance, SearchInfo, importance, search_info
from .load import CONFIG, EPOCH_METRICS, FINISHED, Run
from .stats import mean_ci

MAX_LEVELS = 8  # a numeric axis with more distinct values is treated as continuous
INTERACTIONS = (("optimiser", "lr"), ("transform", "model"), ("regulariser", "model"))
OTHER_STATUSES = ("diverged", "pruned", "error", "running")


def finished(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials that completed with a finite final test accuracy (the ones means are taken over)."""
    ok = trials["status"].eq(FINISHED) & np.isfinite(trials["final_test_acc"])
    return trials[ok]


def varying_axes(trials: pd.DataFrame) -> tuple[str, ...]:
    """Config columns that take at least two values in the run."""
    return tuple(c for c in CONFIG if trials[c].nunique(dropna=False) >= 2)


def lam_follows_regulariser(trials: pd.DataFrame) -> bool:
    """λ only mirrors the regulariser (one λ per regulariser, 0 with none): no axis of its own."""
    return bool(trials.groupby("regulariser")["lam"].nunique().max() <= 1)


def compared_axes(trials: pd.DataFrame) -> tuple[str, ...]:
    """Axes compared level by level and in the importance: λ left out when it only mirrors."""
    axes = varying_axes(trials)
    if "lam" in axes and lam_follows_regulariser(trials):
        axes = tuple(a for a in axes if a != "lam")
    return axes


def constants(trials: pd.DataFrame) -> dict:
    """Config columns that take one value in the whole run, with that value."""
    return {c: sort_levels(c, trials[c])[0] for c in CONFIG if trials[c].nunique(dropna=False) == 1}


def is_continuous(trials: pd.DataFrame, axis: str) -> bool:
    """A numeric axis with too many values to show level by level (e.g. a searched lr)."""
    kind = trials[axis].dtype
    numeric = pd.api.types.is_float_dtype(kind) or pd.api.types.is_integer_dtype(kind)
    return bool(numeric) and trials[axis].nunique() > MAX_LEVELS


def status_text(statuses: pd.Series) -> str:
    """'3 completed, 1 diverged' style counts, completed first."""
    counts = statuses.value_counts()
    order = [FINISHED, *OTHER_STATUSES, *sorted(set(counts.index) - {FINISHED, *OTHER_STATUSES})]
    return ", ".join(f"{counts[s]} {s}" for s in order if s in counts)


def _group_row(group: pd.DataFrame) -> dict:
    done = finished(group)
    acc = mean_ci(done["final_test_acc"])
    labels = dict.fromkeys(p for text in group.get("label", []) for p in str(text).split("|") if p)
    return {"label": "|".join(labels), "n": len(group), "n_done": acc.n, "mean": acc.mean,
            "std": acc.std, "half": acc.half, "test_loss": done["final_test_loss"].mean(),
            "train_acc": done["final_train_acc"].mean(),
            "gap": (done["final_train_acc"] - done["final_test_acc"]).mean(),
            "statuses": status_text(group["status"])}


def ranking(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration, best mean final test accuracy first (unfinished last)."""
    rows = [{**dict(zip(CONFIG, key)), **_group_row(group)}
            for key, group in trials.groupby(list(CONFIG), sort=False, dropna=False)]
    table = pd.DataFrame(rows)
    table = table.sort_values(["mean", "n_done"], ascending=[False, False], na_position="last")
    return table.reset_index(drop=True).assign(rank=lambda t: np.arange(1, len(t) + 1))


def marginal(trials: pd.DataFrame, axis: str) -> pd.DataFrame:
    """Each level's mean final test accuracy with a 95% t-interval over its finished trials."""
    rows = []
    for level in sort_levels(axis, trials[axis]):
        group = trials[trials[axis] == level]
        acc = mean_ci(finished(group)["final_test_acc"])
        rows.append({"level": level, "n": len(group), "n_done": acc.n, "mean": acc.mean,
                     "std": acc.std, "half": acc.half, "low": acc.low, "high": acc.high,
                     "statuses": status_text(group["status"])})
    return pd.DataFrame(rows)


def curves(epochs: pd.DataFrame, axis: str) -> pd.DataFrame:
    """Mean and std (over trials) of each epoch metric per level of `axis`, finished trials only."""
    ok = epochs[epochs["status"].eq(FINISHED)]
    if "epoch_status" in ok:
        ok = ok[ok["epoch_status"].fillna("ok").eq("ok")]
    long = ok.melt(id_vars=[axis, "epoch"], value_vars=list(EPOCH_METRICS), var_name="metric")
    long = long[np.isfinite(long["value"])]
    grouped = long.groupby([axis, "metric", "epoch"])["value"]
    table = grouped.agg(mean="mean", std="std", n="count").reset_index()
    return table.rename(columns={axis: "level"})


def interaction(trials: pd.DataFrame, rows: str, cols: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean final test accuracy and finished-trial count for every (rows, cols) cell."""
    done = finished(trials)
    means = done.pivot_table(index=rows, columns=cols, values="final_test_acc", aggfunc="mean")
    counts = done.pivot_table(index=rows, columns=cols, values="final_test_acc", aggfunc="count")
    order = sort_levels(rows, trials[rows]), sort_levels(cols, trials[cols])
    means = means.reindex(index=order[0], columns=order[1])
    return means, counts.reindex(index=order[0], columns=order[1]).fillna(0).astype(int)


def scatter(trials: pd.DataFrame, axis: str) -> pd.DataFrame:
    """Finished trials' value of a continuous axis against final test accuracy."""
    return finished(trials)[[axis, "final_test_acc"]].rename(columns={axis: "value"})


@dataclass(frozen=True)
class Summary:
    """Everything the renderers draw, computed once from a run."""

    name: str
    trials: pd.DataFrame
    metas: dict
    axes: tuple[str, ...]
    constants: dict
    ranking: pd.DataFrame
    marginals: dict
    curves: dict
    scatters: dict
    interactions: dict
    claims: pd.DataFrame
    importance: Importance
    searches: dict  # part name -> SearchInfo
    lam_mirrors: bool = False  # λ varies only with the regulariser, so it is not compared alone


def summarise(run: Run) -> Summary:
    """The whole report's numbers from one (possibly combined) run."""
    trials, axes = run.trials, varying_axes(run.trials)
    compared = compared_axes(trials)
    levelled = [a for a in compared if not is_continuous(trials, a)]
    pairs = [(r, c) for r, c in INTERACTIONS if r in levelled and c in levelled]
    searches: dict[str, SearchInfo] = {
        name: search_info(trials[trials["run"] == name], meta)
        for name, meta in run.metas.items() if meta.get("kind") == "search"}
    return Summary(
        name=run.name, trials=trials, metas=run.metas, axes=axes, constants=constants(trials),
        ranking=ranking(trials), marginals={a: marginal(trials, a) for a in levelled},
        curves={a: curves(run.epochs, a) for a in levelled if len(run.epochs)},
        scatters={a: scatter(trials, a) for a in compared if a not in levelled},
        interactions={p: interaction(trials, *p) for p in pairs},
        claims=judge_all(finished(trials)), importance=importance(finished(trials), compared),
        searches=searches, lam_mirrors=set(axes) - set(compared) == {"lam"})
