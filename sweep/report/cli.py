"""python -m sweep.report RUN_DIR [RUN_DIR ...] [--out DIR] [--html]

Reads run folders written by sweep.grid / sweep.search and writes REPORT.md with its PNGs (and
ranking.csv, claims.csv) to RUN_DIR/report/, or to --out for a combined report of several runs.
Bad input prints one line naming the problem and exits 2 before anything is written.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from .load import ReportInputError, combine_runs, load_run
from .plots import render_plots
from .render import render_markdown
from .summary import RANK_BY, RANK_METRICS, Summary, rank_column, summarise

OWN_FILES = ("REPORT.md", "REPORT.html", "ranking.csv", "claims.csv")
OWN_PNG_PREFIXES = ("curves_", "heatmap_", "scatter_", "history_", "marginals", "claims",
                    "importance")


def parse_args(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sweep.report",
                                     description=" ".join(__doc__.split("\n\n")[1].split()))
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folder(s) to report on")
    parser.add_argument("--out", help="output folder (default RUN_DIR/report; needed for several)")
    parser.add_argument("--html", action="store_true", help="also write REPORT.html")
    parser.add_argument("--rank-by", choices=sorted(RANK_BY), default="final",
                        help="rank configurations by each trial's final or best epoch "
                             "(default final)")
    parser.add_argument("--rank-metric", choices=RANK_METRICS, default="test_acc",
                        help="the metric ranked on (default test_acc; val_acc for runs with a "
                             "--val-size hold-out)")
    return parser.parse_args(argv)


def _clear_previous(out: Path) -> None:
    """Remove what an earlier report wrote here, so no stale figure lingers."""
    for path in out.glob("*"):
        if path.name in OWN_FILES or (path.suffix == ".png"
                                      and path.name.startswith(OWN_PNG_PREFIXES)):
            path.unlink()


def write_report(summary: Summary, out: Path, html: bool = False) -> Path:
    """Write REPORT.md, its figures and the ranking/claims tables into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    _clear_previous(out)
    images = render_plots(summary, out)
    text = render_markdown(summary, images)
    (out / "REPORT.md").write_text(text, encoding="utf-8")
    summary.ranking.to_csv(out / "ranking.csv", index=False)
    summary.claims.to_csv(out / "claims.csv", index=False)
    if html:
        (out / "REPORT.html").write_text(to_html(text, summary.name), encoding="utf-8")
    return out / "REPORT.md"


def to_html(markdown_text: str, title: str) -> str:
    """A standalone HTML page (python-markdown, which tensorboard brings; plain text otherwise)."""
    try:
        import markdown
    except ImportError:
        import html
        return f"<pre>{html.escape(markdown_text)}</pre>"
    body = markdown.markdown(markdown_text, extensions=["tables", "toc", "fenced_code"])
    style = ("body{font-family:sans-serif;max-width:1150px;margin:2em auto;line-height:1.45}"
             "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
             "td,th{border:1px solid #ccc;padding:3px 7px}th{background:#f2f2f2}"
             "td[style*=right]{white-space:nowrap}img{max-width:100%}"
             "blockquote{color:#664;border-left:4px solid #cc9;padding-left:1em}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
            f"<style>{style}</style></head><body>{body}</body></html>")


def main(argv=None) -> int:
    """Entry point: 0 on success, 2 (one stderr line, nothing written) on bad input."""
    args = parse_args(argv)
    try:
        if len(args.runs) > 1 and not args.out:
            raise ReportInputError(f"{len(args.runs)} run folders given: a combined report "
                                   "needs --out DIR")
        run = combine_runs([load_run(path) for path in args.runs])
        column = rank_column(args.rank_by, args.rank_metric)
        if not run.trials.get(column, pd.Series(dtype=float)).notna().any():
            raise ReportInputError(f"--rank-metric={args.rank_metric}: no trial of this run has "
                                   f"{column} (val_acc needs a --val-size hold-out)")
        summary = summarise(run, rank_by=column)
    except ReportInputError as exc:
        print(f"sweep.report: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(args.runs[0]) / "report"
    print(f"wrote {write_report(summary, out, html=args.html)}")
    return 0
