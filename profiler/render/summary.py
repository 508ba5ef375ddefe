"""The end-of-run summary of a recording (``phprof trace``, ``phprof run``, ``%%phprof``), as text.

Renders a :class:`phprof.tracing.session.TraceSummary` (its ``VIEW`` is
``"summary"``): what ran, on which device, measured by which power source,
how the inferences were found, their time and, with a sensor, the energy
over the profiler windows' spans with its method and uncertainty; then the
notes and where the file is. Per-layer energy is ``phprof report``'s.
"""
from __future__ import annotations

from .base import Renderer, register
from .units import joules, profiler_overhead


def summary_lines(s) -> list[str]:
    what = f"{s.model} ({s.task})" if s.task else s.model
    out = [f"{s.status}: {s.inferences} inferences of {what}, {s.inference_s:.2f} s of their own time"
           + (f" ({1e3 * s.seconds_per_inference:.2f} ms per inference, profiler overhead included)"
              if s.inferences else "")]
    if s.device:
        chosen = ""
        if s.device_chosen:
            chosen = (", the first CUDA device torch sees" if s.device.startswith("cuda")
                      else ", as torch sees no CUDA GPU")
        out.append(f"device: {s.device}" + (f" ({s.device_name})" if s.device_name else "") + chosen
                   + f"; power source: {s.source or 'none'}")
    if s.inference_rule:
        out.append(f"inferences: {s.inference_rule}")
    if s.recording_s is not None:
        run = f"recorded for {s.recording_s:.2f} s"
        if s.recording_energy:
            run += ", " + "; ".join(f"{joules(m.joules)} ({m.kind}: {m.energy.method_text}, {m.device})"
                                    for m in s.recording_energy) + " in all"
        out.append(run)
    e = s.energy
    if e is None or e.joules is None:
        out.append("energy: not measured (the run had no power source; `phprof devices` lists this machine's)")
    else:
        j = s.joules_per_inference
        pm = f" +- {e.uncertainty_j:.2g} J" if e.uncertainty_j is not None else \
            " J" if e.low_j is None else f" J (at least {e.low_j:.4g} J, no upper bound)"
        gaps = s.span_s - s.inference_s
        out.append(f"energy: {e.joules:.4g}{pm} over the profiler windows' {s.span_s:.2f} s ({e.kind}: "
                   f"{e.energy.method_text}, {e.device}), {gaps:.2f} s between inferences included")
        if len(s.device_energy) > 1:
            out.append("  the sum of: " + "; ".join(
                f"{d.device} {'-' if d.joules is None else f'{d.joules:.4g} J'} ({d.kind}: {d.energy.method_text})"
                for d in s.device_energy))
        host = any(not d.device.startswith("gpu") for d in s.device_energy) and \
            any(d.device.startswith("gpu") for d in s.device_energy)
        out.append(f"  that is {j:.4g} J per inference, {j * 1000:.4g} J = {j * 1000 / 3.6e6:.3g} kWh per 1,000, "
                   + ("gaps and the host's zones included; `phprof report` gives the inferences' own on the GPUs, "
                      "the host's apart" if host else "gaps included; `phprof report` gives the inferences' own"))
    out += measured_lines(s)
    for note in dict.fromkeys(list(s.notes) + (list(e.notes) if e else [])):
        out.append(f"  note: {note}")
    out.append(f"written: {s.path}")
    if s.inferences:
        out.append(f"per layer: phprof report {s.path}")
    return out


def measured_lines(s) -> list[str]:
    """The measurement pass (profiler off) and the profiler's overhead against it."""
    m = s.measured
    if m is None:
        return []
    if not m.inferences:
        return ["measurement pass (profiler off): stopped before its first inference"]
    out = [f"measurement pass (profiler off, power source only): {m.inferences} inferences, "
           f"{1e3 * m.seconds_per_inference:.3f} ms per inference of their own time"]
    j = m.joules_per_inference
    if j is not None:
        e = m.energy
        out.append(f"  {j:.4g} J per inference, {j * 1000:.4g} J = {j * 1000 / 3.6e6:.3g} kWh per 1,000 ({e.kind}: "
                   f"{e.energy.method_text}), over its {m.span_s:.2f} s, {m.paused_s:.2f} s of anti-aliasing "
                   "pauses included")
    if s.inferences and m.inferences:
        line = "profiler overhead: " + profiler_overhead(
            m, s, None if m.energy is None else m.energy.energy, None if s.energy is None else s.energy.energy,
            on_gpu=s.device.startswith("cuda"))
        out.append(line)
    return out


@register
class TextSummary(Renderer):
    view, name, suffixes = "summary", "text", (".txt",)

    def render(self, view) -> str:
        return "\n".join(summary_lines(view)) + "\n"
