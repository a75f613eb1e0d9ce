"""sweep.report on synthetic run folders with known numbers: the pure layer against hand
computations, claim verdicts that flip with the data, bad input, and the CLI end to end."""
from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from report_fixture import run_meta, search_trials, seed_trials, trial, write_run
from sweep.report.claims import CLAIMS, judge_all
from sweep.report.cli import main
from sweep.report.importance import importance
from sweep.report.load import load_run
from sweep.report.stats import mean_ci, t_quantile
from sweep.report.summary import curves, finished, interaction, marginal, ranking, summarise

T2 = 4.302652729749  # t_{0.975, 2 df}: three seeds


def claim(text_start: str):
    return next(c for c in CLAIMS if c.text.startswith(text_start))


def frame(rows: list[dict], tmp_path: Path) -> pd.DataFrame:
    """Trials as load_run types them (through a real CSV round trip)."""
    return load_run(write_run(tmp_path / "run", rows)).trials


# ---- statistics ---------------------------------------------------------------------------

@pytest.mark.parametrize("df, expected", [(1, 12.7062047), (2, 4.3026527), (4, 2.7764451),
                                          (10, 2.2281389), (1000, 1.9623391)])
def test_t_quantile_matches_tables(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-6)


def test_mean_ci_by_hand():
    ci = mean_ci([0.5, 0.6, 0.7, math.nan])
    assert (ci.mean, ci.std, ci.n) == (pytest.approx(0.6), pytest.approx(0.1), 3)
    assert ci.half == pytest.approx(T2 * 0.1 / math.sqrt(3))
    assert mean_ci([0.4]).n == 1 and math.isnan(mean_ci([0.4]).half)


# ---- ranking, marginals, interactions, curves -----------------------------------------------

def three_transforms(diverge_augment_seed: int | None = None) -> list[dict]:
    acc = {"none": (0.40, 0.42, 0.44), "augment": (0.50, 0.53, 0.56),
           "normalize": (0.45, 0.45, 0.48)}
    rows = [trial(transform=t, seed=s, acc=acc[t][s]) for t in acc for s in range(3)]
    if diverge_augment_seed is not None:
        rows.append(trial(transform="augment", seed=diverge_augment_seed, acc=0.1,
                          status="diverged"))
    return rows


def test_ranking_orders_by_mean_and_counts_diverged(tmp_path):
    table = ranking(frame(three_transforms(diverge_augment_seed=3), tmp_path))
    assert list(table["transform"]) == ["augment", "normalize", "none"]
    top = table.iloc[0]
    assert (top["n"], top["n_done"], top["statuses"]) == (4, 3, "3 completed, 1 diverged")
    assert top["mean"] == pytest.approx(0.53)
    assert top["std"] == pytest.approx(0.03)
    assert top["half"] == pytest.approx(T2 * 0.03 / math.sqrt(3))
    assert top["gap"] == pytest.approx(0.05) and top["train_acc"] == pytest.approx(0.58)
    assert list(table["rank"]) == [1, 2, 3]


def test_marginal_is_a_t_interval_over_trials(tmp_path):
    table = marginal(frame(three_transforms(), tmp_path), "transform")
    assert list(table["level"]) == ["none", "augment", "normalize"]  # the seed's order
    row = table.set_index("level").loc["normalize"]
    values = np.array([0.45, 0.45, 0.48])
    assert row["mean"] == pytest.approx(values.mean())
    assert row["half"] == pytest.approx(T2 * values.std(ddof=1) / math.sqrt(3))
    assert row["low"] == pytest.approx(values.mean() - row["half"])


def test_interaction_table_means_and_counts(tmp_path):
    rows = [trial(optimiser=o, lr=lr, seed=s, acc=a + 0.01 * s)
            for o, lr, a in (("adam", 1e-3, 0.58), ("adam", 1e-5, 0.56), ("sgd", 1e-3, 0.583))
            for s in range(2)]
    means, counts = interaction(frame(rows, tmp_path), "optimiser", "lr")
    assert means.loc["adam", 1e-3] == pytest.approx(0.585)
    assert means.loc["adam", 1e-5] == pytest.approx(0.565)
    assert math.isnan(means.loc["sgd", 1e-5]) and counts.loc["sgd", 1e-5] == 0
    assert counts.loc["sgd", 1e-3] == 2


def test_curves_average_trials_per_epoch(tmp_path):
    run = load_run(write_run(tmp_path / "run", three_transforms(diverge_augment_seed=3)))
    table = curves(run.epochs, "transform")
    last = table[(table["level"] == "augment") & (table["metric"] == "test_acc")
                 & (table["epoch"] == 3)].iloc[0]
    assert (last["mean"], last["n"]) == (pytest.approx(0.53), 3)  # the diverged trial is left out
    assert last["std"] == pytest.approx(0.03)


# ---- claims -------------------------------------------------------------------------------

def judged(rows, text_start, tmp_path) -> dict:
    """The claim's row of the whole report's table (Holm over every claim the run judges)."""
    table = judge_all(finished(frame(rows, tmp_path)))
    return table[table["claim"].str.startswith(text_start)].iloc[0].to_dict()


@pytest.mark.parametrize("augment, noise, verdict", [
    (0.46, (0.0, 0.01, -0.01), "holds"),
    (0.40, (0.0, 0.01, -0.01), "does not hold"),
])
def test_augmentation_claim_follows_the_data(tmp_path, augment, noise, verdict):
    row = judged(seed_trials({"augment": augment}, noise=noise), "augmentation beats the baseline",
                 tmp_path)
    assert row["verdict"] == verdict and row["n"] == 3
    assert row["effect"] == pytest.approx(augment - 0.43)
    assert row["a_mean"] == pytest.approx(augment) and row["b_mean"] == pytest.approx(0.43)


def test_overlapping_noise_is_inconclusive(tmp_path):
    rows = seed_trials()
    for r, bump in zip([r for r in rows if r["label"] == "augment"], (0.06, -0.05, 0.0)):
        r["final_test_acc"] += bump  # paired differences 0.09, -0.02, 0.03: interval spans 0
    row = judged(rows, "augmentation beats the baseline", tmp_path)
    diffs = np.array([0.09, -0.02, 0.03])
    assert row["verdict"] == "inconclusive"
    assert row["effect"] == pytest.approx(diffs.mean())
    assert row["high"] - row["effect"] == pytest.approx(T2 * diffs.std(ddof=1) / math.sqrt(3))


def test_missing_trials_say_what_is_needed(tmp_path):
    rows = [r for r in seed_trials() if r["label"] != "augment"]
    row = judged(rows, "augmentation beats the baseline", tmp_path)
    assert row["verdict"] == "not in this run" and row["n"] == 0
    assert row["why"].startswith("needs finished trials with transform=augment")
    equal = judged(seed_trials(), "augmentation beats no transform at equal data", tmp_path)
    assert equal["verdict"] == "not in this run" and "data_fraction" in equal["why"]


def test_one_seed_is_inconclusive(tmp_path):
    row = judged(seed_trials(seeds=1), "augmentation beats the baseline", tmp_path)
    assert (row["verdict"], row["n"], row["unit"]) == ("inconclusive", 1, "settings")


@pytest.mark.parametrize("sgd_low_lr, verdict", [(0.581, "holds"), (0.30, "does not hold")])
def test_sgd_robustness_is_an_interaction_claim(tmp_path, sgd_low_lr, verdict):
    row = judged(seed_trials({"sgd-1e-5": sgd_low_lr}), "SGD is more robust", tmp_path)
    assert row["verdict"] == verdict
    assert row["a_mean"] == pytest.approx(abs(0.583 - sgd_low_lr))  # SGD's |lr gap|
    assert row["b_mean"] == pytest.approx(0.10)  # Adam: 0.55 vs 0.45


@pytest.mark.parametrize("dropout_train, verdict", [(0.45, "holds"), (0.60, "does not hold")])
def test_dropout_overfitting_claim_uses_the_gap(tmp_path, dropout_train, verdict):
    rows = seed_trials()
    for r in rows:
        if r["label"] == "dropout":
            r["final_train_acc"] = dropout_train + (r["final_test_acc"] - 0.50)
    row = judged(rows, "dropout narrows the train − test gap", tmp_path)
    assert row["verdict"] == verdict
    assert row["effect"] == pytest.approx((dropout_train - 0.50) - 0.05)


def test_relu_rows_only_when_both_levels_ran(tmp_path):
    plain = judge_all(finished(frame(seed_trials(), tmp_path / "a")))
    assert not plain["relu"].any()
    rows = [trial(final_relu=relu, seed=s, acc=0.50 + 0.03 * (not relu) + 0.01 * s)
            for relu in (True, False) for s in range(3)]
    both = judge_all(finished(frame(rows, tmp_path / "b")))
    relu = both[both["relu"]].set_index("metric")
    assert relu.loc["final_test_acc", "verdict"] == "holds"
    assert relu.loc["final_test_acc", "effect"] == pytest.approx(0.03)


# ---- importance ---------------------------------------------------------------------------

def test_importance_needs_two_varying_axes(tmp_path):
    one_axis = importance(finished(frame(three_transforms(), tmp_path / "a")))
    assert not one_axis.values and "fewer than 2 axes" in one_axis.reason
    rows = [trial(transform=t, model=m, seed=s, acc=0.4 + 0.1 * (t == "augment") + 0.001 * s)
            for t in ("none", "augment") for m in ("baseline", "dropout") for s in range(3)]
    result = importance(finished(frame(rows, tmp_path / "b")))
    assert set(result.values) == {"transform", "model"}
    assert next(iter(result.values)) == "transform"
    assert sum(result.values.values()) == pytest.approx(1.0)


# ---- bad input ----------------------------------------------------------------------------

def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_folder_without_trials_csv(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    err = _one_error_line(capsys)
    assert "no trials.csv" in err and str(tmp_path) in err
    assert not (tmp_path / "report").exists()


def test_run_with_no_finished_trial(tmp_path, capsys):
    run = write_run(tmp_path / "run", [trial(acc=0.1, status="diverged"),
                                       trial(acc=0.2, status="running", seed=1)])
    assert main([str(run)]) == 2
    err = _one_error_line(capsys)
    assert "no finished trial" in err and "trials.csv" in err and "1 diverged" in err
    assert not (run / "report").exists()


def test_missing_column_is_named(tmp_path, capsys):
    run = write_run(tmp_path / "run", three_transforms())
    pd.read_csv(run / "trials.csv").drop(columns=["final_test_acc"]).to_csv(run / "trials.csv")
    assert main([str(run)]) == 2
    err = _one_error_line(capsys)
    assert "missing column 'final_test_acc'" in err and str(run / "trials.csv") in err
    assert not (run / "report").exists()


def _break_lr(run: Path):
    trials = pd.read_csv(run / "trials.csv")
    trials["lr"] = trials["lr"].astype(object)
    trials.loc[2, "lr"] = "fast"
    trials.to_csv(run / "trials.csv", index=False)


def _drop_epoch_column(run: Path):
    pd.read_csv(run / "epochs.csv").drop(columns=["test_acc"]).to_csv(run / "epochs.csv")


@pytest.mark.parametrize("breaks, expected", [
    (_break_lr, "column 'lr' has a non-numeric value 'fast'"),
    (_drop_epoch_column, "epochs.csv is missing column 'test_acc'"),
    (lambda run: (run / "run.json").write_text("{not json"), "run.json is not valid JSON"),
    (lambda run: (run / "trials.csv").write_text(""), "trials.csv is empty"),
])
def test_other_bad_input_is_one_line(tmp_path, capsys, breaks, expected):
    run = write_run(tmp_path / "run", three_transforms())
    breaks(run)
    assert main([str(run)]) == 2
    assert expected in _one_error_line(capsys)
    assert not (run / "report").exists()


def test_several_runs_need_out(tmp_path, capsys):
    a, b = (write_run(tmp_path / n, three_transforms()) for n in "ab")
    assert main([str(a), str(b)]) == 2
    assert "--out" in _one_error_line(capsys)


# ---- end to end ---------------------------------------------------------------------------

SECTIONS = ("## 1. Ranking of configurations", "## 2. Each axis",
            "## 3. The reference report's claims, judged", "## 4. Hyperparameter importance",
            "## 5. Provenance")


@pytest.fixture(scope="module")
def seed_report(tmp_path_factory) -> Path:
    """The seed preset run (3 seeds) reported through main(), as the CLI does."""
    run = write_run(tmp_path_factory.mktemp("seed") / "run", seed_trials())
    assert main([str(run)]) == 0
    return run / "report"


def test_report_never_imports_ray_or_torch(tmp_path):
    """A fresh interpreter (pytest's conftest imports torch) runs the whole CLI path."""
    run = write_run(tmp_path / "run", three_transforms())
    code = ("import runpy, sys; sys.argv = ['sweep.report', sys.argv[1]]\n"
            "try:\n    runpy.run_module('sweep.report', run_name='__main__')\n"
            "except SystemExit as stop:\n    assert stop.code == 0, stop.code\n"
            "heavy = {'ray', 'torch'} & set(sys.modules)\nassert not heavy, heavy")
    done = subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert (run / "report" / "REPORT.md").is_file()


def test_cli_writes_report_with_sections_and_figures(seed_report):
    text = (seed_report / "REPORT.md").read_text()
    positions = [text.index(s) for s in SECTIONS]
    assert positions == sorted(positions)
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert {"marginals.png", "claims.png", "importance.png", "curves_model.png",
            "heatmap_optimiser_x_lr.png", "heatmap_transform_x_model.png"} <= set(links)
    assert "curves_lam.png" not in links and "only follows the regulariser" in text
    # the seed preset runs no transform only at data fraction 0.5: no like-with-like curve
    assert "curves_transform.png" not in links and "data fraction (none 0.5" in text
    assert all((seed_report / link).is_file() for link in links)
    assert (seed_report / "ranking.csv").is_file() and (seed_report / "claims.csv").is_file()


def test_report_states_rule_verdicts_and_provenance(seed_report):
    text = (seed_report / "REPORT.md").read_text()
    assert "**Rule.**" in text and "Student-t" in text
    assert "**holds**" in text and "**not in this run**" in text
    assert "`python -m sweep.grid --preset seed --seeds 3`" in text
    assert "0123456789abcdef" in text and "42 min 00 s" in text
    assert "| 1 | sgd-1e-3 |" in text and "58.3% ± 2.5" in text  # top config, one decimal
    assert not re.search(r"\d+\.\d\d+%", text)  # percentages carry one decimal


def test_search_run_gets_history_and_best_params(tmp_path):
    meta = run_meta(20, "search", best={"params": {"lr": 0.00123, "transform": "augment"},
                                        "value": 0.612, "metric": "test_acc"},
                    search={"n_trials": 20, "sampler": "TPESampler", "pruner": "MedianPruner"})
    run = write_run(tmp_path / "run", search_trials(20), kind="search", meta=meta, epochs=False)
    out = tmp_path / "out"
    assert main([str(run), "--out", str(out)]) == 0
    text = (out / "REPORT.md").read_text()
    assert "## 5. Search" in text and "history_1.png" in text and (out / "history_1.png").is_file()
    assert "| lr | 0.00123 |" in text and "61.2%" in text and "TPESampler" in text
    assert (out / "scatter_lr.png").is_file()  # a searched lr is continuous


def test_combined_report_of_two_runs(tmp_path):
    a = write_run(tmp_path / "a", three_transforms(), meta=dict(run_meta(9), name="first"))
    b = write_run(tmp_path / "b", three_transforms(), meta=dict(run_meta(9), name="second"))
    out = tmp_path / "combined"
    assert main([str(a), str(b), "--out", str(out)]) == 0
    text = (out / "REPORT.md").read_text()
    assert "first + second" in text and "### first" in text and "### second" in text
    # 6 trials pooled over both runs: std 2.68 pts, t(0.975, 5) = 2.571 -> ± 2.8
    assert "| 1 | first, second | — | augment | 53.0% ± 2.8 |" in text  # run column
    assert "This report combines 2 runs: `first`" in text
    summary = summarise(load_run(a))
    assert summary.axes == ("transform",)


def test_markdown_names_failed_trials_without_figures(tmp_path):
    from sweep.report.render import render_markdown

    summary = summarise(load_run(write_run(tmp_path / "run", three_transforms(3))))
    text = render_markdown(summary, images={})  # pure: no figures drawn, no links to them
    assert "Trials that diverged or failed" in text
    assert "| t009 | diverged | augment | 3 | 1 |" in text
    assert "![" not in text and "| 1 | — | augment | 53.0% ± 7.5 |" in text


def test_a_side_stuck_at_chance_makes_the_claim_not_testable():
    import pandas as pd

    from sweep.report import claims as C

    def rows(sgd_acc):
        out = []
        for seed in range(3):
            for opt, lr, acc in (("sgd", 1e-3, sgd_acc + seed / 100), ("sgd", 1e-5, 0.10),
                                 ("adam", 1e-3, 0.55 + seed / 100), ("adam", 1e-5, 0.30)):
                out.append({"transform": "none", "model": "baseline", "regulariser": "none",
                            "lam": 0.0, "optimiser": opt, "lr": lr, "epochs": 10,
                            "batch_size": 256, "data_fraction": 1.0, "final_relu": True,
                            "seed": seed, "final_test_acc": acc, "final_test_loss": 2.3,
                            "final_train_acc": acc})
        return pd.DataFrame(out)

    def robust(trials):
        table = C.judge_all(trials)
        return table[table["claim"].str.startswith("SGD is more robust")].iloc[0]

    stuck = robust(rows(0.10))  # SGD at chance at both lrs: its tiny |lr gap| tests nothing
    assert stuck["verdict"] == C.UNTESTABLE and stuck["why"] == "optimiser=sgd never learned"
    assert stuck["set_aside"] == 3
    learned = robust(rows(0.40))  # SGD learns at 1e-3 only: a 30-pt lr sensitivity vs Adam's 25
    assert learned["verdict"] == C.FAILS and learned["effect"] == pytest.approx(0.30 - 0.25)


def test_fused_members_count_their_shared_training_time_once():
    import pandas as pd

    from sweep.report.render_run import training_seconds

    trials = pd.DataFrame({"trial_id": ["a-m0", "a-m1", "b"], "train_seconds": [10.0, 10.0, 4.0]})
    assert training_seconds(trials) == 14.0


def test_help_is_the_whole_description(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "to RUN_DIR/report/, or to --out for a combined report of several runs" in out
    assert "exits 2 before anything is written" in out


def test_rank_by_best_and_every_row_reruns_with_cifar_core(tmp_path):
    from cifar_core.__main__ import build_parser

    rows = three_transforms()
    for r in rows:  # augment ends lower than it peaked: best and final rank differently
        if r["transform"] == "augment":
            r["final_test_acc"], r["best_test_acc"] = r["final_test_acc"] - 0.2, 0.9
    run = write_run(tmp_path / "run", rows)
    final, best = (summarise(load_run(run), rank_by=c).ranking
                   for c in ("final_test_acc", "best_test_acc"))
    assert final.iloc[0]["transform"] != "augment" and best.iloc[0]["transform"] == "augment"
    for _, row in final.iterrows():  # the command parses into the very configuration
        argv = row["command"].split()[3:]
        args = vars(build_parser().parse_args(argv))
        assert args["transform"] == row["transform"] and float(args["lr"]) == row["lr"]
        assert int(args["seed"]) == row["first_seed"]
    assert main([str(run), "--rank-by", "best"]) == 0
    text = (run / "report" / "REPORT.md").read_text()
    assert "ranked by mean best test accuracy" in text and "#1   python -m cifar_core" in text


def test_rank_metric_without_the_column_is_one_line(tmp_path, capsys):
    run = write_run(tmp_path / "run", three_transforms())
    assert main([str(run), "--rank-metric", "val_acc"]) == 2
    assert "--rank-metric=val_acc" in capsys.readouterr().err
    assert not (run / "report").exists()
