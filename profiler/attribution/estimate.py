"""Power per label (layer, kernel class) from a windowed sensor's updates.

Every update k of a sensor like NVML's instant power field reports the mean
power over a known window [u_k - lag - W, u_k - lag]. Over a run, the windows
fall on different mixes of the labels' activity (the timeline of which layer
ran when), so each update is one equation

    y_k = sum_j (time of label j in window k / W) * p_j + (idle share of window k) * p_idle

and the labels' power levels p_j follow by non-negative least squares over
all updates. A label's energy is its power times its own time. Intervals come
from a bootstrap over updates. When the updates cannot tell the labels apart
(too few of them, or labels whose time always moves together), the estimate
falls back to splitting the active energy in proportion to time, and says so.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import nnls

from .sensor import SensorModel


@dataclass(frozen=True)
class LabelEnergy:
    label: str
    seconds: float  # the label's own time over the span
    power_w: float
    energy_j: float
    low_j: float  # interval bounds (see Estimate.interval)
    high_j: float


@dataclass(frozen=True)
class Estimate:
    labels: list[LabelEnergy]
    idle: LabelEnergy  # time covered by no label
    method: str  # "windowed least squares" or "time-proportional (...)"
    updates: int  # sensor updates whose windows lay inside the span
    residual_w: float  # RMS of the updates around the fitted model
    interval: float = 0.90
    notes: list[str] = field(default_factory=list)

    @property
    def total_j(self) -> float:
        return sum(x.energy_j for x in self.labels) + self.idle.energy_j


def label_time(starts: np.ndarray, ends: np.ndarray, labels: np.ndarray, n_labels: int,
               a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Seconds of each label inside each interval [a_k, b_k]: shape (len(a), n_labels).
    The segments of one label must not overlap each other."""
    out = np.zeros((len(a), n_labels))
    for j in range(n_labels):
        mine = labels == j
        s, e = starts[mine], ends[mine]
        order = np.argsort(s)
        s, e = s[order], e[order]
        cum = np.concatenate([[0.0], np.cumsum(e - s)])

        def upto(x):  # covered time before x
            i = np.searchsorted(s, x, side="right")  # segments starting before x
            inside = np.where(i > 0, np.clip(x - s[np.maximum(i - 1, 0)], 0, None), 0.0)
            inside = np.minimum(inside, np.where(i > 0, e[np.maximum(i - 1, 0)] - s[np.maximum(i - 1, 0)], 0))
            return cum[np.maximum(i - 1, 0)] * (i > 0) + inside

        out[:, j] = (upto(b) - upto(a)) / 1e9
    return out


def estimate_label_power(
    starts_ns: np.ndarray,
    ends_ns: np.ndarray,
    labels: np.ndarray,
    names: list[str],
    update_ns: np.ndarray,
    update_w: np.ndarray,
    sensor: SensorModel,
    span_ns: tuple[int, int],
    measured_j: float | None = None,
    bootstrap: int = 200,
    interval: float = 0.90,
    seed: int = 0,
) -> Estimate:
    """Each label's power and energy over ``span_ns`` (see the module's docstring).

    ``starts_ns``/``ends_ns``/``labels``: the activity segments (label = index
    into ``names``); ``update_ns``/``update_w``: the instants at which the sensor
    showed a new value, and the value in watts. ``measured_j``: the span's
    measured energy (the energy counter's); the labels and idle are scaled to
    add up to it exactly, and the scale is reported.
    """
    n = len(names)
    t0, t1 = span_ns
    w_ns = sensor.window_s * 1e9
    b = update_ns - sensor.lag_s * 1e9
    a = b - w_ns
    use = (a >= t0) & (b <= t1)
    a, b, y = a[use], b[use], np.asarray(update_w, float)[use]
    share = label_time(starts_ns, ends_ns, labels, n, a, b) / sensor.window_s
    design = np.column_stack([share, np.clip(1 - share.sum(axis=1), 0, 1)])  # last column: idle
    seconds = label_time(starts_ns, ends_ns, labels, n, np.array([t0]), np.array([t1]))[0]
    idle_s = (t1 - t0) / 1e9 - seconds.sum()
    times = np.append(seconds, idle_s)
    notes: list[str] = []

    def solve(rows) -> np.ndarray:
        p, _ = nnls(design[rows], y[rows])
        return p

    identifiable = len(y) >= 3 * (n + 1) and np.linalg.matrix_rank(design) == n + 1
    if identifiable:
        p = solve(np.arange(len(y)))
        rng = np.random.default_rng(seed)
        boot = np.array([solve(rng.integers(0, len(y), len(y))) for _ in range(bootstrap)]) * times
        q = (1 - interval) / 2
        low, high = np.quantile(boot, q, axis=0), np.quantile(boot, 1 - q, axis=0)
        method = "windowed least squares"
        residual = float(np.sqrt(np.mean((design @ p - y) ** 2)))
    else:
        # the updates cannot separate the labels: idle power from the windows that
        # saw no activity (else the smallest update), active energy split by time
        idle_rows = design[:, -1] > 0.99
        p_idle = float(np.median(y[idle_rows])) if idle_rows.any() else float(y.min()) if len(y) else 0.0
        active_j = float(np.mean(y)) * (t1 - t0) / 1e9 - p_idle * idle_s if len(y) else 0.0
        p = np.append(np.full(n, active_j / max(seconds.sum(), 1e-12)), p_idle)
        low = high = np.full(n + 1, np.nan)
        method = "time-proportional (the sensor's updates cannot tell the labels apart)"
        residual = float("nan")
        notes.append(f"{len(y)} sensor updates for {n} labels and idle: too few, or labels whose time "
                     "always moves together; no interval can be given")
    energies = p * times
    if measured_j is not None and energies.sum() > 0:
        scale = measured_j / energies.sum()
        energies, low, high = energies * scale, low * scale, high * scale
        notes.append(f"scaled by {scale:.4f} so that the labels and idle add up to the measured "
                     f"{measured_j:.4g} J")
    rows = [LabelEnergy(names[j], float(seconds[j]), float(p[j]), float(energies[j]), float(low[j]),
                        float(high[j])) for j in range(n)]
    idle = LabelEnergy("(idle)", float(idle_s), float(p[n]), float(energies[n]), float(low[n]), float(high[n]))
    return Estimate(rows, idle, method, int(len(y)), residual, interval, notes)
