"""benchmarks/: the seed-style loop and the project loop run on tiny synthetic data and report
their figures through the benchmark's own functions. Behaviour only, never timings."""
from __future__ import annotations

import pytest
import torch

from benchmarks import report, seed_loop, throughput
from cifar_core.data import synthetic

DATA = synthetic(512, 64)
FIGURES = {"images", "train_seconds", "images_per_second"}


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """fit(threads=...) sets the process-wide thread count; give other tests theirs back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_seed_style_dataset_mirrors_torchvision_cifar10():
    plain = seed_loop.SeedStyleCifar10(DATA, seed_loop.seed_transform("none"))
    image, label = plain[3]
    assert len(plain) == 512 and isinstance(label, int) and label == int(DATA.train_y[3])
    assert torch.allclose(image, DATA.train_x[3].float() / 255)  # ToTensor of the HWC array
    augmented, _ = seed_loop.SeedStyleCifar10(DATA, seed_loop.seed_transform("augment+normalize"))[3]
    assert augmented.shape == (3, 32, 32) and augmented.dtype == torch.float32


@pytest.mark.parametrize("transform", ["none", "augment+normalize"])
def test_seed_style_epoch_reports_positive_throughput(transform):
    result = seed_loop.seed_epoch(DATA, transform)
    assert FIGURES | {"threads", "train_loss", "train_acc"} <= set(result)
    assert result["images"] == 512 and result["images_per_second"] > 0


@pytest.mark.parametrize("threads, channels_last", [(1, True), (2, False)])
def test_project_epoch_reports_positive_throughput(threads, channels_last):
    result = throughput.project_epoch(DATA, "augment+normalize", threads=threads,
                                      channels_last=channels_last)
    assert set(result) == FIGURES and result["images"] == 512 and result["images_per_second"] > 0


def test_throughput_section_measures_every_setup_and_names_a_winner():
    m = throughput.GRID_FUSE
    result = throughput.measure_throughput(DATA, images=256, seed_threads=1, transforms=("none",),
                                           fuse=(m,), log=lambda _: None)
    assert result["images"] == 256 and {"repeats", "seed_threads", "rows", "winners"} <= set(result)
    kinds = [row["kind"] for row in result["rows"]]
    assert kinds == ["seed"] + ["project"] * 4 + ["concurrent"] * 3 + ["project"]
    assert all(row["images_per_second"] > 0 and row["vs_seed"] > 0 for row in result["rows"])
    concurrent, malloc, fused, fused_threaded = result["rows"][-4:]
    assert concurrent["trials"] == 2 and len(concurrent["runs"]) == 1
    assert not malloc["allocator"] and malloc["fuse"] == 1 and fused["fuse"] == m
    assert (fused_threaded["fuse"], fused_threaded["trials"], fused_threaded["threads"]) == (m, 1, 2)
    winner = result["winners"]["none"]
    assert winner["winner"] in (winner["threads_per_trial"], winner["concurrent_trials"])
    # the solo comparison stays solo; the fused one pits the grid's stack size against itself
    assert winner["fastest_single_trial"].startswith("fit, ")
    assert (winner["fused_threaded"], winner["fused_concurrent"]) == (fused_threaded["name"],
                                                                      fused["name"])
    assert winner["fused_winner"] in (fused_threaded["name"], fused["name"])
    assert winner["fused_concurrent_over_threaded"] == pytest.approx(
        fused["images_per_second"] / fused_threaded["images_per_second"])
    assert winner["best_set_up"] in [row["name"] for row in result["rows"][1:]]
    assert set(result["augment_chunks"]) == set(throughput.AUGMENT_CHUNKS)
    assert all(v > 0 for v in result["augment_chunks"].values())
    assert set(result["eval_batches"]) == set(throughput.EVAL_BATCHES)
    assert all(v > 0 for v in result["eval_batches"].values())
    assert set(result["subnormal_steps"]) == {"kept", "flushed", "normal"}
    assert (torch.tensor([1e-30]) * 1e-10).item() == 0.0  # flush-to-zero left on, as fit leaves it
    assert "flushed to zero" in report.render_throughput(result)
    text = report.render_throughput(result)
    assert "img/s" in text and f"fused x{m}, 1 trial x 2 thr" in text
    assert "none: fused stacks, threads vs trials -> " in text


def test_fused_epoch_counts_member_images():
    result = throughput.project_epoch(DATA, "none", threads=1, channels_last=True, fuse=3)
    assert result["images"] == 3 * 512
    assert result["images_per_second"] == pytest.approx(3 * 512 / result["train_seconds"])
    cfgs = throughput.fused_configs("none", 12)
    assert len({(c.regulariser, c.optimiser, c.lr) for c in cfgs}) == 12


def test_overhead_counts_a_fused_stack_once_per_epoch():
    from benchmarks import sweep_overhead
    from benchmarks.sweeps import GridRun

    epochs = [{"trial_id": f"a-m{k}", "epoch": e, "seconds": 10.0, "train_seconds": 9.0}
              for k in range(4) for e in (1, 2)]
    epochs += [{"trial_id": "b", "epoch": 1, "seconds": 20.0, "train_seconds": 18.0}]
    trials = [{"trial_id": f"a-m{k}", "status": "completed"} for k in range(4)]
    trials += [{"trial_id": "b", "status": "completed"}]
    lines = [(5.0, "[0:00:05] done 0/5 · running 4 · pending 1"),
             (25.0, "[0:00:25] done 5/5 · running 0 · pending 0")]
    run = GridRun(argv=[], returncode=0, wall_seconds=30.0, lines=lines, launched_at=0.0,
                  epochs=epochs, trials=trials, info={"wall_seconds": 28.0})
    o = sweep_overhead.summarise(run, concurrent=2)
    assert o["in_trial_s"] == 40.0 and o["in_trial_training_s"] == 36.0  # 2 stack epochs + b
    assert o["ray_trials"] == 2 and o["trials"] == 5
    assert o["overhead"] == pytest.approx(1 - 40 / 60)
    assert o["overhead_while_running"] == pytest.approx(1 - 40 / 40)
    assert o["epochs_per_trial"] == 2
    assert "while trials run" in report.render_overhead(o)
    assert "5 trials x 2 epochs" in report.render_overhead(o)


def test_overhead_grid_runs_the_grids_epochs_unless_told_and_rejects_bad_counts(capsys):
    from benchmarks.__main__ import FULL, QUICK, build_parser, plan_for

    parser = build_parser()
    assert plan_for(parser.parse_args([]), parser).overhead_epochs == FULL.overhead_epochs == 10
    assert plan_for(parser.parse_args(["--quick"]), parser).overhead_epochs == QUICK.overhead_epochs == 1
    assert plan_for(parser.parse_args(["--overhead-epochs", "3"]), parser).overhead_epochs == 3
    with pytest.raises(SystemExit) as exit_:
        plan_for(parser.parse_args(["--overhead-epochs", "0"]), parser)
    assert exit_.value.code == 2 and "--overhead-epochs=0" in capsys.readouterr().err


def test_scaling_section_renders_both_clusters_and_the_ratio():
    run = {"wall_seconds": 100.0, "tune_fit_seconds": 90.0, "configurations": 16, "ray_trials": 8}
    scaling = {"epochs": 1, "data_fraction": 1.0, "scaling_speedup": 1.85, "tune_fit_speedup": 1.9,
               "one_node": dict(run, ray_trials_per_node={"a": 8}),
               "two_nodes": dict(run, wall_seconds=54.0, ray_trials_per_node={"a": 4, "b": 4},
                                 object_store_bytes_per_node={"a": 190 * 2**20, "b": 190 * 2**20},
                                 dataset_bytes=184 * 2**20)}
    text = report.render_scaling(scaling)
    assert "1 node x 1 CPU" in text and "2 nodes x 1 CPU" in text and "1.85x" in text
    assert "a: 4, b: 4" in text and "a: 199 MB, b: 199 MB" in text


def test_gpu_benchmark_refuses_without_cuda_in_one_line(capsys, monkeypatch):
    from benchmarks import __main__ as bench, gpu

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.main(["--gpu"]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == gpu.REFUSAL and captured.out == ""


def test_gpu_plan_is_the_documented_one(capsys):
    """--gpu --dry-run prints PLAN without a GPU, and the README's GPU section quotes it."""
    from pathlib import Path

    from benchmarks import __main__ as bench, gpu

    assert bench.main(["--gpu", "--dry-run"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[1:] == list(gpu.PLAN)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "python -m benchmarks --gpu" in readme
    assert all(step in readme for step in gpu.PLAN)


def test_gpu_benchmark_runs_its_plan_in_order(monkeypatch):
    """The measurements run (on the CPU, tiny) in PLAN's order; the best layout becomes the grid
    command of step 4."""
    from benchmarks import gpu
    from sweep.plan import Layout

    lines = []
    out = gpu.measure(DATA, device="cpu", sizes=(2,), batch_size=64, grid=False,
                      layouts=[Layout(1, 1, 1), Layout(2, 1, 2)], log=lines.append)
    steps = [line for line in lines if line[:2] in ("1.", "2.", "3.", "4.")]
    assert [s[:2] for s in steps] == ["1.", "2.", "3."] and steps[0] == gpu.PLAN[0]
    assert len(out["single"]) == 4 and set(out["stacks"]) == {"x2, none", "x2, bf16"}
    assert all(rate > 0 for rate in [*out["single"].values(), *out["stacks"].values()])
    best = out["best"]
    assert best["fuse"] in (1, 2) and best["amp"] in gpu.AMPS
    argv = gpu.grid_argv(best)
    assert argv[:4] == ["--fuse", str(best["fuse"]), "--gpus-per-trial",
                        f"{1 / best['trials_per_gpu']:g}"] and argv[4:6] == ["--amp", best["amp"]]
    assert "best layout: --fuse" in gpu.render(out)


def test_tail_section_renders_both_orders():
    run = {"wall_seconds": 60.0, "tune_fit_seconds": 50.0, "idle_slot_seconds_at_end": 12.5,
           "tail_seconds": 14.0, "slots": 2}
    text = report.render_tail({"epochs": 2, "grid_order": run,
                               "cost_order": dict(run, idle_slot_seconds_at_end=None)})
    assert "--order grid" in text and "--order cost" in text and "12.5" in text and " - " in text
