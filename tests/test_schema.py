"""The run folder's schema (sweep.schema) and the repair of a Ray state cut short by a kill."""
from __future__ import annotations

import dataclasses
import json
import pickle
from types import SimpleNamespace

import pytest

from cifar_core.config import EpochResult, TrialConfig
from sweep import schema
from sweep.recorder import Recorder
from sweep.runfolder import SweepError, keep_complete_state, repair_ray_state


def test_columns_follow_the_config_and_result_fields():
    for field in dataclasses.fields(TrialConfig):
        assert field.name in schema.TRIAL_COLUMNS and field.name in schema.EPOCH_COLUMNS
    for field in dataclasses.fields(EpochResult):
        assert field.name in schema.EPOCH_COLUMNS
    assert {"final_test_acc", "final_val_acc", "final_train_eval_acc", "best_test_acc"} <= set(
        schema.TRIAL_COLUMNS)
    assert len(set(schema.TRIAL_COLUMNS)) == len(schema.TRIAL_COLUMNS)


def test_a_line_cut_by_a_crash_is_dropped(tmp_path):
    path = str(tmp_path / "e.csv")
    schema.append_rows(path, ["a", "b"], [{"a": 1, "b": 2}])
    schema.append_rows(path, ["a", "b"], [{"a": 3, "b": 4}])
    assert schema.read_csv(path) == [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}]
    with open(path, "a") as f:
        f.write("5,")  # the process died mid-row
    assert schema.read_csv(path) == [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}]


def test_member_ids_round_trip():
    members = [TrialConfig(seed=s).to_dict() for s in (0, 1)]
    assert schema.member_ids("t_1", {"trial": {"members": members}}) == ["t_1-m0", "t_1-m1"]
    assert schema.member_ids("t_1", {"trial": members[0]}) == ["t_1"]
    assert schema.configurations({"lr": 0.1}) == [{"lr": 0.1}]
    assert [schema.ray_trial_id(t) for t in ("t_1-m0", "t_1-m12", "t_1")] == ["t_1"] * 3


def _result(epoch: int, acc: float = 0.5) -> dict:
    return dict(epoch=epoch, train_loss=1.0, train_penalty=0.0, train_acc=acc, test_loss=1.0,
                test_acc=acc, seconds=1.0, train_seconds=1.0, images_per_second=1.0, status="ok")


def test_recorder_appends_epochs_and_records_a_retried_one_once(tmp_path):
    trial = SimpleNamespace(trial_id="t_0", config={"trial": TrialConfig(epochs=3).to_dict()})
    recorder = Recorder(str(tmp_path))
    recorder.on_trial_start(0, [], trial)
    recorder.on_trial_result(0, [], trial, _result(1))
    first = (tmp_path / "epochs.csv").read_text()
    recorder.on_trial_result(0, [], trial, _result(2))
    assert (tmp_path / "epochs.csv").read_text().startswith(first)  # appended, not rewritten
    recorder = pickle.loads(pickle.dumps(recorder))  # the driver restarts: state from the CSVs
    recorder.on_trial_result(0, [], trial, _result(2, acc=0.6))  # the retry reports epoch 2 again
    recorder.on_trial_result(0, [], trial, _result(3))
    recorder.on_trial_complete(0, [], trial)
    epochs = schema.read_csv(str(tmp_path / "epochs.csv"))
    assert [(e["epoch"], e["test_acc"]) for e in epochs] == [("1", "0.5"), ("2", "0.6"), ("3", "0.5")]
    (row,) = schema.read_csv(str(tmp_path / "trials.csv"))
    assert (row["status"], row["epochs_done"], row["best_test_acc"]) == ("completed", "3", "0.6")


def _ray_dir(tmp_path, text: str):
    ray = tmp_path / "ray"
    ray.mkdir()
    (ray / "experiment_state-2026-01-01_00-00-00.json").write_text(text)
    return ray


def test_a_cut_ray_state_is_replaced_by_its_last_complete_copy(tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    state = json.dumps({"trial_data": [1, 2]})
    (staging / "experiment_state-2026-01-01_00-00-00.json").write_text(state)
    ray = _ray_dir(tmp_path, state)
    keep_complete_state(str(staging), str(ray))  # Tune wrote the state whole, then called us
    (ray / "experiment_state-2026-01-01_00-00-00.json").write_text(state[:7])  # killed mid-copy
    message = repair_ray_state(str(ray))
    assert "cut short" in message
    assert json.loads((ray / "experiment_state-2026-01-01_00-00-00.json").read_text()) == {
        "trial_data": [1, 2]}
    assert repair_ray_state(str(ray)) is None  # nothing left to repair


def test_a_cut_ray_state_without_a_copy_is_refused_not_restarted(tmp_path):
    ray = _ray_dir(tmp_path, '{"trial_da')
    with pytest.raises(SweepError, match="cut short"):
        repair_ray_state(str(ray))
