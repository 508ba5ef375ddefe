"""phprof's own work between profiler windows (warm-up steps, saves) is known to the attribution.

A tiny BERT runs on the fake GPU with every module drawing its own known power
(``fake_nvml.power_per_module``), with warm-up steps before each window: those
inferences draw the modules' power between the recorded ones. Stored as spans of
their own (``/profiler_work``) they are labels of their own in the fit; read as
idle time (a trace without those spans, as an older phprof wrote) their energy is
the idle row's, and the idle power the fit finds is theirs mixed with the device's.

The fake draws a module's power from its first microsecond: it does not model a
GPU that runs at lower power for 100-200 ms after idling (../shared/docs/sensors.md),
so nothing here says whether the warm-up steps make the first inferences of a window
warmer; only that they no longer bias the split.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import fake_nvml
from phprof import load
from phprof.attribution import attribute
from phprof.attribution.timeline import trace_timeline
from phprof.store import ProfilerWork
from phprof.store.results import Role
from phprof.tracing.run import trace

pytestmark = pytest.mark.integration


def _true_j(fake, starts, ends) -> float:
    return float(sum(fake.true_energy(0, int(s), int(e)) for s, e in zip(starts, ends)))


def test_warm_up_steps_between_windows_do_not_bias_the_layers(tmp_path, monkeypatch, fake_lib):
    with fake_nvml.FakeNvml(fake_lib, tmp_path / "state", n_devices=1, preset="a100", seed=4,
                            ring_capacity=1 << 21) as fake:
        # updates every 20 ms (a V100's rate): enough of them in a few seconds of run
        fake.configure(0, "power_instant", dataclasses.replace(fake.get_model(0, "power_instant"), period_s=0.02,
                                                               window_s=0.01))
        monkeypatch.setenv("PHPROF_NVML_LIB", str(fake_lib))
        out = tmp_path / "t.h5"
        s = trace("bert-base-uncased", inferences=48, warmup=1, output=out, size="tiny", idle_s=0.3, source="nvml",
                  device="cpu", events_per_window=2500, window_warmup=2, measure_pass=False,
                  setup=fake_nvml.power_per_module(fake, {}, {}, dwell_s=0.0003))
        fake.set_power(0, fake_nvml.OUTSIDE_W, tag=fake_nvml.OUTSIDE_TAG)
        t = load(out)
        inf = t.inferences
        work = t.profiler_work
        warm = work[work["kind"] == int(ProfilerWork.WINDOW_WARMUP)]
        saves = work[work["kind"] == int(ProfilerWork.WINDOW_SAVE)]
        truth = _true_j(fake, inf["start_ns"], inf["end_ns"])
        inside = (warm["start_ns"] > inf["start_ns"].min()) & (warm["end_ns"] < inf["end_ns"].max())
        warm_truth = _true_j(fake, warm["start_ns"][inside], warm["end_ns"][inside])
        # each label's truth: the fake's energy over its own time on phprof's timeline
        timeline, _ = trace_timeline(t)
        label_truth = np.zeros(len(timeline.names))
        for a, b, j in zip(timeline.starts_ns.tolist(), timeline.ends_ns.tolist(), timeline.labels.tolist()):
            label_truth[j] += fake.true_energy(0, a, b)

    assert s.status == "complete" and len(inf) == 48
    assert len(t.windows) >= 4 and len(warm) == 2 * len(t.windows) and len(saves) == len(t.windows)  # the last one after the span
    # every warm-up step and save lies between windows, outside every recorded inference
    for a, b in zip(work["start_ns"], work["end_ns"]):
        assert not ((inf["start_ns"] < b) & (inf["end_ns"] > a)).any()

    r = attribute(t)
    rows = {x.role: x for x in r.layers}
    assert rows[Role.WINDOW_WARMUP].seconds == pytest.approx(
        float((warm["end_ns"][inside] - warm["start_ns"][inside]).sum()) / 1e9, rel=1e-6)
    assert rows[Role.WINDOW_SAVE].seconds > 0
    for role in (Role.WINDOW_WARMUP, Role.WINDOW_SAVE):  # what the fit assumes of them is not a point
        e = rows[role].energy
        assert e.low_j <= e.joules < e.high_j, (role, e)
    assert not any(g.label in (Role.WINDOW_WARMUP.label, Role.WINDOW_SAVE.label) for g in r.groups)
    assert sum(c.energy.joules for c in r.components) == pytest.approx(r.inferences_energy.joules, rel=1e-6)
    # the report's groups are the inferences' (each layer's share of them at most 100%), also in a split by time
    assert sum(g.energy.joules for g in r.groups) == pytest.approx(r.inferences_energy.joules, rel=1e-6)

    modules = [j for j, name in enumerate(timeline.names) if name not in {x.label for x in r.layers
                                                                           if x.role is not Role.MODULE}]
    true_j = float(label_truth[modules].sum())

    def bias(res) -> float:
        est = {x.label: x.energy.joules for x in res.layers}
        return sum(est[timeline.names[j]] for j in modules) / true_j - 1

    error = bias(r)
    inferences_error = r.inferences_energy.joules / truth - 1
    warm_error = rows[Role.WINDOW_WARMUP].energy.joules / warm_truth - 1
    assert abs(error) < 0.05 and abs(inferences_error) < 0.05
    assert abs(warm_error) < 0.10
