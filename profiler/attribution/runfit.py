"""The sensor's model fitted to a run's own updates, with what is not known of it.

Attribution places each update's window with a sensor model (period, window,
lag: ``phprof.sources.sensors.SensorModel``). A model taken from the
literature is right on A100-like sensors and wrong elsewhere (an RTX 3090's
field averages ~1 s, a V100's updates every ~20 ms), so the run's own updates
decide, within ranges that hold every family (../shared/docs/sensors.md):

* the period is fitted from the instants the value changed (and printed); where
  the readings bracket those instants only loosely (a log's rows 10 ms apart, with
  no read times of their own), a regular sensor's updates are placed on the grid
  that the period and its phase fit, far closer than halfway between two rows;
* a power log on a shifted clock (an imported log 300 ms late) is found first,
  by cross-correlating the readings with the trace's activity over +-2 s, and
  reported: it is not absorbed into a lag at the edge of its range;
* window (2 ms to 1.5 s) and lag (half a period early to a period late, around
  a found shift) are searched for the least residual of the run's least-squares
  fit: each on a coarse grid in turn, then both on grids that shrink around the
  best down to 0.1 ms of lag and 0.5% of window (a model a coarse step off is a
  misfit that no interval would show);
* the residual's profile over a grid around the best, its steps fitted to the
  region, gives each its 90% interval (a likelihood-ratio region that counts the
  residuals' autocorrelation), and the
  models inside the region are what the bootstrap draws its windows from, so a
  sensor known only roughly widens the intervals instead of biasing them;
* a fitted value on a limit of its range gets a note.

A calibration (``phprof calibrate``) narrows the window and lag searched to its
intervals.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..sources.sensors import WINDOW_SEARCH_S, SensorModel
from ..store.results import Role
from .estimate import SensorWindows, Timeline, _design, _nnls_gram, instant_windows
from .sensor import CHI2_90, _effective_n, fit_period

SHIFT_SEARCH_S = 2.0  # a power log's clock is looked for this far either side of the trace's
MAX_DESIGNS = 8  # sensor models the bootstrap draws from (memory: designs x blocks x labels^2)
SNAP_BRACKET_NS = 2_000_000  # readings further apart than this do not say well enough when an update happened
TOO_FEW = "too few updates to fit the sensor's lag and window: the model is used as given"
REFINED_LAG_S, REFINED_RATIO = 0.0001, 1.005  # the finest steps of the search: 0.1 ms of lag, 0.5% of window
REFINE_STEPS = 40  # moves of the refining grid at most (it stops where its centre is best at the finest steps)


@dataclass(frozen=True)
class RunSensorFit:
    """The model fitted to a run, the others its updates allow, and what to say of them."""

    model: SensorModel
    alternatives: list[SensorModel]  # other models inside the 90% region (the bootstrap's)
    residual_w: float
    prior_residual_w: float  # with the model the fit started from
    shift_s: float  # the power log's clock against the trace's, found by cross-correlation (0: none)
    notes: list[str]
    update_ns: np.ndarray  # the updates' instants the model places (the given ones, or on the fitted grid)


def windows_of(update_ns: np.ndarray, update_w: np.ndarray, model: SensorModel) -> SensorWindows:
    """The windows of given updates under ``model`` (no update dropped)."""
    b = np.asarray(update_ns, np.int64) - round(model.lag_s * 1e9)
    return SensorWindows(b - round(model.window_s * 1e9), b, np.asarray(update_w, float), model)


def _busy_time(timeline: Timeline):
    """A function of instants (ns, any shape): the time (ns) any label was active before each
    (a window's save is not: the device waits while phprof writes)."""
    saves = [j for j, name in enumerate(timeline.names) if name == Role.WINDOW_SAVE.label]
    order = np.argsort(timeline.starts_ns)
    order = order[~np.isin(timeline.labels[order], saves)]
    s, e = timeline.starts_ns[order], timeline.ends_ns[order]
    cum = np.concatenate([[0], np.cumsum(e - s)])

    def upto(x):
        i = np.searchsorted(s, x, side="right")
        last = np.maximum(i - 1, 0)
        return np.where(i > 0, cum[i] - np.clip(e[last] - x, 0, None), 0)

    return upto


def find_shift(timeline: Timeline, update_ns: np.ndarray, update_w: np.ndarray, window_s: float,
               span_ns: tuple[int, int], normal_lags_s: tuple[float, float]) -> tuple[float, float] | None:
    """A clock shift of the power log beyond the normal lags: the lag (s) whose windows'
    busy share correlates best with the readings, searched over +-SHIFT_SEARCH_S, and its
    correlation; None where the best lies within ``normal_lags_s`` or no lag stands out."""
    keep = (update_ns > span_ns[0] + SHIFT_SEARCH_S * 1e9) & (update_ns < span_ns[1] - SHIFT_SEARCH_S * 1e9)
    if keep.sum() < 30:
        return None
    u, y = update_ns[keep], update_w[keep] - update_w[keep].mean()
    lags = np.arange(-SHIFT_SEARCH_S, SHIFT_SEARCH_S + 1e-9, 0.002)
    w = round(max(window_s, 0.005) * 1e9)
    upto = _busy_time(timeline)
    corr = np.empty(len(lags))
    for k in range(0, len(lags), 200):  # the busy share of every update's window under 200 lags at once
        b = u[None, :] - np.round(lags[k:k + 200] * 1e9).astype(np.int64)[:, None]
        x = (upto(b) - upto(b - w)) / w
        x = x - x.mean(axis=1, keepdims=True)
        denom = np.sqrt(np.einsum("ij,ij->i", x, x) * (y @ y))
        corr[k:k + 200] = np.where(denom > 0, x @ y / np.where(denom > 0, denom, 1), 0.0)
    best = int(np.argmax(corr))
    normal = (lags >= normal_lags_s[0]) & (lags <= normal_lags_s[1])
    inside = float(corr[normal].max()) if normal.any() else -1.0
    # it stands out: clearly correlated, and clearly better than anything in the normal range
    if normal[best] or corr[best] < 0.3 or corr[best] - inside < 0.15:
        return None
    return float(lags[best]), float(corr[best])


def fit_run_sensor(timeline: Timeline, update_ns, update_w, prior: SensorModel, span_ns: tuple[int, int],
                   calibrated: bool = False, bracket_ns: int | None = None,
                   brackets: tuple[np.ndarray, np.ndarray] | None = None) -> RunSensorFit:
    """Fits period, window and lag to a run's updates, around ``prior`` (see the module).
    ``calibrated``: ``prior`` comes from a calibration, whose window and lag intervals
    bound the search. ``bracket_ns``: how closely the readings bracket each update
    (``PowerLog.update_bracket_ns``); ``brackets``: each update's own bracket (lo, hi) ns
    (``PowerLog.update_brackets``). The updates of a regular sensor are placed on its fitted
    grid (``RunSensorFit.update_ns``), each within its own bracket where those are given, or
    anywhere where the readings bracket them loosely (wider than SNAP_BRACKET_NS: a log's rows)."""
    update_ns = np.asarray(update_ns, np.int64)
    update_w = np.asarray(update_w, float)
    notes: list[str] = []
    model = prior
    if len(update_ns) >= 20:
        period, phase, jitter = fit_period(update_ns / 1e9)
        model = replace(model, period_s=period, period_fitted=True)
        if not calibrated and abs(period / prior.period_s - 1) > 0.1:
            notes.append(f"the sensor updated every {period * 1e3:.1f} ms, not the {prior.period_s * 1e3:.0f} ms of "
                         f"{prior.source or 'its nominal model'}")
        loose = bracket_ns is not None and bracket_ns > SNAP_BRACKET_NS
        usable = brackets is not None and len(brackets[0]) == len(update_ns)
        if (loose or usable) and jitter < 0.1 * period:
            # a change seen between two reads happened anywhere between them: on a regular sensor,
            # its place on the grid the instants fit is far closer than halfway (a read delayed by a
            # busy host leaves a bracket of tens of ms, and a window placed in its middle that far off
            # a load changing every ms is a misfit of several W), and within the bracket it must be
            k = np.round((update_ns / 1e9 - phase) / period)
            update_ns = np.round((phase + k * period) * 1e9).astype(np.int64)
            if usable:
                update_ns = np.clip(update_ns, np.asarray(brackets[0], np.int64), np.asarray(brackets[1], np.int64))
        if loose and jitter < 0.1 * period:
            notes.append(f"the log's readings are {bracket_ns / 1e6:.0f} ms apart: each update is placed on the "
                         f"sensor's fitted {period * 1e3:.2f} ms grid (the instants' RMS jitter around it "
                         f"{jitter * 1e3:.1f} ms), not halfway between the rows around it")
    period = model.period_s
    inside = (update_ns >= span_ns[0]) & (update_ns <= span_ns[1] + round(1.5 * 1e9))
    u, y = update_ns[inside], update_w[inside]
    n_labels = len(timeline.names)

    def residual(m: SensorModel) -> float:
        w = instant_windows(u, y, m, span_ns)
        if len(w.watts) < 3 * (n_labels + 1):
            return np.inf
        return float(np.sqrt(np.mean(_residuals(timeline, w) ** 2)))

    base = residual(model)
    lag_range = (-period / 2, period)
    if calibrated and prior.lag_low_s is not None:
        lag_range = (prior.lag_low_s - 0.002, prior.lag_high_s + 0.002)
    shift = find_shift(timeline, u, y, model.window_s, span_ns, lag_range)
    shift_s = 0.0
    if shift is not None:
        shift_s = shift[0]
        lag_range = (shift_s - period / 2, shift_s + period / 2)
        notes.append(f"the power log's clock runs {abs(shift_s) * 1e3:.0f} ms {'behind' if shift_s > 0 else 'ahead of'} "
                     f"the trace's (found by cross-correlating the readings with the trace's activity, r = "
                     f"{shift[1]:.2f}): its readings are placed {shift_s * 1e3:+.0f} ms back, beside the sensor's "
                     "own lag; check how the log was stamped")
    win_range = WINDOW_SEARCH_S
    if calibrated and prior.window_low_s is not None:
        win_range = (max(prior.window_low_s * 0.95, 0.001), prior.window_high_s * 1.05)
    coarse_w = np.geomspace(*win_range, 20 if not calibrated else 5)
    coarse_l = np.linspace(*lag_range, max(int(round((lag_range[1] - lag_range[0]) / max(period / 16, 0.002))), 2) + 1)
    cache: dict[tuple[int, int], float] = {}

    def r_at(lag: float, w: float) -> float:
        key = (round(lag * 1e5), round(w * 1e5))  # 10 us cells
        if key not in cache:
            cache[key] = residual(replace(model, lag_s=float(lag), window_s=float(w)))
        return cache[key]

    lag, win = float(np.clip(model.lag_s, *lag_range)), float(np.clip(model.window_s, *win_range))
    for _ in range(2):  # coordinate descent on the coarse grids
        lag = float(min(coarse_l, key=lambda x: r_at(x, win)))
        win = float(min(coarse_w, key=lambda x: r_at(lag, x)))
    # both together, on grids around the best that shrink while it stays inside them (to 0.1 ms
    # and 0.5%: a window or lag off by a coarse step is a misfit the bootstrap would never see)
    dl = max(float(coarse_l[1] - coarse_l[0]), 0.001) if len(coarse_l) > 1 else 0.001
    ratio = float(coarse_w[1] / coarse_w[0]) if len(coarse_w) > 1 else 1.1

    def around(lag: float, win: float, dl: float, ratio: float, k: int) -> tuple[np.ndarray, np.ndarray]:
        ls = np.unique(np.round(lag + dl * np.arange(-k, k + 1), 4))  # to 0.1 ms
        ws = win * ratio ** np.arange(-k, k + 1)
        return (ls[(ls >= lag_range[0] - 1e-9) & (ls <= lag_range[1] + 1e-9)],
                ws[(ws >= win_range[0] - 1e-9) & (ws <= win_range[1] + 1e-9)])

    def fits(ls: np.ndarray, ws: np.ndarray) -> np.ndarray:
        return np.array([[r_at(a, b) for b in ws] for a in ls]).reshape(len(ls), len(ws))

    for _ in range(REFINE_STEPS):
        ls, ws = around(lag, win, dl, ratio, 2)
        grid = fits(ls, ws)
        if not np.isfinite(grid).any():
            return RunSensorFit(model, [], base, base, shift_s, notes + [TOO_FEW], update_ns)
        i, j = np.unravel_index(np.nanargmin(grid), grid.shape)
        moved = (ls[i], ws[j]) != (lag, win)
        lag, win = float(ls[i]), float(ws[j])
        if not moved:  # the best is the centre: look closer
            if dl <= REFINED_LAG_S and ratio <= REFINED_RATIO:
                break
            dl, ratio = max(dl / 3, REFINED_LAG_S), max(ratio ** (1 / 3), REFINED_RATIO)
    # the 90% region, on a grid around the best whose steps fit it: finer where the region holds
    # only the best, wider where it reaches the grid's edge (the likelihood ratio of the residual
    # profile, with the residuals' autocorrelation counted)
    best = replace(model, lag_s=lag, window_s=win)
    n_eff = _effective_n(_residuals(timeline, instant_windows(u, y, best, span_ns)))
    pl, pr = 0.001, 1.02  # the profile grid's steps: 1 ms and 2%, then fitted to the region
    for _ in range(6):
        fine_l, fine_w = around(lag, win, pl, pr, 3)
        rss = fits(fine_l, fine_w) ** 2
        rss_min = float(np.nanmin(rss))
        region = n_eff * np.log(np.maximum(rss, 1e-300) / max(rss_min, 1e-300)) <= CHI2_90
        rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
        changed = False
        for size, idx, axis in ((len(fine_l), rows, "lag"), (len(fine_w), cols, "window")):
            at_edge = idx.min() == 0 or idx.max() == size - 1
            wide = idx.max() - idx.min() + 1 > size - 2
            if len(idx) == 1 and size > 1:  # only the best: the region is finer than the grid
                if axis == "lag" and pl > REFINED_LAG_S:
                    pl, changed = max(pl / 4, REFINED_LAG_S), True
                elif axis == "window" and pr > REFINED_RATIO:
                    pr, changed = max(pr ** 0.25, REFINED_RATIO), True
            elif at_edge and wide:  # the region runs off the grid: wider steps (within the ranges)
                if axis == "lag" and pl < period / 4:
                    pl, changed = pl * 2.5, True
                elif axis == "window" and pr < 1.5:
                    pr, changed = pr ** 2.5, True
        if not changed:
            break
    i, j = np.unravel_index(np.nanargmin(rss), rss.shape)
    best = replace(model, lag_s=float(fine_l[i]), window_s=float(fine_w[j]))
    grid = np.sqrt(rss)
    lags_in, wins_in = fine_l[np.any(region, axis=1)], fine_w[np.any(region, axis=0)]
    # the interval reaches at least the next grid values: the truth lies between them
    lag_lo, lag_hi = _widen(lags_in.min(), lags_in.max(), fine_l)
    win_lo, win_hi = _widen(wins_in.min(), wins_in.max(), fine_w)
    best = replace(best, lag_low_s=lag_lo, lag_high_s=lag_hi, window_low_s=win_lo, window_high_s=win_hi,
                   source=f"{prior.source}; " + ("lag and window refitted within the calibration's intervals"
                                                 if calibrated else "lag and window fitted to this run's updates"))
    pts = np.argwhere(region)
    pts = pts[np.argsort(rss[region])][1:]  # the best itself is the main design
    if len(pts) > MAX_DESIGNS:
        pts = pts[np.linspace(0, len(pts) - 1, MAX_DESIGNS).astype(int)]
    alternatives = [replace(best, lag_s=float(fine_l[a]), window_s=float(fine_w[b])) for a, b in pts]
    for what, value, lo_hi, rng in (("lag", best.lag_s, (lag_lo, lag_hi), lag_range),
                                    ("window", best.window_s, (win_lo, win_hi), win_range)):
        edge = [side for side, hit in (("lower", lo_hi[0] <= rng[0] + 1e-9), ("upper", lo_hi[1] >= rng[1] - 1e-9))
                if hit]
        if edge:
            sign = "+" if what == "lag" else ""
            notes.append(f"the fitted {what} ({value * 1e3:{sign}.0f} ms) reaches the {edge[0]} limit of the range "
                         f"searched ({rng[0] * 1e3:{sign}.0f} to {rng[1] * 1e3:{sign}.0f} ms): the sensor may lie "
                         "outside it, and the per-layer figures are less sure than their intervals say")
    return RunSensorFit(best, alternatives, float(grid[i, j]), base, shift_s, notes, update_ns)


def _widen(lo: float, hi: float, grid: np.ndarray) -> tuple[float, float]:
    g = np.unique(grid)
    below, above = g[g < lo - 1e-12], g[g > hi + 1e-12]
    return float(below[-1] if len(below) else lo), float(above[0] if len(above) else hi)


def _residuals(timeline: Timeline, w: SensorWindows) -> np.ndarray:
    design = _design(timeline.seconds_in(w.a_ns, w.b_ns), w)
    p = _nnls_gram(design.T @ design, design.T @ w.watts)
    return design @ p - w.watts
