"""Energy per layer of a trace file: the timeline, the sensor's updates, the estimate."""
from __future__ import annotations

from ..sources import sensor_updates
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
    channel = f"{device}.power_instant"
    instants, values = sensor_updates(log.of(channel))
    watts = values * log.channels[log.channel_index(channel)].watts_per_unit
    span = (int(trace.inferences["start_ns"].min()), int(trace.inferences["end_ns"].max()))
    measured = log.energy_between(device, *span)
    starts, ends, labels, names = scope_timeline(trace)
    est = estimate_label_power(
        starts, ends, labels, names, instants, watts, sensor, span,
        measured_j=measured.joules if measured.measured else None, **options,
    )
    est.notes.append(f"sensor model: {sensor.source}")
    return est
