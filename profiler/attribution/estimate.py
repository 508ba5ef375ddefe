"""Power per label (layer, kernel class) from a windowed sensor's updates.

Every update k of a sensor like NVML's instant power field reports the mean
power over a known window [u_k - lag - W, u_k - lag]. Over a run, the windows
fall on different mixes of the labels' activity (the timeline of which layer
ran when), so each update is one equation

    y_k = sum_j (time of label j in window k / W) * p_j + (idle share of window k) * p_idle

and the labels' power levels p_j follow by bounded least squares over all
updates. On a GPU the unknowns are the kernels' powers, shared across labels,
with each label's deviation from its kernels' mix
(:mod:`phprof.attribution.kernelmodel`, which also chooses the penalties by
cross-validation); a label's energy is its kernels' power times their time plus
idle power times its own time, and the rest of this module sees it as an
effective power over the label's own time.

Intervals come from a bootstrap that resamples whole blocks of consecutive
updates (one block: a second of run, or three windows and periods of a slower
sensor), so that slow drifts and a model that is slightly off count as
uncertainty, not as independent noise; its spread is widened where the blocks
are few for the fit's unknowns (``phprof.attribution.kernelmodel``).

Labels the updates cannot tell apart (their time always moves together) get
huge intervals. :func:`estimate_label_power` then merges the worst resolved
label into its parent scope (``transformer.h.0.attn.c_proj`` into
``transformer.h.0.attn``) and fits again, until every label's energy is known
to within ``tolerance`` of the total; a merged label's members are split in
proportion to their time, with bounds instead of an interval. When even that
fails (too few updates), the whole estimate is time-proportional and says so.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np

from ..energy import Energy, Method
from ..sources.sensors import SensorModel
from ..store.results import Group, Role
from .kernelmodel import FEW_WINDOWS, KernelModel, Work, _nnls_gram, fit_kernel_model, overlap_seconds  # noqa: F401

BLOCK_S = 1.0  # the bootstrap's blocks of updates: at least this long,
BLOCK_WINDOWS = 3  # and this many windows and periods (a 1 s average's updates share a misfit for ~1 s)
IDLE = Role.BETWEEN_INFERENCES.label  # the time no label covers: between the inferences
SAVE = Role.WINDOW_SAVE.label  # phprof's own window saves (a label of their own: tracing stores their spans)
PROFILER_WORK = (Role.WINDOW_WARMUP.label, SAVE)  # phprof's work between windows, outside the inferences


@dataclass(frozen=True)
class LabelEstimate:
    """One label's (or idle's) estimated power and energy over the span."""

    label: str
    seconds: float  # the label's own time over the span
    power_w: float
    energy: Energy  # an interval (see Estimate.interval), or bounds for a share split by time
    group: str  # the resolved group's label this one's estimate belongs to (its own where resolved alone)


@dataclass(frozen=True)
class Timeline:
    """Which label was active when: segments [starts_ns, ends_ns) of ``labels``
    (indices into ``names``); the segments of one label do not overlap.
    ``parents[j]``: the label enclosing label j (-1: none)."""

    starts_ns: np.ndarray
    ends_ns: np.ndarray
    labels: np.ndarray
    names: list[str]
    parents: np.ndarray
    events: np.ndarray | None = None  # per segment: the trace event it came from (-1: none)
    work: Work | None = None  # the kernels (or ops) inside the labels, uncut: the power model's unknowns

    @cached_property
    def _by_label(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Segments sorted by label then start, each label's first row, and the
        running total of segment time (ns) in that order."""
        order = np.lexsort((self.starts_ns, self.labels))
        s, e = self.starts_ns[order], self.ends_ns[order]
        bounds = np.searchsorted(self.labels[order], np.arange(len(self.names) + 1))
        return s, e, bounds, np.concatenate([[0], np.cumsum(e - s)])

    def seconds_in(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Seconds of each label inside each interval [a_k, b_k]: shape (len(a), labels)."""
        a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
        s_all, e_all, bounds, cum_all = self._by_label
        out = np.zeros((len(a), len(self.names)))
        for j in range(len(self.names)):
            lo, hi = bounds[j], bounds[j + 1]
            if lo == hi:
                continue
            s, e, cum = s_all[lo:hi], e_all[lo:hi], cum_all[lo:hi + 1] - cum_all[lo]
            # this label's time before x: whole segments that started before x, less
            # what of the last of them lies after x
            i = np.searchsorted(s, np.concatenate([a, b]), side="right")
            last = np.maximum(i - 1, 0)
            x = np.concatenate([a, b])
            upto = np.where(i > 0, cum[i] - np.clip(e[last] - x, 0, None), 0)
            out[:, j] = (upto[len(a):] - upto[:len(a)]) / 1e9
        return out

    @cached_property
    def _union(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The time any label covers, as sorted disjoint segments, and their running total (ns):
        labels may overlap (annotations of two threads, kernels of two streams)."""
        order = np.argsort(self.starts_ns, kind="stable")
        s, e = self.starts_ns[order], self.ends_ns[order]
        if not len(s):
            return s, e, np.zeros(1, np.int64)
        reach = np.maximum.accumulate(e)
        new = np.r_[True, s[1:] > reach[:-1]]
        first = np.flatnonzero(new)
        us, ue = s[first], np.maximum.reduceat(e, first)
        return us, ue, np.concatenate([[0], np.cumsum(ue - us)])

    def covered_in(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Seconds inside each [a_k, b_k] that some label covers (overlaps counted once)."""
        s, e, cum = self._union
        x = np.concatenate([np.asarray(a, np.int64), np.asarray(b, np.int64)])
        i = np.searchsorted(s, x, side="right")
        last = np.maximum(i - 1, 0)
        upto = np.where(i > 0, cum[i] - np.clip(e[last] - x, 0, None), 0) if len(s) else np.zeros(len(x))
        return (upto[len(x) // 2:] - upto[:len(x) // 2]) / 1e9

    def edge_kinds(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each kind of edge of the timeline: (label before, label after, how many), where
        the last index stands for the time no label covers (a gap between segments)."""
        order = np.argsort(self.starts_ns, kind="stable")
        s, e, lab = self.starts_ns[order], self.ends_ns[order], self.labels[order]
        idle = len(self.names)
        touching = np.r_[False, e[:-1] >= s[1:] - 1000]  # within 1 us: no gap
        before = np.where(touching, np.r_[idle, lab[:-1]], idle)
        gap_after = np.r_[~touching[1:], True]
        pairs = np.concatenate([np.column_stack([before, lab]),
                                np.column_stack([lab[gap_after], np.full(int(gap_after.sum()), idle)])])
        kinds, counts = np.unique(pairs, axis=0, return_counts=True)
        return kinds[:, 0], kinds[:, 1], counts

    def grouped(self, seconds: np.ndarray, col: np.ndarray, groups: int) -> np.ndarray:
        """Columns of ``seconds_in``'s result summed by group (``col[label]``)."""
        out = np.zeros((groups, seconds.shape[0]))
        np.add.at(out, np.asarray(col), seconds.T)
        return out.T


@dataclass(frozen=True)
class SensorWindows:
    """The sensor's equations: the mean power over [a_ns, b_ns] was ``watts``."""

    a_ns: np.ndarray
    b_ns: np.ndarray
    watts: np.ndarray
    sensor: SensorModel


def instant_windows(update_ns, update_w, sensor: SensorModel, span_ns: tuple[int, int]) -> SensorWindows:
    """The windows of an instant-power field's updates that lie inside ``span_ns``."""
    b = np.asarray(update_ns, np.int64) - round(sensor.lag_s * 1e9)
    a = b - round(sensor.window_s * 1e9)
    use = (a >= span_ns[0]) & (b <= span_ns[1])
    return SensorWindows(a[use], b[use], np.asarray(update_w, float)[use], sensor)


@dataclass(frozen=True)
class Estimate:
    labels: list[LabelEstimate]  # every label of the timeline
    idle: LabelEstimate  # time covered by no label
    method: Method  # WLS, or TIME_PROPORTIONAL for the whole estimate
    updates: int  # sensor updates whose windows lay inside the span
    residual_w: float  # RMS of the updates around the fitted model
    interval: float = 0.90
    notes: list[str] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)  # the resolved labels (merged ones whole)
    boot_w: np.ndarray | None = None  # (bootstrap, resolved labels + idle) power draws, scaled
    group_of: np.ndarray | None = None  # timeline label -> index into groups
    scale: float = 1.0  # measured / modelled energy over the span

    @property
    def total_j(self) -> float:
        return sum(x.energy.joules for x in self.labels) + self.idle.energy.joules


def _design(label_s: np.ndarray, windows: SensorWindows) -> np.ndarray:
    """Each window's share of time per label (columns of ``label_s``, seconds per
    window), and of idle in the last column."""
    share = label_s / ((windows.b_ns - windows.a_ns) / 1e9)[:, None]
    return np.column_stack([share, np.clip(1 - share.sum(axis=1), 0, 1)])


def estimate_label_power(
    timeline: Timeline,
    windows: SensorWindows,
    span_ns: tuple[int, int],
    measured_j: float | None = None,
    bootstrap: int = 200,
    interval: float = 0.90,
    tolerance: float = 0.01,
    block_s: float | None = None,
    timing_s: float = 0.001,
    seed: int = 0,
    alternatives: list[SensorWindows] | None = None,
    power_bounds_w: tuple[float, float] | None = None,
    edge_s: float = 0.0,
) -> Estimate:
    """Each label's power and energy over ``span_ns`` (see the module's docstring).

    ``measured_j``: the span's measured energy (the energy counter's); the
    labels and idle are scaled to add up to it exactly, and the scale is
    reported. ``tolerance``: the largest standard error of one resolved
    label's energy, as a share of the total, before it is merged into its parent.
    ``alternatives``: the same updates' windows under the other sensor models
    the run's updates allow (``phprof.attribution.runfit``): each bootstrap draw
    takes one of them or ``windows``, so the intervals hold what is not known of
    the sensor's timing; without them, the draws move lag and window by
    ``timing_s``. ``power_bounds_w``: (floor, ceiling) of any label's power on the
    measured scale, e.g. (the device's idle power, its power limit): each label's
    power is fitted within them, so no figure is physically impossible.
    ``edge_s``: how well the timeline's edges line up with the power (the work inside
    a scope starts some microseconds after its stamp; a GPU's power follows its
    kernels with a delay): each draw also shifts the power against the timeline by
    up to that much, so a label's interval holds the energy at its edges.
    """
    n = len(timeline.names)
    t0, t1 = span_ns
    y = windows.watts
    seconds = timeline.seconds_in(np.array([t0]), np.array([t1]))[0]
    idle_s = (t1 - t0) / 1e9 - float(timeline.covered_in(np.array([t0]), np.array([t1]))[0])
    if block_s is None:  # a misfit reaches across a window and the next update: blocks of several
        block_s = max(BLOCK_S, BLOCK_WINDOWS * (windows.sensor.window_s + windows.sensor.period_s))
    blocks = ((windows.a_ns - t0) // round(block_s * 1e9)).astype(np.int64)
    blocks = np.unique(blocks, return_inverse=True)[1].reshape(-1)
    notes: list[str] = []
    group_of = np.arange(n)  # each timeline label's resolved label (an index into the timeline's names)
    label_s = timeline.seconds_in(windows.a_ns, windows.b_ns)  # (windows, labels)
    busy_s = seconds
    q = (1 - interval) / 2
    unseen = np.zeros(0, bool)
    method = Method.TIME_PROPORTIONAL
    if len(y) >= 3 * (n + 1) and len(np.unique(blocks)) >= 5:
        # one fit of every label's power; labels too uncertain on their own are
        # then reported together with their parent, from the same draws (the sum of
        # labels that the windows confound is known far better than each of them)
        model = KernelModel(timeline, span_ns, idle_s)
        seconds, busy_s = model.own_s, model.raw_s  # own time (overlaps shared equally), and activity
        if alternatives is None:
            step = round(timing_s * 1e9)
            alternatives = [SensorWindows(windows.a_ns + da, windows.b_ns + db, y, windows.sensor)
                            for da, db in (((-step, -step), (step, step), (-step, 0), (step, 0)) if step else ())]
        designs = []
        for k, moved in enumerate([windows] + list(alternatives)):
            d, s_k = model.design(moved.a_ns, moved.b_ns)
            designs.append(d)
            if k == 0:
                label_s = s_k
        penalties = model.penalties(windows.a_ns, windows.b_ns)
        fit = fit_kernel_model(model, designs, y, blocks, penalties, power_bounds_w, measured_j, bootstrap, seed)
        bounds = fit.bounds
        notes.extend(fit.notes)
        safe = np.maximum(np.append(seconds, idle_s), 1e-12)
        p_label, d_label, residual = fit.energy / safe, fit.draws / safe, fit.residual_w
        if edge_s > 0 and len(timeline.labels):
            # each kind of edge (label a, then label b) has its own delay of the power behind the
            # timeline, up to edge_s either way: over it, b's time drew a's power
            before, after, count = timeline.edge_kinds()
            delay = np.random.default_rng(seed + 1).uniform(-edge_s, edge_s, (len(d_label), len(count)))
            moved = delay * count * (p_label[before] - p_label[after])  # J, per draw and kind of edge
            extra = np.zeros((len(d_label), n + 1))
            np.add.at(extra.T, after, moved.T)
            # moved, a draw is still physical: between the floor (idle power, or 0 W) and the limit
            # over the label's activity (an energy of at most limit x active time)
            d_label = d_label + extra / safe
            if bounds is not None:
                active = np.append(np.maximum(busy_s, seconds), idle_s) / safe
                limit = bounds[1][0] + bounds[1][1]  # idle's cap and the most above it: the limit
                floor = np.append(np.full(n, bounds[0][0] + bounds[0][1]), bounds[0][0])  # labels', idle's
                d_label = np.clip(d_label, floor, limit * np.maximum(active, 1.0))
            d_label = np.maximum(d_label, 0.0)
        e_draws = d_label[:, :n] * seconds
        total = float(p_label @ np.append(seconds, idle_s))
        # a label the windows (almost) never saw has no estimate, however narrow its
        # draws: an aliased run, or a label always at the same phase
        seen = label_s.sum(axis=0)
        coverage = float((windows.b_ns - windows.a_ns).sum()) / max(t1 - t0, 1)
        while True:
            groups = np.unique(group_of)
            col = np.searchsorted(groups, group_of)
            g_draws = np.zeros((len(e_draws), len(groups)))
            np.add.at(g_draws.T, col, e_draws.T)
            g_seen = np.bincount(col, seen, len(groups))
            g_time = np.bincount(col, seconds, len(groups))
            unseen = (g_time > 0) & (g_seen < 0.25 * coverage * g_time)
            se = np.where(unseen, np.inf, g_draws.std(axis=0) / max(total, 1e-12))
            mergeable = np.asarray(timeline.parents)[groups] >= 0
            if not mergeable.any() or se[mergeable].max() <= tolerance:
                break
            worst = groups[np.flatnonzero(mergeable)[np.argmax(se[mergeable])]]
            group_of[group_of == worst] = group_of[timeline.parents[worst]]
        if unseen.any():
            notes.append(f"{', '.join(timeline.names[g] for g in groups[unseen])}: (almost) never inside the "
                         "sensor's windows, so the windows say nothing of them")
        g_seconds = np.append(g_time, idle_s)
        g_energy = np.zeros(len(groups))
        np.add.at(g_energy, col, p_label[:n] * seconds)
        safe = np.maximum(g_seconds, 1e-12)
        p = np.append(g_energy, p_label[n] * idle_s) / safe
        draws = np.column_stack([g_draws, d_label[:, n] * idle_s]) / safe
        method = Method.WLS
    if method != Method.WLS or unseen.any():
        # the updates cannot separate the labels: idle power from the windows that
        # saw no activity (else the smallest update), active energy split by time
        # phprof's window saves run none of the run's work: in a split by time they draw the idle
        # power, as the time between inferences does (as the layers' power they would take theirs)
        # (and each kind of phprof's work is a group of its own, outside the inferences' group)
        saving = np.array([name == SAVE for name in timeline.names], bool)
        work = ~saving
        kind = [name if name in PROFILER_WORK else "" for name in timeline.names]
        first = {k: j for j, k in reversed(list(enumerate(kind)))}
        group_of = np.array([first[k] for k in kind], int)
        groups = np.unique(group_of)
        col = np.searchsorted(groups, group_of)
        g_seconds = np.append(np.bincount(col, seconds, len(groups)), idle_s)
        g_saving = np.array([bool(saving[g]) for g in groups], bool)
        design = _design(label_s.sum(axis=1, keepdims=True), windows)
        idle_rows = design[:, -1] > 0.99
        if len(y):
            p_idle = float(np.median(y[idle_rows])) if idle_rows.any() else float(y.min())
            # the labels drew no less than the time between inferences: idle power above the run's mean
            # (an idle reading taken while the device still cooled down) would leave them negative energy
            p_idle = min(p_idle, float(np.mean(y)))
            active_j = max(float(np.mean(y)) * (t1 - t0) / 1e9 - p_idle * (idle_s + seconds[saving].sum()), 0.0)
            p = np.append(np.where(g_saving, p_idle, active_j / max(seconds[work].sum(), 1e-12)), p_idle)
            notes.append(f"{len(y)} sensor updates for {n} labels and idle: too few, or labels that the windows "
                         "never saw or cannot tell apart; the split is by time, with bounds instead of intervals")
        else:  # no update at all: one power level for all the time
            p = np.full(len(groups) + 1, (measured_j or 0.0) / max((t1 - t0) / 1e9, 1e-12))
            notes.append("no power reading inside the span: " + ("the measured energy is split by time alone (every "
                         "label, and the time between inferences, at the run's mean power)" if measured_j else
                         "no energy can be given"))
        draws = np.full((1, len(groups) + 1), np.nan)
        e_draws, p_label, total = None, None, 1.0
        residual = float("nan")
        method = Method.TIME_PROPORTIONAL
    energies = p * g_seconds
    scale = 1.0
    if measured_j is not None and energies.sum() > 0 and len(y):
        scale = measured_j / energies.sum()
        notes.append(f"scaled by {scale:.4f} so that the labels and idle add up to the measured "
                     f"{measured_j:.4g} J")
    draws = draws * scale
    p = p * scale
    boot_j = draws * g_seconds
    low, high = np.quantile(boot_j, q, axis=0), np.quantile(boot_j, 1 - q, axis=0)
    if method == Method.WLS:  # an interval holds its own estimate (a bounded fit's draws may not)
        low, high = np.minimum(low, p * g_seconds), np.maximum(high, p * g_seconds)
    names = timeline.names
    wls = method == Method.WLS
    group_rows = []
    for k, g in enumerate(groups):
        members = np.flatnonzero(group_of == g)
        label = names[g] if len(members) == 1 else f"{names[g]} (+{len(members) - 1} merged)"
        group_rows.append(Group(label, float(g_seconds[k]), float(p[k]),
                                Energy(float(p[k] * g_seconds[k]), float(low[k]), float(high[k]), method)))
    # a member of a merged group keeps its own estimate where that alone is known to
    # within the tolerance; the others share what is left of the group's energy in
    # proportion to their time, with bounds: each drew at least the idle power (a
    # busy device draws no less than an idle one), the rest holds the remainder
    floor_w = max(float(np.nanquantile(draws[:, -1], q)) if wls else float(p[-1]), 0.0)
    own_se = e_draws.std(axis=0) / max(total, 1e-12) if wls else np.full(n, np.inf)
    rows: list[LabelEstimate | None] = [None] * n
    for k, g in enumerate(groups):
        members = np.flatnonzero(group_of == g)
        if wls and len(members) == 1:
            j = members[0]
            rows[j] = LabelEstimate(names[j], float(seconds[j]), float(p[k]),
                                    Energy(float(p[k] * seconds[j]), float(low[k]), float(high[k]), Method.WLS),
                                    names[j])
            continue
        alone = [j for j in members if own_se[j] <= tolerance]
        shared = [j for j in members if own_se[j] > tolerance]
        for j in alone:
            lo_j, hi_j = np.quantile(e_draws[:, j] * scale, [q, 1 - q])
            e_j = float(p_label[j] * scale * seconds[j])
            lo_j, hi_j = min(lo_j, e_j), max(hi_j, e_j)
            rows[j] = LabelEstimate(names[j], float(seconds[j]), float(p_label[j] * scale),
                                    Energy(float(p_label[j] * scale * seconds[j]), float(lo_j), float(hi_j),
                                           Method.WLS), group_rows[k].label)
        if not shared:
            continue
        rest_j = g_seconds[k] * p[k] - sum(rows[j].energy.joules for j in alone)
        if wls:
            rest_draws = boot_j[:, k] - (e_draws[:, alone].sum(axis=1) * scale if alone else 0.0)
            rest_high = float(np.quantile(rest_draws, 1 - q))
        else:
            rest_high = rest_j
        shared_s = max(float(seconds[shared].sum()), 1e-12)
        how, detail = (Method.WITHIN_GROUP, names[g]) if wls else (Method.TIME_PROPORTIONAL, "")
        # each member drew at least the floor (idle power), but no member's floor can exceed what the
        # share holds on average (an idle power measured above the run's own mean would exclude the estimate)
        floor_k = min(floor_w, max(rest_j, 0.0) / shared_s)
        for j in shared:
            e = rest_j * seconds[j] / shared_s
            lo = floor_k * seconds[j]
            hi = max(rest_high - floor_k * (shared_s - seconds[j]), e)
            rows[j] = LabelEstimate(names[j], float(seconds[j]), e / max(seconds[j], 1e-12),
                                    Energy(float(e), lo, hi, how, detail, bound=True),
                                    group_rows[k].label if wls else names[j])
    if not wls and n:
        # a split by time assumes each label's power (phprof's saves at the idle power, the rest at one
        # level): its bounds are the whole active energy's, not its group's, which holds only by that
        # assumption; each label drew at least the floor, and at most what the others leave above theirs
        pool = float(np.sum(p[:-1] * g_seconds[:-1]))
        pool_s = max(float(seconds.sum()), 1e-12)
        floor_pool = min(floor_w, max(pool, 0.0) / pool_s)
        for j in range(n):
            e = rows[j].energy
            lo = min(floor_pool * seconds[j], e.joules)
            hi = max(pool - floor_pool * (pool_s - seconds[j]), e.joules)
            rows[j] = replace(rows[j], energy=replace(e, low_j=float(lo), high_j=float(hi)))
        if saving.any():
            notes.append("split by time: phprof's window saves are taken to draw the idle power (they run none of "
                         "the run's work), the other labels one power; each label's bounds are the whole active "
                         "energy's")
    # a label's power: its energy over the time it was active (overlapping kernels each drew theirs)
    rows = [replace(r, power_w=r.energy.joules / max(busy_s[j], r.seconds, 1e-12)) for j, r in enumerate(rows)]
    if wls:
        # a label inside too few windows: the bootstrap cannot show what the data do not pin (its draws
        # barely move, however wrong the fit), so its range is what physics allows: from idle power over
        # its own time to the limit over its activity
        windows_in = (label_s > 0).sum(axis=0)
        floor, ceiling = power_bounds_w if power_bounds_w is not None else (0.0, np.inf)
        few = [j for j in range(n) if windows_in[j] < FEW_WINDOWS and max(busy_s[j], rows[j].seconds) > 0
               and rows[j].energy.method is Method.WLS]
        for j in few:
            e = rows[j].energy
            lo = min(e.low_j, floor * rows[j].seconds)
            hi = max(e.high_j, ceiling * max(busy_s[j], rows[j].seconds))
            rows[j] = replace(rows[j], energy=replace(e, low_j=lo, high_j=hi if np.isfinite(hi) else None, bound=True))
        if few:
            notes.append(f"{', '.join(names[j] for j in few)}: inside fewer than {FEW_WINDOWS} of the sensor's "
                         "windows, so the data do not pin them: bounds from the idle power to the power limit "
                         "instead of an interval")
    idle = LabelEstimate(IDLE, float(idle_s), float(p[-1]),
                         Energy(float(energies[-1] * scale), float(low[-1]), float(high[-1]), method), IDLE)
    merged = sum(1 for r in group_rows if "merged)" in r.label)
    if wls and merged:
        notes.append(f"{merged} labels were merged with their children: the sensor could not resolve "
                     f"the children to within {tolerance:.0%} of the total")
    return Estimate(rows, idle, method, int(len(y)), residual, interval, notes, group_rows, draws, col, scale)
