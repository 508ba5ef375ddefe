"""A study's table and page: CSV, JSON, markdown and text tables per task, and one HTML page.

Renders a study's view (``phprof.study.table.StudyView``, its ``VIEW`` is ``"study"``): one row
per cell, the comparison with the paper's figures, and what the run used. Every energy says
whether it was measured or estimated and by which method; where no cell had a sensor, every
figure is time per 1,000 inferences and says so. The page is static SVG and tables (no script,
nothing fetched): each point of a plot links to its cell's report page.
"""
from __future__ import annotations

import csv
import io
import json
import math
from html import escape

from .base import Renderer, register
from .palette import task_colour
from .units import aligned


# ---- what a figure shows -----------------------------------------------------------------------
def quantity(view) -> tuple[str, str, str]:
    """(row key, axis label, what it is) of the figures: kWh per 1,000 where any cell has energy,
    else seconds per 1,000 (time, energy not measured)."""
    if view.has_energy:
        kinds = sorted({r["energy"] for r in view.rows if r.get("kwh_per_1000") is not None})
        return "kwh_per_1000", "kWh per 1,000 inferences", f"energy ({' and '.join(kinds)}: see each cell's method)"
    return "seconds_per_1000", "seconds per 1,000 inferences", "time, energy not measured"


def value(row: dict, key: str) -> float | None:
    if key == "seconds_per_1000":
        s = row.get("seconds_per_inference")
        return None if s is None else 1000 * s
    return row.get(key)


def figure(x: float | None) -> str:
    """A number as the tables show it: four significant digits."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:.4g}"


def _interval(row: dict, key: str = "kwh_per_1000") -> str:
    lo, hi = row.get(f"{key}_low"), row.get(f"{key}_high")
    return "-" if lo is None or hi is None else f"[{figure(lo)}, {figure(hi)}]"


def _params(n) -> str:
    return "-" if n is None else f"{n / 1e6:.1f} M"


TASK_HEAD = ["model", "parameters", "kWh / 1,000", "interval", "energy", "J / inference", "s / inference",
             "gCO2eq / 1,000", "run: kWh / 1,000", "run's bound", "J / token", "J / image", "device", "sensor"]


def _energy_text(kind: str, method: str, interval: str = "") -> str:
    if kind == "not measured" or not kind:
        return "not measured"
    return f"{kind} ({method}" + (f", {interval} interval" if interval and interval != "bound" else
                                  ", a bound" if interval == "bound" else "") + ")"


def _task_row(r: dict) -> list[str]:
    """A cell in the tables: the inferences' own energy (as `phprof report` gives it), then the
    run's whole energy, the time between inferences included (what the study measured)."""
    if r["status"] == "failed":
        return [r["model"], _params(r["parameters"]), "FAILED", "-", r["error"] or ""] + ["-"] * 9
    bound = _interval(r, "run_kwh_per_1000")
    return [r["model"], _params(r["parameters"]), figure(r["kwh_per_1000"]), _interval(r),
            _energy_text(r["energy"], r["energy_method"], r["interval"]), figure(r["j_per_inference"]),
            figure(r["seconds_per_inference"]), figure(r["gco2eq_per_1000"]), figure(r.get("run_kwh_per_1000")),
            bound if r.get("run_energy") in (None, "not measured") else f"{bound}, {r['run_energy']}",
            figure(r["j_per_token"]), figure(r["j_per_image"]), r["device_name"] or r["device"], r["sensor"]]


COMPARE_HEAD = ["task or model", "this run: kWh / 1,000", "interval", "cells", "paper: kWh / 1,000",
                "ratio (this run / paper)", "this run's device", "this run's sensor"]


def _compare_rows(view) -> list[list[str]]:
    rows = []
    for c in view.comparison:
        if not c.cells and not c.devices:
            continue
        rng = "-" if c.low is None or c.high is None else f"[{figure(c.low)}, {figure(c.high)}]"
        rows.append([c.key + ("" if c.kind == "task" else " (model)"), figure(c.kwh), rng, str(c.cells),
                     figure(c.paper_kwh), "-" if c.ratio is None else f"{c.ratio:.3g}", c.devices or "-",
                     c.sensors or "-"])
    return rows


def _by_task(view) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in view.rows:
        out.setdefault(r["task"], []).append(r)
    return out


def _paper_of(view, task: str):
    return next((c for c in view.comparison if c.kind == "task" and c.key == task), None)


# ---- tables ------------------------------------------------------------------------------------
@register
class CsvStudy(Renderer):
    """study.csv: one row per cell, every column (numbers at full precision, empty where none)."""

    view, name, suffixes = "study", "csv", (".csv",)

    def render(self, view) -> str:
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(view.columns)
        for r in view.rows:
            w.writerow(["" if r.get(k) is None else repr(r[k]) if isinstance(r[k], float) else r[k]
                        for k in view.columns])
        return out.getvalue()


@register
class JsonStudy(Renderer):
    """study.json: the cells (the CSV's columns), the comparison with the paper, and the run's settings."""

    view, name, suffixes = "study", "json", (".json",)

    def render(self, view) -> str:
        return json.dumps({
            "format": "phprof-study", "grid": view.grid, "options": view.options, "carbon": view.carbon,
            "columns": list(view.columns), "cells": view.rows, "missing": view.missing, "notes": view.notes,
            "paper": {"source": view.paper_source, "device": view.paper_setup[0], "sensor": view.paper_setup[1],
                      "comparison": [{"kind": c.kind, "key": c.key, "paper_kwh_per_1000": c.paper_kwh,
                                      "kwh_per_1000": c.kwh, "low": c.low, "high": c.high, "cells": c.cells,
                                      "ratio": c.ratio, "devices": c.devices, "sensors": c.sensors}
                                     for c in view.comparison]},
        }, indent=1) + "\n"


@register
class MarkdownStudy(Renderer):
    """A table per task, like the paper's Table 2, and this run beside the paper."""

    view, name, suffixes = "study", "markdown", (".md",)

    def render(self, view) -> str:
        def table(head, rows):
            return ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)] + \
                ["| " + " | ".join(x.replace("|", "/") for x in row) + " |" for row in rows]

        out = [f"# phprof study: {view.grid}", "", f"carbon: {view.carbon}", ""]
        out += [f"- {n}" for n in view.notes] + ([""] if view.notes else [])
        for task, rows in _by_task(view).items():
            paper = _paper_of(view, task)
            out += [f"## {task}" + (f" (paper: {figure(paper.paper_kwh)} kWh / 1,000)" if paper else ""), ""]
            out += table(TASK_HEAD, [_task_row(r) for r in rows]) + [""]
        compared = _compare_rows(view)
        if compared:
            out += ["## This run beside the paper", "",
                    f"paper: {view.paper_setup[0]}; {view.paper_setup[1]}. Source: {view.paper_source}", ""]
            out += table(COMPARE_HEAD, compared) + [""]
        if view.missing:
            out += [f"not run yet: {', '.join(view.missing)}", ""]
        return "\n".join(out)


@register
class TextStudy(Renderer):
    """The markdown's tables, aligned for a terminal."""

    view, name, suffixes = "study", "text", (".txt",)

    def render(self, view) -> str:
        out = [f"{view.grid}; carbon: {view.carbon}"] + [f"note: {n}" for n in view.notes]
        for task, rows in _by_task(view).items():
            paper = _paper_of(view, task)
            out += ["", task + (f" (paper: {figure(paper.paper_kwh)} kWh / 1,000)" if paper else "")]
            out += aligned(TASK_HEAD[:10] + TASK_HEAD[12:], [r[:10] + r[12:] for r in map(_task_row, rows)])
        compared = _compare_rows(view)
        if compared:
            out += ["", f"this run beside the paper ({view.paper_setup[0]}; {view.paper_setup[1]}):"]
            out += aligned(COMPARE_HEAD[:6], [r[:6] for r in compared])
        if view.missing:
            out += ["", f"not run yet: {', '.join(view.missing)}"]
        return "\n".join(out) + "\n"


# ---- the page ------------------------------------------------------------------------------------
W, H = 960, 400
PAD_L, PAD_R, PAD_T, PAD_B = 110, 20, 16, 100


def _log_axis(values: list[float]) -> tuple[float, float]:
    lo, hi = math.log10(min(values)), math.log10(max(values))
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    pad = (hi - lo) * 0.08
    return lo - pad, hi + pad


def _ticks(lo: float, hi: float) -> list[float]:
    """Powers of ten inside [10^lo, 10^hi]; with fewer than three, their 2x and 5x too."""
    first, last = math.floor(lo), math.ceil(hi)
    for steps in ((1,), (1, 2, 5)):
        ticks = [m * 10.0 ** k for k in range(first, last + 1) for m in steps if lo <= math.log10(m * 10.0 ** k) <= hi]
        if len(ticks) >= 3:
            return ticks
    return ticks or [10 ** ((lo + hi) / 2)]


def _tick(t: float) -> str:
    return f"{t:.0e}".replace("e-0", "e-").replace("e+0", "e")


def _point(r: dict, key: str, cx: float, cy: float, what: str) -> str:
    v = value(r, key)
    title = f"{r['model']} ({r['task']}): {figure(v)} {what}"
    if key == "kwh_per_1000":
        title += f" {_interval(r)}, {r['energy']}, {r['energy_method']}"
    title += f"; {_params(r['parameters'])} parameters; {r['device_name'] or r['device']}, {r['sensor']}"
    dot = (f'<circle class="pt" cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="{task_colour(r["task"])}" '
           f'stroke="#333" stroke-width="0.6" data-model="{escape(r["model"])}" data-task="{r["task"]}" '
           f'data-value="{v!r}"><title>{escape(title)}</title></circle>')
    return f'<a href="{escape(r["report"])}">{dot}</a>' if r.get("report") else dot


def _y_axis(parts: list[str], lo: float, hi: float, y, label: str) -> None:
    for t in _ticks(lo, hi):
        parts.append(f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#e5e7eb"/>')
        parts.append(f'<text x="{PAD_L - 6}" y="{y(t) + 4:.1f}" text-anchor="end" class="tick">{_tick(t)}</text>')
    parts.append(f'<text x="14" y="{PAD_T + (H - PAD_T - PAD_B) / 2:.0f}" class="tick" text-anchor="middle" '
                 f'transform="rotate(-90 14 {PAD_T + (H - PAD_T - PAD_B) / 2:.0f})">{escape(label)} (log)</text>')


def scatter(rows: list[dict], key: str, label: str, what: str) -> str:
    """Parameters against ``key``, log-log, a point per cell coloured by its task, with its interval."""
    rows = [r for r in rows if (value(r, key) or 0) > 0 and (r.get("parameters") or 0) > 0]
    if not rows:
        return '<p class="explain">no cell to plot</p>'
    xs, ys = _log_axis([r["parameters"] for r in rows]), _log_axis(
        [v for r in rows for v in (value(r, key), r.get(f"{key}_low"), r.get(f"{key}_high")) if v and v > 0])

    def x(p):
        return PAD_L + (W - PAD_L - PAD_R) * (math.log10(p) - xs[0]) / (xs[1] - xs[0])

    def y(v):
        return PAD_T + (H - PAD_T - PAD_B) * (1 - (math.log10(v) - ys[0]) / (ys[1] - ys[0]))

    parts = [f'<svg class="plot" viewBox="0 0 {W} {H}" width="{W}" role="img" aria-label="parameters against {label}">']
    _y_axis(parts, *ys, y, label)
    for t in _ticks(*xs):
        parts.append(f'<text x="{x(t):.1f}" y="{H - PAD_B + 16}" text-anchor="middle" class="tick">{_tick(t)}</text>')
    parts.append(f'<text x="{PAD_L + (W - PAD_L - PAD_R) / 2:.0f}" y="{H - 20}" text-anchor="middle" class="tick">'
                 'parameters, as traced (log)</text>')
    for r in rows:
        lo, hi = r.get(f"{key}_low"), r.get(f"{key}_high")
        if lo and hi and lo > 0:
            parts.append(f'<line x1="{x(r["parameters"]):.1f}" x2="{x(r["parameters"]):.1f}" y1="{y(lo):.1f}" '
                         f'y2="{y(hi):.1f}" stroke="{task_colour(r["task"])}" stroke-width="2"/>')
        parts.append(_point(r, key, x(r["parameters"]), y(value(r, key)), what))
    parts.append("</svg>")
    return "".join(parts)


def boxes(groups: list[tuple[str, list[dict]]], key: str, label: str, what: str) -> str:
    """A box per group (quartiles, median, whiskers to the extremes) and its cells as points, log scale."""
    groups = [(name, [r for r in rows if (value(r, key) or 0) > 0]) for name, rows in groups]
    groups = [(name, rows) for name, rows in groups if rows]
    if not groups:
        return '<p class="explain">no cell to plot</p>'
    ys = _log_axis([value(r, key) for _, rows in groups for r in rows])
    slot = (W - PAD_L - PAD_R) / len(groups)

    def y(v):
        return PAD_T + (H - PAD_T - PAD_B) * (1 - (math.log10(v) - ys[0]) / (ys[1] - ys[0]))

    parts = [f'<svg class="plot" viewBox="0 0 {W} {H}" width="{W}" role="img" aria-label="{escape(label)} per group">']
    _y_axis(parts, *ys, y, label)
    for i, (name, rows) in enumerate(groups):
        vs = sorted(value(r, key) for r in rows)
        q1, med, q3 = _quantile(vs, 0.25), _quantile(vs, 0.5), _quantile(vs, 0.75)
        cx, half = PAD_L + slot * (i + 0.5), min(40.0, slot * 0.3)
        parts.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{y(vs[0]):.1f}" y2="{y(vs[-1]):.1f}" stroke="#52606d"/>')
        parts.append(f'<rect x="{cx - half:.1f}" y="{y(q3):.1f}" width="{2 * half:.1f}" '
                     f'height="{max(y(q1) - y(q3), 1):.1f}" fill="#eef3f8" stroke="#52606d"/>')
        parts.append(f'<line x1="{cx - half:.1f}" x2="{cx + half:.1f}" y1="{y(med):.1f}" y2="{y(med):.1f}" '
                     'stroke="#1f2933" stroke-width="2"/>')
        for j, r in enumerate(rows):
            jitter = (((j * 7919) % 13) / 12 - 0.5) * half
            parts.append(_point(r, key, cx + jitter, y(value(r, key)), what))
        under = f'{escape(name)} ({len(rows)} cell{"s" * (len(rows) != 1)})'
        if slot < 150:  # narrow slots: the label slanted below its box
            parts.append(f'<text x="{cx:.1f}" y="{H - PAD_B + 12}" text-anchor="end" class="tick" '
                         f'transform="rotate(-25 {cx:.1f} {H - PAD_B + 12})">{under}</text>')
        else:
            parts.append(f'<text x="{cx:.1f}" y="{H - PAD_B + 16}" text-anchor="middle" class="tick">{under}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _quantile(sorted_values: list[float], q: float) -> float:
    pos = (len(sorted_values) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _cells_table(view) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in ["task", *TASK_HEAD])
    body = []
    for r in view.rows:
        cells = _task_row(r)
        link = f'<a href="{escape(r["report"])}">{escape(cells[0])}</a>' if r.get("report") else escape(cells[0])
        tds = "".join(f"<td>{escape(c)}</td>" for c in cells[1:])
        body.append(f'<tr data-model="{escape(r["model"])}" data-task="{r["task"]}" '
                    f'data-kwh="{r.get("kwh_per_1000")!r}" data-seconds="{r.get("seconds_per_inference")!r}">'
                    f"<th>{r['task']}</th><th>{link}</th>{tds}</tr>")
    return f'<table class="cmp" id="cells"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _compare_table(view) -> str:
    rows = _compare_rows(view)
    if not rows:
        return '<p class="explain">no cell of this run is among the paper\'s figures</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in COMPARE_HEAD)
    body = "".join("<tr><th>" + escape(r[0]) + "</th>" + "".join(f"<td>{escape(c)}</td>" for c in r[1:]) + "</tr>"
                   for r in rows)
    return f'<table class="cmp" id="paper"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


MODALITY_NAMES = {"text": "text tasks", "image": "image tasks", "text-to-image": "image generation"}


@register
class StudyPage(Renderer):
    """study.html: the plots, this run beside the paper, and every cell (see the module's docstring)."""

    view, name, suffixes = "study", "html", (".html",)

    def render(self, view) -> str:
        from .flamegraph import _asset  # the one stylesheet of every page

        style = _asset("page.css")

        key, label, what = quantity(view)
        done = [r for r in view.rows if r["status"] == "done"]
        plotted = [r for r in done if value(r, key) is not None]
        left_out = len(done) - len(plotted)
        tasks = list(dict.fromkeys(r["task"] for r in plotted))
        legend = "".join(f'<span class="key"><i style="background:{task_colour(t)}"></i>{escape(t)}</span>'
                         for t in tasks)
        by_modality = [(MODALITY_NAMES.get(m, m), [r for r in plotted if r["modality"] == m])
                       for m in dict.fromkeys(r["modality"] for r in plotted)]
        zero_shot = []
        for z, specific in view.zero_shot.items():
            short = z.removeprefix("zero-shot-")
            zero_shot += [(f"{short}: task-specific", [r for r in plotted if r["task"] == specific]),
                          (f"{short}: multi-purpose", [r for r in plotted if r["task"] == z])]
        caption = f"every figure: {what}" + (f"; {left_out} cells without energy are not plotted" if left_out else "")
        notes = "".join(f"<li>{escape(n)}</li>" for n in view.notes) or "<li>none</li>"
        missing = f'<p class="explain">not run yet: {escape(", ".join(view.missing))}</p>' if view.missing else ""
        paper_caption = (f"This run's mean {label} per task (and per model) beside the paper's, with the ratio: "
                         "this run's figure is the inferences' own energy (the device's whole draw during them, "
                         "idle power included, the time between them not). "
                         f"The paper: {view.paper_setup[0]}; {view.paper_setup[1]}. This run: the devices and "
                         f"sensors in the table. Source of the paper's figures: {view.paper_source}")
        if not view.has_energy:
            paper_caption = ("Energy was not measured in this run (no sensor): there is nothing to set beside the "
                             "paper's kWh. " + paper_caption)
        return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>phprof study: {escape(view.grid)}</title>
<style>{style}</style></head>
<body>
<section class="panel">
  <h1 id="title">phprof study<span class="tool">{escape(view.grid)}</span></h1>
  <p class="headline" id="quantity">{escape(caption)}</p>
  <table class="summary">
    <tr><th>cells</th><td>{len(done)} done, {len(view.rows) - len(done)} failed, {len(view.missing)} not run</td></tr>
    <tr><th>each cell</th><td>{escape(_options_text(view.options))}</td></tr>
    <tr><th>carbon</th><td>{escape(view.carbon)}</td></tr>
  </table>
  <ul class="notes">{notes}</ul>{missing}
  <h2>Parameters against {escape(label)}, by task</h2>
  <p class="explain">{escape(what)}. A point per cell (click: its report), its interval as a bar.</p>
  {scatter(plotted, key, label, what)}
  <div class="legend">{legend}</div>
  <h2>{escape(label)} per task</h2>
  <p class="explain">{escape(what)}. Box: quartiles and median; whiskers: the extremes.</p>
  {boxes([(t, [r for r in plotted if r["task"] == t]) for t in tasks], key, label, what)}
  <h2>Text against image tasks</h2>
  <p class="explain">{escape(what)}.</p>
  {boxes(by_modality, key, label, what)}
  <h2>Task-specific against multi-purpose models, on the zero-shot tasks</h2>
  <p class="explain">{escape(what)}. Each zero-shot task beside the task-specific task it stands for
  (sentiment: text classification; qa: extractive QA; summarization).</p>
  {boxes(zero_shot, key, label, what)}
  <h2>This run beside the paper</h2>
  <p class="explain">{escape(paper_caption)}</p>
  {_compare_table(view)}
  <h2>Every cell</h2>
  <p class="explain">{escape(what)}; intervals are the attribution's ({escape(_levels(view))}).</p>
  {_cells_table(view)}
</section>
</body></html>
"""


def _options_text(options: dict) -> str:
    shown = {k: v for k, v in options.items() if v is not None}
    return ", ".join(f"{k} {v}" for k, v in shown.items())


def _levels(view) -> str:
    levels = sorted({r["interval"] for r in view.rows if r.get("interval")})
    return ", ".join(levels) or "none"
