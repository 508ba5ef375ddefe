"""Attribution on real kernel mixes (issue 16): unscoped kernels, overlaps, physical bounds.

Fast tier: small traces built in memory, windows computed from a known truth (no fake, no clock)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from phprof.attribution.estimate import Timeline, estimate_label_power, instant_windows
from phprof.attribution.timeline import NO_KERNEL, UNSCOPED, kernel_timeline, scope_timeline
from phprof.energy import Method
from phprof.sources import SensorModel
from phprof.store import (EVENT_DTYPE, INFERENCE_DTYPE, MODULE_DTYPE, PHASE_DTYPE, STACK_DTYPE, WINDOW_DTYPE, Kind,
                          Trace)

MS = 1_000_000


def tiny_trace(events, strings, stacks=((0, 0),), inferences=((0, 100 * MS),)) -> Trace:
    """A trace held in memory: ``events`` are (kind, start_ns, end_ns, name, stack, device, stream, inference)."""
    ev = np.zeros(len(events), EVENT_DTYPE)
    for i, (kind, s, e, name, stack, device, stream, inf) in enumerate(events):
        ev[i] = (s, e, name, stack, inf, -1, stream, device, int(kind))
    ev = ev[np.argsort(ev["start_ns"], kind="stable")]
    infs = np.zeros(len(inferences), INFERENCE_DTYPE)
    for i, (s, e) in enumerate(inferences):
        infs[i] = (i, s, e, 0, s, e, -1)  # its CPU span the same; kernels not counted
    return Trace(Path("in-memory"), "complete", 1, {}, list(strings), np.array([tuple(s) for s in stacks], STACK_DTYPE), ev, infs,
                 np.zeros(0, PHASE_DTYPE), np.zeros(0, WINDOW_DTYPE), np.zeros(0, MODULE_DTYPE), None, None)


def test_kernels_launched_outside_every_scope_are_a_label_of_their_own():
    # strings: 0 "", 1 "layer", 2 "gemm"; stack 1 = (root, "layer")
    k = Kind.KERNEL
    trace = tiny_trace([(k, 10 * MS, 20 * MS, 2, 1, 0, 7, 0),  # inside the layer's scope
                        (k, 30 * MS, 40 * MS, 2, 0, 0, 7, 0),  # launched by autograd's thread: no scope
                        (k, 35 * MS, 45 * MS, 2, 0, 0, 8, 0)],  # and on another stream, overlapping it
                       ["", "layer", "gemm"], stacks=((0, 0), (0, 1)))
    tl = kernel_timeline(trace)
    assert UNSCOPED in tl.names and NO_KERNEL in tl.names
    kernels = tl.events >= 0
    assert set(tl.labels[kernels]) == {tl.names.index("layer"), tl.names.index(UNSCOPED)}
    assert (tl.labels[~kernels] == tl.names.index(NO_KERNEL)).all()  # only the real gaps are "no kernel"
    seconds = tl.seconds_in(np.array([0]), np.array([100 * MS]))[0]
    assert seconds[tl.names.index(UNSCOPED)] == pytest.approx(0.015)
    assert seconds[tl.names.index(NO_KERNEL)] == pytest.approx(0.100 - 0.025)


def test_overlapping_annotations_leave_no_negative_idle():
    """Two threads' module scopes overlap in time: the time no label covers is never negative."""
    ua = Kind.USER_ANNOTATION
    # strings: 1 "a" (thread 1), 2 "b" (thread 2); each inference 20 ms, both scopes nearly all of it
    events, inferences = [], []
    rng = np.random.default_rng(0)
    t = 0
    for i in range(400):
        inferences.append((t, t + 20 * MS))
        events += [(ua, t + MS, t + 19 * MS, 1, 0, -1, 1, i), (ua, t + 2 * MS, t + 18 * MS, 2, 0, -1, 2, i)]
        t += 20 * MS + int(rng.uniform(1, 9) * MS)
    trace = tiny_trace(events, ["", "a", "b"], inferences=inferences)
    tl = scope_timeline(trace)
    span = (0, inferences[-1][1])
    updates = np.arange(span[0] + 30 * MS, span[1], 101 * MS)
    windows = instant_windows(updates, np.full(len(updates), 150.0), SensorModel(0.101, 0.025), span)
    est = estimate_label_power(tl, windows, span, measured_j=150.0 * span[1] / 1e9)
    assert est.idle.seconds >= 0 and est.idle.energy.joules >= 0
    for x in est.labels + [est.idle]:
        e = x.energy
        assert e.joules >= 0 and (e.low_j is None or e.low_j >= 0), (x.label, e)


def test_a_time_split_whose_idle_power_exceeds_the_runs_mean_keeps_its_estimate_inside_its_bounds():
    """Too few updates for a fit: a split by time. The windows that saw no activity read more than
    the run's mean (a device still cooling down): the floor 'each label drew idle power' must not
    push the bounds past the estimate, nor leave the labels negative energy."""
    starts = np.array([0, 10, 20, 30]) * MS
    timeline = Timeline(starts, starts + 8 * MS, np.array([0, 1, 0, 1]), ["x", "y"], np.array([-1, -1]))
    span = (0, 400 * MS)
    updates = np.array([30, 130, 230, 330]) * MS + 25 * MS
    watts = np.array([90.0, 160.0, 160.0, 160.0])  # the one window over the labels reads less than idle ones
    windows = instant_windows(updates, watts, SensorModel(0.1, 0.025), span)
    est = estimate_label_power(timeline, windows, span, measured_j=50.0)
    assert est.method is Method.TIME_PROPORTIONAL
    for x in est.labels + [est.idle]:
        e = x.energy
        assert e.joules >= 0, (x.label, e)
        if e.low_j is not None:
            assert e.low_j <= e.joules <= e.high_j and e.low_j < e.high_j, (x.label, e)
    assert est.total_j == pytest.approx(50.0)


KERNEL_W = {"gemm": 350.0, "elementwise": 200.0, "layer_norm": 250.0, "nccl_all_reduce": 150.0}
IDLE = 70.0


def shared_kernels_run(seconds=60.0, seed=0, overlap=False):
    """Four layers, each a different mix of the same three kernels (each kernel one true power in
    every layer), random pauses between inferences; with ``overlap``, a communication kernel on a
    second stream runs under the last layer. Returns the timeline (with its work), the windows a
    101 ms / 25 ms / 1% sensor reports, the span and the true energy per label (power above idle
    shared by each kernel's, idle power equally)."""
    from phprof.attribution.estimate import Work
    from phprof.attribution.timeline import CLASS_NAMES, kernel_class

    rng = np.random.default_rng(seed)
    names = list(KERNEL_W)
    mixes = [[(0, 1.2), (1, 0.3)], [(2, 0.2), (0, 0.6), (1, 0.5)], [(1, 0.8), (2, 0.4)], [(0, 2.0), (2, 0.3)]]
    t, rows = 0, []  # (start, end, label, kernel)
    while t < seconds * 1e9:
        for j, mix in enumerate(mixes):
            layer_start = t
            for k, ms in mix:
                d = round(ms * rng.uniform(0.7, 1.3) * MS)
                rows.append((t, t + d, j, k))
                t += d + round(rng.uniform(0.002, 0.02) * MS)
            if overlap and j == 3:
                rows.append((layer_start, layer_start + round(1.5 * MS), 4, 3))  # under the last layer
        t += round(rng.uniform(0.5, 8) * MS)
    r = np.array(rows, np.int64)
    r = r[np.argsort(r[:, 0], kind="stable")]
    s, e, lab, ker = r.T
    labels = [f"layer{j}" for j in range(4)] + (["comm"] if overlap else [])
    work = Work(s, e, lab, ker, names, np.array([kernel_class(n, int(Kind.KERNEL)) for n in names]), CLASS_NAMES)
    # the timeline's own segments: overlaps cut (the earlier keeps them), as kernel_timeline does
    reach = np.maximum.accumulate(e)
    cut = np.maximum(s, np.r_[np.iinfo(np.int64).min, reach[:-1]])
    keep = e > cut
    timeline = Timeline(cut[keep], e[keep], lab[keep], labels, np.full(len(labels), -1), work=work)
    span = (int(s[0]), int(e.max()))
    # the truth, at each elementary instant: idle, plus each running kernel's power above idle
    edges = np.unique(np.concatenate([s, e, list(span)]))
    above = np.array([KERNEL_W[names[k]] - IDLE for k in ker])
    i0, i1 = np.searchsorted(edges, s), np.searchsorted(edges, e)
    level, count = np.zeros(len(edges)), np.zeros(len(edges))
    np.add.at(level, i0, above)
    np.add.at(level, i1, -above)
    np.add.at(count, i0, 1)
    np.add.at(count, i1, -1)
    level, count, dt = np.cumsum(level)[:-1], np.cumsum(count)[:-1], np.diff(edges) / 1e9
    own = np.concatenate([[0], np.cumsum(np.where(count > 0, dt / np.maximum(count, 1), 0))])
    energy = above * (e - s) / 1e9 + IDLE * (own[i1] - own[i0])
    truth = np.bincount(lab, energy, len(labels))
    power = IDLE + level
    cum = np.concatenate([[0.0], np.cumsum(power * dt)])
    updates = np.arange(span[0] + 40 * MS, span[1], 101 * MS)
    b, a = updates, updates - 25 * MS
    watts = (np.interp(b, edges, cum) - np.interp(a, edges, cum)) / 0.025 * (1 + 0.01 * rng.standard_normal(len(b)))
    measured = float(cum[-1])
    return timeline, instant_windows(updates, watts, SensorModel(0.101, 0.025), span), span, truth, measured


@pytest.mark.parametrize("overlap", [False, True], ids=["one stream", "two streams"])
def test_layers_that_share_kernels_of_known_power(overlap):
    """The same kernels in every layer, in different mixes: each label's energy within 1% of the total,
    inside its interval, every power within [idle, limit]; concurrent kernels shared by power."""
    timeline, windows, span, truth, measured = shared_kernels_run(overlap=overlap)
    est = estimate_label_power(timeline, windows, span, measured_j=measured, power_bounds_w=(0.0, 400.0),
                               bootstrap=100)
    assert est.method is Method.WLS
    errors = [abs(x.energy.joules - t) / measured for x, t in zip(est.labels, truth)]
    assert max(errors) <= 0.01, errors
    inside = [x.energy.low_j <= t <= x.energy.high_j for x, t in zip(est.labels, truth)]
    assert sum(inside) >= len(truth) - 1, (inside, [(x.energy, t) for x, t in zip(est.labels, truth)])
    for x in est.labels:
        assert est.idle.power_w * 0.999 <= x.power_w <= 400.0 * 1.001, (x.label, x.power_w)
    assert any("cross-validation" in n for n in est.notes)
    if overlap:  # start order would have given the comm kernel nothing (it starts with the layer)
        comm = est.labels[4].energy.joules
        assert abs(comm - truth[4]) / truth[4] < 0.15, (comm, truth[4])
