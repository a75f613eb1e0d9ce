"""--fuse auto (sweep.plan), balanced stacks, longest-first order and the idle tail, without Ray."""
from __future__ import annotations

import json
import subprocess

import pytest

from cifar_core.config import TrialConfig
from cifar_core.data import synthetic
from sweep import grid, plan
from sweep.plan import Layout
from sweep.runfolder import SweepError
from sweep.schema import idle_at_end
from sweep.space import DEFAULT_GRID, expand_grid

TRIALS = expand_grid(DEFAULT_GRID, seeds=1, epochs=10, batch_size=256)
CFGS = [TrialConfig.from_dict(t) for t in TRIALS]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(plan.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / "plans.json"


def test_measure_trains_every_layout_on_the_real_step():
    """The timing runs fit_fused itself: a stack of 2, two trials at once, gives a rate, and a
    layout whose step fails raises instead of reporting a rate."""
    data = synthetic(64, 16, seed=0)
    cfgs = [TrialConfig(batch_size=16, epochs=1, lr=lr) for lr in (1e-3, 1e-2)]
    result = plan.choose(cfgs, data, "cpu", steps=1, repeats=1,
                         layouts=[Layout(1, 1, 1), Layout(2, 1, 2)])
    assert result["fuse"] in (1, 2) and result["device"] == "cpu"
    assert set(result["rates"]) == {"fuse 1, 1 thread(s), 1 at once", "fuse 2, 1 thread(s), 2 at once"}
    assert all(rate > 0 for rate in result["rates"].values())
    assert result["fingerprint"] == plan.fingerprint("cpu")
    with pytest.raises(Exception):
        plan.measure(Layout(1, 1, 2), cfgs, data, "meta", steps=1, repeats=1)


@pytest.mark.parametrize("rates, picked", [
    ({(2, 1): 103.0, (4, 1): 105.0, (6, 1): 80.0}, (2, 1)),  # within TIE: the smaller stack
    ({(2, 1): 100.0, (4, 1): 105.0, (6, 1): 80.0}, (4, 1)),  # beyond it: the fastest
    ({(2, 1): 50.0, (2, 2): 100.0}, (2, 2)),  # threads per trial when they pay
])
def test_choose_takes_the_fastest_layout_or_the_smaller_stack_within_the_tie(monkeypatch, rates,
                                                                             picked):
    layouts = [Layout(f, t, 2 // t) for f, t in rates]
    monkeypatch.setattr(plan, "measure", lambda layout, *a, **k: rates[layout.fuse, layout.threads])
    result = plan.choose(CFGS, None, "cpu", layouts=layouts)
    assert (result["fuse"], result["threads"]) == picked
    assert result["member_images_per_second"] == rates[picked]


def test_candidates_cover_threads_and_trials_per_gpu():
    cpu = plan.candidates("cpu", 2)
    assert {(c.threads, c.slots) for c in cpu} == {(1, 2), (2, 1)}
    assert {c.fuse for c in cpu} == set(plan.SIZES_CPU)
    assert {c.slots for c in plan.candidates("cuda", 16)} == set(plan.SHARING_GPU)
    assert plan.candidates("cpu", 1) == [Layout(s, 1, 1) for s in plan.SIZES_CPU]


def test_plan_is_measured_once_per_machine_and_cached(cache, tiny_cifar_dir, monkeypatch):
    """The first call times the step in a fresh process and caches it; the second reads the
    cache; another CPU model (or batch size) is another machine and measures again."""
    cfgs = [TrialConfig.from_dict({**t, "batch_size": 32}) for t in TRIALS[:12]]
    calls = []
    real_run = subprocess.run

    def run(*args, **kwargs):
        calls.append(json.loads(kwargs["input"]))
        return real_run(*args, **kwargs)

    monkeypatch.setattr(plan.subprocess, "run", run)
    lines = []
    first = plan.plan_for(cfgs, str(tiny_cifar_dir), "cpu", channels_last=True, amp=None,
                          log=lines.append)
    assert first["source"] == "measured" and len(calls) == 1 and cache.exists()
    assert first["fuse"] in plan.SIZES_CPU and calls[0]["data_dir"] == str(tiny_cifar_dir)
    assert len(first["rates"]) == len(plan.candidates("cpu", plan.usable_cpus()))
    assert any("member-images/s" in line for line in lines)
    again = plan.plan_for(cfgs, str(tiny_cifar_dir), "cpu", channels_last=True, amp=None,
                          log=lines.append)
    assert again["source"] == "cached" and len(calls) == 1
    assert {k: again[k] for k in ("fuse", "threads", "rates")} == \
        {k: first[k] for k in ("fuse", "threads", "rates")}
    assert plan.cached(plan.cache_key("cpu", batch_size=64, channels_last=True, amp=None)) is None
    monkeypatch.setattr(plan, "cpu_model", lambda: "Another CPU")
    assert plan.cached(plan.cache_key("cpu", batch_size=32, channels_last=True, amp=None)) is None


def test_a_failing_timing_process_names_the_way_out(cache, monkeypatch):
    monkeypatch.setattr(plan.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(
        a, 1, stdout="", stderr="boom"))
    with pytest.raises(SweepError, match="--fuse N"):
        plan.plan_for(CFGS, None, "cpu", channels_last=True, amp=None, log=lambda _: None)


def _cache_plan(fuse: int, threads: int, slots: int, batch_size: int = 256) -> None:
    key = plan.cache_key("cpu", batch_size=batch_size, channels_last=True, amp="none")
    plan.store(key, {"fuse": fuse, "threads": threads, "slots": slots, "device": "cpu",
                     "member_images_per_second": 1234.0, "rates": {}})


def test_fuse_auto_lists_the_cached_plan_and_a_given_fuse_wins(cache, capsys, tmp_path):
    base = ["--dry-run", "--results-dir", str(tmp_path / "results")]
    assert grid.main(base) == 0
    out = capsys.readouterr().out
    assert "not measured on this machine yet" in out and "24 Ray trials of up to 4" in out
    _cache_plan(fuse=6, threads=1, slots=2)
    assert grid.main(base) == 0
    out = capsys.readouterr().out
    assert "--fuse auto: 6 configurations per Ray trial, 1 thread each, 2 at once" in out
    assert "16 Ray trials of up to 6 fused" in out
    assert grid.main([*base, "--fuse", "3"]) == 0
    out = capsys.readouterr().out
    assert "--fuse auto" not in out and "32 Ray trials of up to 3 fused" in out


def test_fuse_auto_applies_threads_locally_but_not_a_given_cpus_per_trial(cache, monkeypatch):
    _cache_plan(fuse=5, threads=2, slots=1)
    settings = grid.cli.parse_settings(grid.build_parser(), ["--dry-run"], grid.DEFAULTS)
    applied, chosen = grid.resolve_fuse(settings, TRIALS)
    assert (applied.fuse, applied.cpus_per_trial, chosen["fuse"]) == (5, 2.0, 5)
    given = grid.cli.parse_settings(grid.build_parser(), ["--dry-run", "--cpus-per-trial", "1"])
    assert grid.resolve_fuse(given, TRIALS)[0].cpus_per_trial == 1.0
    cluster = grid.cli.parse_settings(grid.build_parser(), ["--dry-run", "--address", "h:1"])
    assert grid.resolve_fuse(cluster, TRIALS)[0].cpus_per_trial == 1.0  # nodes not measured
    asha = grid.check_scheduler(grid.cli.parse_settings(
        grid.build_parser(), ["--scheduler", "asha", "--val-size", "100"]))
    assert asha.fuse == 1 and grid.resolve_fuse(asha, TRIALS) == (asha, None)


def test_stacks_are_balanced_and_every_trial_runs_once():
    group = [dict(t) for t in TRIALS if t["transform"] == "none" and t["model"] == "baseline"]
    assert len(group) == 12
    assert [len(g) for g in grid.fuse_groups(group, 5)] == [4, 4, 4]
    assert [len(g) for g in grid.fuse_groups(group, 8)] == [6, 6]
    assert [len(g) for g in grid.fuse_groups(group, 12)] == [12]
    sizes = [len(g) for g in grid.fuse_groups(TRIALS, 7)]
    assert max(sizes) <= 7 and max(sizes) - min(sizes) <= 1
    ids = [id(t) for g in grid.fuse_groups(TRIALS, 7) for t in g]
    assert sorted(ids) == sorted(map(id, TRIALS))


def test_ray_trials_start_longest_first():
    trials = expand_grid(dict(DEFAULT_GRID, transform=["none"], model=["baseline"],
                              regulariser=["none"], optimiser=["adam"],
                              data_fraction=[0.1, 1.0, 0.5]), seeds=1, epochs=2, batch_size=256)
    units = [[t] for t in trials]
    ordered = grid.in_order(units, "cost")
    fractions = [u[0]["data_fraction"] for u in ordered]
    assert fractions == sorted(fractions, reverse=True)
    assert grid.in_order(units, "grid") == units
    big, small = [trials[0]] * 4, [trials[0]] * 2  # a stack of 4 is twice a stack of 2
    assert grid.expected_cost(big) == pytest.approx(2 * grid.expected_cost(small))
    assert [len(u) for u in grid.in_order([small, big], "cost")] == [4, 2]


def test_dry_run_lists_in_launch_order(capsys, tmp_path, cache):
    code = grid.main(["--dry-run", "--fuse", "1", "--transform", "none", "--model", "baseline",
                      "--regulariser", "none", "--optimiser", "adam", "--data-fraction", "0.2,1",
                      "--results-dir", str(tmp_path)])
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln[:4].strip().rstrip(".").isdigit()]
    assert code == 0 and "data_fraction=1 " in lines[0] and "data_fraction=0.2 " in lines[-1]


def _row(trial_id, start, end):
    stamp = lambda s: f"2026-12-02T10:00:{s:06.3f}+00:00"  # noqa: E731
    return {"trial_id": trial_id, "started_at": stamp(start), "ended_at": stamp(end)}


def test_idle_at_end_counts_empty_slots_after_the_last_start():
    # slot A: t1 0-10, t3 10-30; slot B: t2 0-12 then nothing: the tail is 10-30,
    # B idles 12-30 (18 s); fused members of one Ray trial count once
    rows = [_row("t1-m0", 0, 10), _row("t1-m1", 0, 10), _row("t2", 0, 12), _row("t3", 10, 30)]
    assert idle_at_end(rows, slots=2) == {"idle_slot_seconds": 18.0, "tail_seconds": 20.0,
                                          "slots": 2}
    assert idle_at_end([{"trial_id": "t", "started_at": "", "ended_at": ""}], 2) is None


def test_simulated_tail_of_longest_first_is_shorter():
    from benchmarks.scaling import simulated_tail

    durations = [1, 2, 4, 8] * 2
    grid_order = simulated_tail(durations, 2)
    longest_first = simulated_tail(sorted(durations, reverse=True), 2)
    assert longest_first["idle_slot_seconds"] < grid_order["idle_slot_seconds"]
    assert longest_first["makespan_seconds"] <= grid_order["makespan_seconds"]
    assert simulated_tail([5, 5], 2)["idle_slot_seconds"] == 0
