"""Hyperparameter importance (through Optuna) and the history of a search run.

Importance replays the run's finished trials into an in-memory Optuna study
(`optuna.trial.create_trial` + `study.add_trials`) and asks `get_param_importances` with PED-ANOVA
on every machine (pure Optuna: fANOVA would need scikit-learn, and a report must not change with
what happens to be installed); the report names the evaluator.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .load import CONFIG

MIN_TRIALS = 8
MAX_CATEGORIES = 8  # numeric axes with more distinct values get a FloatDistribution


@dataclass(frozen=True)
class Importance:
    """Importances (sum 1, largest first) or the reason they were not computed."""

    values: dict = field(default_factory=dict)
    evaluator: str = ""
    n_trials: int = 0
    reason: str = ""


@dataclass(frozen=True)
class SearchInfo:
    """A search run's trials in order, its running best and the best parameters it reported."""

    history: pd.DataFrame  # number, trial_id, value (selection metric), test, status, best
    best_params: dict
    best_value: float
    best_number: object
    settings: dict
    metric: str = "test_acc"  # what it selected on: val_acc, or test_acc before --val-size
    val_size: int = 0  # held-out training images behind val_acc
    best_test: float = np.nan  # the reported best's test accuracy (shown, never selected on)


def _python(value):
    return value.item() if isinstance(value, np.generic) else value


def distribution(values: pd.Series):
    """Categorical for labels and few levels; log-float for a widely sampled positive axis."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    levels = sorted({_python(v) for v in values}, key=str)
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if not numeric or len(levels) <= MAX_CATEGORIES:
        return CategoricalDistribution(levels)
    low, high = float(values.min()), float(values.max())
    return FloatDistribution(low, high, log=low > 0)


def _evaluator(n_trials: int):
    """PED-ANOVA over the top share of trials (at least 5 of them, 10-50%)."""
    import optuna

    quantile = min(0.5, max(0.1, 5.0 / n_trials))
    return (optuna.importance.PedAnovaImportanceEvaluator(target_quantile=quantile),
            f"PED-ANOVA (top {quantile:.0%} of trials)")


def importance(finished: pd.DataFrame, axes=CONFIG) -> Importance:
    """Importance of each of `axes` that varies, for final test accuracy, or why there is none."""
    import optuna

    axes = [c for c in axes if finished[c].nunique() >= 2]
    n = len(finished)
    if len(axes) < 2:
        return Importance(n_trials=n, reason=f"fewer than 2 axes vary among finished trials "
                                             f"({', '.join(axes) or 'none'})")
    if n < MIN_TRIALS:
        return Importance(n_trials=n, reason=f"too few finished trials ({n} < {MIN_TRIALS})")
    if finished["final_test_acc"].nunique() < 2:
        return Importance(n_trials=n, reason="final test accuracy is the same in every trial")
    dists = {a: distribution(finished[a]) for a in axes}
    trials = [optuna.trial.create_trial(params={a: _python(row[a]) for a in axes},
                                        distributions=dists, value=float(row["final_test_acc"]))
              for _, row in finished.iterrows()]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    study.add_trials(trials)
    evaluator, name = _evaluator(n)
    with warnings.catch_warnings():  # Optuna warns about small studies; the reason is shown
        warnings.simplefilter("ignore")
        values = optuna.importance.get_param_importances(study, evaluator=evaluator)
    return Importance(values=dict(values), evaluator=name, n_trials=n)


def search_info(trials: pd.DataFrame, meta: dict) -> SearchInfo:
    """Trial number (the Optuna study's, trials.csv's study_number; row order for runs that
    predate it), the final accuracy the search selected on (validation; test for runs before
    --val-size), final test accuracy and the running best."""
    search = dict(meta.get("search") or {})
    val_size = int(search.get("val_size") or (meta.get("settings") or {}).get("val_size") or 0)
    metric = "val_acc" if val_size else "test_acc"
    numbers = pd.to_numeric(trials.get("study_number"), errors="coerce") \
        if "study_number" in trials else pd.Series(dtype=float)
    numbered = len(numbers) == len(trials) and numbers.notna().all()
    history = pd.DataFrame({"number": numbers.astype(int).to_numpy() if numbered
                            else np.arange(len(trials)),
                            "trial_id": trials["trial_id"].to_numpy(),
                            "value": trials[f"final_{metric}"].to_numpy(),
                            "test": trials["final_test_acc"].to_numpy(),
                            "status": trials["status"].to_numpy()})
    history = history.sort_values("number", kind="stable").reset_index(drop=True)
    done = history["value"].where(history["status"].eq("completed"))
    history["best"] = done.cummax().ffill()
    best = meta.get("best") or {}
    return SearchInfo(history=history, best_params=dict(best.get("params") or {}),
                      best_value=float(best.get("value", np.nan)),
                      best_number=best.get("number"), settings=search, metric=metric,
                      val_size=val_size, best_test=float(best.get("test_acc", np.nan)))
