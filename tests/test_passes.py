"""The measurement pass (the profiler off) beside the profiled one: their energies, the overhead,
and the profiled split scaled to the measurement pass. Fast tier: the fake NVML polled on a
simulated clock (fake_nvml.sampling), a trace file written through the store."""
from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

from fake_nvml import sampling
from phprof.attribution.passes import passes
from phprof.attribution.rollups import rollups
from phprof.carbon import custom
from phprof.energy import Energy, Method
from phprof.store import INFERENCE_DTYPE, WINDOW_DTYPE, ProfilerWork, TraceWriter, load
from phprof.store.results import PassEnergy, Results

MEASURE_W, PROFILED_W, SAVE_W = 200.0, 260.0, 60.0


def _spans(t0: int, n: int, each_ms: float, gap_ms: float) -> np.ndarray:
    rows = np.zeros(n, INFERENCE_DTYPE)
    rows["index"] = np.arange(n)
    rows["start_ns"] = t0 + (np.arange(n) * (each_ms + gap_ms) * 1e6).astype(np.int64)
    rows["end_ns"] = rows["start_ns"] + int(each_ms * 1e6)
    return rows


def _two_passes(fake):
    """A measurement pass of 40 inferences at 200 W, then two profiled windows of 20 at 260 W
    with a save at 60 W between them; the truth of each pass over its spans."""
    t0 = time.time_ns() + 2_000_000_000
    measured = _spans(t0, 40, 20.0, 5.0)
    m_end = int(measured["end_ns"][-1])
    fake.set_power_at(0, MEASURE_W, t0)
    w1 = _spans(m_end + 300_000_000, 20, 26.0, 5.0)
    w2 = _spans(int(w1["end_ns"][-1]) + 800_000_000, 20, 26.0, 5.0)
    w2["index"] += 20
    fake.set_power_at(0, SAVE_W, m_end)
    spans = []
    for k, w in enumerate((w1, w2)):
        w["window"] = k
        a, b = int(w["start_ns"][0]), int(w["end_ns"][-1])
        fake.set_power_at(0, PROFILED_W, a)
        fake.set_power_at(0, SAVE_W, b)
        spans.append((a, b))
    log = sampling.power_log(fake, t0 - 200_000_000, spans[-1][1] + 400_000_000, fields=("energy",))
    inferences = np.concatenate([w1, w2])
    windows = np.zeros(2, WINDOW_DTYPE)
    for k, (w, (a, b)) in enumerate(zip((w1, w2), spans)):
        for name, value in zip(("index", "first_inference", "last_inference", "start_ns", "end_ns"),
                               (k, int(w["index"][0]), int(w["index"][-1]), a, b)):
            windows[name][k] = value
    truth_m = fake.true_energy(0, t0, m_end)
    truth_p = sum(fake.true_energy(0, a, b) for a, b in spans)
    return SimpleNamespace(measured_inferences=measured, inferences=inferences, windows=windows, power=log,
                           all_power=lambda: log), \
        truth_m, truth_p


def test_each_pass_is_measured_over_its_own_spans_and_bounds_the_truth(fake):
    trace, truth_m, truth_p = _two_passes(fake)
    m, p = passes(trace, "gpu0")
    assert (m.inferences, p.inferences) == (40, 40)
    assert m.inference_s == pytest.approx(40 * 0.020) and p.inference_s == pytest.approx(40 * 0.026)
    assert p.span_s < (trace.inferences["end_ns"][-1] - trace.inferences["start_ns"][0]) / 1e9 - 0.7  # saves left out
    for x, truth in ((m, truth_m), (p, truth_p)):
        assert x.energy.method is Method.COUNTER and x.energy.measured
        assert x.energy.low_j <= truth <= x.energy.high_j
        assert x.energy.joules == pytest.approx(truth, rel=0.03)
    # the profiled pass drew more: its overhead per inference is the difference of the two
    assert p.joules_per_inference - m.joules_per_inference == pytest.approx(
        truth_p / 40 - truth_m / 40, rel=0.1)


def test_no_measurement_pass_no_figures(fake):
    trace, _, _ = _two_passes(fake)
    trace.measured_inferences = trace.measured_inferences[:0]
    assert passes(trace, "gpu0") == (None, None)


def test_without_power_readings_the_passes_keep_their_times(fake):
    trace, _, _ = _two_passes(fake)
    m, p = passes(trace, "")
    assert m.energy is None and p.energy is None and m.seconds_per_inference == pytest.approx(0.020)


def _results(measurement, profiled) -> Results:
    return Results(model="m", task="t", device="gpu0", device_name="", trace_status="complete", inferences=10,
                   span_s=1.0, inference_s=0.5, batch_size=1, timeline="", layers=[], leaves=[],
                   total=Energy(120.0, method=Method.COUNTER), inferences_energy=Energy(100.0, 95.0, 105.0,
                                                                                         Method.WLS),
                   measurement_pass=measurement, profiled_pass=profiled)


def test_the_rollups_are_the_profiled_split_scaled_to_the_measurement_pass():
    m = PassEnergy(20, 0.8, 1.0, Energy(160.0, method=Method.COUNTER))  # 8 J per inference
    p = PassEnergy(10, 0.5, 0.6, Energy(100.0, method=Method.COUNTER))  # 10 J per inference
    r = _results(m, p)
    assert r.split_scale == pytest.approx(0.8)
    roll = rollups(r, custom(400.0))
    assert roll.per_inference.joules == pytest.approx(100.0 * 0.8 / 10)
    assert roll.per_1000.joules == pytest.approx(100.0 * 0.8 * 100)
    assert roll.per_inference.low_j is None  # the measurement pass has no bound: the scaled range is not known
    unscaled = rollups(_results(None, None), custom(400.0))
    assert unscaled.per_inference.joules == pytest.approx(10.0)


def test_the_scaled_split_carries_the_measurement_passs_own_bound():
    """The split's range is its shares' uncertainty; scaled to the measurement pass, that pass's
    counter bound (here +-5%) widens it: a point scale would claim the pass exactly known."""
    m = PassEnergy(20, 0.8, 1.0, Energy(160.0, 152.0, 168.0, Method.COUNTER, bound=True))
    p = PassEnergy(10, 0.5, 0.6, Energy(100.0, 99.0, 101.0, Method.COUNTER, bound=True))
    r = _results(m, p)
    roll = rollups(r, custom(400.0))
    assert roll.per_inference.joules == pytest.approx(8.0)
    assert roll.per_inference.low_j == pytest.approx(95.0 / 10 * 7.6 / 10)  # share's low x pass's low
    assert roll.per_inference.high_j == pytest.approx(105.0 / 10 * 8.4 / 10)
    assert roll.per_inference.low_j < 95.0 * 0.8 / 10 and roll.per_inference.high_j > 105.0 * 0.8 / 10
    assert r.scaled_split(Energy(None)).joules is None


def test_the_store_keeps_the_measurement_pass_and_the_results_both_passes(tmp_path):
    from phprof.store import write_results

    path = tmp_path / "t.h5"
    w = TraceWriter(path, {"model": "m"})
    rows = _spans(10**18, 5, 2.0, 1.0)
    rows["window"] = -1
    w.append_measured(rows)
    w.close("complete")
    t = load(path)
    np.testing.assert_array_equal(t.measured_inferences, rows)
    r = _results(PassEnergy(5, 0.01, 0.014, Energy(3.0, 2.9, 3.1, Method.COUNTER, bound=True)),
                 PassEnergy(10, 0.5, 0.6, None))
    write_results(path, r)
    back = load(path).results
    assert back.measurement_pass == r.measurement_pass and back.profiled_pass == r.profiled_pass
    assert back.split_scale is None  # the profiled pass has no energy


@pytest.mark.integration
def test_phprof_trace_runs_both_passes_and_reports_the_overhead(tmp_path, monkeypatch, fake_lib):
    """End to end on the fake GPU: the measurement pass and the profiled one are stored, measured,
    summed up in the summary, and reported with the overhead and the split scaled to the first."""
    import fake_nvml

    from phprof import api
    from phprof.render import render

    with fake_nvml.FakeNvml(fake_lib, tmp_path / "state", n_devices=1, preset="a100", seed=2):
        monkeypatch.setenv("PHPROF_NVML_LIB", str(fake_lib))
        s = api.trace("bert-base-uncased", inferences=6, measure_inferences=5, warmup=1, output=tmp_path / "t.h5",
                      size="tiny", idle_s=0.2, source="nvml", device="cpu", events_per_window=2000,
                      window_warmup=2)
    assert s.status == "complete" and s.inferences == 6 and s.measured.inferences == 5
    assert s.measured.energy.measured and s.measured.joules_per_inference > 0
    text = render(s, "text")
    assert "measurement pass (profiler off" in text and "profiler overhead:" in text
    assert any("warm-up steps" in n for n in s.notes) and any("profiler windows saved" in n for n in s.notes)
    t = load(s.path)
    assert len(t.measured_inferences) == 5 and len(t.inferences) == 6
    assert t.measured_inferences["end_ns"].max() < t.inferences["start_ns"].min()  # the measurement pass first
    view = api.report(s.path)
    r = view.results
    assert r.measurement_pass.inferences == 5 and r.profiled_pass.inferences == 6
    m, p = r.measurement_pass, r.profiled_pass
    assert r.split_scale == pytest.approx(m.joules_per_inference / p.joules_per_inference)
    assert view.rollups.per_inference.joules == pytest.approx(r.inferences_energy.joules * r.split_scale / 6)
    page = render(view, "text")
    assert "measurement pass" in page and "profiler overhead" in page and "(scaled)" in page
    # the warm-up steps are stored (one window: both before it), so they are not read as idle time
    warm = t.profiler_work[t.profiler_work["kind"] == int(ProfilerWork.WINDOW_WARMUP)]
    assert len(warm) == 2 and warm["end_ns"].max() <= t.inferences["start_ns"].min()
    assert not any("read as idle" in n for n in r.notes)
    comparison = api.compare([s.path, s.path])  # compare gives the report's scaled figures
    assert comparison.runs[0].energy.joules == pytest.approx(view.rollups.per_inference.joules)
    assert "scaled to the run's measurement pass" in render(comparison, "text")


def test_setup_hooks_with_a_measurement_pass_are_refused():
    """setup() changes the workload once the scopes are installed, after the measurement pass: the
    two passes would measure different things, so the pair is refused (tools pass measure_pass=False)."""
    from phprof.tracing.run import TraceError, trace

    with pytest.raises(TraceError, match="give measure_pass=False with setup"):
        trace("gpt2", setup=lambda model: None)


def test_the_overhead_in_energy_carries_the_two_passes_bounds():
    from phprof.render.units import profiler_overhead

    m = PassEnergy(20, 0.8, 1.0, Energy(160.0, 152.0, 168.0, Method.COUNTER, bound=True))  # 8 J [7.6, 8.4]
    p = PassEnergy(10, 0.5, 0.6, Energy(100.0, 99.0, 101.0, Method.COUNTER, bound=True))  # 10 J [9.9, 10.1]
    text = profiler_overhead(m, p, m.energy, p.energy, on_gpu=False)
    assert text.startswith("+10.000 ms per inference (+25%), measured (the clock)")
    assert "+2 J per inference (+25%) [1.5 J, 2.5 J], measured" in text
    assert "[" not in profiler_overhead(m, p, m.energy, Energy(100.0, method=Method.COUNTER), on_gpu=True)
