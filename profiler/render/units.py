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


def profiler_overhead(measured, profiled, measured_energy, profiled_energy, on_gpu: bool) -> str:
    """The profiler's cost per inference: the profiled pass against the measurement pass (each a
    :class:`~phprof.store.results.PerInference`), in time and, where both passes have an
    :class:`~phprof.energy.Energy`, in energy with the bound the two passes' own ranges give."""
    m_s, p_s = measured.seconds_per_inference, profiled.seconds_per_inference
    dt = p_s - m_s
    how = ("approximate (the clock; on a GPU each measured inference ends at a synchronize, a profiled one at "
           "its last kernel)") if on_gpu else "measured (the clock)"
    text = f"{1e3 * dt:+.3f} ms per inference" + (f" ({dt / m_s:+.0%})" if m_s > 0 else "") + f", {how}"
    m, p = measured_energy, profiled_energy
    if m is None or p is None or m.joules is None or p.joules is None:
        return text
    n_m, n_p = measured.inferences, profiled.inferences
    dj = p.joules / n_p - m.joules / n_m
    kind = "measured" if m.measured and p.measured else "estimated"
    bound = interval(p.low_j / n_p - m.high_j / n_m, p.high_j / n_p - m.low_j / n_m) \
        if m.has_range and p.has_range else "-"
    return (text + f"; {joules(dj, signed=True)} per inference" + (f" ({dj * n_m / m.joules:+.0%})" if m.joules else "")
            + ("" if bound == "-" else f" {bound}") + f", {kind}: the difference of the two passes")


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
