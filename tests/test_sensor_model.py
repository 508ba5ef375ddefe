"""The sensor calibration, on real recordings (an A100, an RTX 3090, an RTX 4090 beside a meter)
and on the fake NVML: the issue's figures, and what the data cannot identify."""
from __future__ import annotations

import gzip
import time
from pathlib import Path

import numpy as np
import pytest

from phprof.api import calibrate_from_log, calibrate_gpu
from phprof.attribution.sensor import Meter, Schedule, calibrate_field, fit_period, naive_phase_means
from phprof.sources import change_instants
from phprof.store.calibration import find_calibration, read_calibration, read_sensor_file

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
A100 = SHARED / "a100-square-wave"
STEPS = SHARED / "gpu-step-response"
needs_data = pytest.mark.skipif(not (A100.is_dir() and STEPS.is_dir()),
                                reason=f"{SHARED} is missing (../shared is not beside the repo)")


def load_a100():
    nvml = np.loadtxt(A100 / "nvml.csv", delimiter=",", skiprows=1)
    marks = np.loadtxt(A100 / "load_marks.csv", skiprows=1)
    with gzip.open(A100 / "meter.csv.gz") as f:
        meter = np.loadtxt(f, delimiter=",", skiprows=1)
    return nvml, Schedule.alternating(marks / 1e3, first_on=True), meter


@pytest.fixture(scope="module")
def a100_cal(tmp_path_factory):
    out = tmp_path_factory.mktemp("cal") / "a100.json"
    return calibrate_from_log(A100 / "nvml.csv", A100 / "load_marks.csv", A100 / "meter.csv.gz",
                              gpu="NVIDIA A100-PCIE-40GB", output=out)


@pytest.fixture(scope="module")
def step_cals(tmp_path_factory):
    work = tmp_path_factory.mktemp("cal")
    return {card: calibrate_from_log(STEPS / card / "nvml.csv", STEPS / card / "load_marks.csv",
                                     STEPS / card / "meter.csv.gz", output=work / f"{card}.json")[0]
            for card in ("rtx3090", "rtx4090")}


@needs_data
def test_naive_reading_of_the_a100_sees_no_difference_the_meter_does():
    nvml, schedule, meter = load_a100()
    meter_on, meter_off = naive_phase_means(meter[:, 0] / 1e3, meter[:, 1], schedule)
    assert meter_on == pytest.approx(193, abs=5) and meter_off == pytest.approx(66, abs=5)
    on, off = naive_phase_means(nvml[:, 0] / 1e3, nvml[:, 2], schedule)
    assert abs(on - off) < 10


@needs_data
def test_the_a100_calibration_finds_its_period_window_and_levels_within_10_percent_of_the_meter(a100_cal):
    cal, path = a100_cal
    assert read_calibration(path) == cal  # the file holds what was found
    assert cal.meter_levels_w == pytest.approx((66, 193), abs=5)
    meter_off, meter_on = cal.meter_levels_w
    for f in cal.fields:  # power.draw and power.draw.instant: the same sensor on GA100
        assert f.period_s.value == pytest.approx(0.101, abs=0.001)
        assert f.period_s.low <= f.period_s.value <= f.period_s.high
        assert 0.020 <= f.window_s.value <= 0.030 and f.window_s.low < f.window_s.high
        assert f.against == "meter" and f.lag_s.known and not f.window_s.at_limit
        assert f.low_w.value == pytest.approx(meter_off, rel=0.10)  # levels the driver reads, fitted by schedule
        assert f.high_w.value == pytest.approx(meter_on, rel=0.10)
        assert 0.80 < f.gain.value < 0.95  # the A100's driver reads low against this meter


@needs_data
def test_against_its_square_wave_alone_the_a100s_lag_is_ambiguous_by_whole_cycles():
    nvml, schedule, _ = load_a100()
    t = nvml[:, 0] / 1e3
    f = calibrate_field("power.draw.instant", t, t, nvml[:, 2], schedule=schedule)
    assert 0.018 <= f.window_s.value <= 0.030
    assert not f.lag_s.known and "cycle" in f.lag_s.why_unknown  # never a confident value
    assert f.window_plus_lag_s.known


@pytest.mark.integration  # the two cards fitted against their meters: ~5 s
@needs_data
def test_the_3090s_power_draw_is_a_one_second_average_and_its_instant_field_a_short_one(step_cals):
    cal = step_cals["rtx3090"]
    draw, instant = cal.of("power_draw"), cal.of("power_draw_instant")
    assert 0.9 <= draw.window_s.value <= 1.2 and draw.window_s.high - draw.window_s.low < 0.2
    assert 0.08 <= instant.window_s.value <= 0.13
    assert instant.nvml_field == "power_instant" and draw.nvml_field == ""  # power.draw is no fixed NVML field
    # rise times: the 1 s average takes ~0.8 s from 10% to 90%, the instant field ~0.2 s
    rise = {f.field: next(s for s in f.steps if s.rising) for f in (draw, instant)}
    assert 0.7 <= rise["power_draw"].rise_s <= 1.1
    assert 0.05 <= rise["power_draw_instant"].rise_s <= 0.35
    # the load itself (the meter) rises in steps: ~310 W first, then the boost
    meter_rise = next(s for s in cal.meter if s.rising)
    assert meter_rise.after_w == pytest.approx(440, abs=20) and meter_rise.rise_s < 0.5
    # and after the load, power stays above the idle before it
    fall = next(s for s in instant.steps if not s.rising)
    assert 5 <= fall.excess_w <= 40


@pytest.mark.integration  # the two cards fitted against their meters: ~5 s
@needs_data
def test_the_4090s_gain_and_offset_against_the_meter(step_cals):
    f = step_cals["rtx4090"].of("power_draw")
    assert f.gain.value == pytest.approx(1.047, abs=0.01) and f.gain.low <= f.gain.value <= f.gain.high
    assert f.offset_w.value == pytest.approx(-21.6, abs=2)
    assert 0.08 <= f.window_s.value <= 0.13
    assert 0.1 <= next(s for s in f.steps if s.rising).rise_s <= 0.35


@needs_data
def test_a_single_step_without_a_meter_fixes_only_window_plus_lag():
    nvml = np.genfromtxt(STEPS / "rtx4090" / "nvml.csv", delimiter=",", names=True)
    marks = np.loadtxt(STEPS / "rtx4090" / "load_marks.csv", skiprows=1)
    t = nvml["epoch_ms"] / 1e3
    f = calibrate_field("power_draw", t, t, nvml["power_draw_w"], schedule=Schedule.alternating(marks / 1e3))
    assert not f.window_s.known and not f.lag_s.known
    assert "window + lag" in f.window_s.why_unknown and f.window_plus_lag_s.known
    assert f.low_w.known and f.high_w.known  # the levels are still seen


@needs_data
def test_the_update_probe_shows_the_101_ms_period():
    with gzip.open(A100 / "update-probe-nvml.csv.gz") as f:
        probe = np.loadtxt(f, delimiter=",", skiprows=1)
    t_s = probe[:, 0] / 1e3
    instants, _ = change_instants(t_s, t_s, probe[:, 2])
    period, _, jitter = fit_period(instants)
    assert period == pytest.approx(0.101, abs=0.001) and jitter < 0.008


def synthetic_log(fake, cycle_s: float, seconds: float = 8.0, poll_s: float = 0.001):
    """A square wave of ``cycle_s`` on the fake and its instant field polled every ``poll_s``
    (as phprof's sampler polls), read off the fake's sensor model without waiting for real
    time; the wave starts 37 ms after an update 1-1.1 s ahead, so it stands the same way to the
    sensor's grid every time."""
    k = fake.update_index_at(0, "power_instant", time.time_ns() + 1_000_000_000)
    t0 = fake.update_visible_at(0, "power_instant", k) + 37_000_000
    n = int(seconds / cycle_s)
    end = fake.square_wave(0, 250.0, 70.0, cycle_s, 0.5, t0, n)
    ts = np.arange(t0 - 500_000_000, end + 500_000_000, round(poll_s * 1e9))
    w = np.array([fake.power_at(0, "power_instant", int(t)) for t in ts]) / 1e3
    half = round(cycle_s * 1e9 / 2)
    return ts / 1e9, w, Schedule.alternating((t0 + np.arange(2 * n + 1) * half) / 1e9)


def test_a_load_that_aliases_with_the_update_period_gets_no_levels_and_the_reason(fake):
    period = fake.get_model(0, "power_instant").period_s  # 101 ms
    t, w, schedule = synthetic_log(fake, period)
    f = calibrate_field("power_instant", t, t, w, schedule=schedule)
    assert f.period_s.value == pytest.approx(period, abs=1e-4)  # the period is still measured
    for p in (f.low_w, f.high_w, f.window_s, f.lag_s):
        assert not p.known and "aliases" in p.why_unknown
    assert any("aliases" in n for n in f.notes)


def test_calibrate_from_a_log_of_an_aliasing_load_refuses_levels_and_says_why(fake, tmp_path):
    """The same through `phprof calibrate --from-log`'s library call, from CSV files as a user
    brings them: the text says the levels, window and lag are not identified, and why."""
    from phprof import render

    t, w, schedule = synthetic_log(fake, fake.get_model(0, "power_instant").period_s)
    log = tmp_path / "nvml.csv"
    log.write_text("epoch_ms,power_draw_instant_w\n" + "".join(f"{a * 1e3:.3f},{b:.2f}\n" for a, b in zip(t, w)))
    marks = tmp_path / "marks.csv"
    marks.write_text("epoch_ms\n" + "".join(f"{m * 1e3:.3f}\n" for m in schedule.t))
    cal, path = calibrate_from_log(log, marks, gpu="NVIDIA A100-SXM4-80GB", output=tmp_path / "cal.json")
    f = cal.of("power_draw_instant")
    assert f.period_s.known and not (f.low_w.known or f.high_w.known or f.window_s.known)
    assert read_calibration(path) == cal
    text = render(cal, "text")
    assert "aliases" in text and "not identified" in text


def test_a_drifting_square_wave_on_the_fake_recovers_its_sensor(fake):
    t, w, schedule = synthetic_log(fake, 0.1045)
    f = calibrate_field("power_instant", t, t, w, schedule=schedule)
    assert f.window_s.low <= 0.025 <= f.window_s.high and f.window_s.high - f.window_s.low < 0.01
    assert f.lag_s.low <= 0.0 <= f.lag_s.high
    assert f.low_w.value == pytest.approx(70, rel=0.03) and f.high_w.value == pytest.approx(250, rel=0.03)


def test_too_few_updates_identify_nothing():
    f = calibrate_field("power_instant", np.arange(5.0), np.arange(5.0), np.arange(5.0),
                        schedule=Schedule.alternating([0.0, 1.0]))
    assert not f.period_s.known and "too few" in f.period_s.why_unknown


@pytest.mark.integration
def test_calibrate_on_the_fake_gpu_drives_the_load_records_fits_and_writes_the_file(fake_lib, tmp_path,
                                                                                    monkeypatch, gpt2_trace, copy_of):
    """`phprof calibrate`'s GPU path with the fake's power following the commanded load (quick
    schedule, ~15 s): a 50 ms / 20 ms / 40 ms-lag sensor is found, and reports pick the file up."""
    import dataclasses

    import fake_nvml

    fake = fake_nvml.FakeNvml(fake_lib, tmp_path / "state", preset="a100", seed=4, ring_capacity=1 << 20)
    model = fake.get_model(0, "power_instant")
    fake.configure(0, "power_instant", dataclasses.replace(model, period_s=0.05, window_s=0.02, lag_s=0.04))
    monkeypatch.setenv("PHPROF_CALIBRATION_DIR", str(tmp_path / "cals"))
    cal, path = calibrate_gpu(0, quick=True, load=fake_nvml.FakeLoad(fake, busy_w=300.0), library=str(fake_lib))
    fake.close()
    assert path.parent == tmp_path / "cals" and cal.gpu == "NVIDIA A100-SXM4-80GB" and cal.driver
    f = cal.of("power_instant")
    assert f.period_s.value == pytest.approx(0.05, abs=2e-4)
    assert f.window_s.low <= 0.020 <= f.window_s.high and f.lag_s.low <= 0.040 <= f.lag_s.high
    assert f.high_w.value == pytest.approx(300, rel=0.03) and f.low_w.value == pytest.approx(60, rel=0.05)
    assert cal.idle_w == pytest.approx(60, rel=0.05) and set(cal.nvml_call_us) >= {"energy", "power_instant"}
    found = find_calibration(cal.gpu, cal.driver)
    assert found is not None and found[0] == path and found[2] == ""
    model, _ = read_sensor_file(path, "power_instant")
    assert model.window_low_s <= 0.02 <= model.window_high_s and "calibration" in model.source
    other = find_calibration(cal.gpu, "1.0")
    assert other is not None and "driver" in other[2]  # another driver: used, with a note
    # a report of a trace of that GPU (the session's gpt2, on the fake A100) uses it, and says so
    from phprof import results

    copy = copy_of(gpt2_trace[0])
    monkeypatch.setenv("PHPROF_CALIBRATION_DIR", str(tmp_path / "none yet"))
    before = results(copy)  # attributed and stored before the calibration was written
    assert "calibration" not in before.sensor.source
    monkeypatch.setenv("PHPROF_CALIBRATION_DIR", str(tmp_path / "cals"))
    r = results(copy)  # the stored results are not the calibrated ones: attributed again
    assert r.notes[0].startswith(f"attributed again: sensor calibration {path}") and \
        "within the calibration's intervals" in r.sensor.source
    from phprof.api import _results
    from phprof.store import load

    again, computed = _results(load(copy), copy, None, False, False)
    assert not computed and again.notes == r.notes  # and then read back
