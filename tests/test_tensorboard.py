"""TensorBoard logs read back: configuration run names, the config as text, HParams per trial."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from sweep.recorder import Recorder
from sweep.tensorboard import config_name, run_names

TRIAL = {"transform": "augment+normalize", "model": "dropout", "regulariser": "l2", "lam": 1e-3,
         "optimiser": "adam", "lr": 1e-3, "final_relu": True, "data_fraction": 1.0, "seed": 0,
         "epochs": 2, "batch_size": 256}


def epoch(k: int, acc: float) -> dict:
    return {"epoch": k, "train_loss": 2.0 - acc, "train_penalty": 0.01, "train_acc": acc,
            "test_loss": 2.1 - acc, "test_acc": acc - 0.01, "train_eval_loss": 2.0 - acc,
            "train_eval_acc": acc + 0.01, "seconds": 1.0, "train_seconds": 0.9,
            "images_per_second": 1000.0, "status": "ok", "node": "n1"}


def events(folder: Path) -> list:
    """Every summary value in the event files directly in `folder`, as read from disk."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    return [value for path in sorted(folder.glob("events.out.tfevents.*"))
            for event in EventFileLoader(str(path)).Load() for value in event.summary.value]


def hparams_start(folder: Path):
    """The HParams session-start record TensorBoard's HParams dashboard reads."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    found = [v for v in events(folder) if v.tag == "_hparams_/session_start_info"]
    assert found, [v.tag for v in events(folder)]
    content = found[0].metadata.plugin_data.content
    return plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info


def test_names_say_the_configuration_and_stay_unique():
    assert config_name(TRIAL) == "augment+normalize·dropout·l2-0.001·adam·0.001·s0"
    plain = dict(TRIAL, regulariser="none", lam=0.0, final_relu=False, data_fraction=0.5, seed=2)
    assert config_name(plain) == "augment+normalize·dropout·none·adam·0.001·s2·norelu·data0.5"
    rows = [dict(TRIAL, trial_id="a"), dict(TRIAL, trial_id="b"), dict(TRIAL, seed=1, trial_id="c")]
    names = run_names(rows)
    assert len(set(names.values())) == 3 and names["c"] == config_name(rows[2])
    assert names["a"].endswith("·a") and names["b"].endswith("·b")


def test_a_fused_trial_logs_each_member_with_text_and_hparams(tmp_path):
    members = [dict(TRIAL), dict(TRIAL, optimiser="sgd")]
    trial = SimpleNamespace(trial_id="t1_00000", config={"trial": {"members": members}})
    recorder = Recorder(str(tmp_path))
    recorder.on_trial_start(0, [], trial)
    for k, acc in ((1, 0.3), (2, 0.4)):
        recorder.on_trial_result(0, [], trial, {"members": [epoch(k, acc), epoch(k, 0.1)],
                                                "node": "n1", "epoch": k})
    recorder.on_trial_complete(0, [], trial)
    runs = sorted(p.name for p in (tmp_path / "tb").iterdir())
    assert runs == ["augment+normalize·dropout·l2-0.001·adam·0.001·s0",
                    "augment+normalize·dropout·l2-0.001·sgd·0.001·s0"]
    for name, optimiser in zip(runs, ("adam", "sgd")):
        folder = tmp_path / "tb" / name
        tags = {v.tag for v in events(folder)}
        assert "config/text_summary" in tags and "hparam/final_test_acc" in tags
        assert hparams_start(folder).hparams["optimiser"].string_value == optimiser
        curves = {p.name for p in folder.iterdir() if p.is_dir()}
        assert {"acc_train", "acc_train_eval", "acc_test", "loss_test"} <= curves


@pytest.mark.parametrize("status, final", [("completed", 2), ("pruned", 1)])
def test_hparams_carry_the_status(tmp_path, status, final):
    trial = SimpleNamespace(trial_id="t2_00000", config={"trial": dict(TRIAL)})
    recorder = Recorder(str(tmp_path))
    for k in range(1, final + 1):
        recorder.on_trial_result(0, [], trial, epoch(k, 0.2 + k / 10))
    recorder.on_trial_complete(0, [], trial)
    info = hparams_start(tmp_path / "tb" / config_name(TRIAL))
    assert info.hparams["status"].string_value == status
    assert info.hparams["optimiser"].string_value == "adam"
    assert info.hparams["lr"].number_value == pytest.approx(1e-3)
