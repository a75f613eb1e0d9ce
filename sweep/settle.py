"""`python -m sweep.settle results/NAME`: add seeds until every claim's verdict is decisive.

It reads a finished grid run, judges the reference's claims (sweep.report.claims), and for the
claims still inconclusive but testable adds seeds to exactly the configurations they pair, in
rounds (seed counts from sweep.report.sequential.schedule, up to --max-seeds K). Each round runs
in the same run folder through the same trainable and fusing as the grid (Ray ray-settle-<k>/),
records itself in run.json (seeds added, trials, wall time), and is re-judged; settling stops
when every claim is decisive, not testable, or at K seeds. The verdicts use group-sequential
p-values over the planned looks, so adding seeds until a claim is decisive keeps its error rate.
Ctrl+C leaves a resumable run: the same command continues the round in flight.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import pandas as pd

from .runfolder import SweepError

PROG = "python -m sweep.settle"
DEFAULT_MAX_SEEDS, DEFAULT_ALPHA = 10, 0.05
FLAGS = ("cpus_per_trial", "max_concurrent", "max_failures", "address", "data_dir")


def build_parser() -> argparse.ArgumentParser:
    from .cli import Parser

    p = Parser(prog=PROG, description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("run", help="the run folder, e.g. results/seed-study")
    p.add_argument("--max-seeds", type=int, help=f"K: most seeds per configuration "
                   f"(default {DEFAULT_MAX_SEEDS})")
    p.add_argument("--alpha", type=float, help="family-wise error rate of the verdicts "
                   f"(default {DEFAULT_ALPHA})")
    p.add_argument("--dry-run", action="store_true", help="print the next round; run nothing")
    p.add_argument("--cpus-per-trial", type=float, help="CPUs per trial (default: the run's)")
    p.add_argument("--max-concurrent", type=int, help="at most this many trials at once")
    p.add_argument("--max-failures", type=int, help="retries of a failed trial (default: the run's)")
    p.add_argument("--address", help="Ray cluster to join (default: a local Ray)")
    p.add_argument("--data-dir", help="CIFAR-10 folder (default: the run's, else $CIFAR10_DIR)")
    return p


def read_run(path: str) -> tuple[dict, pd.DataFrame]:
    """run.json and trials.csv of a finished grid run, or SweepError naming what is wrong."""
    from .schema import TERMINAL, read_csv
    from .runfolder import RunFolder

    folder = RunFolder(os.path.abspath(path), resume=True)
    if not folder.exists() or not os.path.isfile(os.path.join(folder.path, "trials.csv")):
        raise SweepError(f"{path!r} is not a run folder (no run.json and trials.csv)")
    info = folder.read_info()
    if info.get("kind") != "grid":
        raise SweepError(f"{path!r} is a {info.get('kind')} run; settle adds seeds to a grid's "
                         "configurations (a search's trials are proposals, not a design)")
    rows = read_csv(os.path.join(folder.path, "trials.csv"))
    rounds = (info.get("settle") or {}).get("rounds") or [{}]
    settling = rounds[-1].get("status") == "running"
    if not settling and any(r["status"] not in TERMINAL for r in rows):
        raise SweepError(f"{path!r} has unfinished trials; finish it first with "
                         f"python -m sweep.grid --resume --name {os.path.basename(folder.path)}")
    return info, pd.DataFrame(rows)


def design(info: dict, trials: pd.DataFrame, args) -> dict:
    """The settle design (alpha, K, planned looks): new, or the one this run already started."""
    from .report.sequential import WEIGHT_POWER, design_mismatch, schedule

    seeds = int(pd.to_numeric(trials["seed"]).max()) + 1
    old = info.get("settle")
    if old and (why := design_mismatch(old)):
        raise SweepError(why)
    if old:
        for key, value in (("max_seeds", args.max_seeds), ("alpha", args.alpha)):
            if value is not None and value != old[key]:
                flag = "--" + key.replace("_", "-")
                raise SweepError(f"{flag}={value!r}: this run is being settled with {flag} "
                                 f"{old[key]}; the design cannot change between rounds")
        return old
    k = DEFAULT_MAX_SEEDS if args.max_seeds is None else args.max_seeds
    alpha = DEFAULT_ALPHA if args.alpha is None else args.alpha
    if not 0 < alpha < 1:
        raise SweepError(f"--alpha={alpha!r} is not allowed; use a number in (0, 1)")
    if k < seeds:
        raise SweepError(f"--max-seeds={k} is below the {seeds} seeds this run already has")
    return {"alpha": alpha, "max_seeds": k, "initial_seeds": seeds,
            "looks": list(schedule(seeds, k)), "weight_power": WEIGHT_POWER, "rounds": [],
            "status": "running"}


def judged(path: str, plan: dict):
    """The claims table and the (claim, filter) specs of the run as it stands."""
    from .report.claims import claim_specs, judge_all, with_gap
    from .report.load import load_run
    from .report.summary import finished

    done = finished(load_run(path).trials)
    table = judge_all(done, looks=tuple(plan["looks"]), alpha=plan["alpha"])
    return table, claim_specs(done), with_gap(done)


def open_claims(table: pd.DataFrame) -> pd.DataFrame:
    """Claims that are testable and not yet decisive."""
    from .report.claims import UNSURE

    return table[table["verdict"] == UNSURE]


def next_trials(table, specs, trials, seeds: range) -> list[dict]:
    """New trial dicts: every configuration the open claims pair, at the given seeds."""
    from .report.claims import claim_configs
    from .report.load import CONFIG
    from .space import canonical_trial

    rows = [claim_configs(trials, *specs[i]) for i in open_claims(table).index]
    configs = pd.concat(rows).drop_duplicates(list(CONFIG)) if rows else pd.DataFrame()
    out = []
    for _, cfg in configs.iterrows():
        values = {c: cfg[c] for c in CONFIG}
        values["final_relu"] = bool(values["final_relu"])
        for seed in seeds:
            out.append(dict(canonical_trial({**values, "seed": seed}), label=cfg.get("label", "")))
    return out


def main(argv=None) -> int:
    from .cli import fail

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        info, rows = read_run(args.run)
        plan = design(info, rows, args)
        table, specs, trials = judged(args.run, plan)
        if table["verdict"].isin(("holds", "does not hold", "inconclusive")).sum() == 0:
            raise SweepError(f"{args.run!r}: no claim is testable in this run (every claim is "
                             "not in the run or has a side that never learned)")
        if args.dry_run:
            return show_plan(table, specs, trials, plan)
        return settle(args, info, plan)
    except SweepError as err:
        return fail(PROG, err)


def show_plan(table, specs, trials, plan) -> int:
    seeds = int(trials["seed"].max()) + 1
    later = [n for n in plan["looks"] if n > seeds]
    todo = open_claims(table)
    print(f"design: looks at {plan['looks']} seeds, alpha {plan['alpha']}; now {seeds} seeds")
    print(f"{len(todo)} claims open: {', '.join(todo['id'])}" if len(todo) else "nothing open")
    if later and len(todo):
        new = next_trials(table, specs, trials, range(seeds, later[0]))
        print(f"next round: seeds {seeds}..{later[0] - 1}, {len(new)} trials")
    return 0


def settle(args, info: dict, plan: dict) -> int:
    """Rounds until nothing is open or K is reached; run.json records each round."""
    from .runfolder import RunFolder

    folder = RunFolder(os.path.abspath(args.run), resume=True)
    while True:
        table, specs, trials = judged(args.run, plan)
        seeds = int(trials["seed"].max()) + 1
        pending = plan["rounds"][-1] if plan["rounds"] and plan["rounds"][-1]["status"] == "running" \
            else None
        later = [n for n in plan["looks"] if n > seeds]
        todo = open_claims(table)
        if pending is None and (todo.empty or not later):
            return finish(folder, info, plan, table)
        if pending is None:
            new = next_trials(table, specs, trials, range(seeds, later[0]))
            pending = {"round": len(plan["rounds"]) + 1, "seeds_from": seeds,
                       "seeds_to": later[0], "open_claims": list(todo["id"]),
                       "configs": len(new) // (later[0] - seeds), "trials": len(new),
                       "ray_dir": f"ray-settle-{len(plan['rounds']) + 1}", "status": "running",
                       "trials_before": len(pd.read_csv(os.path.join(folder.path, "trials.csv"))),
                       "new_trials": new}
            plan["rounds"].append(pending)
        status = run_round(folder, args, info, plan, pending)
        info = folder.read_info()
        if status != "finished":
            print(f"interrupted: continue with  {PROG} {args.run}")
            return 130


def run_round(folder, args, info: dict, plan: dict, pending: dict) -> str:
    """One round through the grid's Tuner set-up; restores the round's Tuner after a Ctrl+C."""
    from ray import tune

    from cifar_core.data import load_cifar10

    from . import cli, tuning
    from .grid import fuse_groups

    from .settings import Settings

    given = {k: v for k in FLAGS if (v := getattr(args, k)) is not None}
    settings = Settings.from_saved(info["settings"]).replace(
        **given, resume=True, name=os.path.basename(folder.path))
    path = os.path.join(folder.path, pending["ray_dir"])
    restore = tune.Tuner.can_restore(path)
    groups = fuse_groups(pending["new_trials"], settings.fuse)
    points = pending["new_trials"] if groups is None else [{"members": g} for g in groups]
    epochs = sum((p["members"][0] if groups else p)["epochs"] for p in points)
    run_info = {**info, "settle": plan, "ray_dir": pending["ray_dir"],
                "n_trials": pending["trials_before"] + pending["trials"],
                "session_trials": pending["trials"], "total_epochs": epochs}

    def make_tuner(trainable, run_config):
        return tune.Tuner(trainable, param_space={"trial": tune.grid_search(points)},
                          tune_config=tuning.tune_config(settings), run_config=run_config)

    print(f"round {pending['round']}: seeds {pending['seeds_from']}..{pending['seeds_to'] - 1} "
          f"for {pending['configs']} configurations of {len(pending['open_claims'])} open claims "
          f"({pending['trials']} trials)", flush=True)
    folder.open()
    start = time.monotonic()
    data = load_cifar10(cli.data_dir_for(settings))
    status = tuning.run_sweep(folder=folder, settings=settings, info=run_info,
                              make_tuner=None if restore else make_tuner,
                              data_arrays=data.to_numpy())
    pending["wall_seconds"] = pending.get("wall_seconds", 0.0) + time.monotonic() - start
    pending["status"] = status
    final = folder.read_info()
    final.update(settle=plan, n_trials=run_info["n_trials"])
    for key in ("ray_dir", "session_trials"):
        final.pop(key, None)
    folder.write_info(final)
    return status


def finish(folder, info: dict, plan: dict, table: pd.DataFrame) -> int:
    plan["status"] = "finished"
    plan["verdicts"] = table["verdict"].value_counts().to_dict()
    folder.open()
    current = folder.read_info()
    current["settle"] = plan
    folder.write_info(current)
    counts = ", ".join(f"{n} {v}" for v, n in plan["verdicts"].items())
    print(f"settled: {counts}")
    print(f"report:  python -m sweep.report {folder.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
