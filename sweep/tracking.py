"""`--mlflow [URI]`: every configuration as an MLflow run, through Ray Tune's MLflow integration.

`ConfigRuns` is Ray's MLflowLoggerCallback with one change: a fused Ray trial is logged as its
members, one MLflow run per configuration (as trials.csv records them), named like its
TensorBoard run, with the configuration as params, every epoch's metrics at step = epoch, the
sweep's trial_id, status and command as tags. The default store is a file store in the run
folder (`<run>/mlruns`; browse it with `mlflow ui --backend-store-uri <run>/mlruns`). MLflow 3
keeps its file store in maintenance mode behind MLFLOW_ALLOW_FILE_STORE, which we set for it.
"""
from __future__ import annotations

import math
import os

from ray.air.integrations.mlflow import MLflowLoggerCallback

from .schema import ERROR, METRICS, configurations, member_ids, status_after


def default_uri(run_path: str) -> str:
    return "file://" + os.path.join(os.path.abspath(run_path), "mlruns")


def mlflow_callback(uri: str | None, run_path: str, name: str, command: str) -> "ConfigRuns":
    """The callback for --mlflow URI ('' or None: the file store in the run folder)."""
    uri = uri or default_uri(run_path)
    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return ConfigRuns(tracking_uri=uri, experiment_name=name, tags={"command": command})


class ConfigRuns(MLflowLoggerCallback):
    """One MLflow run per configuration of each Ray trial (fused members split)."""

    def setup(self, *args, **kwargs):
        super().setup(*args, **kwargs)
        self._members: dict = {}  # Ray trial -> [(trial_id, config, run id, last result)]

    def log_trial_start(self, trial):
        from .tensorboard import run_names

        if trial in self._members:
            return
        ids, configs = member_ids(trial.trial_id, trial.config), configurations(trial.config)
        names = run_names([{"trial_id": i, **c} for i, c in zip(ids, configs)])
        self._members[trial] = []
        for trial_id, config in zip(ids, configs):
            run = self.mlflow_util.start_run(run_name=names[trial_id],
                                             tags={**self.tags, "trial_id": trial_id})
            self.mlflow_util.log_params(run_id=run.info.run_id, params_to_log=config)
            self._members[trial].append([trial_id, config, run.info.run_id, None])

    def log_trial_result(self, iteration, trial, result):
        results = result.get("members") or [result]
        for member, member_result in zip(self._members.get(trial, []), results):
            if member_result is None or "epoch" not in member_result:
                continue
            metrics = {k: member_result[k] for k in METRICS
                       if isinstance(member_result.get(k), (int, float))
                       and math.isfinite(member_result[k])}
            self.mlflow_util.log_metrics(run_id=member[2], metrics_to_log=metrics,
                                         step=int(member_result["epoch"]))
            member[3] = member_result

    def log_trial_end(self, trial, failed: bool = False):
        for trial_id, config, run_id, last in self._members.pop(trial, []):
            status = status_after(last, error=failed, epochs=int(config.get("epochs", 0)))
            self.mlflow_util._get_client().set_tag(run_id, "status", status)
            self.mlflow_util.end_run(run_id=run_id,
                                     status="FAILED" if status == ERROR else "FINISHED")

