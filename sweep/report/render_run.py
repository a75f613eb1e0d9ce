"""The run-level sections of REPORT.md: the search history and provenance (from run.json)."""
from __future__ import annotations

from . import fmt
from .load import ray_trial_ids
from .summary import status_text


def _status_counts(trials) -> str:
    return status_text(trials["status"]) or fmt.DASH


def _versions(meta: dict) -> str:
    versions = meta.get("versions") or {}
    return ", ".join(f"{k} {v or 'not installed'}" for k, v in versions.items()) or fmt.DASH


def _hw_value(value) -> str:
    if isinstance(value, dict):  # Ray's cluster_resources: keep the countable ones
        return ", ".join(f"{k} {v:g}" for k, v in value.items()
                         if k in ("CPU", "GPU") and isinstance(v, (int, float)))
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or "none"
    return str(value)


def _hardware(meta: dict) -> str:
    hw = meta.get("hardware") or {}
    parts = [f"{k}: {_hw_value(v)}" for k, v in hw.items() if v not in ("", None)]
    return "; ".join(parts) or fmt.DASH


def training_seconds(trials) -> float | None:
    """Training time summed over Ray trials: fused members (<id>-m<k>) share one stack's time."""
    if "train_seconds" not in trials or "trial_id" not in trials:
        return None
    return float(trials.groupby(ray_trial_ids(trials["trial_id"]))["train_seconds"].max().sum())


def provenance_rows(name: str, meta: dict, trials) -> list[list[str]]:
    """key/value rows for one run folder."""
    if len(meta) <= 1:  # only the path we added: there was no run.json
        return [["run folder", f"`{meta.get('path', name)}`"],
                ["run.json", "missing: command, versions and hardware unknown"],
                ["trials by status", _status_counts(trials)]]
    command = meta.get("command") or " ".join(meta.get("argv") or []) or fmt.DASH
    seconds = training_seconds(trials)
    return [["run folder", f"`{meta.get('path', '')}`"], ["kind", str(meta.get("kind", fmt.DASH))],
            ["command", f"`{command}`"], ["status", str(meta.get("status", fmt.DASH))],
            ["trials by status", _status_counts(trials)],
            ["trials planned (run.json)", str(meta.get("n_trials", fmt.DASH))],
            ["started / ended", f"{meta.get('started_at', fmt.DASH)} / "
                                f"{meta.get('ended_at', fmt.DASH)}"],
            ["wall time", fmt.seconds(meta.get("wall_seconds"))],
            ["training time (sum over trials)", fmt.seconds(seconds)],
            ["git SHA", f"`{meta.get('git_sha') or fmt.DASH}`"], ["hardware", _hardware(meta)],
            ["versions", _versions(meta)]]


def render_provenance(s) -> str:
    """One key/value table per run folder that went into the report."""
    out = ["## Provenance"]
    for name, meta in s.metas.items():
        trials = s.trials[s.trials["run"] == name]
        if len(s.metas) > 1:
            out += ["", f"### {name}"]
        out += ["", fmt.table(["", "value"], provenance_rows(name, meta, trials))]
    return "\n".join(out)


def _selection(info) -> str:
    """One sentence on what the search selected and pruned on."""
    if info.metric == "val_acc":
        return (f"The search selected and pruned on validation accuracy ({info.val_size} "
                f"held-out training images, never trained on); test accuracy is reported, never "
                f"used for selection.")
    return ("This search selected and pruned on test accuracy (it predates the validation "
            "hold-out), so its best test accuracy is optimistic.")


def _accuracies(info, value, test) -> str:
    """'validation accuracy X (test accuracy Y)'; 'test accuracy X' for a run selected on test."""
    if info.metric != "val_acc":
        return f"test accuracy {fmt.pct(value)}"
    return f"validation accuracy {fmt.pct(value)} (test accuracy {fmt.pct(test)})"


def _best_in_trials(info) -> str:
    history = info.history
    done = history[history["status"] == "completed"].dropna(subset=["value"])
    if done.empty:
        return "No search trial completed."
    best = done.loc[done["value"].idxmax()]
    return (f"Best completed trial in trials.csv: number {int(best['number'])} "
            f"(`{best['trial_id']}`), final {_accuracies(info, best['value'], best['test'])}.")


def render_search(s, images: dict) -> str:
    """Optimisation history and best parameters of each search run."""
    if not s.searches:
        return ""
    out = ["## Search", "", "Trial number is the Optuna study's (trials.csv's study_number; the "
           "row order for runs that predate it); the red line is the best final accuracy the "
           "search selected on, over completed trials so far."]
    for name, info in s.searches.items():
        settings = ", ".join(f"{k}: {v}" for k, v in info.settings.items()) or fmt.DASH
        params = [[k, fmt.level(v)] for k, v in info.best_params.items()]
        out += ["", f"### {name}", "", _selection(info), "", f"Search settings: {settings}.", "",
                fmt.image(images, f"history:{name}", f"Optimisation history of {name}"), ""]
        out.append(_best_in_trials(info))
        if params:
            number = "" if info.best_number is None else f" (number {info.best_number})"
            out += ["", f"Best trial reported in run.json{number}: "
                        f"{_accuracies(info, info.best_value, info.best_test)}, with:", "",
                    fmt.table(["parameter", "value"], params)]
        else:
            out += ["", "run.json reports no best trial."]
    return "\n".join(out)
