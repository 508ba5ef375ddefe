"""Faults of power logs, and attribution that reports them instead of absorbing them: on a synthetic
run whose truth is known (a Kineto trace of three layers with known powers, and a power log written
from a sensor model, an A100-like 101 ms update of a 25 ms window) imported as `phprof attribute`
imports it: stamped late, a counter that drops, a power column that reads high, no power column;
and a phprof power log whose counter drops."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import phprof
from phprof.energy import Method
from phprof.sources.csvlog import PowerCsvError

BASE_NS = 1_700_000_000_000_000_000  # the trace's baseTimeNanoseconds (epoch ns)
POWER_W = {"model.a": 320.0, "model.b": 140.0, "model.c": 230.0}
NO_KERNEL_W, OUTSIDE_W = 90.0, 60.0  # inside an inference with no kernel running; between inferences
GPU = "NVIDIA A100-SXM4-80GB"


def synthetic_run(steps: int = 300, seed: int = 0) -> tuple[dict, np.ndarray, np.ndarray]:
    """A Kineto document (steps of three layers, each one kernel, random gaps between steps)
    and the true power: breakpoints (ns) and the watts from each to the next."""
    rng = np.random.default_rng(seed)
    events, edges, watts = [], [], []
    us = 0  # relative to BASE_NS
    ext = 0

    def x(cat, name, ts, dur, pid=100, tid=10, **args):
        events.append({"ph": "X", "cat": cat, "name": name, "pid": pid, "tid": tid, "ts": ts, "dur": dur,
                       "args": {k.replace("_", " ") if k == "External_id" else k: v for k, v in args.items()}})

    for i in range(steps):
        durations = {name: int(rng.integers(1_000, 9_000)) for name in POWER_W}
        step_us = sum(durations.values()) + 3 * 100
        x("user_annotation", f"ProfilerStep#{i}", us, step_us)
        t = us
        for name, d in durations.items():
            ext += 1
            x("user_annotation", name, t, d + 100)
            x("cpu_op", "aten::work", t + 10, 30, External_id=ext)
            x("cuda_runtime", "cudaLaunchKernel", t + 20, 10, External_id=ext, correlation=ext)
            x("kernel", f"kernel_{name}", t + 100, d, pid=0, tid=7, External_id=ext, correlation=ext, device=0,
              stream=7)
            edges += [t, t + 100]
            watts += [NO_KERNEL_W, POWER_W[name]]
            t += d + 100
        edges.append(t)
        watts.append(OUTSIDE_W)
        us = t + int(rng.integers(2_000, 40_000))
    doc = {"schemaVersion": 1, "baseTimeNanoseconds": BASE_NS, "traceEvents": events,
           "deviceProperties": [{"id": 0, "name": GPU}]}
    return doc, BASE_NS + np.array(edges, np.int64) * 1000, np.array(watts)


def sensor_log(edges_ns, watts, *, shift_s=0.0, gain=1.0, period_s=0.101, window_s=0.025, row_s=0.010,
               seed=1, counter=True, power=True, drop_at=None):
    """A power log's rows (timestamp_ns, power_w, energy_j) of the true power, from 2 s before to
    2 s after it: each row the sensor's latest update (the mean over ``window_s`` before it,
    times ``gain``, 0.5% noise) and the energy counter's value; every stamp ``shift_s`` late;
    ``drop_at``: from this share of the rows on, the counter reads 40% lower (a fault)."""
    rng = np.random.default_rng(seed)
    t0, t1 = int(edges_ns[0]) - 2 * 10**9, int(edges_ns[-1]) + 2 * 10**9
    bp = np.concatenate([[t0], edges_ns, [t1]])
    w = np.concatenate([[OUTSIDE_W], watts, [OUTSIDE_W]])
    cum = np.concatenate([[0.0], np.cumsum(w[:-1] * np.diff(bp) / 1e9)])

    def energy(t):
        return np.interp(t, bp, cum)

    phase = t0 + 37_000_000
    updates = np.arange(phase, t1, round(period_s * 1e9))
    shown = gain * (energy(updates) - energy(updates - round(window_s * 1e9))) / window_s
    shown *= 1 + 0.005 * rng.standard_normal(len(shown))
    rows = np.arange(t0 + round(window_s * 1e9) + 200_000_000, t1, round(row_s * 1e9))
    k = np.searchsorted(updates, rows, side="right") - 1
    header, cols = ["timestamp_ns"], [rows + round(shift_s * 1e9)]
    if power:
        header.append("power_w")
        cols.append([f"{v:.3f}" for v in shown[k]])
    if counter:
        e = 81_234.5 + energy(rows)
        if drop_at is not None:
            e[int(drop_at * len(e)):] *= 0.6
        header.append("energy_j")
        cols.append([f"{v:.6f}" for v in e])
    return header, cols


def write_run(tmp_path: Path, name: str, doc, header, cols) -> tuple[Path, Path]:
    kineto = tmp_path / f"{name}.json"
    kineto.write_text(json.dumps(doc))
    csv = tmp_path / f"{name}.csv"
    csv.write_text(",".join(header) + "\n" + "".join(",".join(str(c) for c in row) + "\n" for row in zip(*cols)))
    return kineto, csv


@pytest.fixture(scope="module")
def run():
    return synthetic_run()


def attributed(tmp_path, run, name="run", **log):
    doc, edges, watts = run
    kineto, csv = write_run(tmp_path, name, doc, *sensor_log(edges, watts, **log))
    out = phprof.import_trace(kineto, csv, tmp_path / f"{name}.h5")
    return phprof.report(out, recompute=True)


def layer_power(r, name):
    return next(x for x in r.layers if x.label == name).power_w


def test_an_on_time_log_of_a_known_gpu_is_fitted_and_says_which_model(tmp_path, run):
    report = attributed(tmp_path, run)
    r = report.results
    notes = " | ".join(r.notes)
    assert "no published sensor model" not in notes  # the A100's is known by its name in the trace
    assert "clock runs" not in notes and "limit of the range" not in notes
    assert r.sensor.period_s == pytest.approx(0.101, abs=0.0005) and r.sensor.period_fitted
    for name, w in POWER_W.items():
        assert layer_power(r, name) == pytest.approx(w, rel=0.05)
    text = phprof.render(report, "text")
    assert "101.0 ms" in text or "101 ms" in text
    assert "(the counter's updates around each end)" in text  # what the total's +- is


@pytest.mark.parametrize("late_s", [0.3, 1.0])
def test_a_late_log_is_found_and_reported_not_absorbed(tmp_path, run, late_s):
    r = attributed(tmp_path, run, name=f"late{late_s}", shift_s=late_s).results
    shifted = [n for n in r.notes if "clock runs" in n]
    assert len(shifted) == 1 and "behind" in shifted[0]
    found_ms = float(shifted[0].split("clock runs ")[1].split(" ms")[0])
    assert found_ms == pytest.approx(late_s * 1e3, abs=15)
    assert not any("limit of the range" in n for n in r.notes)  # not run to the edge of the lag search
    assert any("energy counter is read over the inferences' span shifted" in n for n in r.notes)
    assert r.scale == pytest.approx(1.0, abs=0.01)  # the counter read on the same clock as the power
    for name, w in POWER_W.items():
        assert layer_power(r, name) == pytest.approx(w, rel=0.05)


def test_a_counter_that_drops_but_not_to_zero_is_an_error_in_the_log(tmp_path, run):
    doc, edges, watts = run
    kineto, csv = write_run(tmp_path, "drop", doc, *sensor_log(edges, watts, drop_at=0.5))
    with pytest.raises(PowerCsvError, match="not to near zero"):
        phprof.import_trace(kineto, csv, tmp_path / "drop.h5")
    assert not (tmp_path / "drop.h5").exists()


def test_a_power_column_far_from_the_counter_is_a_warning_naming_the_cause(tmp_path, run):
    r = attributed(tmp_path, run, name="high", gain=1.3).results
    warned = [n for n in r.notes if "disagree by" in n]
    assert len(warned) == 1 and "-23%" in warned[0] and "gain or offset" in warned[0]
    plain = attributed(tmp_path, run, name="right", gain=1.05).results
    assert not any("disagree by" in n for n in plain.notes)


def test_a_log_without_a_power_column_gets_notes_that_agree(tmp_path, run):
    r = attributed(tmp_path, run, name="counter-only", power=False).results
    notes = " | ".join(r.notes)
    assert "split by time" in notes
    for contradiction in ("refitted", "fitted to this run", "showed no new value", "scaled by"):
        assert contradiction not in notes, notes
    _, edges, watts = run  # the inferences span the breakpoints: their true energy
    assert r.total.joules == pytest.approx(float(watts[:-1] @ np.diff(edges)) / 1e9, rel=0.01)


def _nvml_log(counter_mj, power_mw=None, step_ns=20_000_000):
    """A phprof power log of one GPU's counter (and power), a reading every ``step_ns``."""
    from phprof.sources import READING_DTYPE, Channel, PowerLog
    from phprof.sources.nvml import FIELDS

    names = ["energy"] + (["power_instant"] if power_mw is not None else [])
    chans = tuple(Channel(f"gpu0.{f}", "gpu0", *FIELDS[f]) for f in names)
    parts = []
    for i, values in enumerate([counter_mj] + ([power_mw] if power_mw is not None else [])):
        r = np.zeros(len(values), READING_DTYPE)
        r["t_before_ns"] = BASE_NS + np.arange(len(values)) * step_ns + i * 2000
        r["t_after_ns"] = r["t_before_ns"] + 1000
        r["value"], r["seq"], r["channel"] = values, np.arange(len(values)), i
        parts.append(r)
    out = np.concatenate(parts)
    return PowerLog("nvml", chans, out[np.lexsort((out["channel"], out["seq"]))])


def test_a_reset_counter_is_bridged_and_a_drop_that_is_no_reset_is_refused():
    steps = np.full(100, 4_000)  # 4 J every 20 ms: 200 W
    counter = 9_000_000 + np.concatenate([[0], np.cumsum(steps)])
    reset = counter.copy()
    reset[50:] = reset[50:] - reset[50] + 4_000  # a driver reload: counting again from ~0
    e = _nvml_log(reset).energy("gpu0")
    assert e.method is Method.COUNTER and any("was reset 1 time" in n for n in e.notes)
    dropped = counter.copy()
    dropped[50:] = (dropped[50:] * 0.6).astype(np.int64)  # down, but nowhere near zero: a fault
    power = np.full(len(counter), 200_000)
    e = _nvml_log(dropped, power).energy("gpu0")
    assert any("not to near zero" in n and "not used" in n for n in e.notes)
    assert e.channel == "gpu0.power_instant"  # the power field instead, and it says so
    assert e.joules == pytest.approx(200 * 2.0, rel=0.02)


def test_a_sensor_unlike_the_nominal_gets_its_period_fitted_and_a_window_beyond_the_search_a_note(tmp_path, run):
    """A 200 ms update of a 1.8 s average: the period is fitted and said, and the window, beyond
    the 1.5 s the search reaches, is a note, not a silent figure on the limit."""
    r = attributed(tmp_path, run, name="slow", period_s=0.2, window_s=1.8).results
    assert r.sensor.period_s == pytest.approx(0.2, abs=0.001)
    assert any("updated every 200.0 ms, not the 100 ms" in n for n in r.notes)
    limit = [n for n in r.notes if "reaches the upper limit" in n]
    assert len(limit) == 1 and limit[0].startswith("the fitted window (1500 ms)")
