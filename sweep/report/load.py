"""Read a sweep's run folder (trials.csv, epochs.csv, run.json) into typed DataFrames.

This is the report's only reader. Anything wrong with the folder raises `ReportInputError` whose
message names the problem and the file or column, so the CLI can print it as one line.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cifar_core.config import FIELDS

from ..schema import MEMBER_PATTERN

# a trial's configuration: TrialConfig's fields but the seed, typed as the fields are
CONFIG = tuple(name for name in FIELDS if name != "seed")
CATEGORICAL = tuple(name for name in CONFIG if FIELDS[name].type == "str")
FLOATS = tuple(name for name in CONFIG if FIELDS[name].type == "float")
INTS = tuple(name for name in CONFIG if FIELDS[name].type == "int")
BOOLS = tuple(name for name in CONFIG if FIELDS[name].type == "bool")
METRICS = ("final_train_acc", "final_test_acc", "final_test_loss")
# filled with nan when a run predates them (val_*: also empty when nothing was held out)
LATER_METRICS = ("final_train_eval_acc", "final_train_eval_loss", "final_val_acc",
                 "final_val_loss", "best_val_acc")
OPTIONAL_METRICS = ("final_train_loss", "best_test_acc", "epochs_done", "train_seconds",
                    *LATER_METRICS)
# required; a hyperparameter added after a run was recorded reads as its default there
TRIAL_COLUMNS = ("trial_id", "transform", "model", "regulariser", "optimiser", "lr", "lam", "seed",
                 "status", *METRICS)
EPOCH_METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")
EPOCH_COLUMNS = ("trial_id", "epoch", *EPOCH_METRICS)
ACCURACIES = ("final_train_acc", "final_test_acc", "best_test_acc", "train_acc", "test_acc",
              "final_train_eval_acc", "train_eval_acc", "final_val_acc", "best_val_acc",
              "val_acc")
FINISHED = "completed"
LEARNED = 0.15  # final test accuracy above this: the trial learned (10 classes: chance is 10%)


class ReportInputError(Exception):
    """A run folder the report cannot use; the message is one line naming the file or column."""


@dataclass(frozen=True)
class Run:
    """One run folder (or several combined): trials, per-epoch rows and run.json per part."""

    name: str
    trials: pd.DataFrame
    epochs: pd.DataFrame
    metas: dict = field(default_factory=dict)  # part name -> run.json (plus "path")


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype={"label": str, "trial_id": str})
    except pd.errors.EmptyDataError:
        raise ReportInputError(f"{path} is empty") from None
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ReportInputError(f"{path} cannot be read: {str(exc).splitlines()[0]}") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ReportInputError(f"{path} is missing column '{missing[0]}'")
    return frame


def _as_bool(column: str, value, path: Path):
    text = str(value).strip().lower()
    if text in ("true", "1", "1.0", "yes"):
        return True
    if text in ("false", "0", "0.0", "no"):
        return False
    raise ReportInputError(f"{path}: column '{column}' has value {value!r}, not True/False")


def _numeric(frame: pd.DataFrame, column: str, path: Path, strict: bool) -> pd.Series:
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() & frame[column].notna()
    if strict and (bad.any() or values.isna().any()):
        shown = frame[column][values.isna()].iloc[0]
        raise ReportInputError(f"{path}: column '{column}' has a non-numeric value {shown!r}")
    if column in ACCURACIES and (values > 1.0 + 1e-9).any():
        raise ReportInputError(f"{path}: column '{column}' has values above 1 (fractions expected)")
    return values.astype(float)


def typed_trials(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """trials.csv with canonical types: strings lower-cased, numbers numeric, final_relu bool."""
    out = frame.copy()
    out["trial_id"] = out["trial_id"].astype(str)
    out["label"] = out["label"].fillna("").astype(str) if "label" in out else ""
    for column in CONFIG:
        if column not in out:  # the run predates this hyperparameter: it trained at the default
            out[column] = FIELDS[column].default
    for column in (*CATEGORICAL, "status"):
        out[column] = out[column].astype(str).str.strip().str.lower()
    for column in BOOLS:
        out[column] = [_as_bool(column, v, path) for v in out[column]]
    for column in (*FLOATS, *INTS, "seed"):
        out[column] = _numeric(out, column, path, strict=True)
    for column in INTS + ("seed",):
        out[column] = out[column].astype(int)
    for column in METRICS + tuple(c for c in OPTIONAL_METRICS if c in out):
        out[column] = _numeric(out, column, path, strict=False)
    for column in LATER_METRICS:
        if column not in out:
            out[column] = math.nan
    return out


def typed_epochs(frame: pd.DataFrame, trials: pd.DataFrame, path: Path) -> pd.DataFrame:
    """epochs.csv joined to each trial's config from trials.csv (the trial row is authoritative)."""
    out = frame[[c for c in frame.columns if c in EPOCH_COLUMNS or c == "status"]].copy()
    out["trial_id"] = out["trial_id"].astype(str)
    out["epoch"] = _numeric(out, "epoch", path, strict=True).astype(int)
    for column in EPOCH_METRICS:
        out[column] = _numeric(out, column, path, strict=False)
    out = out.rename(columns={"status": "epoch_status"})
    keep = ["trial_id", "run", *CONFIG, "seed", "status"]
    return out.merge(trials[keep], on="trial_id", how="inner")


def _read_meta(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ReportInputError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise ReportInputError(f"{path} does not hold a JSON object")
    return meta


def load_run(path) -> Run:
    """Read one run folder; raise ReportInputError naming what is wrong."""
    folder = Path(path)
    if not (folder / "trials.csv").is_file():
        raise ReportInputError(f"{folder} is not a run folder (no trials.csv)")
    meta = _read_meta(folder / "run.json")
    name = str(meta.get("name") or folder.resolve().name)
    trials = typed_trials(_read_csv(folder / "trials.csv", TRIAL_COLUMNS), folder / "trials.csv")
    trials["run"] = name
    finished = trials["status"].eq(FINISHED) & trials["final_test_acc"].map(math.isfinite)
    if not finished.any():
        counts = ", ".join(f"{n} {s}" for s, n in trials["status"].value_counts().items())
        raise ReportInputError(f"{folder / 'trials.csv'} has no finished trial "
                               f"({counts or 'no rows'})")
    epochs_path = folder / "epochs.csv"
    epochs = (typed_epochs(_read_csv(epochs_path, EPOCH_COLUMNS), trials, epochs_path)
              if epochs_path.is_file() else pd.DataFrame(columns=[*EPOCH_COLUMNS, "run", *CONFIG]))
    return Run(name=name, trials=trials, epochs=epochs, metas={name: {**meta, "path": str(folder)}})


def combine_runs(runs: list[Run]) -> Run:
    """Several runs as one: trial ids prefixed by run name so they stay unique."""
    if len(runs) == 1:
        return runs[0]
    names, trials, epochs, metas = [], [], [], {}
    for run in runs:
        name = run.name if run.name not in names else f"{run.name}-{len(names) + 1}"
        names.append(name)
        meta = next(iter(run.metas.values()), {})
        metas[name] = meta
        trials.append(run.trials.assign(run=name, trial_id=name + "/" + run.trials["trial_id"]))
        epochs.append(run.epochs.assign(run=name, trial_id=name + "/" + run.epochs["trial_id"]))
    return Run(name=" + ".join(names), trials=pd.concat(trials, ignore_index=True),
               epochs=pd.concat(epochs, ignore_index=True), metas=metas)


def ray_trial_ids(trial_ids: pd.Series) -> pd.Series:
    """The Ray trial each recorded trial ran in: a fused member's id without its -m<k>."""
    return trial_ids.astype(str).str.replace(MEMBER_PATTERN, "", regex=True)
