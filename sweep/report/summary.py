"""The pure middle of the report: DataFrames in, tables out; no files, no plotting.

`summarise(run)` builds a `Summary` from a loaded `Run`; every piece is a small function over the
trials or epochs frame, so the tests can check each number against a hand computation. Curves and
marginal means compare like with like (`shared`); `versus_top` tests the ranking against its top.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .claims import judge_all, settle_design, with_gap
from .fmt import NAMES, level, sort_levels
from .importance import Importance, SearchInfo, importance, search_info
from .load import CONFIG, EPOCH_METRICS, FINISHED, Run, LEARNED
from .stats import ALPHA, holm, mean_ci
from ..schema import BEST

MAX_LEVELS = 8  # a numeric axis with more distinct values is treated as continuous
INTERACTIONS = (("optimiser", "lr"), ("transform", "model"), ("regulariser", "model"))
OTHER_STATUSES = ("diverged", "pruned", "error", "running")


def finished(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials that completed with a finite final test accuracy (the ones means are taken over)."""
    ok = trials["status"].eq(FINISHED) & np.isfinite(trials["final_test_acc"])
    return trials[ok]


def learned(trials: pd.DataFrame) -> pd.Series:
    """True where the final test accuracy is above LEARNED (missing, e.g. diverged: False)."""
    return trials["final_test_acc"].gt(LEARNED)


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


RANK_BY = ("final", "best")  # --rank-by: a trial's last or its best epoch
RANK_METRICS = BEST  # --rank-metric: the scores trials.csv keeps both final_ and best_ of


def rank_column(rank_by: str = "final", metric: str = "test_acc") -> str:
    """The trials.csv column a ranking sorts on, e.g. final_test_acc or best_val_acc."""
    assert rank_by in RANK_BY and metric in RANK_METRICS, (rank_by, metric)
    return f"{rank_by}_{metric}"


def reproduce_command(row) -> str:
    """The `python -m cifar_core` command that re-runs one trial of a ranked configuration."""
    flags = {c: row[c] for c in CONFIG}
    flags["seed"] = int(row["first_seed"])
    parts = [f"--{k.replace('_', '-')} {repr(float(v)) if isinstance(v, float) else v}"
             for k, v in flags.items()]  # repr: the exact value (a search's lr is not 3 digits)
    return "python -m cifar_core " + " ".join(parts)


def _group_row(group: pd.DataFrame, column: str = "final_test_acc") -> dict:
    done = finished(group)
    acc = mean_ci(done[column] if column in done else pd.Series(dtype=float))
    labels = dict.fromkeys(p for text in group.get("label", []) for p in str(text).split("|") if p)
    return {"label": "|".join(labels), "n": len(group), "n_done": acc.n, "mean": acc.mean,
            "std": acc.std, "half": acc.half, "test_loss": done["final_test_loss"].mean(),
            # eval-mode training accuracy (train-mode in runs recorded before it), and the gap
            # it leaves to test accuracy, as the overfitting claims use them: train = test + gap
            "train_acc": (done["gap"] + done["final_test_acc"]).mean(), "gap": done["gap"].mean(),
            "statuses": status_text(group["status"]),
            "first_seed": int(done["seed"].min()) if len(done) else int(group["seed"].min()),
            "runs": ", ".join(sorted(set(group["run"].astype(str)))) if "run" in group else ""}


def ranking(trials: pd.DataFrame, column: str = "final_test_acc") -> pd.DataFrame:
    """One row per configuration, best mean `column` first (unfinished last), with its test
    against the top one (`versus_top`) and the command that re-runs one of its trials."""
    gapped = with_gap(trials)
    rows = [{**dict(zip(CONFIG, key)), **_group_row(group, column)}
            for key, group in gapped.groupby(list(CONFIG), sort=False, dropna=False)]
    table = pd.DataFrame(rows)
    table = table.sort_values(["mean", "n_done"], ascending=[False, False], na_position="last")
    table = table.reset_index(drop=True).assign(rank=lambda t: np.arange(1, len(t) + 1))
    table["command"] = [reproduce_command(r) for _, r in table.iterrows()]
    return table.join(versus_top(trials, table, column))


def versus_top(trials: pd.DataFrame, table: pd.DataFrame,
               column: str = "final_test_acc") -> pd.DataFrame:
    """Each ranked configuration against the top one by a paired t-test over seeds (pairs share
    a seed, replicates averaged first), Holm-adjusted over those comparisons. near_top: 'top';
    'yes' when the adjusted p > ALPHA; 'no'; 'untested' below two seeds shared with the top."""
    done = finished(trials)
    if column not in done:
        done = done.assign(**{column: np.nan})
    per_seed = done.groupby([*CONFIG, "seed"], dropna=False)[column].mean()
    by_config = dict(iter(per_seed.unstack("seed").iterrows()))
    keys = list(table[list(CONFIG)].itertuples(index=False, name=None))
    top = by_config.get(keys[0])
    tests = [None if i == 0 or top is None or k not in by_config
             else mean_ci((top - by_config[k]).dropna()) for i, k in enumerate(keys)]
    p = np.array([np.nan if t is None else t.p for t in tests])
    adjusted = holm(p)
    near = ["top" if i == 0 else "untested" if not np.isfinite(a) else "yes" if a > ALPHA
            else "no" for i, a in enumerate(adjusted)]
    return pd.DataFrame({"n_pairs": [0 if t is None else t.n for t in tests],
                         "vs_top": [np.nan if t is None else t.mean for t in tests],
                         "p": p, "p_holm": adjusted, "near_top": near}, index=table.index)


def best_set(table: pd.DataFrame) -> pd.DataFrame:
    """The ranking's rows not distinguishable from its top; empty when no comparison was tested."""
    if not table["near_top"].isin(("yes", "no")).any():
        return table.iloc[:0]
    return table[table["near_top"].isin(("top", "yes"))]


def untested_reason(trials: pd.DataFrame, table: pd.DataFrame) -> str:
    """Why the ranking names no best set ('' when it does)."""
    if len(best_set(table)):
        return ""
    if finished(trials)["seed"].nunique() < 2:
        return "one seed: the ranking cannot separate configurations"
    return "no configuration shares two seeds with the top one: the ranking cannot separate them"


def setting_columns(axis: str) -> list[str]:
    """What a setting is when comparing `axis`: every other config column (seed excluded); λ is
    the regulariser's strength, so it belongs to the regulariser's level."""
    skip = {axis, "lam"} if axis == "regulariser" else {axis}
    return [c for c in CONFIG if c not in skip]


@dataclass(frozen=True)
class Shared:
    """What one axis is compared over: learned trials at settings every learned level shares."""

    trials: pd.DataFrame  # the trials compared (none when `reason` says why)
    settings: pd.DataFrame  # the shared settings, one row each (setting_columns)
    stuck: tuple = ()  # levels with finished trials, none of which learned
    reason: str = ""  # why the axis gets no curve or mean; '' when it gets them


def _blocking(ok: pd.DataFrame, axis: str, key: list[str]) -> str:
    """The columns on which no value is common to every level: 'data fraction (none 0.5, ...)'."""
    parts = []
    for column in key:
        values = ok.groupby(axis)[column].agg(lambda v: frozenset(v.tolist()))
        if not frozenset.intersection(*values):
            each = ", ".join(f"{level(v)} " + "/".join(map(level, sort_levels(column, values[v])))
                             for v in sort_levels(axis, values.index))
            parts.append(f"{NAMES.get(column, column)} ({each})")
    return "; ".join(parts)


def shared(trials: pd.DataFrame, axis: str) -> Shared:
    """Finished trials that learned, kept at the settings that occur at every level of `axis`
    among them; levels that never learned drop out (named in `stuck`)."""
    done = finished(trials)
    ok, key = done[learned(done)], setting_columns(axis)
    stuck = tuple(v for v in sort_levels(axis, done[axis]) if not ok[axis].eq(v).any())
    n_levels, none = ok[axis].nunique(), ok.iloc[:0]
    if n_levels < 2:
        why = (f"only {level(ok[axis].iloc[0])} has trials that learned" if n_levels
               else "no trial learned")
        return Shared(none, none[key], stuck, why)
    per_setting = ok.groupby(key, dropna=False)[axis].nunique()
    keep = pd.MultiIndex.from_frame(ok[key]).isin(per_setting.index[per_setting.eq(n_levels)])
    if not keep.any():
        blocking = _blocking(ok, axis, key)
        why = "no setting of the other axes is shared by every level that learned"
        return Shared(none, none[key], stuck, why + (f": {blocking}" if blocking else ""))
    return Shared(ok[keep], ok.loc[keep, key].drop_duplicates(), stuck)


def marginal(trials: pd.DataFrame, axis: str, compared: Shared | None = None) -> pd.DataFrame:
    """Each level's mean final test accuracy with a 95% t-interval over the trials `shared`
    compares; n_chance and n_unshared count its finished trials left out (never learned; learned
    at a setting not every level shares)."""
    kept = (shared(trials, axis) if compared is None else compared).trials
    done, rows = finished(trials), []
    for value in sort_levels(axis, trials[axis]):
        group = done[done[axis] == value]
        acc = mean_ci(kept.loc[kept[axis] == value, "final_test_acc"])
        chance = int((~learned(group)).sum())
        rows.append({"level": value, "n": int(trials[axis].eq(value).sum()), "n_done": acc.n,
                     "mean": acc.mean, "std": acc.std, "half": acc.half, "low": acc.low,
                     "high": acc.high, "n_chance": chance,
                     "n_unshared": len(group) - chance - acc.n,
                     "statuses": status_text(trials.loc[trials[axis] == value, "status"])})
    return pd.DataFrame(rows)


def epoch_trials(epochs: pd.DataFrame) -> pd.DataFrame:
    """One row per trial of an epochs frame, its last epoch's test accuracy as the final one."""
    last = epochs.sort_values("epoch").groupby("trial_id", sort=False).tail(1)
    return last.assign(final_test_acc=last["test_acc"])


def curves(epochs: pd.DataFrame, axis: str, trials: pd.DataFrame | None = None) -> pd.DataFrame:
    """Mean and std (over trials) of each epoch metric per level of `axis`, over the trials
    `shared` compares (judged on `trials`, or on the epochs' own last rows when not given)."""
    kept = shared(epoch_trials(epochs) if trials is None else trials, axis).trials
    ok = epochs[epochs["status"].eq(FINISHED) & epochs["trial_id"].isin(kept["trial_id"])]
    if "epoch_status" in ok:
        ok = ok[ok["epoch_status"].fillna("ok").eq("ok")]
    long = ok.melt(id_vars=[axis, "epoch"], value_vars=list(EPOCH_METRICS), var_name="metric")
    long = long[np.isfinite(long["value"])]
    grouped = long.groupby([axis, "metric", "epoch"])["value"]
    table = grouped.agg(mean="mean", std="std", n="count").reset_index()
    return table.rename(columns={axis: "level"})


def never_learned(trials: pd.DataFrame) -> pd.DataFrame:
    """The configurations of finished trials that never learned (n: how many), with labels."""
    done = with_gap(finished(trials))
    rows = [{**dict(zip(CONFIG, key)), **_group_row(group)}
            for key, group in done[~learned(done)].groupby(list(CONFIG), sort=False, dropna=False)]
    return pd.DataFrame(rows, columns=["label", *CONFIG, "n", "mean"])


def interaction(trials: pd.DataFrame, rows: str, cols: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean final test accuracy and finished-trial count for every (rows, cols) cell."""
    done = finished(trials)
    means = done.pivot_table(index=rows, columns=cols, values="final_test_acc", aggfunc="mean")
    counts = done.pivot_table(index=rows, columns=cols, values="final_test_acc", aggfunc="count")
    order = sort_levels(rows, trials[rows]), sort_levels(cols, trials[cols])
    means = means.reindex(index=order[0], columns=order[1])
    return means, counts.reindex(index=order[0], columns=order[1]).fillna(0).astype(int)


def chance_cells(trials: pd.DataFrame, rows: str, cols: str) -> pd.DataFrame:
    """True for each (rows, cols) cell whose finished trials all never learned."""
    done = finished(trials)
    ok = done.assign(ok=learned(done).astype(int))
    any_ok = ok.pivot_table(index=rows, columns=cols, values="ok", aggfunc="max")
    order = sort_levels(rows, trials[rows]), sort_levels(cols, trials[cols])
    return any_ok.reindex(index=order[0], columns=order[1]).eq(0)


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
    comparisons: dict = field(default_factory=dict)  # levelled axis -> Shared (what it compares)
    at_chance: dict = field(default_factory=dict)  # interaction pair -> cells that never learned
    never_learned: pd.DataFrame = field(default_factory=pd.DataFrame)  # see never_learned()
    rank_by: str = "final_test_acc"  # the column the ranking sorts on


def summarise(run: Run, rank_by: str = "final_test_acc") -> Summary:
    """The whole report's numbers from one (possibly combined) run; the ranking sorts on
    `rank_by` (a trials.csv column: rank_column())."""
    trials, axes = run.trials, varying_axes(run.trials)
    compared = compared_axes(trials)
    levelled = [a for a in compared if not is_continuous(trials, a)]
    pairs = [(r, c) for r, c in INTERACTIONS if r in levelled and c in levelled]
    fair = {a: shared(trials, a) for a in levelled}
    fair_axes = [a for a in levelled if not fair[a].reason]
    searches: dict[str, SearchInfo] = {
        name: search_info(trials[trials["run"] == name], meta)
        for name, meta in run.metas.items() if meta.get("kind") == "search"}
    return Summary(
        name=run.name, trials=trials, metas=run.metas, axes=axes, constants=constants(trials),
        ranking=ranking(trials, rank_by), rank_by=rank_by,
        marginals={a: marginal(trials, a, fair[a]) for a in fair_axes},
        curves={a: curves(run.epochs, a, trials) for a in fair_axes if len(run.epochs)},
        scatters={a: scatter(trials, a) for a in compared if a not in levelled},
        interactions={p: interaction(trials, *p) for p in pairs}, comparisons=fair,
        at_chance={p: chance_cells(trials, *p) for p in pairs}, never_learned=never_learned(trials),
        claims=judge_all(finished(trials), **settle_design(run.metas)),
        importance=importance(finished(trials), compared),
        searches=searches, lam_mirrors=set(axes) - set(compared) == {"lam"})
