"""The Optuna study as the sweep ran it (imported by sweep.search once Ray is wanted).

Ray's OptunaSearch tells Optuna COMPLETE for a trial the scheduler stopped early (with the value
of its last epoch), leaves a diverged trial RUNNING (Optuna refuses its NaN value) and keeps no
link between a study trial and the sweep's trial. `FaithfulOptunaSearch` fixes that, so
optuna-dashboard and `optuna.load_study` show what trials.csv shows:
- a trial ASHA stopped before its last epoch is PRUNED, a diverged or failed one FAIL;
- every epoch's objective is an intermediate value (Ray hands the last result only to
  on_trial_complete, so it is reported there too; step = epoch);
- each study trial carries user attributes `trial_id` (trials.csv's id) and `status` (trials.csv's
  status), and each trial's config carries `study_number` (the study trial's number), which the
  recorder writes to trials.csv: one numbering from the study to the report.
"""
from __future__ import annotations

from optuna.trial import TrialState
from ray.tune.result import TRAINING_ITERATION
from ray.tune.search.optuna import OptunaSearch

from .schema import COMPLETED, DIVERGED, PRUNED, STUDY_NUMBER, status_after


class FaithfulOptunaSearch(OptunaSearch):
    def __init__(self, *args, epochs: int, **kwargs):
        super().__init__(*args, **kwargs)
        self._epochs = epochs
        self._last: dict[str, dict] = {}

    def suggest(self, trial_id: str):
        config = super().suggest(trial_id)
        if not isinstance(config, dict) or trial_id not in self._ot_trials:
            return config
        study_trial = self._ot_trials[trial_id]
        study_trial.set_user_attr("trial_id", trial_id)
        return {**config, STUDY_NUMBER: study_trial.number}

    def on_trial_result(self, trial_id: str, result: dict):
        previous = self._last.get(trial_id, {})
        self._last[trial_id] = result
        if result.get("status") != DIVERGED and \
                result.get(TRAINING_ITERATION) != previous.get(TRAINING_ITERATION):
            super().on_trial_result(trial_id, result)  # a NaN objective is no intermediate value

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return super().on_trial_complete(trial_id, result, error)
        if result:  # Tune hands a trial's final result to on_trial_complete only
            self.on_trial_result(trial_id, result)
        last = result or self._last.get(trial_id) or {}
        status = status_after(last, error=error, epochs=self._epochs)
        study_trial = self._ot_trials[trial_id]
        study_trial.set_user_attr("status", status)
        if status == COMPLETED:
            return super().on_trial_complete(trial_id, result, error)
        state = TrialState.PRUNED if status == PRUNED else TrialState.FAIL
        self._ot_study.tell(study_trial, state=state)  # PRUNED keeps its last intermediate value
        self._completed_trials.add(trial_id)

