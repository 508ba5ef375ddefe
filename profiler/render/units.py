"""How figures read in every text, table and page: joules, ranges, shares."""
from __future__ import annotations

import math


def joules(x: float | None, signed: bool = False) -> str:
    """An energy with a unit that keeps three significant digits: 1.23 kJ, 45.6 J, 7.89 mJ, 12 µJ."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    ax = abs(x)
    if ax >= 1e3:
        text = f"{x / 1e3:.3g} kJ"
    elif ax >= 1 or ax == 0:
        text = f"{x:.3g} J"
    elif ax >= 1e-3:
        text = f"{x * 1e3:.3g} mJ"
    else:
        text = f"{x * 1e6:.3g} µJ"
    return "+" + text if signed and x > 0 else text


def interval(lo: float | None, hi: float | None) -> str:
    """ "[lo, hi]", or "-" where there is no range."""
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return "-"
    return f"[{joules(lo)}, {joules(hi)}]"


def amount(e) -> str:
    """An :class:`~phprof.energy.Energy` with its range: "12.3 J [11.9 J, 12.6 J]"."""
    if e is None:
        return "-"
    i = interval(e.low_j, e.high_j)
    return joules(e.joules) + ("" if i == "-" else f" {i}")


def estimate(e) -> str:
    """An energy of the attribution (not the counter's reading), labelled as such."""
    return "-" if e is None else f"{amount(e)}, {e.kind}"


def per(e, n: float):
    """``e`` divided by ``n`` (None stays None)."""
    return None if e is None else e.scaled(1 / n)


def markdown_table(head: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table: the first column left-aligned, the others right-aligned; ``|`` in a cell escaped."""
    def line(cells):
        return "| " + " | ".join(x.replace("|", "\\|") for x in cells) + " |"

    return [line(head), "|---|" + "---:|" * (len(head) - 1)] + [line(r) for r in rows]


def aligned(head: list[str], rows: list[list[str]]) -> list[str]:
    """A table for a terminal: the first column left-aligned, the others right-aligned."""
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    return ["  ".join(x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in enumerate(zip(row, widths)))
            for row in [head, *rows]]
