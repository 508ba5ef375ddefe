"""The report of an attributed trace: a terminal table, markdown, or JSON.

Renders what ``phprof.attribution.results`` produced (a summary, the tables,
the roll-ups); it computes nothing. Every energy says how it was obtained
(measured by the device's counter, or estimated by the sensor model) and
carries its interval.
"""
from __future__ import annotations

import json
import math

import numpy as np

from .attribution.results import plain

def _j(x: float | None) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    ax = abs(x)
    if ax >= 1e3:
        return f"{x / 1e3:.3g} kJ"
    if ax >= 1 or ax == 0:
        return f"{x:.3g} J"
    if ax >= 1e-3:
        return f"{x * 1e3:.3g} mJ"
    return f"{x * 1e6:.3g} µJ"


def _interval(lo, hi) -> str:
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return "-"
    return f"[{_j(lo)}, {_j(hi)}]"


def _amount(d: dict | None) -> str:
    if d is None:
        return "-"
    i = _interval(d.get("low_j"), d.get("high_j"))
    return _j(d["joules"]) + ("" if i == "-" else f" {i}")


def _estimate(d: dict | None) -> str:
    """An amount of the attribution (not the counter's reading), labelled as such."""
    return "-" if d is None else f"{_amount(d)}, estimated"


def top_layers(tables: dict, top: int) -> list[dict]:
    """The resolved labels by energy, largest first (merged groups whole)."""
    g = tables["groups"]
    order = np.argsort(-np.asarray(g["energy_j"], float))[:top]
    return [{k: (v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in g.items()} for i in order]


def _layer_rows(summary: dict, tables: dict, top: int) -> tuple[list[str], list[list[str]]]:
    total = summary["inferences_energy"]["joules"]
    per = summary["inferences"]
    head = ["layer", "energy / inference", f"{summary['interval']:.0%} interval", "energy share", "time share",
            "power"]
    layer_time = float(np.sum(tables["groups"]["seconds"]))
    rows = []
    for r in top_layers(tables, top):
        rows.append([r["label"], _j(r["energy_j"] / per), _interval(r["low_j"] / per, r["high_j"] / per),
                     f"{r['energy_j'] / total:.1%}", f"{r['seconds'] / layer_time:.1%}", f"{r['power_w']:.0f} W"])
    return head, rows


def summary_lines(summary: dict, roll: dict) -> list[tuple[str, str]]:
    """The report's summary as (what, figure) pairs, for every renderer."""
    s = summary
    total = s["total"]
    if s["total_measured"]:
        unc = s.get("total_uncertainty_j")
        run = _j(total["joules"]) + ("" if unc is None else f" +- {_j(unc)} (the counter's resolution)") + \
            f", measured ({total['method']})"
    else:
        run = f"{_amount(total)}, estimated ({total['method']})"
    sensor = s["sensor"]
    lines = [
        ("model", f"{s['model']} ({s['task']}), {s['inferences']} inferences, trace {s['trace_status']}"),
        ("device", f"{s['device']} {s.get('device_name') or ''}".strip()),
        ("energy over the run", f"{run}, over {s['span_s']:.1f} s"),
        ("  inferences' own", f"{_estimate(s['inferences_energy'])}, in {s['inference_s']:.1f} s"
                              f" (between them: {_j(s['between_inferences_j'])}, pauses and profiler saves)"),
    ]
    if s.get("idle_w") is not None:
        lines.append(("  static / active", f"{_j(s['static_j'])} static (idle {s['idle_w']:.1f} W, measured before "
                                           f"the run) / {_j(s['active_j'])} active"))
    lines += [
        ("per inference", _estimate(roll["per_inference"])),
        ("per 1,000 inferences", f"{_estimate(roll['per_1000'])}: {roll['per_1000']['wh']:.4g} Wh = "
                                 f"{roll['per_1000']['kwh']:.4g} kWh"),
    ]
    if "per_token" in roll:
        lines.append(("per generated token", f"{_estimate(roll['per_token'])}, over {roll['tokens']} tokens; "
                                             f"prefill {_amount(roll.get('per_prefill'))}, decode step "
                                             f"{_amount(roll.get('per_decode_step'))}"))
    if "per_image" in roll:
        lines.append(("per image", f"{_estimate(roll['per_image'])}; per denoising step "
                                   f"{_amount(roll.get('per_denoising_step'))}"))
    c = roll["carbon"]
    lo, hi = c.get("per_1000_low_g"), c.get("per_1000_high_g")
    rng = f" [{lo:.3g}, {hi:.3g}]" if lo is not None and hi is not None else ""
    pue = f"PUE {roll['pue']:g}" + ("" if roll["pue"] == 1 else " (in the carbon only: the energies are the device's)")
    lines.append(("carbon per 1,000", f"{c['per_1000_g']:.3g}{rng} gCO2eq, estimated, at {c['g_co2eq_per_kwh']:g} "
                                      f"g/kWh ({c['name']}, {c['source']}), {pue}"))
    if "parity" in roll:
        p = roll["parity"]
        lines.append(("training parity", f"{p['inferences']:.3g} inferences use the {p['training_kwh']:g} kWh "
                                         "of training"))
    for k, v in (s.get("phases") or {}).items():
        lines.append((f"phase {k}", f"{_estimate(v)}, over {v['count']} ({_j(v['joules'] / v['count'])} each)"))
    residual = "" if s["residual_w"] is None else f" (RMS residual {s['residual_w']:.2f} W)"
    lines += [
        ("method", f"{s['method']}, from {s['sensor_updates']} sensor updates{residual}; "
                   f"timeline: {s['timeline']}"),
        ("sensor model", f"update {sensor['period_s'] * 1e3:.0f} ms, window {sensor['window_s'] * 1e3:.0f} ms, "
                         f"lag {sensor['lag_s'] * 1e3:+.0f} ms: {sensor['source']}"),
    ]
    return lines


def render_text(summary: dict, tables: dict, roll: dict, top: int = 15) -> str:
    lines = summary_lines(summary, roll)
    width = max(len(k) for k, _ in lines)
    out = [f"{k:<{width}}  {v}" for k, v in lines]
    head, rows = _layer_rows(summary, tables, top)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    out.append("")
    out.append(f"top {len(rows)} layers by energy (estimated; shares of the inferences' own energy and time):")
    out.append("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths))))
    for r in rows:
        out.append("  ".join(x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in enumerate(zip(r, widths))))
    comp = tables.get("components") or {}
    if len(comp.get("component", [])):
        out.append("")
        out.append("by component (estimated):")
        per = summary["inferences"]
        total = summary["inferences_energy"]["joules"]
        for name, e, lo, hi in zip(comp["component"], comp["energy_j"], comp["low_j"], comp["high_j"]):
            out.append(f"  {name:<15} {_j(e / per):>10} / inference  {_interval(lo / per, hi / per):>24}  "
                       f"{e / total:6.1%}")
    kernels = tables.get("kernels") or {}
    if len(kernels.get("name", [])):
        out.append("")
        out.append("top kernels (each at its layer's estimated power):")
        per = summary["inferences"]
        for name, calls, e in list(zip(kernels["name"], kernels["calls"], kernels["energy_j"]))[:top]:
            out.append(f"  {_j(e / per):>10} / inference  {int(calls):>8} calls  {name[:90]}")
    out.append("")
    out += [f"note: {n}" for n in summary["notes"]]
    return "\n".join(out) + "\n"


def render_markdown(summary: dict, tables: dict, roll: dict, top: int = 15) -> str:
    out = ["| | |", "|---|---|"]
    out += [f"| {k.strip()} | {v.replace('|', '/')} |" for k, v in summary_lines(summary, roll)]
    head, rows = _layer_rows(summary, tables, top)
    out += ["", "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    out += ["| `" + r[0] + "` | " + " | ".join(r[1:]) + " |" for r in rows]
    out += [""] + [f"- {n}" for n in summary["notes"]]
    return "\n".join(out) + "\n"


def render_json(summary: dict, tables: dict, roll: dict) -> str:
    return json.dumps(plain({"summary": summary, "rollups": roll, "tables": tables}), indent=1) + "\n"
