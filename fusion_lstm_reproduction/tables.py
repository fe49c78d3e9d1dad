"""Cells and tables of the results: markdown for the docs, plain text for the terminal."""


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
