"""phprof's own work between profiler windows on the attribution's timeline (fast tier).

Warm-up steps before each window (inferences that run at full power, not recorded)
and the windows' saves are labels of their own (``timeline.with_profiler_work``):
here on a device timeline built in memory, whose truth is known at every instant."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from phprof.attribution.estimate import Timeline, Work, estimate_label_power, instant_windows
from phprof.attribution.timeline import CLASS_NAMES, kernel_class, with_profiler_work
from phprof.sources import SensorModel
from phprof.store import INFERENCE_DTYPE, PROFILER_WORK_DTYPE, Kind, ProfilerWork
from phprof.store.results import Role

MS = 1_000_000
KERNEL_W = {"gemm": 350.0, "elementwise": 200.0, "layer_norm": 250.0}
IDLE_W = 70.0
MIXES = [[(0, 1.2), (1, 0.3)], [(2, 0.2), (0, 0.6), (1, 0.5)], [(1, 0.8), (2, 0.4)], [(0, 2.0), (2, 0.3)]]


def windowed_run(seconds=40.0, seed=0, warmups=2, per_window=25, save_s=0.3):
    """Windows of ``per_window`` recorded inferences (four layers, each a mix of three kernels of
    known power), each after ``warmups`` warm-up inferences (the same kernels, not recorded) and
    followed by a save (the device idle): the recorded kernels' timeline, the inferences, the
    profiler work spans, the windows of a 101 ms / 25 ms / 1% sensor, the span, each layer's true
    energy and the measured total."""
    rng = np.random.default_rng(seed)
    rows, recorded, inferences, work = [], [], [], []  # rows: (start, end, label, kernel)
    t = 0

    def inference(t: int, keep: bool) -> int:
        for j, mix in enumerate(MIXES):
            for k, ms in mix:
                d = round(ms * rng.uniform(0.7, 1.3) * MS)
                rows.append((t, t + d, j, k))
                recorded.append(keep)
                t += d + round(rng.uniform(0.002, 0.02) * MS)
        return t

    while t < seconds * 1e9:
        for _ in range(warmups):
            s = t
            t = inference(t, keep=False)
            work.append((int(ProfilerWork.WINDOW_WARMUP), s, t))
            t += round(rng.uniform(0.1, 2) * MS)
        for _ in range(per_window):
            s = t
            t = inference(t, keep=True)
            inferences.append((s, t))
            t += round(rng.uniform(0.5, 8) * MS)
        work.append((int(ProfilerWork.WINDOW_SAVE), t, t + round(save_s * 1e9)))
        t += round(save_s * 1e9) + round(rng.uniform(0.1, 2) * MS)
    r = np.array(rows, np.int64)
    keep = np.array(recorded)
    names = list(KERNEL_W)
    s, e, lab, ker = r[keep].T
    kernels = Work(s, e, lab, ker, names, np.array([kernel_class(n, int(Kind.KERNEL)) for n in names]), CLASS_NAMES)
    timeline = Timeline(s, e, lab, [f"layer{j}" for j in range(4)], np.full(4, -1), np.arange(len(s)), kernels)
    infs = np.zeros(len(inferences), INFERENCE_DTYPE)
    infs["index"] = np.arange(len(inferences))
    infs["start_ns"], infs["end_ns"] = np.array(inferences).T
    spans = np.array([tuple(w) for w in work], PROFILER_WORK_DTYPE)
    span = (int(infs["start_ns"][0]), int(infs["end_ns"][-1]))
    truth = np.bincount(lab, np.array([KERNEL_W[names[k]] for k in ker]) * (e - s) / 1e9, 4)
    # the true power at every instant: idle, or the one kernel running (warm-up steps' too)
    edges = np.unique(np.concatenate([r[:, 0], r[:, 1], list(span)]))
    level = np.full(len(edges), IDLE_W)
    for a, b, _, k in rows:
        level[np.searchsorted(edges, a):np.searchsorted(edges, b)] = KERNEL_W[names[k]]
    cum = np.concatenate([[0.0], np.cumsum(level[:-1] * np.diff(edges) / 1e9)])
    updates = np.arange(span[0] + 40 * MS, span[1], 101 * MS)
    watts = (np.interp(updates, edges, cum) - np.interp(updates - 25 * MS, edges, cum)) / 0.025 \
        * (1 + 0.01 * rng.standard_normal(len(updates)))
    measured = float(np.interp(span[1], edges, cum) - np.interp(span[0], edges, cum))
    windows = instant_windows(updates, watts, SensorModel(0.101, 0.025), span)
    return timeline, SimpleNamespace(inferences=infs, profiler_work=spans), windows, span, truth, measured


def test_profiler_work_spans_are_labels_of_their_own_outside_the_inferences():
    timeline, trace, *_ = windowed_run(seconds=3.0)
    out = with_profiler_work(timeline, trace)
    assert out.names == timeline.names + [Role.WINDOW_WARMUP.label, Role.WINDOW_SAVE.label]
    assert list(out.parents[-2:]) == [-1, -1] and out.work is timeline.work
    warm, save = len(timeline.names), len(timeline.names) + 1
    inf = trace.inferences
    for j in (warm, save):
        s, e = out.starts_ns[out.labels == j], out.ends_ns[out.labels == j]
        assert len(s) and (out.events[out.labels == j] == -1).all()
        assert (s >= inf["start_ns"][0]).all() and (e <= inf["end_ns"][-1]).all()  # inside the span only
        for a, b in zip(s, e):
            assert not ((inf["start_ns"] < b) & (inf["end_ns"] > a)).any()
    # the first window's warm-up steps lie before the span: not on the timeline
    w = trace.profiler_work[trace.profiler_work["kind"] == int(ProfilerWork.WINDOW_WARMUP)]
    inside = w["start_ns"] >= inf["start_ns"][0]
    assert (out.labels == warm).sum() == inside.sum() < len(w)
    assert with_profiler_work(timeline, SimpleNamespace(inferences=inf, profiler_work=trace.profiler_work[:0])) \
        is timeline


def test_warm_up_steps_at_full_power_between_windows_leave_the_layers_unbiased():
    timeline, trace, windows, span, truth, measured = windowed_run()
    bounds = (IDLE_W, 400.0)
    known = estimate_label_power(with_profiler_work(timeline, trace), windows, span, measured_j=measured,
                                 power_bounds_w=bounds, bootstrap=50)
    as_idle = estimate_label_power(timeline, windows, span, measured_j=measured, power_bounds_w=bounds, bootstrap=50)
    layers = truth.sum()

    def errors(est) -> np.ndarray:
        return np.array([x.energy.joules for x in est.labels[:4]]) / truth - 1

    known_err, idle_err = errors(known), errors(as_idle)
    assert abs(sum(x.energy.joules for x in known.labels[:4]) / layers - 1) < 0.01
    assert np.abs(known_err).max() < 0.03  # measured: within 1.3% (seed 0)
    assert abs(known.idle.power_w - IDLE_W) < 0.02 * IDLE_W
    # the control: the same windows with the warm-up steps and saves read as idle time put the idle
    # power above the device's and move energy between layers (measured: -29% to +43%, seed 0)
    assert np.abs(idle_err).max() > 0.10 and as_idle.idle.power_w > IDLE_W * 1.03
