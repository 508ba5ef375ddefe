"""Calibrating a power sensor: its model fitted to readings taken under a known load.

A GPU's power field is not instant: the driver refreshes it every ``period``
seconds with the mean power over a ``window`` ending ``lag`` before the new value
becomes visible (``phprof.sources.sensors.SensorModel``). The families differ
(../shared/docs/sensors.md): A100/H100 average ~25 ms every ~100 ms, an RTX 3090's
``power.draw`` averages ~1 s, an RTX 4090 reads with a gain and an offset.
Reading such a sensor as if it were instant gives wrong answers for anything
shorter than its window: :func:`naive_phase_means` shows how.

:func:`calibrate_field` fits one field from its readings and what the load did:
the schedule of its switches (two levels) or an external meter's samples (the
true power). The period comes from the instants the value changed
(:func:`fit_period`); then every (window, lag) of a grid that holds every family
(windows 2 ms to 1.5 s, lags from half a period early to a period late) is
tried: each update's value is a linear function of the truth's mean over its
window (``low + (high - low) x on-share`` against a schedule, ``offset + gain x
meter mean`` against a meter), fitted in closed form. The residual's profile
over the grid gives every parameter its 90% interval (a likelihood-ratio
region, with the residuals' autocorrelation counted: overlapping windows are
not independent), and says when an interval reaches the grid's edge.

What the data cannot identify is said, never filled in: a model whose residual
is no better than the readings' own spread explains nothing; updates that all
saw the same share of the load (a cycle that aliases with the period) cannot
tell levels, window or lag apart; a single step with a window shorter than a
period fixes only window + lag together. Such parameters have no value, and a
reason (:class:`phprof.store.calibration.Fitted`).

Step loads also get their responses (:class:`StepResponse`): the delay and the
10-90% rise of each field after the load switched on, and after it switched
off, how far above the earlier idle the power stayed and for how long.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..sources import change_instants
from ..sources.sensors import WINDOW_SEARCH_S
from ..store.calibration import Calibration, FieldCalibration, Fitted, StepResponse

Z90 = 1.645  # two-sided 90% normal quantile
CHI2_90 = 2.706  # 90% quantile of chi-square with one degree of freedom (profile intervals)
EXPLAINS_NOTHING = 0.5  # a model whose RMS residual exceeds this share of the readings' spread
SAME_MIX = 0.05  # updates whose share of the load varies less than this (of its range) all saw the same mix
STEP_MIN_S = 1.0  # a schedule's segment this long on both sides of a switch makes it a step


@dataclass(frozen=True)
class Schedule:
    """A load switching between two levels: ``on[i]`` holds from ``t[i]`` (s) to
    ``t[i+1]``; off before the first switch and after the last."""

    t: np.ndarray
    on: np.ndarray

    @classmethod
    def alternating(cls, switch_times_s, first_on: bool = True) -> Schedule:
        """Switches alternately on and off (marks logged twice count once); the load is
        off after the last one (the end of the run)."""
        t = np.unique(np.asarray(switch_times_s, dtype=float))
        on = (np.arange(len(t)) % 2 == 0) == first_on
        on[-1:] = False
        return cls(t, on)

    @classmethod
    def from_states(cls, times_s, on) -> Schedule:
        t = np.asarray(times_s, float)
        order = np.argsort(t, kind="stable")
        on = np.asarray(on, bool)[order].copy()
        on[-1:] = False
        return cls(t[order], on)

    def on_time(self, x: np.ndarray) -> np.ndarray:
        """Seconds the load was on from the first switch up to each instant ``x``."""
        cum = np.concatenate([[0.0], np.cumsum(np.diff(self.t) * self.on[:-1])])
        i = np.clip(np.searchsorted(self.t, x, side="right") - 1, 0, len(self.t) - 1)
        extra = np.where(self.on[i], x - self.t[i], 0.0)
        return np.where(x < self.t[0], 0.0, cum[i] + np.maximum(extra, 0.0))

    def on_fraction(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The share of each interval [a, b] during which the load was on."""
        return (self.on_time(b) - self.on_time(a)) / np.maximum(b - a, 1e-12)

    def steps(self) -> list[tuple[float, bool, float, float]]:
        """The switches with at least STEP_MIN_S of steady load on both sides:
        (instant, rising, seconds before, seconds after)."""
        t = self.t
        out = []
        for i in range(len(t)):
            before = t[i] - t[i - 1] if i else np.inf
            after = t[i + 1] - t[i] if i + 1 < len(t) else np.inf
            rising = bool(self.on[i]) and (i == 0 or not self.on[i - 1])
            falling = not self.on[i] and i > 0 and bool(self.on[i - 1])
            if (rising or falling) and min(before, after) >= STEP_MIN_S:
                out.append((float(t[i]), rising, float(before), float(after)))
        return out


@dataclass(frozen=True)
class Meter:
    """An external meter's samples (s, W): the true power, held from each sample to the next."""

    t: np.ndarray
    w: np.ndarray

    def __post_init__(self) -> None:
        cum = np.concatenate([[0.0], np.cumsum(self.w[:-1] * np.diff(self.t))])
        object.__setattr__(self, "_cum", cum)
        edge = max(1, int(np.searchsorted(self.t, self.t[0] + 0.1)))
        object.__setattr__(self, "_first_w", float(np.mean(self.w[:edge])))

    def energy_to(self, x: np.ndarray) -> np.ndarray:
        """Joules from the first sample to each instant; before it, the first 0.1 s's mean power
        is assumed (the idle before the load), after the last, the last sample's."""
        inside = np.interp(x, self.t, self._cum)
        before = (x - self.t[0]) * self._first_w
        after = self._cum[-1] + (x - self.t[-1]) * self.w[-1]
        return np.where(x < self.t[0], before, np.where(x > self.t[-1], after, inside))

    def mean(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (self.energy_to(b) - self.energy_to(a)) / np.maximum(b - a, 1e-12)

    def smoothed(self, seconds: float = 0.005) -> tuple[np.ndarray, np.ndarray]:
        """The meter's mean over ``seconds`` around each of a grid of instants that far apart."""
        grid = np.arange(self.t[0], self.t[-1], seconds)
        return grid + seconds / 2, self.mean(grid, grid + seconds)


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


def period_interval(instants_s: np.ndarray, period_s: float, phase_s: float, jitter_s: float) -> Fitted:
    """The fitted period with its 90% interval: the slope's standard error of the
    instants against their update numbers."""
    k = np.round((instants_s - phase_s) / period_s)
    spread = float(np.sqrt(np.sum((k - k.mean()) ** 2)))
    se = jitter_s / max(spread, 1e-12)
    return Fitted(period_s, period_s - Z90 * se, period_s + Z90 * se)


@dataclass(frozen=True)
class _Grid:
    """The closed-form fits of every (lag, window): y = a + b x truth mean."""

    lags: np.ndarray
    windows: np.ndarray
    rss: np.ndarray  # (lags, windows); inf where the fit is unphysical
    a: np.ndarray
    b: np.ndarray
    se_a: np.ndarray
    se_b: np.ndarray
    spread: np.ndarray  # RMS of the truth's window means around their mean
    n: int


def _grid_fit(u: np.ndarray, y: np.ndarray, mean, lags: np.ndarray, windows: np.ndarray, schedule: bool) -> _Grid:
    n = len(y)
    yc = y - y.mean()
    syy = float(yc @ yc)
    shape = (len(lags), len(windows))
    rss, a, b, se_a, se_b, spread = (np.full(shape, np.nan) for _ in range(6))
    for i, lag in enumerate(lags):
        end = u - lag
        x = mean(end[None, :] - windows[:, None], np.broadcast_to(end, (len(windows), n)))  # (windows, n)
        xm = x.mean(axis=1)
        xc = x - xm[:, None]
        sxx = np.einsum("ij,ij->i", xc, xc)
        sxy = xc @ yc
        ok = sxx > 1e-12 * n * max(float(np.abs(x).max()), 1e-12) ** 2
        slope = np.where(ok, sxy / np.where(ok, sxx, 1), 0.0)
        icpt = y.mean() - slope * xm
        r = np.where(ok, syy - slope * sxy, syy)
        sigma2 = np.maximum(r, 0) / max(n - 2, 1)
        physical = (slope > 0) & ((icpt >= 0) if schedule else True)
        rss[i] = np.where(physical | ~ok, r, np.inf)
        a[i], b[i] = icpt, np.where(ok, slope, np.nan)
        se_b[i] = np.sqrt(sigma2 / np.where(ok, sxx, np.inf))
        se_a[i] = np.sqrt(sigma2 * (1 / n + xm**2 / np.where(ok, sxx, np.inf)))
        spread[i] = np.sqrt(sxx / n)
    return _Grid(lags, windows, rss, a, b, se_a, se_b, spread, n)


def _effective_n(residuals: np.ndarray) -> float:
    """Independent residuals worth of ``residuals`` (AR(1): n (1 - rho) / (1 + rho))."""
    n = len(residuals)
    e = residuals - residuals.mean()
    denom = float(e @ e)
    rho = float(e[:-1] @ e[1:]) / denom if denom > 0 else 0.0
    rho = min(max(rho, 0.0), 0.98)
    return float(np.clip(n * (1 - rho) / (1 + rho), 3.0, n))


def _interval(values: np.ndarray, region: np.ndarray, best: float, grid_values: np.ndarray) -> Fitted:
    """A grid parameter's interval: the values of the region, widened to the next grid
    values outside it (the truth lies somewhere between grid points)."""
    inside = values[region]
    lo, hi = float(inside.min()), float(inside.max())
    grid = np.unique(grid_values)
    limit = []
    if lo <= grid[0] + 1e-12:
        limit.append("lower")
    else:
        lo = float(grid[np.searchsorted(grid, lo - 1e-12) - 1])
    if hi >= grid[-1] - 1e-12:
        limit.append("upper")
    else:
        hi = float(grid[min(np.searchsorted(grid, hi + 1e-12), len(grid) - 1)])
    return Fitted(float(best), lo, hi, " and ".join(limit))


def _level(values: np.ndarray, se: np.ndarray, region: np.ndarray, best: tuple) -> Fitted:
    """A linear coefficient's interval: over the (lag, window) region, widened by its own noise."""
    lo = float(np.nanmin((values - Z90 * se)[region]))
    hi = float(np.nanmax((values + Z90 * se)[region]))
    return Fitted(float(values[best]), lo, hi)


def calibrate_field(name: str, t_lo_s: np.ndarray, t_hi_s: np.ndarray, watts: np.ndarray, *,
                    schedule: Schedule | None = None, meter: Meter | None = None, nvml_field: str = "",
                    windows_s: np.ndarray | None = None, lags_s: np.ndarray | None = None) -> FieldCalibration:
    """Fits one power field (see the module's docstring). ``t_lo_s``/``t_hi_s``: each
    reading's time bracket (the same for a log that stamps one instant); against
    ``meter`` when given (window, lag, gain, offset), else ``schedule`` (window,
    lag, the load's two levels as the field reads them)."""
    t_lo_s, t_hi_s, watts = (np.asarray(x, float) for x in (t_lo_s, t_hi_s, watts))
    ok = np.isfinite(watts)
    t_lo_s, t_hi_s, watts = t_lo_s[ok], t_hi_s[ok], watts[ok]
    poll = float(np.median(np.diff(t_hi_s))) if len(t_hi_s) > 1 else float("nan")
    seen, values = change_instants(t_lo_s, t_hi_s, watts)
    base = dict(field=name, nvml_field=nvml_field, against="meter" if meter is not None else "schedule",
                readings=int(len(watts)), updates=int(len(seen)), poll_s=poll)
    spread_all = float(np.std(values)) if len(values) else 0.0
    if len(seen) < 10:
        why = f"only {len(seen)} changes of value in {len(watts)} readings: too few to fit"
        nothing = Fitted.unknown(why)
        return FieldCalibration(**base, period_s=nothing, jitter_s=None, window_s=nothing, lag_s=nothing,
                                window_plus_lag_s=nothing, residual_w=None, spread_w=spread_all,
                                low_w=nothing, high_w=nothing, notes=(why,))
    notes: list[str] = []
    period, phase, jitter = fit_period(seen)
    period_fit = period_interval(seen, period, phase, jitter)
    if poll > period / 2:
        notes.append(f"the log polled every {poll * 1e3:.0f} ms, more than half the update period: updates are missed "
                     "and the period may be a multiple of the true one")
    # update instants on the fitted grid (free of the polling's noise), unless the sensor itself is irregular
    regular = jitter < 0.1 * period
    u = phase + np.round((seen - phase) / period) * period if regular else seen
    if not regular:
        notes.append(f"the updates are irregular (jitter {jitter * 1e3:.1f} ms on a {period * 1e3:.0f} ms period): "
                     "their own instants are used")
    if schedule is None and meter is None:
        none = "no load schedule or meter: only the period can be measured"
        return FieldCalibration(**base, period_s=period_fit, jitter_s=jitter, window_s=Fitted.unknown(none),
                                lag_s=Fitted.unknown(none), window_plus_lag_s=Fitted.unknown(none), residual_w=None,
                                spread_w=spread_all, notes=tuple(notes + [none]))
    windows = np.geomspace(*WINDOW_SEARCH_S, 200) if windows_s is None else np.asarray(windows_s, float)
    lags = np.arange(-period / 2, period + 1e-9, 0.001) if lags_s is None else np.asarray(lags_s, float)
    truth_span = (meter.t[0], meter.t[-1]) if meter is not None else (schedule.t[0], schedule.t[-1])
    # the same updates for every candidate: those whose window ends inside the truth's span for every lag
    use = (u - lags.max() >= truth_span[0]) & (u - lags.min() <= truth_span[1])
    if use.sum() < 10:
        why = f"only {int(use.sum())} updates fall inside the {'meter' if meter is not None else 'schedule'}'s span"
        nothing = Fitted.unknown(why)
        return FieldCalibration(**base, period_s=period_fit, jitter_s=jitter, window_s=nothing, lag_s=nothing,
                                window_plus_lag_s=nothing, residual_w=None, spread_w=spread_all,
                                notes=tuple(notes + [why]))
    u, y = u[use], values[use]
    mean = meter.mean if meter is not None else schedule.on_fraction
    grid = _grid_fit(u, y, mean, lags, windows, schedule=meter is None)
    spread = float(np.std(y))
    extras: dict = {}
    if not np.isfinite(grid.rss).any():
        why = "no (window, lag) gives a physical fit (power rising with the load)"
        nothing = Fitted.unknown(why)
        return FieldCalibration(**base, period_s=period_fit, jitter_s=jitter, window_s=nothing, lag_s=nothing,
                                window_plus_lag_s=nothing, residual_w=None, spread_w=spread,
                                notes=tuple(notes + [why]))
    best = np.unravel_index(np.nanargmin(grid.rss), grid.rss.shape)
    rss_min = float(grid.rss[best])
    residual = float(np.sqrt(rss_min / grid.n))
    x_best = mean(u - lags[best[0]] - windows[best[1]], u - lags[best[0]])
    n_eff = _effective_n(y - (grid.a[best] + grid.b[best] * x_best))
    region = n_eff * np.log(np.maximum(grid.rss, 1e-300) / max(rss_min, 1e-300)) <= CHI2_90
    lag_of = np.broadcast_to(lags[:, None], grid.rss.shape)
    win_of = np.broadcast_to(windows[None, :], grid.rss.shape)
    reach_values = lag_of + win_of
    # how much the truth's mean varied between the updates, against its own range
    truth_range = 1.0 if meter is None else float(np.subtract(*np.percentile(meter.w, [95, 5])))
    mix = float(grid.spread[best]) / max(truth_range, 1e-12)
    why = ""
    if mix < SAME_MIX:
        what = "share of the load" if meter is None else "meter mean"
        why = (f"every update saw nearly the same {what} ({mix:.1%} of its range apart): the load's cycle aliases "
               f"with the {period * 1e3:.1f} ms update period, so levels, window and lag cannot be told apart "
               "(use a cycle that drifts against the period, or a step)")
    elif residual > EXPLAINS_NOTHING * spread:
        why = (f"the best model's RMS residual ({residual:.1f} W) is no better than the readings' own spread "
               f"({spread:.1f} W): the model explains nothing")
    if why:
        nothing = Fitted.unknown(why)
        notes.append(why)
        levels = {"low_w": nothing, "high_w": nothing} if meter is None else {"gain": nothing, "offset_w": nothing}
        return FieldCalibration(**base, period_s=period_fit, jitter_s=jitter, window_s=nothing, lag_s=nothing,
                                window_plus_lag_s=nothing, residual_w=residual, spread_w=spread, **levels,
                                notes=tuple(notes))
    window = _interval(win_of, region, windows[best[1]], windows)
    lag = _interval(lag_of, region, lags[best[0]], lags)
    reach = _interval(reach_values, region, lags[best[0]] + windows[best[1]], reach_values)
    # a sum has no search limit of its own; it is known no better than its parts' grid steps
    step = max(window.high - window.low, 0) / 2 if window.at_limit == "" else 0.0
    reach = Fitted(reach.value, min(reach.low, reach.value - step), max(reach.high, reach.value + step))
    window_alone = not ("lower" in window.at_limit and "upper" in window.at_limit) and window.high <= 3 * window.low
    lag_alone = lag.high - lag.low <= period and not ("lower" in lag.at_limit and "upper" in lag.at_limit)
    if not (window_alone and lag_alone):
        cycle = float(np.median(np.diff(schedule.t))) * 2 if schedule is not None and len(schedule.t) >= 6 else None
        periodic = meter is None and cycle is not None and cycle < lags[-1] - lags[0]
        if periodic:
            cause = (f"the load's {cycle * 1e3:.0f} ms cycle is shorter than the lags searched, so lags a whole cycle "
                     "apart fit alike")
        else:  # neither is known alone: say so of both
            window_alone = lag_alone = False
            cause = ("a step whose edge falls inside one update's window tells only where that window reaches "
                     "back to (a square wave that drifts against the period separates window and lag)")
        together = (f"window + lag is fixed together ({reach.value * 1e3:.0f} ms [{reach.low * 1e3:.0f}, "
                    f"{reach.high * 1e3:.0f}]), not each alone: {cause}")
        if not window_alone:
            window = Fitted.unknown(together)
        if not lag_alone:
            lag = Fitted.unknown(together)
        notes.append(together)
    for what, f, g in (("window", window, windows), ("lag", lag, lags)):
        if f.known and f.at_limit:
            notes.append(f"the {what}'s interval reaches the {f.at_limit} limit of the search "
                         f"({g[0] * 1e3:.0f} to {g[-1] * 1e3:.0f} ms): the truth may lie beyond")
    if meter is None:
        extras["low_w"] = _level(grid.a, grid.se_a, region, best)
        extras["high_w"] = _level(grid.a + grid.b, np.hypot(grid.se_a, grid.se_b), region, best)
    else:
        extras["gain"] = _level(grid.b, grid.se_b, region, best)
        extras["offset_w"] = _level(grid.a, grid.se_a, region, best)
    steps = tuple(step_responses(t_hi_s, watts, schedule, period)) if schedule is not None else ()
    return FieldCalibration(**base, period_s=period_fit, jitter_s=jitter, window_s=window, lag_s=lag,
                            window_plus_lag_s=reach, residual_w=residual, spread_w=spread, steps=steps,
                            notes=tuple(notes), **extras)


def step_responses(t_s: np.ndarray, w: np.ndarray, schedule: Schedule, resolution_s: float) -> list[StepResponse]:
    """How a signal (a field's readings, or the meter) followed each step of the load
    (see :meth:`Schedule.steps`): the levels around it, the delay to half-way and
    the 10-90% rise; after a fall, the excess over the idle before the load and how
    long until the signal stays within max(5 W, 3% of the step) of it."""
    out = []
    idle_before = None
    for edge, rising, before_s, after_s in schedule.steps():
        pre = (t_s >= edge - min(before_s, 1.0)) & (t_s < edge)
        post = (t_s >= edge + after_s / 2) & (t_s < edge + after_s)
        if pre.sum() < 2 or post.sum() < 2:
            continue
        lo, hi = float(np.median(w[pre])), float(np.median(w[post]))
        if rising:
            idle_before = lo
        after = (t_s >= edge) & (t_s < edge + after_s)
        ta, share = t_s[after], (w[after] - lo) / (hi - lo) if hi != lo else np.zeros(after.sum())

        def crossing(q):
            hit = np.flatnonzero(share >= q)
            return float(ta[hit[0]]) if len(hit) else None

        t10, t50, t90 = crossing(0.1), crossing(0.5), crossing(0.9)
        delay = None if t50 is None else t50 - edge
        rise = None if t10 is None or t90 is None else t90 - t10
        excess = settle = band = None
        if not rising and idle_before is not None:
            late = (t_s >= edge + 1.0) & (t_s < edge + min(2.0, after_s))
            excess = float(np.median(w[late]) - idle_before) if late.sum() else None
            band = max(5.0, 0.03 * abs(hi - lo) if hi != lo else 5.0)
            outside = np.flatnonzero(np.abs(w[after] - idle_before) > band)
            if not len(outside):
                settle = 0.0
            elif outside[-1] + 1 < len(ta):
                settle = float(ta[outside[-1] + 1] - edge)
        out.append(StepResponse(edge, rising, lo, hi, delay, rise, resolution_s, excess, settle, band))
    return out


def calibrate(fields: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], *, schedule: Schedule | None = None,
              meter: Meter | None = None, gpu: str = "", driver: str = "", how: str = "",
              nvml_fields: dict[str, str] | None = None, idle_w: float | None = None,
              nvml_call_us: dict[str, float] | None = None, notes=()) -> Calibration:
    """Every field of a log calibrated (``fields``: name -> (t_lo_s, t_hi_s, watts));
    with a meter, each field is fitted against it and, with a schedule too, also
    against the schedule for the levels it reads; the meter's own step responses are
    the load's."""
    nvml_fields = nvml_fields or {}
    out = []
    for name, (lo, hi, w) in fields.items():
        same = next((f for f, (lo2, hi2, w2) in zip(out, fields.values())
                     if np.array_equal(lo, lo2) and np.array_equal(hi, hi2) and np.array_equal(w, w2, equal_nan=True)), None)
        if same is not None:  # an RTX 3090's power.draw is its power.draw.average: one fit, said
            out.append(_with(same, field=name, nvml_field=nvml_fields.get(name, ""),
                             notes=same.notes + (f"the same readings as {same.field}: the same sensor",)))
            continue
        f = calibrate_field(name, lo, hi, w, schedule=schedule, meter=meter, nvml_field=nvml_fields.get(name, ""))
        if meter is not None and schedule is not None:
            levels = calibrate_field(name, lo, hi, w, schedule=schedule, nvml_field=f.nvml_field)
            f = _with(f, low_w=levels.low_w, high_w=levels.high_w, steps=levels.steps)
        out.append(f)
    meter_steps: tuple = ()
    meter_levels = None
    if meter is not None and schedule is not None:
        t, w = meter.smoothed()
        meter_steps = tuple(step_responses(t, w, schedule, 0.005))
        on, off = naive_phase_means(meter.t, meter.w, schedule)
        meter_levels = (off, on)
    return Calibration(gpu, driver, time.time_ns(), how, tuple(out), idle_w, dict(nvml_call_us or {}), meter_steps,
                       meter_levels, tuple(notes))


def _with(f: FieldCalibration, **changes) -> FieldCalibration:
    from dataclasses import replace

    return replace(f, **changes)


def log_fields(log, device: str | None = None) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The power fields of a phprof power log (``phprof.sources.PowerLog``), as
    :func:`calibrate` takes them: each reading's exact bracket, in s, and W."""
    out = {}
    for c in log.channels:
        if c.quantity != "power" or (device is not None and c.device != device):
            continue
        r = log.of(c.name)
        r = r[r["status"] == 0]
        if len(r):
            out[c.name.split(".", 1)[1]] = (r["t_before_ns"] / 1e9, r["t_after_ns"] / 1e9,
                                            r["value"] * c.watts_per_unit)
    return out
