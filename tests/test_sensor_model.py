"""The sensor model, fitted on a real A100 recording and on the fake NVML."""
from __future__ import annotations

import gzip
import time
from pathlib import Path

import numpy as np
import pytest

from fake_nvml import sampling
from phprof.attribution.sensor import Schedule, fit_period, fit_sensor, naive_phase_means
from phprof.sources import change_instants

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "a100-square-wave"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} is missing (../shared is not beside the repo)")


def load_recording():
    nvml = np.loadtxt(DATA / "nvml.csv", delimiter=",", skiprows=1)
    marks = np.loadtxt(DATA / "load_marks.csv", skiprows=1)
    with gzip.open(DATA / "meter.csv.gz") as f:
        meter = np.loadtxt(f, delimiter=",", skiprows=1)
    return nvml, Schedule.alternating(marks / 1e3, first_on=True), meter


@needs_data
def test_naive_reading_of_the_a100_sees_no_difference_the_meter_does():
    nvml, schedule, meter = load_recording()
    meter_on, meter_off = naive_phase_means(meter[:, 0] / 1e3, meter[:, 1], schedule)
    assert meter_on == pytest.approx(193, abs=5) and meter_off == pytest.approx(66, abs=5)
    on, off = naive_phase_means(nvml[:, 0] / 1e3, nvml[:, 2], schedule)
    assert on == pytest.approx(128, abs=10) and off == pytest.approx(128, abs=10)
    assert abs(on - off) < 10


@pytest.mark.integration
@needs_data
def test_the_fitted_sensor_model_recovers_the_a100s_period_window_and_levels():
    nvml, schedule, meter = load_recording()
    meter_on, meter_off = naive_phase_means(meter[:, 0] / 1e3, meter[:, 1], schedule)
    fit = fit_sensor(nvml[:, 0] / 1e3, nvml[:, 2], schedule)
    assert fit.model.period_s == pytest.approx(0.101, abs=0.002)
    assert fit.model.window_s == pytest.approx(0.025, abs=0.005)
    assert fit.high_w == pytest.approx(meter_on, rel=0.10)
    assert fit.low_w == pytest.approx(meter_off, rel=0.10)


@needs_data
def test_the_update_probe_shows_the_101_ms_period():
    with gzip.open(DATA / "update-probe-nvml.csv.gz") as f:
        probe = np.loadtxt(f, delimiter=",", skiprows=1)
    t_s = probe[:, 0] / 1e3  # each reading stamped at one instant: it brackets its own change
    instants, _ = change_instants(t_s, t_s, probe[:, 2])
    period, _, jitter = fit_period(instants)
    assert period == pytest.approx(0.101, abs=0.001) and jitter < 0.008


def test_fit_recovers_the_fakes_sensor_under_an_aliasing_square_wave(fake):
    """The same experiment through the fake NVML (a100 preset: 101 ms update, 25 ms window,
    no lag, 1% noise), with a 104.5 ms load cycle that nearly aliases with the update period.
    The fake's instant power field is polled every 1 ms on a simulated clock, as phprof's
    sampler would poll it (fake_nvml.sampling): the fit is what is tested, not the sampler."""
    # 50 ms after an update 0.1-0.2 s ahead (nothing waits for it): the same phase every time
    start = fake.update_visible_at(0, "power_instant", fake.update_index_at(0, "power_instant", time.time_ns()) + 2)
    start += 50_000_000
    half = 52_250_000
    n = 45
    switches = start + np.arange(2 * n + 1) * half
    for i, t in enumerate(switches):
        fake.set_power_at(0, 250.0 if i % 2 == 0 else 70.0, int(t), tag=1 if i % 2 == 0 else 0)
    # the sampler's run: from 50 ms before the first switch to 0.2 s after the last
    r = sampling.readings(fake, start - 50_000_000, int(switches[-1]) + 200_000_000, fields=["power_instant"])
    t = (r["t_before_ns"] + r["t_after_ns"]) / 2e9
    fit = fit_sensor(t, r["value"] / 1e3, Schedule.alternating(switches / 1e9, first_on=True))
    assert fit.model.period_s == pytest.approx(0.101, abs=0.0005)
    assert fit.model.window_s == pytest.approx(0.025, abs=0.002)
    assert fit.model.lag_s == pytest.approx(0.0, abs=0.002)
    assert fit.high_w == pytest.approx(250, rel=0.02) and fit.low_w == pytest.approx(70, rel=0.02)
    on, off = naive_phase_means(t, r["value"] / 1e3, Schedule.alternating(switches / 1e9, first_on=True))
    assert abs(on - off) < 0.3 * (250 - 70)  # the naive reading is blind to most of the difference


def test_too_few_updates_is_a_clear_error():
    with pytest.raises(ValueError, match="too few"):
        fit_sensor(np.arange(5.0), np.arange(5.0), Schedule.alternating([0.0, 1.0]))
