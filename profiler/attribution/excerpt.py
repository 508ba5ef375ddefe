"""A short stretch of a run, as the estimate sees it: for the report's power plot.

:func:`power_excerpt` takes 1.5 s from the middle of the run: the sensor's
updates and the windows they averaged (with the sensor model the attribution
used), the inferences, what ran (each segment's component), and the power the
estimate implies there (each label's power while it runs, idle between),
binned to 1 ms. Times are seconds from the excerpt's start.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..store.results import Results, Role
from .timeline import trace_timeline


@dataclass(frozen=True)
class PowerExcerpt:
    seconds: float
    device: str
    updates: list[tuple[float, float]]  # (t, W) of each sensor update
    windows: list[tuple[float, float]]  # (from, to) of the window each update averaged
    inferences: list[tuple[float, float]]  # (from, to), clipped to the excerpt
    activity: list[tuple[float, float, str]]  # (from, to, component) of what ran
    model_w: list[tuple[float, float]]  # (bin start, W): the power the estimate implies, per 1 ms


def power_excerpt(trace, results: Results, seconds: float = 1.5) -> PowerExcerpt:
    """The excerpt of a trace's run (see the module's docstring) under its results."""
    inf = np.sort(trace.inferences, order="start_ns")
    t0 = int(inf["start_ns"][len(inf) // 2])
    t1 = t0 + int(seconds * 1e9)
    # a run over several GPUs: the first one's, its sensor and its layers
    first = results.devices[0] if results.several_devices else None
    device = first.device if first else results.device
    sensor = first.sensor if first else results.sensor
    rows = [x for x in results.layers if first is None or x.device == device]
    updates, windows = [], []
    measured = None if trace.power is None or sensor is None else trace.power.windowed_power(device)
    if measured is not None:
        _, u, watts = measured
        keep = (u >= t0) & (u <= t1)
        updates = [((a - t0) / 1e9, float(w)) for a, w in zip(u[keep], watts[keep])]
        b = u[keep] - round(sensor.lag_s * 1e9)
        windows = [((x - round(sensor.window_s * 1e9) - t0) / 1e9, (x - t0) / 1e9) for x in b]
    inside = (inf["end_ns"] > t0) & (inf["start_ns"] < t1)
    inferences = [((max(s, t0) - t0) / 1e9, (min(e, t1) - t0) / 1e9)
                  for s, e in zip(inf["start_ns"][inside], inf["end_ns"][inside])]
    ordinal = int(first.cuda.split(":")[1]) if first is not None and first.cuda.startswith("cuda:") else None
    timeline, _ = trace_timeline(trace, ordinal)
    power = {x.label: x.power_w for x in rows}
    component = {x.label: x.component for x in rows}
    idle_w = next((float(x.power_w) for x in rows if x.role is Role.BETWEEN_INFERENCES), 0.0)
    seg = (timeline.ends_ns > t0) & (timeline.starts_ns < t1)
    starts, ends = np.maximum(timeline.starts_ns[seg], t0), np.minimum(timeline.ends_ns[seg], t1)
    labels = timeline.labels[seg]
    components = [component.get(name, "other") for name in timeline.names]
    activity = [((s - t0) / 1e9, (e - t0) / 1e9, components[j]) for s, e, j in zip(starts, ends, labels)
                if e - s > 20_000 or len(starts) < 5000]
    # the implied power per 1 ms bin: each label's time in the bin at its power, idle power for the rest
    n_bins = int(seconds * 1000)
    bins = t0 + np.arange(n_bins + 1, dtype=np.int64) * (t1 - t0) // n_bins  # integer ns: exact edges
    sec = timeline.seconds_in(bins[:-1], bins[1:])
    label_w = np.array([float(power.get(name, idle_w)) for name in timeline.names])
    width = np.diff(bins) / 1e9
    modelled = (sec @ label_w + (width - sec.sum(axis=1)).clip(0) * idle_w) / width
    return PowerExcerpt(seconds, device, updates, windows, inferences, activity,
                        [((b - t0) / 1e9, float(w)) for b, w in zip(bins[:-1], modelled)])
