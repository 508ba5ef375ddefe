"""Energy per layer of a trace file: the timeline, the sensor's updates, the estimate."""
from __future__ import annotations

import numpy as np

from ..sources import value_changes
from .estimate import Estimate, estimate_label_power
from .sensor import NOMINAL_INSTANT, SensorModel
from .timeline import scope_timeline


def attribute(trace, sensor: SensorModel = NOMINAL_INSTANT, device: str | None = None, **options) -> Estimate:
    """Each innermost module scope's energy over the trace's inferences, from the
    instant power field's updates, scaled to the energy counter's total over the
    same span when the device has a counter."""
    if trace.power is None or not trace.power.channels:
        raise ValueError(f"{trace.path} has no power readings: energy cannot be attributed")
    device = device or trace.power.devices[0]
    log = trace.power
    r = log.of(f"{device}.power_instant")
    r = r[r["status"] == 0]
    lo, hi = value_changes(r)
    changed = np.flatnonzero(np.diff(r["value"]) != 0) + 1
    span = (int(trace.inferences["start_ns"].min()), int(trace.inferences["end_ns"].max()))
    measured = log.energy_between(device, *span)
    starts, ends, labels, names = scope_timeline(trace)
    est = estimate_label_power(
        starts, ends, labels, names, (lo + hi) / 2, r["value"][changed] * log.channels[
            log.channel_index(f"{device}.power_instant")].watts_per_unit, sensor, span,
        measured_j=measured.joules if measured.measured else None, **options,
    )
    est.notes.append(f"sensor model: {sensor.source}")
    return est
