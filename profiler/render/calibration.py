"""A sensor calibration (``phprof calibrate``) as text or JSON.

Renders a :class:`~phprof.store.calibration.Calibration`; it computes nothing.
Every fitted figure is printed with its 90% interval, a note where it reaches a
limit of the search, and "not identified" with the reason where the data could
not fix it.
"""
from __future__ import annotations

import json

from ..store.calibration import Calibration, FieldCalibration, StepResponse, plain
from .base import Renderer, register


def _ms(x: float | None, digits: int = 0) -> str:
    return "?" if x is None else f"{x * 1e3:.{digits}f} ms"


def step_line(s: StepResponse, t0: float) -> str:
    what = "on" if s.rising else "off"
    span = f"{'10-90%' if s.rising else '90-10%'} "
    span += (f"within one update (< {_ms(s.resolution_s)})" if s.rise_s is not None and s.rise_s < s.resolution_s / 2
             else f"in {_ms(s.rise_s)} (+- {_ms(s.resolution_s)})")
    out = (f"load {what} at +{s.edge_s - t0:.2f} s: {s.before_w:.0f} -> {s.after_w:.0f} W, half-way after "
           f"{_ms(s.delay_s)}, {span}")
    if s.excess_w is not None:
        out += f"; 1-2 s later {s.excess_w:+.0f} W against the idle before the load"
    if s.settle_band_w is not None:
        out += (f", within {s.settle_band_w:.0f} W of it after {_ms(s.settle_s)}" if s.settle_s is not None
                else f", not back within {s.settle_band_w:.0f} W of it by the end of the log")
    return out


def field_lines(f: FieldCalibration, t0: float) -> list[str]:
    nvml = f" (NVML {f.nvml_field})" if f.nvml_field and f.nvml_field != f.field else ""
    head = (f"field {f.field}{nvml}: fitted against the {f.against}; {f.readings} readings (median gap "
            f"{_ms(f.poll_s, 1)}), {f.updates} changes of value")
    lines = [head]
    jitter = "" if f.jitter_s is None else f", jitter {_ms(f.jitter_s, 1)} RMS (polling's spread included)"
    rows = [("update period", f.period_s.text(1e3, "ms", 2) + jitter),
            ("window", f.window_s.text(1e3, "ms")),
            ("lag", f.lag_s.text(1e3, "ms")),
            ("window + lag", f.window_plus_lag_s.text(1e3, "ms"))]
    if f.residual_w is not None:
        rows.append(("fit", f"RMS residual {f.residual_w:.2f} W, against the readings' own spread {f.spread_w:.1f} W"))
    if f.low_w.known or f.against == "schedule":
        rows.append(("levels as read", f"off {f.low_w.text(1, 'W')}; on {f.high_w.text(1, 'W')}"))
    if f.against == "meter":
        rows.append(("against the meter", f"gain {f.gain.text(1, '', 3)}, offset {f.offset_w.text(1, 'W', 1)}"))
    lines += [f"  {k:<18} {v}" for k, v in rows]
    lines += [f"  step response      {step_line(s, t0)}" for s in f.steps]
    lines += [f"  note: {n}" for n in f.notes]
    return lines


@register
class CalibrationText(Renderer):
    view, name, suffixes = "calibration", "text", (".txt",)

    def render(self, cal: Calibration) -> str:
        t0 = min([s.edge_s for f in cal.fields for s in f.steps] + [s.edge_s for s in cal.meter] or [0.0])
        lines = [f"calibration of {cal.gpu or 'an unnamed GPU'} (driver {cal.driver or 'unknown'}): {cal.how}"]
        if cal.idle_w is not None:
            lines.append(f"  idle power (no load, energy counter): {cal.idle_w:.1f} W")
        for name, us in cal.nvml_call_us.items():
            lines.append(f"  one NVML read of {name}: {us:.1f} us (median)")
        if cal.meter_levels_w is not None:
            off, on = cal.meter_levels_w
            lines.append(f"meter (the load's true power): off {off:.1f} W, on {on:.1f} W (means over the schedule)")
            lines += [f"  step response      {step_line(s, t0)}" for s in cal.meter]
        for f in cal.fields:
            lines += field_lines(f, t0)
        lines += [f"note: {n}" for n in cal.notes]
        return "\n".join(lines) + "\n"


@register
class CalibrationJson(Renderer):
    view, name, suffixes = "calibration", "json", (".json",)

    def render(self, cal: Calibration) -> str:
        return json.dumps(plain(cal), indent=1) + "\n"
