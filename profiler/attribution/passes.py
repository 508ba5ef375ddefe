"""A run's two passes: the measurement pass (the profiler off) and the profiled one.

``phprof trace`` runs the inferences first with only the power source on, then
under the profiler. The measurement pass gives the run's time and energy per
inference without the profiler's own cost; the profiled pass gives the split
by layer. Each pass's energy is read off the power log over its own spans (the
measurement pass's first start to last end; the profiled windows' spans, so
that the pauses in which windows are saved are left out of both), the pauses
between inferences (anti-aliasing) included in both alike.
"""
from __future__ import annotations

import numpy as np

from ..energy import Energy
from ..sources import add_measurements
from ..store.results import PassEnergy


def passes(trace, devices) -> tuple[PassEnergy | None, PassEnergy | None]:
    """(measurement pass, profiled pass) of a trace; (None, None) without a measurement pass.
    ``devices``: the power devices read, their energies added (a name, or a list; none
    without power readings: times only)."""
    devices = [devices] if isinstance(devices, str) else list(devices)
    m = trace.measured_inferences
    if not len(m) or not len(trace.inferences):
        return None, None
    inf, win = trace.inferences, trace.windows
    win = win[win["last_inference"] >= 0]
    spans = [(int(a), int(b)) for a, b in zip(win["start_ns"], win["end_ns"])]
    measured_span = (int(m["start_ns"].min()), int(m["end_ns"].max()))
    log = trace.all_power()  # with the idle period's readings: a counter update before the measurement pass
    readable = bool(devices) and log is not None and all(d in log.devices for d in devices)
    name = "+".join(devices)
    measured_e = add_measurements([log.energy_between(d, *measured_span) for d in devices], name,
                                  (measured_span[1] - measured_span[0]) / 1e9).energy if readable else None
    profiled_e = _energy(add_measurements([e for d in devices for e in log.energies_between(d, spans)], name)) \
        if readable and spans else None
    return (PassEnergy(len(m), _own_s(m), (measured_span[1] - measured_span[0]) / 1e9, measured_e),
            PassEnergy(len(inf), _own_s(inf), sum(b - a for a, b in spans) / 1e9, profiled_e))


def _energy(m) -> Energy | None:
    return None if m.joules is None else m.energy


def _own_s(rows: np.ndarray) -> float:
    return float((rows["end_ns"] - rows["start_ns"]).sum()) / 1e9
