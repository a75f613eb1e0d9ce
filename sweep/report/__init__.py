"""The sweep's report: run folder(s) in, REPORT.md with figures out. Never imports Ray or torch.

Layers: `load` (the only reader), `summary`/`claims`/`importance` (pure, over DataFrames),
`plots`/`render` (figures and Markdown), `cli.main` (the only writer). Run it as
`python -m sweep.report RUN_DIR [--out DIR]`, or call `sweep.report.main([...])`.
"""


def main(argv=None) -> int:
    """`cli.main`, imported on call so the pure modules load without matplotlib."""
    from .cli import main as run

    return run(argv)


__all__ = ["main"]
