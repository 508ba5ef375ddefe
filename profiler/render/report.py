"""The report of one trace: a terminal table, markdown, JSON, or one HTML page.

Renders a :class:`~phprof.render.views.Report` (a trace's results and
roll-ups); it computes nothing. Every energy says how it was obtained
(measured by the device's counter, or estimated by the sensor model) and
carries its interval. A trace without energy gets its time per layer, and why.

The page is the flamegraph page (``phprof.render.flamegraph``) with the
summary above it, and below it power over time (the sensor's updates and
windows against the power the estimate implies) and each layer's energy share
against its time share.
"""
from __future__ import annotations

import dataclasses
import json
import math
from html import escape

import numpy as np

from ..energy import Energy, Method
from ..store.results import RESULTS_VERSION, Results, Role, Rollups
from .base import Renderer, register
from .flamegraph import flamegraph_html
from .frames import frame_tree
from .palette import KINDS, colour, kind_of
from .plots import power_plot, share_bars
from .units import aligned, amount, estimate, interval, joules, markdown_table, profiler_overhead


def summary_lines(r: Results, roll: Rollups) -> list[tuple[str, str]]:
    """The report's summary as (what, figure) pairs, for every renderer."""
    total = r.total
    if r.total_measured:
        unc = r.total_uncertainty_j
        if unc is not None:
            bound = f" +- {joules(unc)} (the counter's updates around each end)"
        elif total.low_j is not None:
            bound = f" (at least {joules(total.low_j)}: no counter update after the end bounds it above)"
        else:
            bound = ""
        run = joules(total.joules) + bound + f", measured ({total.method_text})"
    else:
        run = f"{amount(total)}, estimated ({total.method_text})"
    sensor = r.sensor
    lines = [
        ("model", f"{r.model} ({r.task}), {r.inferences} inferences, trace {r.trace_status}"),
        ("device", f"{r.device} {r.device_name or ''}".strip()),
        ("energy over the run", f"{run}, over {r.span_s:.1f} s"),
        ("  inferences' own", f"{estimate(r.inferences_energy)}, in {r.inference_s:.1f} s"
                              f" (between them: {joules(r.between_inferences_j)} in {r.span_s - r.inference_s:.1f} s"
                              ": the loop's or program's own work, anti-aliasing pauses, profiler warm-up steps "
                              "and saves)"),
    ]
    lines += device_lines(r)
    if r.idle_w is not None:
        lines.append(("  static / active", f"{joules(r.static_j)} static (idle {r.idle_w:.1f} W, measured before "
                                           f"the run) / {joules(r.active_j)} active"))
    lines += pass_lines(r)
    scaled = "" if r.split_scale is None else f" (the profiled split x {r.split_scale:.3f}: the measurement pass's)"
    lines += [
        ("per inference", estimate(roll.per_inference) + scaled),
        ("per 1,000 inferences", f"{estimate(roll.per_1000)}: {roll.per_1000_wh:.4g} Wh = "
                                 f"{roll.per_1000_kwh:.4g} kWh"),
    ]
    if roll.per_token is not None:
        lines.append(("per generated token", f"{estimate(roll.per_token)}, over {roll.tokens} tokens; "
                                             f"prefill {amount(roll.per_prefill)}, decode step "
                                             f"{amount(roll.per_decode_step)}"))
    if roll.per_image is not None:
        lines.append(("per image", f"{estimate(roll.per_image)}; per denoising step "
                                   f"{amount(roll.per_denoising_step)}"))
    c = roll.carbon
    lo, hi = c.per_1000_low_g, c.per_1000_high_g
    rng = f" [{lo:.3g}, {hi:.3g}]" if lo is not None and hi is not None else ""
    pue = f"PUE {roll.pue:g}" + ("" if roll.pue == 1 else " (in the carbon only: the energies are the device's)")
    lines.append(("carbon per 1,000", f"{c.per_1000_g:.3g}{rng} gCO2eq, estimated, at {c.g_co2eq_per_kwh:g} "
                                      f"g/kWh ({c.name}, {c.source}), {pue}"))
    if roll.parity_inferences is not None:
        lines.append(("training parity", f"{roll.parity_inferences:.3g} inferences use the {roll.training_kwh:g} kWh "
                                         "of training"))
    for p in r.phases:
        lines.append((f"phase {p.name}", f"{estimate(p.energy)}, over {p.count} "
                                         f"({joules(p.energy.joules / p.count)} each)"))
    residual = "" if r.residual_w is None else f" (RMS residual {r.residual_w:.2f} W)"
    lines += [
        ("method", f"{r.method.text()}, from {r.sensor_updates} sensor updates{residual}; timeline: {r.timeline}"),
    ]
    if sensor is not None:
        lines.append(("sensor model", f"{sensor.describe()}: {sensor.source}"))
    if r.several_devices:
        for d in r.attributed_devices:
            fit = "" if d.residual_w is None else f", RMS residual {d.residual_w:.2f} W"
            model = "no sensor model (its counter split by time)" if d.sensor is None else \
                f"{d.sensor.describe()}: {d.sensor.source}"
            lines.append((f"sensor model {d.device}", f"{model} ({d.sensor_updates} updates{fit})"))
    return lines


def device_rows(r: Results) -> tuple[list[str], list[list[str]]]:
    """Each device of a run attributed over several: its energy over the run (measured by its
    counter, or estimated), its inferences' own, its estimate's method, its kernels' time and its
    wait for the others (inside the inferences, none of its kernels running while another device
    runs one; in brackets its draw meanwhile, estimated at its no-kernel power)."""
    head = ["device", "where", "name", "energy over the run", "how", "inferences' own", "method", "busy", "waits"]
    rows = []
    for d in r.devices:
        unc = "" if d.total_uncertainty_j is None else f" +- {joules(d.total_uncertainty_j)}"
        total = f"{joules(d.total.joules)}{unc}" if d.total is not None else "-"
        how = "-" if d.total is None else f"{d.total.kind} ({d.total.method_text})"
        if not d.attributed:  # measured beside the GPUs: its energy only, no layers, kernels or waits
            rows.append([d.device, "-", d.name or "-", total, how, "-", "kept whole", "-", "-"])
            continue
        rows.append([d.device, d.cuda or "-", d.name or "-", total, how, amount(d.inferences_energy),
                     d.method.text() if d.method else "-", f"{d.busy_s:.3f} s",
                     f"{d.waiting_s:.3f} s" + ("" if d.waiting is None else f" ({joules(d.waiting.joules)})")])
    return head, rows


def _device_text(r: Results) -> list[str]:
    if not r.several_devices:
        return []
    return ["", "by device (each against its own sensor; the run's figures are these added up; waits: inside the "
                "inferences, none of its kernels running while another device runs one, and its draw meanwhile, "
                "estimated):"] + \
        ["  " + x for x in aligned(*device_rows(r))]


def device_lines(r: Results) -> list[tuple[str, str]]:
    """With devices measured beside the attributed ones (a host's RAPL zones): each device's
    energy, split by layer or kept whole (and why), and all of them added; none without."""
    if not r.kept_whole:
        return []
    out = []
    for d in r.devices:
        e = d.total
        what = "split by layer below" if d.attributed else f"kept whole, not per layer: {d.kept_whole}"
        figure = "-" if e is None else f"{joules(e.joules)} {e.kind} ({e.method_text})"
        out.append((f"  {d.device}", figure + (f", {d.name}" if d.name else "") + f": {what}"))
    t = r.run_total
    if t is not None:
        rng = f" [{joules(t.low_j)}, {joules(t.high_j)}]" if t.has_range else ""
        out.append(("all devices", f"{joules(t.joules)}{rng} {t.kind} ({t.method_text}): the sum of "
                                   f"{', '.join(d.device for d in r.devices)}, over the same {r.span_s:.1f} s"))
    return out


def pass_lines(r: Results) -> list[tuple[str, str]]:
    """The measurement pass (profiler off), the profiled pass, and the profiler's overhead."""
    m, p = r.measurement_pass, r.profiled_pass
    if m is None:
        return []

    def one(x) -> str:
        e = x.energy
        j = "" if x.joules_per_inference is None else \
            f", {joules(x.joules_per_inference)} per inference ({e.kind}: {e.method_text})"
        return f"{x.inferences} inferences, {1e3 * x.seconds_per_inference:.3f} ms each{j}, over {x.span_s:.1f} s"

    if not m.inferences or not p.inferences:
        return [("measurement pass", f"{m.inferences} inferences (the profiler off); the profiled pass "
                                     f"{p.inferences}: no overhead figure")]
    out = [("measurement pass", one(m) + " (the profiler off; pauses between inferences included)"),
           ("profiled pass", one(p) + " (the windows' spans; their saves left out)")]
    over = profiler_overhead(m, p, m.energy, p.energy, on_gpu=r.timeline == "device kernels")
    out.append(("profiler overhead", over))
    return out


def top_groups(r: Results, top: int) -> list:
    """The resolved labels by energy, largest first (merged groups whole)."""
    order = np.argsort(-np.array([g.energy.joules for g in r.groups], float))[:top]
    return [r.groups[i] for i in order]


def _layer_rows(r: Results, top: int) -> tuple[list[str], list[list[str]]]:
    total = r.inferences_energy.joules
    head = ["layer", "energy / inference" + ("" if r.split_scale is None else " (scaled)"),
            f"{r.interval:.0%} interval", "energy share", "time share", "power"]
    several = r.several_devices
    if several:  # a time share of each device's time: the devices' times overlap
        head.insert(1, "device")
    layer_time = {}
    for g in r.groups:
        layer_time[g.device] = layer_time.get(g.device, 0.0) + g.seconds
    rows = []
    for g in top_groups(r, top):
        e = r.scaled_split(g.energy, 1 / r.inferences)  # per inference, scaled to the measurement pass
        rows.append([g.label, joules(e.joules), interval(e.low_j, e.high_j),
                     f"{g.energy.joules / total:.1%}", f"{g.seconds / (layer_time[g.device] or 1.0):.1%}",
                     f"{g.power_w:.0f} W"])
        if several:
            rows[-1].insert(1, g.device)
    return head, rows


def _time_rows(r: Results) -> list[tuple[str, float]]:
    """A trace without energy: each label's own time, longest first."""
    labels = [x for x in r.layers if not x.role.between_inferences]
    seconds = np.array([x.seconds for x in labels])
    return [(labels[j].label, float(seconds[j])) for j in np.argsort(-seconds) if seconds[j] > 0]


@register
class TextReport(Renderer):
    """Aligned tables for a terminal."""

    view, name, suffixes = "report", "text", (".txt",)
    options = {"top": 15}

    def render(self, view) -> str:
        r, roll, top = view.results, view.rollups, self.top
        if not r.has_energy:
            return _time_only_text(r, top)
        lines = summary_lines(r, roll)
        width = max(len(k) for k, _ in lines)
        out = [f"{k:<{width}}  {v}" for k, v in lines]
        out += _device_text(r)
        head, rows = _layer_rows(r, top)
        out.append("")
        out.append(f"top {len(rows)} layers by energy (estimated; shares of the inferences' own energy and "
                   f"{'its device' + chr(39) + 's' if r.several_devices else 'their'} time):")
        out += aligned(head, rows)
        total = r.inferences_energy.joules
        scaled = "" if r.split_scale is None else ", scaled to the measurement pass"
        if r.components:
            out.append("")
            out.append(f"by component (estimated{scaled}):")
            for c in r.components:
                e = r.scaled_split(c.energy, 1 / r.inferences)
                out.append(f"  {c.component:<15} {joules(e.joules):>10} / inference  "
                           f"{interval(e.low_j, e.high_j):>24}  {c.energy.joules / total:6.1%}")
        if r.kernels:
            out.append("")
            out.append(f"top kernels (each at its layer's estimated power{scaled}):")
            for k in r.kernels[:top]:
                on = f"{k.device:<6} " if r.several_devices else ""
                per_inference = r.scaled_split(k.energy, 1 / r.inferences).joules
                out.append(f"  {joules(per_inference):>10} / inference  {k.calls:>8} calls  {on}{k.name[:90]}")
        out.append("")
        out += [f"note: {x}" for x in r.notes]
        return "\n".join(out) + "\n"


def _time_only_text(r: Results, top: int) -> str:
    rows = _time_rows(r)
    n = r.inferences
    total = sum(v for _, v in rows) or 1.0
    out = [f"energy: not measured ({r.why_no_energy})",
           f"time per layer over {n} inferences ({r.timeline}), measured by the profiler:"]
    for label, sec in rows[:top]:
        out.append(f"  {1e3 * sec / max(n, 1):10.3f} ms / inference  {sec / total:6.1%}  {label}")
    return "\n".join(out) + "\n"


@register
class MarkdownReport(Renderer):
    """Markdown tables, for an issue or a notebook."""

    view, name, suffixes = "report", "markdown", (".md",)
    options = {"top": 15}

    def render(self, view) -> str:
        r = view.results
        if not r.has_energy:
            return _time_only_text(r, self.top)
        out = ["| | |", "|---|---|"]
        out += [f"| {k.strip()} | {v.replace('|', '/')} |" for k, v in summary_lines(r, view.rollups)]
        if r.several_devices:
            out += ["", "By device (each against its own sensor; the run's figures are these added up):", ""]
            out += markdown_table(*device_rows(r))
        head, rows = _layer_rows(r, self.top)
        out += ["", "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
        out += ["| `" + row[0] + "` | " + " | ".join(row[1:]) + " |" for row in rows]
        out += [""] + [f"- {x}" for x in r.notes]
        return "\n".join(out) + "\n"


@register
class JsonReport(Renderer):
    """Everything: the summary, the roll-ups and every table (a trace without energy: its times, and why)."""

    view, name, suffixes = "report", "json", (".json",)

    def render(self, view) -> str:
        r = view.results
        if not r.has_energy:
            return json.dumps({"energy": None, "why": r.why_no_energy, "inferences": r.inferences,
                               "timeline": r.timeline,
                               "layers": [{"label": k, "seconds": v} for k, v in _time_rows(r)]}, indent=1) + "\n"
        return json.dumps(_plain({"summary": _summary_json(r), "rollups": _rollups_json(view.rollups),
                                  "tables": _tables_json(r)}), indent=1) + "\n"


def _energy_json(e: Energy | None) -> dict | None:
    return None if e is None else {"joules": e.joules, "low_j": e.low_j, "high_j": e.high_j, "method": e.method_text}


def _summary_json(r: Results) -> dict:
    return {
        "results_version": RESULTS_VERSION, "model": r.model, "task": r.task, "device": r.device,
        "device_name": r.device_name, "trace_status": r.trace_status, "inferences": r.inferences,
        "span_s": r.span_s, "inference_s": r.inference_s, "batch_size": r.batch_size,
        "total": _energy_json(r.total), "total_measured": r.total_measured,
        "inferences_energy": _energy_json(r.inferences_energy), "between_inferences_j": r.between_inferences_j,
        "total_uncertainty_j": r.total_uncertainty_j, "idle_w": r.idle_w, "static_j": r.static_j,
        "active_j": r.active_j, "method": r.method.text(), "interval": r.interval, "timeline": r.timeline,
        "sensor": None if r.sensor is None else dataclasses.asdict(r.sensor),
        "sensor_updates": r.sensor_updates, "residual_w": r.residual_w, "scale": r.scale,
        "phases": {p.name: {**_energy_json(p.energy), "count": p.count} for p in r.phases},
        "measurement_pass": _pass_json(r.measurement_pass), "profiled_pass": _pass_json(r.profiled_pass),
        "split_scale": r.split_scale,
        "devices": [{"device": d.device, "id": d.id, "name": d.name, "cuda": d.cuda, "total": _energy_json(d.total),
                     "total_measured": d.total is not None and d.total.measured,
                     "total_uncertainty_j": d.total_uncertainty_j,
                     "inferences_energy": _energy_json(d.inferences_energy),
                     "method": d.method.text() if d.method else None,
                     "sensor": None if d.sensor is None else dataclasses.asdict(d.sensor),
                     "sensor_updates": d.sensor_updates, "residual_w": d.residual_w, "scale": d.scale,
                     "idle_w": d.idle_w, "busy_s": d.busy_s, "waiting_s": d.waiting_s,
                     "waiting": _energy_json(d.waiting), "split_by_layer": d.attributed,
                     "kept_whole": d.kept_whole or None} for d in r.devices],
        "run_total": _energy_json(r.run_total),  # all devices added (null without a device kept whole: total)
        "notes": r.notes,
    }


def _pass_json(p) -> dict | None:
    return None if p is None else {"inferences": p.inferences, "inference_s": p.inference_s, "span_s": p.span_s,
                                   "seconds_per_inference": p.seconds_per_inference,
                                   "joules_per_inference": p.joules_per_inference, "energy": _energy_json(p.energy)}


def _columns(rows, **columns) -> dict[str, list]:
    return {name: [get(x) for x in rows] for name, get in columns.items()}


def _tables_json(r: Results) -> dict:
    def energy(part):
        return {"energy_j": lambda x: x.energy.joules, "low_j": lambda x: x.energy.low_j,
                "high_j": lambda x: x.energy.high_j, "method": lambda x: x.energy.method_text}[part]

    return {
        "layers": _columns(
            r.layers, label=lambda x: x.label, group=lambda x: x.group, parent=lambda x: x.parent,
            calls=lambda x: x.calls, component=lambda x: x.component, part=lambda x: x.part,
            stack=lambda x: x.stack, unclassified=lambda x: x.unclassified, module_type=lambda x: x.module_type,
            parameters=lambda x: x.parameters, inclusive_low_j=lambda x: x.inclusive_low_j,
            inclusive_high_j=lambda x: x.inclusive_high_j, device=lambda x: x.device, seconds=lambda x: x.seconds,
            power_w=lambda x: x.power_w, energy_j=energy("energy_j"), low_j=energy("low_j"), high_j=energy("high_j"),
            method=energy("method")),
        "groups": _columns(r.groups, label=lambda x: x.label, device=lambda x: x.device, seconds=lambda x: x.seconds,
                           power_w=lambda x: x.power_w, energy_j=energy("energy_j"), low_j=energy("low_j"),
                           high_j=energy("high_j")),
        "inferences": _columns(r.per_inference, energy_j=lambda e: e.joules, low_j=lambda e: e.low_j,
                               high_j=lambda e: e.high_j),
        "components": _columns(r.components, component=lambda x: x.component, seconds=lambda x: x.seconds,
                               energy_j=energy("energy_j"), low_j=energy("low_j"), high_j=energy("high_j"),
                               method=energy("method")),
        "stack_components": _columns(r.stack_components, stack=lambda x: x.stack, component=lambda x: x.component,
                                     seconds=lambda x: x.seconds, energy_j=energy("energy_j"),
                                     low_j=energy("low_j"), high_j=energy("high_j"), method=energy("method")),
        "leaves": _columns(r.leaves, layer=lambda x: x.layer, device=lambda x: x.device, name=lambda x: x.name,
                           kind=lambda x: x.kind,
                           calls=lambda x: x.calls, seconds=lambda x: x.seconds, energy_j=energy("energy_j")),
        "kernels": _columns(r.kernels, name=lambda x: x.name, device=lambda x: x.device, calls=lambda x: x.calls,
                            seconds=lambda x: x.seconds,
                            energy_j=energy("energy_j")),
    }


def _rollups_json(roll: Rollups) -> dict:
    c = roll.carbon
    out = {
        "per_inference": _energy_json(roll.per_inference),
        "per_1000": {**_energy_json(roll.per_1000), "wh": roll.per_1000_wh, "kwh": roll.per_1000_kwh},
        "pue": roll.pue,
        "carbon": {"region": c.region, "name": c.name, "g_co2eq_per_kwh": c.g_co2eq_per_kwh, "year": c.year,
                   "source": c.source, "per_1000_g": c.per_1000_g, "per_1000_low_g": c.per_1000_low_g,
                   "per_1000_high_g": c.per_1000_high_g},
    }
    for key in ("per_prefill", "per_decode_step"):
        if getattr(roll, key) is not None:
            out[key] = _energy_json(getattr(roll, key))
    if roll.per_token is not None:
        out["tokens"], out["per_token"] = roll.tokens, _energy_json(roll.per_token)
    for key in ("per_denoising_step", "per_image"):
        if getattr(roll, key) is not None:
            out[key] = _energy_json(getattr(roll, key))
    if roll.parity_inferences is not None:
        out["parity"] = {"training_kwh": roll.training_kwh, "inferences": roll.parity_inferences}
    return out


def _plain(v):
    """JSON-able: numpy scalars as Python ones, non-finite floats None."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


# ---- the page --------------------------------------------------------------------------------
@register
class ReportPage(Renderer):
    """One self-contained HTML page: the summary, the flamegraph, power over time, energy against time."""

    view, name, suffixes = "report", "html", (".html",)
    options = {"top": 25}

    def render(self, view) -> str:
        r = view.results
        if not r.has_energy:
            return _time_only_page(r)
        roll = view.rollups
        rows = "".join(f"<tr><th>{escape(k.strip())}</th><td>{escape(v)}</td></tr>"
                       for k, v in summary_lines(r, roll))
        notes = "".join(f"<li>{escape(n)}</li>" for n in r.notes)
        bars = _layer_shares(r, self.top)
        legend = "".join(f'<span class="key"><i style="background:{colour(k)}"></i>{k}</span>'
                         for k in KINDS if k not in ("kernel", "collapsed"))
        excerpt = view.excerpt
        before = f"""
<section class="panel">
  <h2>Summary</h2>
  <table class="summary">{rows}</table>{_device_html(r)}
</section>"""
        power = "" if excerpt is None else f"""
  <h2>Power over {excerpt.seconds * 1e3:.0f} ms of the run{f" on {excerpt.device}" if r.several_devices else ""}</h2>
  <p class="explain">Red: what the sensor reported ({r.sensor_updates} updates over the run), each value
  held until the next; yellow: the window each value averaged, as placed by the sensor model; blue: the power the
  estimate implies (every layer at its fitted power); shaded: inferences; strip: what ran.</p>
  {power_plot(excerpt)}
  <div class="legend">{legend}</div>"""
        after = f"""
<section class="panel">{power}
  <h2>Energy share against time share (top {len(bars)} layers)</h2>
  <p class="explain">Solid bar: the layer's share of the inferences' energy (estimated; * marks a layer the sensor
  could not resolve alone, split by time within its group); outline: its share of their time (measured{
  ", of its own GPU's time" if r.several_devices else ""}). A layer
  whose bars differ draws more or less than the average power.</p>
  {share_bars(bars)}
  <h2>Notes</h2>
  <ul class="notes">{notes}</ul>
</section>"""
        return flamegraph_html(frame_tree(r), before=before, after=after)


def _device_html(r: Results) -> str:
    """The devices' table of a run attributed over several ("" for one)."""
    if not r.several_devices:
        return ""
    head, rows = device_rows(r)
    cells = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"""
  <h2>By device</h2>
  <p class="explain">Each GPU's kernels attributed against its own sensor; the run's figures are these added up.
  Waits: inside the inferences, none of its kernels running while another GPU runs one.</p>
  <table class="devices"><tr>{"".join(f"<th>{escape(h)}</th>" for h in head)}</tr>{cells}</table>"""


def _layer_shares(r: Results, top: int) -> list[tuple[str, str, float, float]]:
    """The layers with the most energy (module scopes only), with their energy and time shares."""
    total = r.inferences_energy.joules or 1.0
    time: dict[str, float] = {}  # per device (the devices' times overlap)
    for x in r.layers:
        if not x.role.between_inferences:
            time[x.device] = time.get(x.device, 0.0) + x.seconds
    on = (lambda x: f" ({x.device})") if r.several_devices else (lambda x: "")
    rows = [(x.label + on(x) + ("" if x.energy.method is Method.WLS else " *"),
             kind_of(x.component), x.energy.joules / total, x.seconds / (time[x.device] or 1.0))
            for x in r.layers if x.role is Role.MODULE]
    return sorted(rows, key=lambda row: -row[2])[:top]


def _time_only_page(r: Results) -> str:
    """The page of a trace without energy: why, and its flamegraph by time."""
    rows = [("model", f"{r.model} ({r.task}), {r.inferences} inferences, trace {r.trace_status}"),
            ("energy", f"not measured ({r.why_no_energy})"),
            ("time", f"{r.inference_s:.1f} s in the inferences, measured by the profiler; timeline: {r.timeline}")]
    table = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    notes = "".join(f"<li>{escape(n)}</li>" for n in r.notes)
    before = f"""
<section class="panel">
  <h2>Summary</h2>
  <table class="summary">{table}</table>
</section>"""
    after = f"""
<section class="panel">
  <h2>Notes</h2>
  <ul class="notes">{notes or "<li>none</li>"}</ul>
</section>"""
    return flamegraph_html(frame_tree(r), before=before, after=after)
