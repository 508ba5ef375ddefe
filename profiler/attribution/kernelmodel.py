"""The power model of a timeline's work: kernels whose power is shared across layers.

A sensor update k reports the device's mean power over its window. The device
draws its idle power p0 all the time, and above it what runs: a kernel
instance i of kernel n (by name) in label (layer) j draws p_n + d_j above idle,
so that the same GEMM kernel has one power in every layer, and a layer's own
deviation d_j is the part its kernels' powers do not explain. Concurrent
kernels (several streams) add above idle: the power of an instant is shared by
what each kernel draws, not given to the one that started first. With P_j the
mean power above idle of label j's kernels (P_j = sum_n w_jn p_n + d_j, w_jn the
share of j's kernel time in kernel n), each update is one linear equation

    y_k = p0 + sum_j s_kj P_j + sum_n (s_kn - sum_j s_kj w_jn) p_n

(s_kj, s_kn: the share of window k that label j's, kernel n's instances ran,
overlaps counted in full), and a label's energy is P_j x its kernel time plus
idle power x its own time (overlaps shared equally). Every unknown lies within
physics, enforced in the fit (bounded least squares): p0 in [floor, limit],
each P_j and p_n in [0, limit - floor] above idle; where the floor is a measured
idle power, down to it (a label may draw less than the power between inferences).

Kernels with little time in the windows are pulled toward their class's power
(GEMM, attention, elementwise, reduction/norm, memory copy, communication,
other: ``phprof.attribution.timeline.KERNEL_CLASSES``), and each label's
deviation toward its kernels' mix, by penalties whose strengths are chosen by
cross-validation on held-out blocks of sensor updates (the choice is reported):
a strength of 0 on the labels is the model "one power per label"; a large one,
"power belongs to kernels". On a CPU timeline there are no kernels: the labels
alone. The bootstrap draws the strengths too, among those the held-out updates
cannot tell from the best, so the intervals hold the model choice.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import solve_triangular
from scipy.optimize import lsq_linear, nnls

LAMBDA_LABEL = (0.0, 0.1, 1.0, 10.0, 1e3)  # label deviation toward its kernels' mix (x the label's weight in the data)
LAMBDA_KERNEL = (0.1, 1.0, 10.0, 1e3)  # kernel power toward its class's
FOLDS = 5
FEW_WINDOWS = 20  # a label inside fewer of the sensor's windows has no deviation of its own from its kernels


@dataclass(frozen=True)
class Work:
    """What ran inside the labels, uncut: each instance [starts_ns, ends_ns) of kernel ``kernels``
    (an index into ``kernel_names``) in label ``labels``; instances may overlap (several streams).
    ``classes[k]``: kernel k's class (an index into ``class_names``), the prior of its power."""

    starts_ns: np.ndarray
    ends_ns: np.ndarray
    labels: np.ndarray
    kernels: np.ndarray
    kernel_names: list[str]
    classes: np.ndarray
    class_names: list[str]


def overlap_seconds(starts_ns: np.ndarray, ends_ns: np.ndarray, keys: np.ndarray, n_keys: int,
                    a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Seconds of each key's segments inside each [a_k, b_k] (shape (len(a), n_keys)); segments of one
    key may overlap, each counts in full. The time of segments before x is (segments started by x) x
    x - (their starts) - (segments ended by x) x x + (their ends): prefix sums of sorted starts and ends."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    out = np.zeros((len(a), n_keys))
    if not len(starts_ns):
        return out
    t0 = int(min(starts_ns.min(), a.min() if len(a) else 0))
    x = np.concatenate([a, b]) - t0
    order = np.argsort(keys, kind="stable")
    bounds = np.searchsorted(keys[order], np.arange(n_keys + 1))
    for j in range(n_keys):
        rows = order[bounds[j]:bounds[j + 1]]
        if not len(rows):
            continue
        s, e = np.sort(starts_ns[rows] - t0), np.sort(ends_ns[rows] - t0)
        cs, ce = np.concatenate([[0], np.cumsum(s)]), np.concatenate([[0], np.cumsum(e)])
        ns, ne = np.searchsorted(s, x, side="right"), np.searchsorted(e, x, side="right")
        before = (ns * x - cs[ns]) - (ne * x - ce[ne])
        out[:, j] = (before[len(a):] - before[:len(a)]) / 1e9
    return out


def _nnls_gram(gram: np.ndarray, rhs: np.ndarray, bounds: tuple[float, float] | None = None) -> np.ndarray:
    """argmin ||X p - y||^2 over p >= 0 (or ``bounds[0] <= p <= bounds[1]``), given X'X
    and X'y (cheap for many rows): with X'X = L L', the same problem is ||L' p - L^-1 X'y||^2."""
    m = len(rhs)
    lower = np.linalg.cholesky(gram + np.eye(m) * (1e-10 * np.trace(gram) / m + 1e-300))
    c = solve_triangular(lower, rhs, lower=True, check_finite=False)
    if bounds is None:
        return nnls(lower.T, c, maxiter=50 * m)[0]
    return _box_lsq(lower.T, c, bounds)


def _box_lsq(a: np.ndarray, c: np.ndarray, bounds) -> np.ndarray:
    """argmin ||a p - c|| within box bounds: NNLS above the lower bounds (fast, Lawson-Hanson), the
    unknowns that pass their upper bound held there and the rest solved again, those whose gradient
    would take them back inside released, until the KKT conditions hold; BVLS where that does not
    settle (rare: upper bounds seldom bind)."""
    m = a.shape[1]
    lo = np.broadcast_to(np.asarray(bounds[0], float), (m,)).copy()
    hi = np.broadcast_to(np.asarray(bounds[1], float), (m,)).copy()
    at_hi = np.zeros(m, bool)
    p = lo.copy()
    tol = 1e-10 * max(float(np.abs(a).max()), 1.0) * max(float(np.abs(c).max()), 1.0)
    for _ in range(20):
        free = ~at_hi
        held = np.where(at_hi, hi, lo)
        rest = c - a @ held
        z = nnls(a[:, free], rest, maxiter=50 * m)[0] if free.any() else np.zeros(0)
        p = held.copy()
        p[free] += z
        over = free & (p > hi)
        if over.any():
            at_hi |= over
            continue
        grad = a.T @ (a @ p - c)
        back = at_hi & (grad > tol)  # lowering these would reduce the residual
        if not back.any():
            return p
        at_hi &= ~back
    return lsq_linear(a, c, bounds=(lo, hi), method="bvls").x


def raw_segments(timeline) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every label's activity uncut: its work's instances (overlaps kept) and its timeline
    segments that are not work (the gaps with no kernel); the timeline itself when it has no work."""
    work = timeline.work
    if work is None:
        return timeline.starts_ns, timeline.ends_ns, timeline.labels
    rest = timeline.events < 0 if timeline.events is not None else np.zeros(len(timeline.labels), bool)
    return (np.concatenate([work.starts_ns, timeline.starts_ns[rest]]),
            np.concatenate([work.ends_ns, timeline.ends_ns[rest]]),
            np.concatenate([work.labels, timeline.labels[rest]]))


def shared_seconds(starts: np.ndarray, ends: np.ndarray, labels: np.ndarray, n: int, t0: int, t1: int) -> np.ndarray:
    """Each label's own time inside [t0, t1] where overlapping segments share each instant equally."""
    s, e = np.clip(starts, t0, t1), np.clip(ends, t0, t1)
    keep = e > s
    s, e, lab = s[keep], e[keep], labels[keep]
    if not len(s):
        return np.zeros(n)
    edges = np.unique(np.concatenate([s, e]))
    i0, i1 = np.searchsorted(edges, s), np.searchsorted(edges, e)
    count = np.zeros(len(edges))
    np.add.at(count, i0, 1)
    np.add.at(count, i1, -1)
    count = np.cumsum(count)[:-1]
    own = np.where(count > 0, np.diff(edges) / 1e9 / np.maximum(count, 1), 0.0)
    cum = np.concatenate([[0.0], np.cumsum(own)])
    return np.bincount(lab, cum[i1] - cum[i0], n)


class KernelModel:
    """The unknowns (p0, P_j, p_n, class powers) of a timeline over a span, and the equations of
    windows placed anywhere (see the module's docstring)."""

    def __init__(self, timeline, span_ns: tuple[int, int], idle_s: float):
        t0, t1 = span_ns
        self.n = n = len(timeline.names)
        self.segments = raw_segments(timeline)
        s, e, lab = self.segments
        dur = (np.clip(e, t0, t1) - np.clip(s, t0, t1)) / 1e9
        self.raw_s = np.bincount(lab, dur, n)  # each label's activity, overlaps in full
        self.own_s = shared_seconds(s, e, lab, n, t0, t1)  # and its share of the time
        self.idle_s = idle_s
        work = timeline.work
        self.work = work
        self.k = len(work.kernel_names) if work is not None else 0
        self.c = len(work.class_names) if work is not None else 0
        if self.k:
            kd = (np.clip(work.ends_ns, t0, t1) - np.clip(work.starts_ns, t0, t1)) / 1e9
            mix = np.zeros((n, self.k))
            np.add.at(mix, (work.labels, work.kernels), kd)
            kernel_s = mix.sum(axis=1)
            self.mix = mix / np.maximum(kernel_s, 1e-12)[:, None]  # w_jn
            self.with_kernels = kernel_s > 0
        else:
            self.mix = np.zeros((n, 0))
            self.with_kernels = np.zeros(n, bool)
        self.m = 1 + n + self.k + self.c
        self.pinned = np.zeros((self.m, self.m))  # the penalties always on (see penalties())

    def design(self, a_ns: np.ndarray, b_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The equations of windows [a, b] (one row each), and each window's seconds per label."""
        width = (np.asarray(b_ns) - np.asarray(a_ns)) / 1e9
        label_s = overlap_seconds(*self.segments, self.n, a_ns, b_ns)
        share = label_s / width[:, None]
        cols = [np.ones((len(width), 1)), share]
        if self.k:
            w = self.work
            kernel = overlap_seconds(w.starts_ns, w.ends_ns, w.kernels, self.k, a_ns, b_ns) / width[:, None]
            cols += [kernel - share @ self.mix, np.zeros((len(width), self.c))]
        return np.hstack(cols), label_s

    def penalties(self, a_ns: np.ndarray, b_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The Gram matrices of the two penalties at unit strength: each label's deviation from its
        kernels' mix, each kernel's from its class, weighted by how much the windows hold of it."""
        width = (np.asarray(b_ns) - np.asarray(a_ns)) / 1e9
        m, n = self.m, self.n
        g_label, g_kernel = np.zeros((m, m)), np.zeros((m, m))
        if not self.k:
            return g_label, g_kernel
        share = overlap_seconds(*self.segments, n, a_ns, b_ns) / width[:, None]
        w = self.work
        kernel = overlap_seconds(w.starts_ns, w.ends_ns, w.kernels, self.k, a_ns, b_ns) / width[:, None]
        # a label or kernel the windows (almost) never saw weighs as if they had seen it evenly: its pull
        # toward the prior must not vanish with the data. A label inside fewer than FEW_WINDOWS windows
        # keeps no deviation of its own at all (its pull is always on, at the strongest strength).
        span_s = max(self.raw_s.sum() + self.idle_s, 1e-12)
        even = np.sqrt(len(width))
        weight_l = np.maximum(np.linalg.norm(share, axis=0), even * self.raw_s / span_s)
        kernel_s = np.bincount(w.kernels, (w.ends_ns - w.starts_ns) / 1e9, self.k)
        weight_k = np.maximum(np.linalg.norm(kernel, axis=0), even * kernel_s / span_s)
        unseen = (share > 0).sum(axis=0) < FEW_WINDOWS
        rows, pinned = [], []
        for j in np.flatnonzero(self.with_kernels):
            r = np.zeros(m)
            r[1 + j] = 1.0
            r[1 + n:1 + n + self.k] = -self.mix[j]
            (pinned if unseen[j] else rows).append(r * weight_l[j])
        if rows:
            r = np.array(rows)
            g_label = r.T @ r
        self.pinned = np.zeros((m, m))
        if pinned:
            r = np.array(pinned)
            self.pinned = max(LAMBDA_LABEL) * (r.T @ r)
        rows = []
        for q in range(self.k):
            r = np.zeros(m)
            r[1 + n + q] = 1.0
            r[1 + n + self.k + w.classes[q]] = -1.0
            rows.append(r * weight_k[q])
        r = np.array(rows)
        g_kernel = r.T @ r
        return g_label, g_kernel

    def bounds(self, floor_w: float, limit_w: float, idle_cap_w: float | None = None,
               idle_low_w: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """p0 in [floor, limit], everything above idle in [0, limit - floor]; with ``idle_cap_w``, p0 at most
        that and everything above idle at most limit - that, so that idle plus any power above it (a
        label's, a kernel's) stays within the limit exactly (box bounds cannot hold p0 + P <= limit).
        With ``idle_low_w``, p0 at least that and everything above idle at least floor - that (below 0):
        a label may draw less than the power between the inferences (a device still clocked up after
        work, the host's own activity there), never less than the floor (the device's idle power)."""
        cap = limit_w if idle_cap_w is None else min(max(idle_cap_w, floor_w), limit_w)
        base = floor_w if idle_low_w is None else min(max(idle_low_w, floor_w), cap)
        low = np.full(self.m, floor_w - base)
        high = np.full(self.m, max(limit_w - (floor_w if idle_cap_w is None else cap), 0.0))
        low[0], high[0] = base, cap
        return low, np.maximum(high, low + 1e-9 * max(limit_w, 1.0))  # the solver needs low < high

    def energies(self, params: np.ndarray) -> np.ndarray:
        """Each label's energy and idle's (last) under ``params`` (rows: several draws)."""
        params = np.atleast_2d(params)
        p0, above = params[:, :1], params[:, 1:1 + self.n]
        return np.column_stack([above * self.raw_s + p0 * self.own_s, p0[:, 0] * self.idle_s])


@dataclass(frozen=True)
class KernelFit:
    """The point estimate (label energies and idle's, last), its draws, and what was chosen."""

    energy: np.ndarray
    draws: np.ndarray
    residual_w: float
    strengths: tuple[float, float]  # (label, kernel) penalties chosen by cross-validation
    candidates: list[tuple[float, float]]  # those the held-out updates cannot tell from it (the draws')
    cv_rms_w: float
    notes: list[str]
    bounds: tuple[np.ndarray, np.ndarray] | None  # the final bounds of the unknowns, on the sensor's scale


IDLE_MARGIN = 0.05  # the draws' idle power may move from the point estimate's by this share (see KernelModel.bounds)


def fit_kernel_model(model: KernelModel, designs: list[np.ndarray], y: np.ndarray, blocks: np.ndarray,
                     penalties: tuple[np.ndarray, np.ndarray], power_bounds_w: tuple[float, float] | None,
                     measured_j: float | None, bootstrap: int, seed: int) -> KernelFit:
    """Cross-validates the penalties' strengths on held-out blocks of updates, fits the point estimate
    with the best, and bootstraps (blocks, window placements, and strengths among the candidates).

    ``power_bounds_w``: (floor, limit) of any power on the measured scale; the sensor's scale is
    measured / modelled energy (``measured_j``), which the bounded fit itself moves, so the point
    estimate is fitted again on the new scale until it holds."""
    x = designs[0]
    n_blocks = int(blocks.max()) + 1
    m = x.shape[1]
    order = np.argsort(blocks, kind="stable")
    edges = np.searchsorted(blocks[order], np.arange(n_blocks + 1))
    gram_b = np.zeros((len(designs), n_blocks, m, m))
    rhs_b = np.zeros((len(designs), n_blocks, m))
    for v, d in enumerate(designs):
        for b in range(n_blocks):
            rows = order[edges[b]:edges[b + 1]]
            gram_b[v, b] = d[rows].T @ d[rows]
            rhs_b[v, b] = d[rows].T @ y[rows]
    g_label, g_kernel = penalties
    grid = [(a, b) for a in LAMBDA_LABEL for b in LAMBDA_KERNEL] if model.k else [(0.0, 0.0)]
    g_all, r_all = gram_b[0].sum(axis=0), rhs_b[0].sum(axis=0)

    def solve(gram, rhs, strength, bounds):
        return _nnls_gram(gram + strength[0] * g_label + strength[1] * g_kernel + model.pinned, rhs, bounds)

    def physical(strength):
        """The bounds on the sensor's scale, with the idle power held near the point estimate's (with a
        measured idle power as the floor, the labels may draw less than the fitted idle, down to it)."""
        if power_bounds_w is None or not measured_j:
            return None
        scale, cap, base = 1.0, None, None
        for _ in range(8):
            lo, hi = power_bounds_w[0] / scale, power_bounds_w[1] / scale
            bounds = model.bounds(min(lo, hi * 0.999), hi, cap, base)
            p = solve(g_all, r_all, strength, bounds)
            new = measured_j / max(float(model.energies(p).sum()), 1e-12)
            new_cap = float(p[0]) * (1 + IDLE_MARGIN) if cap is None else cap
            new_base = (float(p[0]) * (1 - IDLE_MARGIN) if power_bounds_w[0] > 0 else None) if cap is None else base
            if abs(new / scale - 1) < 1e-9 and new_cap == cap and new_base == base:
                return bounds
            scale, cap, base = new, new_cap, new_base
        return bounds

    bounds = physical(grid[len(grid) // 2])

    notes: list[str] = []
    if len(grid) > 1 and n_blocks >= FOLDS:
        fold = np.arange(n_blocks) % FOLDS
        sq = np.zeros((len(grid), FOLDS))
        for f in range(FOLDS):
            held = fold == f
            g_tr, r_tr = g_all - gram_b[0, held].sum(axis=0), r_all - rhs_b[0, held].sum(axis=0)
            rows = np.concatenate([order[edges[b]:edges[b + 1]] for b in np.flatnonzero(held)])
            for i, strength in enumerate(grid):
                p = solve(g_tr, r_tr, strength, bounds)
                sq[i, f] = float(np.sum((x[rows] @ p - y[rows]) ** 2))
        mse = sq.sum(axis=1) / len(y)
        best = int(np.argmin(mse))
        # the strengths the held-out updates cannot tell from the best (one standard error of the
        # fold-wise difference)
        diff = (sq - sq[best]) / np.maximum(np.bincount(fold, np.diff(edges), FOLDS), 1) * FOLDS
        se = diff.std(axis=1, ddof=1) / np.sqrt(FOLDS)
        near = [grid[i] for i in range(len(grid)) if mse[i] - mse[best] <= se[i]]
        strength, cv = grid[best], float(np.sqrt(mse[best]))
        notes.append(f"power model: kernels' powers shared across layers, each layer's deviation toward its "
                     f"kernels' mix at strength {strength[0]:g} and each kernel's toward its class at {strength[1]:g}, "
                     f"chosen by {FOLDS}-fold cross-validation on held-out blocks of updates (held-out RMS "
                     f"{cv:.2f} W; {len(near)} of {len(grid)} strengths as good, all drawn by the bootstrap)")
    else:
        strength = grid[-1]  # the most constrained model: kernels at their class power, layers at their mix
        near, cv = [strength], float("nan")
        if len(grid) > 1:
            notes.append("too few blocks of updates to cross-validate the power model's penalties: "
                         f"the strongest, {strength}, used (kernels at their class's power, layers at their kernels')")
    bounds = physical(strength)
    p = solve(g_all, r_all, strength, bounds)
    rng = np.random.default_rng(seed)
    draws = np.empty((bootstrap, model.n + 1))
    for i in range(bootstrap):
        w = np.bincount(rng.integers(0, n_blocks, n_blocks), minlength=n_blocks).astype(float)
        v = rng.integers(len(designs))
        s = near[rng.integers(len(near))]
        draws[i] = model.energies(solve(np.tensordot(w, gram_b[v], 1), w @ rhs_b[v], s, bounds))[0]
    point = model.energies(p)[0]
    # a bootstrap over few blocks for many unknowns is too narrow: each draw's fit follows its own
    # blocks' noise as the point estimate follows the run's (the residuals of a least-squares fit are
    # smaller than its errors by the unknowns it fitted). The draws' spread around the estimate is
    # widened by sqrt(blocks / (blocks - fitted unknowns)), the unknowns counted as the penalised
    # fit's effective number (the trace of its hat matrix).
    penalised = g_all + strength[0] * g_label + strength[1] * g_kernel + model.pinned
    widen = _few_blocks_factor(g_all, penalised, n_blocks)
    draws = point + (draws - point) * widen
    if widen >= MAX_WIDEN:
        notes.append(f"{n_blocks} blocks of updates for about as many of the fit's unknowns: the bootstrap's spread "
                     f"is widened {MAX_WIDEN:.0f}x, its most, and the intervals may still be too narrow")
    elif widen > 1.2:
        notes.append(f"{n_blocks} blocks of updates for the fit's unknowns: the bootstrap's spread is widened "
                     f"{widen:.2f}x (a fit over few blocks follows their noise)")
    residual = float(np.sqrt(np.mean((x @ p - y) ** 2)))
    return KernelFit(point, draws, residual, strength, near, cv, notes, bounds)


MAX_WIDEN = 2.0  # the few-blocks widening at most (below: the effective unknowns near the blocks' number)


def _few_blocks_factor(gram: np.ndarray, penalised: np.ndarray, n_blocks: int) -> float:
    """sqrt(blocks / (blocks - effective unknowns)), at most MAX_WIDEN; the effective unknowns of a
    penalised least-squares fit are the trace of (X'X + penalties)^-1 X'X."""
    m = len(gram)
    ridge = np.eye(m) * (1e-10 * np.trace(penalised) / m + 1e-300)
    used = float(np.trace(np.linalg.solve(penalised + ridge, gram)))
    room = n_blocks - used
    if room <= n_blocks / MAX_WIDEN ** 2:
        return MAX_WIDEN
    return float(np.sqrt(n_blocks / room))
