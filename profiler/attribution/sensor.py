"""Fitting a power sensor's model to readings taken under a known load.

A GPU's instant power field is not instant: the driver refreshes it every
``period`` seconds with the mean power over a ``window`` ending ``lag`` before
the new value becomes visible (``phprof.sources.sensors.SensorModel``; A100:
~101 ms period, ~25 ms window; see ../shared/docs/sensors.md). Reading such a
sensor as if it were instant gives wrong answers for anything shorter than a
period: :func:`naive_phase_means` shows how (it is the method the sensor model
replaces).

:func:`fit_sensor` recovers the period, window and lag, and the power levels of
the load, from a sensor's readings and the load's schedule (the instants it
switched between two levels): each update's value is modelled as the mean of
the schedule over its window, so for every candidate (window, lag) the two
levels follow by least squares, and the candidate with the smallest residual
wins. A load that nearly aliases with the sensor admits other (window, lag)
pairs that fit almost as well with unphysical levels: fits whose "on" level is
below the "off" one, or with negative power, are rejected.
Update instants are placed on the fitted period's grid, which removes the
polling's timing noise from the windows' positions.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..sources import change_instants
from ..sources.sensors import SensorModel


@dataclass(frozen=True)
class SensorFit:
    """A sensor model fitted from readings under a two-level load schedule."""

    model: SensorModel
    low_w: float  # the load's level while off
    high_w: float  # the load's level while on
    residual_w: float  # RMS of the updates' values around the model
    updates: int  # sensor updates used
    period_jitter_s: float  # RMS of the update instants around a strict period


@dataclass(frozen=True)
class Schedule:
    """A load switching between two levels: ``on[i]`` holds from ``t[i]`` (s) to ``t[i+1]``."""

    t: np.ndarray
    on: np.ndarray

    @classmethod
    def alternating(cls, switch_times_s, first_on: bool = True) -> Schedule:
        t = np.unique(np.asarray(switch_times_s, dtype=float))
        on = (np.arange(len(t)) % 2 == 0) == first_on
        return cls(t, on)

    def on_fraction(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The share of each interval [a, b] during which the load was on
        (before the first switch it is off; after the last, the last state holds)."""
        # cumulative on-time at each switch; on-time up to x by interpolating the steps
        on_time = np.concatenate([[0.0], np.cumsum(np.diff(self.t) * self.on[:-1])])

        def upto(x):
            i = np.clip(np.searchsorted(self.t, x, side="right") - 1, 0, len(self.t) - 1)
            extra = np.where(self.on[i], x - self.t[i], 0.0)
            return np.where(x < self.t[0], 0.0, on_time[i] + np.maximum(extra, 0.0))

        width = np.maximum(b - a, 1e-12)
        return (upto(b) - upto(a)) / width


def naive_phase_means(t_s: np.ndarray, watts: np.ndarray, schedule: Schedule) -> tuple[float, float]:
    """Mean reading while the load was on, and while off, taking each reading as
    the power at its own timestamp: what a sensor-unaware tool does."""
    inside = (t_s >= schedule.t[0]) & (t_s < schedule.t[-1])
    i = np.searchsorted(schedule.t, t_s[inside], side="right") - 1
    on = schedule.on[i]
    w = watts[inside]
    return float(w[on].mean()), float(w[~on].mean())


def fit_period(instants_s: np.ndarray) -> tuple[float, float, float]:
    """Period, phase and RMS jitter of update instants that fall on a grid
    c + k*period, where some updates may be missing (a value that did not
    change). The period maximises the circular concentration of the instants'
    phases, which tolerates missing updates and polling noise alike."""
    base = float(np.median(np.diff(instants_s)))
    t = instants_s - instants_s[0]

    def concentration(periods):
        return np.abs(np.exp(2j * np.pi * t[None, :] / periods[:, None]).mean(axis=1))

    # coarse, then fine: the search must resolve phase drift over the whole span
    periods = np.linspace(0.85 * base, 1.15 * base, 3001)
    p = periods[np.argmax(concentration(periods))]
    step = periods[1] - periods[0]
    periods = np.linspace(p - step, p + step, 201)
    p = float(periods[np.argmax(concentration(periods))])
    phase = np.angle(np.exp(2j * np.pi * t / p).mean()) / (2 * np.pi) * p
    k = np.round((t - phase) / p)
    resid = t - (phase + k * p)
    return p, float(instants_s[0] + phase), float(np.sqrt(np.mean(resid**2)))


def fit_sensor(
    t_s: np.ndarray,
    watts: np.ndarray,
    schedule: Schedule,
    windows_s: np.ndarray | None = None,
    lags_s: np.ndarray | None = None,
) -> SensorFit:
    """Fits period, window, lag and the load's two levels (see the module's docstring).

    ``t_s``, ``watts``: the sensor's readings (polled faster than it updates);
    ``schedule``: when the load was on. Only updates whose window lies inside
    the schedule are used.
    """
    t_s = np.asarray(t_s, float)
    seen, values = change_instants(t_s, t_s, np.asarray(watts, float))
    if len(seen) < 10:
        raise ValueError(f"only {len(seen)} sensor updates seen: too few to fit a sensor model")
    period, phase, jitter = fit_period(seen)
    # each update at its place on the fitted grid: free of the polling's noise
    instants = phase + np.round((seen - phase) / period) * period
    windows_s = np.arange(0.002, min(period, 0.2) + 1e-9, 0.001) if windows_s is None else windows_s
    # a negative lag is the readings' own timestamps running late (a logger that
    # stamps after its query): it is fitted together with the sensor's delay
    lags_s = np.arange(-period / 2, period + 1e-9, 0.001) if lags_s is None else lags_s
    best = None
    for lag in lags_s:
        for w in windows_s:
            b, a = instants - lag, instants - lag - w
            use = (a >= schedule.t[0]) & (b <= schedule.t[-1])
            if use.sum() < 10:
                continue
            f = schedule.on_fraction(a[use], b[use])
            design = np.column_stack([1 - f, f])  # value = low * (1 - f) + high * f
            (low, high), *_ = np.linalg.lstsq(design, values[use], rcond=None)
            if high < low or low < 0:  # an alias: a swapped fit, or negative power
                continue
            rms = float(np.sqrt(np.mean((design @ (low, high) - values[use]) ** 2)))
            if best is None or rms < best[0]:
                best = (rms, w, lag, low, high, int(use.sum()))
    if best is None:
        raise ValueError("the readings' updates do not overlap the load schedule")
    rms, w, lag, low, high, n = best
    model = SensorModel(period, float(w), float(lag), "fitted from readings under a known load schedule")
    return SensorFit(model, float(low), float(high), rms, n, jitter)
