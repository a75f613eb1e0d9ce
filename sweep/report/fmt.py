"""Formatting shared by the plots and the Markdown: percentages, levels, GitHub tables."""
from __future__ import annotations

import math

import numpy as np

from cifar_core.config import LEVELS

ORDER = LEVELS  # the reference's order of each categorical axis (others sort naturally)
NAMES = {"final_test_acc": "test accuracy", "final_test_loss": "test loss",
         "gap": "train − test accuracy gap", "lam": "λ", "lr": "learning rate",
         "data_fraction": "data fraction", "final_relu": "ReLU on logits",
         "batch_size": "batch size"}
DASH = "—"


def missing(x) -> bool:
    return x is None or (isinstance(x, (float, np.floating)) and not math.isfinite(x))


def sort_levels(axis: str, values) -> list:
    """Distinct values of an axis in the reference's order (numbers ascending, unknowns last)."""
    distinct = list(dict.fromkeys(v.item() if isinstance(v, np.generic) else v for v in values))
    order = ORDER.get(axis, ())
    return sorted(distinct, key=lambda v: (order.index(v) if v in order else len(order),
                                           v if isinstance(v, (int, float)) else str(v)))


def level(value) -> str:
    """A config value as text: 1e-05 not 0.00001, True/False, strings as they are."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.3g}"
    return str(value.item() if isinstance(value, np.generic) else value)


def pct(x) -> str:
    """A fraction as a percentage with one decimal: 0.4623 -> '46.2%'."""
    return DASH if missing(x) else f"{100 * x:.1f}%"


def pct_ci(mean, half) -> str:
    """'46.2% ± 1.3' (the ± in percentage points); no ± when the interval is undefined."""
    if missing(mean):
        return DASH
    return pct(mean) if missing(half) else f"{pct(mean)} ± {100 * half:.1f}"


def pts(x, signed: bool = True) -> str:
    """A difference of fractions in percentage points: 0.031 -> '+3.1 pts'."""
    if missing(x):
        return DASH
    return f"{100 * x:+.1f} pts" if signed else f"{100 * x:.1f} pts"


def num(x, digits: int = 3) -> str:
    return DASH if missing(x) else f"{x:.{digits}f}"


def value(metric: str, x, half=None) -> str:
    """A metric value (accuracy-like as %, loss as a number), with ± half-width when given."""
    if metric.endswith("loss"):
        return num(x) if missing(half) else f"{num(x)} ± {num(half)}"
    if metric == "gap":
        body = pts(x, signed=False)
        return body if missing(half) else f"{body} ± {100 * half:.1f}"
    return pct_ci(x, half) if half is not None else pct(x)


def effect(metric: str, x, low, high) -> str:
    """A paired difference with its interval: '+3.1 pts [+1.0, +5.2]'."""
    if missing(x):
        return DASH
    if metric.endswith("loss"):
        body = f"{x:+.3f}"
        return body if missing(low) else f"{body} [{low:+.3f}, {high:+.3f}]"
    body = pts(x)
    return body if missing(low) else f"{body} [{100 * low:+.1f}, {100 * high:+.1f}]"


def seconds(x) -> str:
    """Wall time as '1 h 02 min 05 s' / '42 min 00 s' / '12.5 s'."""
    if missing(x):
        return DASH
    x = float(x)
    if x < 60:
        return f"{x:.1f} s"
    hours, rest = divmod(int(round(x)), 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{hours} h {minutes:02d} min {secs:02d} s" if hours else f"{minutes} min {secs:02d} s")


def cell(text) -> str:
    """Table-safe text: pipes escaped (labels like 'l2|adam-1e-3'), newlines flattened."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(headers: list[str], rows: list[list], align: str = "") -> str:
    """A GitHub-style Markdown table; `align` is one char per column ('l' or 'r')."""
    align = align or "l" * len(headers)
    rule = ["---:" if a == "r" else ":---" for a in align]
    lines = [headers, rule, *[[cell(c) for c in row] for row in rows]]
    return "\n".join("| " + " | ".join(str(c) for c in line) + " |" for line in lines)


def anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    kept = "".join(ch for ch in title.lower() if ch.isalnum() or ch in " -_")
    return kept.strip().replace(" ", "-")


def image(images: dict, key: str, alt: str) -> str:
    """A relative Markdown image link for a drawn figure, or '' when it was not drawn."""
    return f"![{alt}]({images[key]})" if key in images else ""


def count(x) -> str:
    """A whole number read from a float column ('3', not '3.0')."""
    return DASH if missing(x) else str(int(x))
