"""Cells and tables of the results: markdown for the docs, plain text for the terminal."""

import statistics


def change(value: float, reference: float) -> str:
    """The relative change of `value` against `reference`, in %: '+4.5 %'."""
    return f"{(value / reference - 1) * 100:+.1f} %"


def markdown_table(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows of cells as a markdown table (the first row is the header)."""
    return ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])] + [
        "| " + " | ".join(row) + " |" for row in rows[1:]]


def plain_table(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows of cells as left-aligned text columns (the first row is the header)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def vs_baseline(value: float | None, baseline: float | None) -> str:
    """The change of `value` against the baseline's, in % (the one way a change is written), or "—" where either
    is missing."""
    return change(value, baseline) if value and baseline else "—"


def spread(values: list[float]) -> str:
    """'mean' or 'mean ± sd (n)' over seeds; '—' for none."""
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f} (n={len(values)})"


def percent(value: float | None) -> str:
    """A change already in %, as a cell: '+4.5 %' ('—' for none)."""
    return "—" if value is None else f"{value:+.1f} %"
