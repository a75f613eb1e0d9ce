"""`python -m cifar_core`: JSON lines per epoch, one-line errors with exit 2, and the real data."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cifar_core.__main__ import main


def run_cli(*args, env_dir=None):
    env = {"PATH": "/usr/bin:/bin", **({"CIFAR10_DIR": str(env_dir)} if env_dir else {})}
    return subprocess.run([sys.executable, "-m", "cifar_core", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300)


def test_prints_one_json_object_per_epoch_then_status(tiny_cifar_dir, capsys):
    code = main(["--data-dir", str(tiny_cifar_dir), "--epochs", "2", "--batch-size", "64",
                 "--transform", "Augment+Normalize", "--model", "dropout", "--regulariser", "L2",
                 "--optimiser", "SGD", "--lr", "1e-2", "--final-relu", "false", "--seed", "1",
                 "--threads", "1"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and len(lines) == 3
    for i, row in enumerate(lines[:2], 1):
        assert row["epoch"] == i
        assert {"train_loss", "train_acc", "test_loss", "test_acc", "seconds",
                "images_per_second", "train_penalty"} <= set(row)
    assert lines[2]["status"] == "completed"
    assert lines[2]["config"]["regulariser"] == "l2" and lines[2]["config"]["optimiser"] == "sgd"


def test_help_explains_every_flag():
    out = run_cli("--help").stdout
    for flag in ("--data-dir", "--transform", "--model", "--regulariser", "--lam", "--optimiser",
                 "--lr", "--epochs", "--data-fraction", "--batch-size", "--final-relu", "--seed"):
        assert flag in out
    assert "augment+normalize" in out and "baseline, dropout" in out


@pytest.mark.parametrize("args, words", [
    (["--transform", "blur"], ["transform", "'blur'", "none, augment"]),
    (["--model", "resnet"], ["model", "'resnet'", "baseline, dropout"]),
    (["--lr", "0"], ["lr", "'0'", "> 0"]),
    (["--lam", "-1"], ["lam", "'-1'", ">= 0"]),
    (["--data-fraction", "1.5"], ["data_fraction", "'1.5'", "(0, 1]"]),
    (["--epochs", "0"], ["epochs", "'0'", ">= 1"]),
    (["--batch-size", "0"], ["batch_size", "'0'", ">= 1"]),
    (["--optimiser", "rmsprop"], ["optimiser", "adam, sgd"]),
    (["--bogus", "1"], ["unrecognized arguments", "--bogus"]),
])
def test_bad_input_is_one_line_exit_2_no_traceback(tiny_cifar_dir, args, words, capsys):
    try:  # in-process for speed; argparse's own errors exit through SystemExit
        code = main(["--data-dir", str(tiny_cifar_dir), *args])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert all(w in err for w in words), err


def test_bad_input_exit_code_in_a_real_process(tiny_cifar_dir):
    result = run_cli("--data-dir", tiny_cifar_dir, "--lr", "-1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == ("python -m cifar_core: error: lr='-1' is not allowed; "
                                     "use a number > 0")


def test_missing_data_dir_names_both_layouts_and_how_to_get_it(tmp_path):
    result = run_cli("--data-dir", tmp_path / "nowhere")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    for words in ("nowhere", "train/<class>", "cifar-10-batches-py", "--download"):
        assert words in result.stderr


def test_wrong_classes_and_unreadable_image_are_named(tmp_path, tiny_cifar_dir):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_cifar_dir, bad)
    (bad / "test" / "cat").rename(bad / "test" / "kitten")
    result = run_cli("--data-dir", bad)
    assert result.returncode == 2 and "kitten" in result.stderr
    (bad / "test" / "kitten").rename(bad / "test" / "cat")
    broken = next((bad / "train" / "dog").iterdir())
    broken.write_bytes(b"not an image")
    result = run_cli("--data-dir", bad)
    assert result.returncode == 2 and broken.name in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.real_data
def test_one_epoch_on_a_tenth_of_real_cifar10_beats_chance(real_cifar_dir, capsys):
    """End to end on the real data: 1 epoch, 10% subset; chance is 10%."""
    code = main(["--data-dir", str(real_cifar_dir), "--epochs", "1", "--data-fraction", "0.1",
                 "--transform", "normalize", "--final-relu", "false", "--batch-size", "32",
                 "--threads", "1"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and lines[-1]["status"] == "completed"
    assert lines[0]["test_acc"] > 0.20, lines[0]


def test_save_writes_weights_that_load_with_weights_only(tiny_cifar_dir, tmp_path, capsys):
    import torch

    from cifar_core import TrialConfig
    from cifar_core.models import build_model

    path = tmp_path / "model.pt"
    code = main(["--data-dir", str(tiny_cifar_dir), "--epochs", "1", "--batch-size", "64",
                 "--model", "dropout", "--threads", "1", "--save", str(path)])
    last = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert code == 0 and last["saved"] == str(path)
    saved = torch.load(path, weights_only=True)
    model = build_model(TrialConfig(**saved["config"]))
    model.load_state_dict(saved["model"])  # the same network, every weight present
    assert saved["config"]["model"] == "dropout"


def test_save_into_a_missing_folder_is_refused_before_training(tiny_cifar_dir, tmp_path, capsys):
    code = main(["--data-dir", str(tiny_cifar_dir), "--save", str(tmp_path / "no" / "m.pt")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--save=" in err[0]
