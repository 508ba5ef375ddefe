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
        infs[i] = (i, s, e, 0)
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
