"""Tests of the fake NVML library itself (tools/fake_nvml).

Expected values are computed here from the programmed power schedule, independently of the
library: window averages and counters are integrals of a piecewise-constant signal with integer
watts and integer ns, so they are exact integers in nJ.
"""

import bisect
import ctypes
import gc
import importlib.util
import json
import math
import os
import subprocess
import sys
import textwrap
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import fake_nvml
from fake_nvml import FakeNvml, FakeNvmlError, SensorModel

REPO = Path(__file__).resolve().parent.parent
MS = 1_000_000  # ns
ENERGY, INSTANT, AVERAGE = 0, 1, 2

# -- NVML through ctypes -------------------------------------------------------------------


class NvmlValue(ctypes.Union):
    _fields_ = [("dVal", ctypes.c_double), ("uiVal", ctypes.c_uint), ("ulVal", ctypes.c_ulong),
                ("ullVal", ctypes.c_ulonglong), ("sllVal", ctypes.c_longlong), ("siVal", ctypes.c_int),
                ("usVal", ctypes.c_ushort)]


class NvmlFieldValue(ctypes.Structure):
    _fields_ = [("fieldId", ctypes.c_uint), ("scopeId", ctypes.c_uint), ("timestamp", ctypes.c_longlong),
                ("latencyUsec", ctypes.c_longlong), ("valueType", ctypes.c_int), ("nvmlReturn", ctypes.c_int),
                ("value", NvmlValue)]


_H = ctypes.c_void_p
_NVML_SIGNATURES = {
    "nvmlInit": [], "nvmlInit_v2": [], "nvmlInitWithFlags": [ctypes.c_uint], "nvmlShutdown": [],
    "nvmlSystemGetDriverVersion": [ctypes.c_char_p, ctypes.c_uint],
    "nvmlSystemGetNVMLVersion": [ctypes.c_char_p, ctypes.c_uint],
    "nvmlDeviceGetCount": [ctypes.POINTER(ctypes.c_uint)],
    "nvmlDeviceGetCount_v2": [ctypes.POINTER(ctypes.c_uint)],
    "nvmlDeviceGetHandleByIndex": [ctypes.c_uint, ctypes.POINTER(_H)],
    "nvmlDeviceGetHandleByIndex_v2": [ctypes.c_uint, ctypes.POINTER(_H)],
    "nvmlDeviceGetIndex": [_H, ctypes.POINTER(ctypes.c_uint)],
    "nvmlDeviceGetName": [_H, ctypes.c_char_p, ctypes.c_uint],
    "nvmlDeviceGetUUID": [_H, ctypes.c_char_p, ctypes.c_uint],
    "nvmlDeviceGetArchitecture": [_H, ctypes.POINTER(ctypes.c_uint)],
    "nvmlDeviceGetPowerManagementLimit": [_H, ctypes.POINTER(ctypes.c_uint)],
    "nvmlDeviceGetTotalEnergyConsumption": [_H, ctypes.POINTER(ctypes.c_ulonglong)],
    "nvmlDeviceGetPowerUsage": [_H, ctypes.POINTER(ctypes.c_uint)],
    "nvmlDeviceGetFieldValues": [_H, ctypes.c_int, ctypes.POINTER(NvmlFieldValue)],
}


def load_nvml(lib_path):
    lib = ctypes.CDLL(str(lib_path))
    for name, argtypes in _NVML_SIGNATURES.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = ctypes.c_int, argtypes
    lib.nvmlErrorString.restype, lib.nvmlErrorString.argtypes = ctypes.c_char_p, [ctypes.c_int]
    return lib


@pytest.fixture
def nvml(fake):
    """NVML (the fake) initialised once for the test, on the `fake` state."""
    # an earlier test's sampler left in a reference cycle would shut NVML down when the garbage
    # collector frees it, in the middle of this test: free it now
    gc.collect()
    lib = load_nvml(fake.lib_path)
    while lib.nvmlShutdown() == 0:  # start from an uninitialised library whatever ran before
        pass
    assert lib.nvmlInit_v2() == 0
    yield lib
    lib.nvmlShutdown()


def handle(lib, index):
    h = _H()
    assert lib.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(h)) == 0
    return h


def read_fields(lib, h, fields):
    """GetFieldValues for (fieldId or (fieldId, scopeId)); returns (rc, values, t_before, t_after)."""
    values = (NvmlFieldValue * len(fields))()
    for v, f in zip(values, fields):
        v.fieldId, v.scopeId = f if isinstance(f, tuple) else (f, 0)
    t0 = time.time_ns()
    rc = lib.nvmlDeviceGetFieldValues(h, len(fields), values)
    return rc, values, t0, time.time_ns()


# -- an independent model of the true signal ------------------------------------------------


class Signal:
    """Piecewise-constant power: level w_i (integer W) from t_i; before t_0 the level is w_0."""

    def __init__(self, events):
        self.t = [int(t) for t, _ in events]
        self.w = [w for _, w in events]

    def energy_nj(self, a, b):
        """Integral over [a, b] in nJ (W * ns), exact for integer watts."""
        i = max(bisect.bisect_right(self.t, a) - 1, 0)
        total, x = 0, a
        while x < b:
            end = min(self.t[i + 1], b) if i + 1 < len(self.t) else b
            total += self.w[i] * (end - x)
            x, i = end, i + 1
        return total


def random_schedule(rng, start_ns, n, min_ms=1, max_ms=40, low=50, high=400):
    t, events = start_ns, []
    for _ in range(n):
        events.append((t, int(rng.integers(low, high + 1))))
        t += int(rng.integers(min_ms * MS, max_ms * MS))
    return events


def program(fake, dev, events, tag=0):
    for t, w in events:
        fake.set_power_at(dev, w, t, tag)


def round_half_up(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2))


def new_fake(fake_lib, tmp_path, name="state", **kw):
    return FakeNvml(fake_lib, tmp_path / name, **kw)


# -- build -----------------------------------------------------------------------------------


def test_build_is_cached_and_warning_free(fake_lib, tmp_path):
    assert fake_lib.name == "libnvidia-ml.so.1" and fake_lib.exists()
    mtime = fake_lib.stat().st_mtime_ns
    assert fake_nvml.build(fake_lib.parent) == fake_lib
    assert fake_lib.stat().st_mtime_ns == mtime  # not recompiled
    src = REPO / "tools" / "fake_nvml" / "fake_nvml.c"
    proc = subprocess.run(["cc", "-std=c11", "-Wall", "-Wextra", "-pedantic", "-Werror", "-fsyntax-only", str(src)],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_build_without_compiler_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with pytest.raises(FakeNvmlError, match="no C compiler"):
        fake_nvml.build(tmp_path / "out")


# -- NVML entry points ---------------------------------------------------------------------


def test_init_is_reference_counted(fake):
    lib = load_nvml(fake.lib_path)
    while lib.nvmlShutdown() == 0:
        pass
    count = ctypes.c_uint()
    assert lib.nvmlShutdown() == 1  # NVML_ERROR_UNINITIALIZED
    assert lib.nvmlDeviceGetCount_v2(ctypes.byref(count)) == 1
    assert lib.nvmlSystemGetDriverVersion(ctypes.create_string_buffer(80), 80) == 1
    assert lib.nvmlInit_v2() == 0 and lib.nvmlInit() == 0 and lib.nvmlInitWithFlags(1) == 0
    assert lib.nvmlDeviceGetCount_v2(ctypes.byref(count)) == 0 and count.value == 2
    assert [lib.nvmlShutdown() for _ in range(4)] == [0, 0, 0, 1]
    assert lib.nvmlDeviceGetCount(ctypes.byref(count)) == 1


def test_system_and_device_queries(fake, nvml):
    assert nvml.nvmlErrorString(3) == b"Not Supported"
    assert nvml.nvmlErrorString(1) == b"Uninitialized"
    assert nvml.nvmlErrorString(999) == b"Unknown Error"
    buf = ctypes.create_string_buffer(80)
    assert nvml.nvmlSystemGetDriverVersion(buf, 80) == 0 and buf.value == b"999.99-fake"
    assert nvml.nvmlSystemGetDriverVersion(buf, 5) == 7  # INSUFFICIENT_SIZE
    assert nvml.nvmlSystemGetNVMLVersion(buf, 80) == 0 and buf.value.endswith(b"-fake")

    h = _H()
    assert nvml.nvmlDeviceGetHandleByIndex_v2(2, ctypes.byref(h)) == 2  # INVALID_ARGUMENT
    assert nvml.nvmlDeviceGetHandleByIndex(1, ctypes.byref(h)) == 0
    index = ctypes.c_uint()
    assert nvml.nvmlDeviceGetIndex(h, ctypes.byref(index)) == 0 and index.value == 1
    assert nvml.nvmlDeviceGetIndex(_H(12345), ctypes.byref(index)) == 2  # not a handle

    name = ctypes.create_string_buffer(96)
    assert nvml.nvmlDeviceGetName(h, name, 96) == 0 and name.value == b"NVIDIA A100-SXM4-80GB"
    fake.set_name(1, "Fake GPU one")
    assert nvml.nvmlDeviceGetName(h, name, 96) == 0 and name.value == b"Fake GPU one"
    assert nvml.nvmlDeviceGetName(h, name, 4) == 7

    uuids = []
    for i in range(2):
        assert nvml.nvmlDeviceGetUUID(handle(nvml, i), buf, 80) == 0
        uuids.append(buf.value)
    assert all(u.startswith(b"GPU-fake-") for u in uuids) and uuids[0] != uuids[1]

    value = ctypes.c_uint()
    assert nvml.nvmlDeviceGetArchitecture(h, ctypes.byref(value)) == 0 and value.value == 7
    assert nvml.nvmlDeviceGetPowerManagementLimit(h, ctypes.byref(value)) == 0 and value.value == 400_000


def test_field_values_and_not_supported_fields(fake, nvml):
    fake.configure(0, "energy", SensorModel(period_s=0.02, window_s=0.02, status=3))
    fake.configure(0, "power_average", SensorModel(period_s=0.1, window_s=1.0, status=3))
    h0, h1 = handle(nvml, 0), handle(nvml, 1)
    mj, mw = ctypes.c_ulonglong(), ctypes.c_uint()
    assert nvml.nvmlDeviceGetTotalEnergyConsumption(h0, ctypes.byref(mj)) == 3
    assert nvml.nvmlDeviceGetPowerUsage(h0, ctypes.byref(mw)) == 3

    rc, vals, t0, t1 = read_fields(nvml, h0, [83, 185, 186, 191, 9999, (186, 1)])
    assert rc == 0
    assert [v.nvmlReturn for v in vals] == [3, 3, 0, 3, 3, 3]
    assert all(t0 // 1000 <= v.timestamp <= t1 // 1000 and v.latencyUsec == 0 for v in vals)
    inst = vals[2]
    assert inst.valueType == 1  # NVML_VALUE_TYPE_UNSIGNED_INT
    # the read happened during the timestamp's microsecond
    us = inst.timestamp * 1000
    assert inst.value.uiVal in {fake.power_at(0, INSTANT, us), fake.power_at(0, INSTANT, us + 999)}
    assert (fake.calls(0, "energy"), fake.calls(0, "power_average"), fake.calls(0, "power_instant")) == (3, 2, 1)

    # device 1 is untouched: everything works, fields 83 and 191 are the same counter
    rc, vals, t0, t1 = read_fields(nvml, h1, [83, 191, 185])
    assert rc == 0 and [v.nvmlReturn for v in vals] == [0, 0, 0]
    assert vals[0].valueType == 3 and vals[0].value.ullVal == vals[1].value.ullVal
    us = vals[0].timestamp * 1000
    assert vals[0].value.ullVal in {fake.counter_at(1, us), fake.counter_at(1, us + 999)}
    assert vals[0].value.ullVal >= 8_000_000_000  # the a100 preset's counter starts large


def test_repeated_reads_within_one_update_are_identical(fake, nvml):
    h = handle(nvml, 0)
    mw = ctypes.c_uint()
    reads = []
    for _ in range(200):
        t0 = time.time_ns()
        assert nvml.nvmlDeviceGetPowerUsage(h, ctypes.byref(mw)) == 0
        reads.append((fake.update_index_at(0, AVERAGE, t0), fake.update_index_at(0, AVERAGE, time.time_ns()),
                      mw.value))
    by_update = {}
    for k0, k1, v in reads:
        if k0 == k1:
            by_update.setdefault(k0, set()).add(v)
            assert v == fake.power_at(0, AVERAGE, fake.update_visible_at(0, AVERAGE, k0))
    assert by_update and all(len(vs) == 1 for vs in by_update.values())
    assert fake.calls(0, "power_average") == 200


def test_call_latency_is_a_busy_wait_per_read(fake, nvml):
    fake.set_call_latency(0, 0.002)
    h = handle(nvml, 0)
    mj = ctypes.c_ulonglong()
    t0 = time.perf_counter()
    for _ in range(5):
        assert nvml.nvmlDeviceGetTotalEnergyConsumption(h, ctypes.byref(mj)) == 0
    assert time.perf_counter() - t0 >= 0.010
    assert fake.calls(0, "energy") == 5 and fake.calls(1, "energy") == 0


# -- the sensor model -------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["ideal", "a100", "h100"])
def test_power_fields_are_exact_window_averages(fake_lib, tmp_path, preset):
    rng = np.random.default_rng(7)
    with new_fake(fake_lib, tmp_path, preset=preset, seed=2) as f:
        for field in ("power_instant", "power_average"):
            m = fake_nvml.PRESETS[preset][field]
            f.configure(0, field, SensorModel(m.period_s, m.window_s))  # noise-free, phase from seed
        idle = round(fake_nvml.PRESET_IDLE_W[preset])
        f.set_idle(0, idle)
        start = time.time_ns() + 500 * MS
        events = random_schedule(rng, start, 200)
        program(f, 0, events)
        sig = Signal([(f.counter_origin(0), idle)] + events)
        for field in (INSTANT, AVERAGE):
            W = round(f.get_model(0, field).window_s * 1e9)
            times = f.update_times(0, field, start, events[-1][0] + 2 * W)
            assert len(times) > 20
            for v in times:
                expected = round_half_up(Fraction(sig.energy_nj(v - W, v) * 1000, W))  # mW
                assert f.power_at(0, field, int(v)) == expected


def test_values_are_held_and_lag_shifts_visibility(fake_lib, tmp_path):
    rng = np.random.default_rng(11)
    P, W, L = 101 * MS, 25 * MS, 30 * MS
    with new_fake(fake_lib, tmp_path, n_devices=2, preset="a100") as f:
        f.configure(0, "power_instant", SensorModel(P / 1e9, W / 1e9, lag_s=L / 1e9, phase_s=0.0123))
        f.configure(1, "power_instant", SensorModel(P / 1e9, W / 1e9, phase_s=0.0123))
        start = time.time_ns() + 300 * MS
        events = random_schedule(rng, start, 150)
        program(f, 0, events)
        program(f, 1, events)
        sig = Signal([(f.counter_origin(0), 60)] + events)
        times = f.update_times(0, INSTANT, start + 200 * MS, events[-1][0])
        assert len(times) > 15 and np.all(np.diff(times) == P)
        for v in times:
            v = int(v)
            k = f.update_index_at(0, INSTANT, v)
            assert f.update_visible_at(0, INSTANT, k) == v and f.update_index_at(0, INSTANT, v - 1) == k - 1
            value = f.power_at(0, INSTANT, v)
            # held until the next update, different from the previous one (random levels)
            assert all(f.power_at(0, INSTANT, v + d) == value for d in (1, P // 3, P - 1))
            assert value == round_half_up(Fraction(sig.energy_nj(v - L - W, v - L) * 1000, W))
            # the lagged sensor shows at v what the lagless one showed at v - L
            assert value == f.power_at(1, INSTANT, v - L)
        assert len({f.power_at(0, INSTANT, int(v)) for v in times}) > len(times) // 2


def test_quantisation_to_the_resolution(fake_lib, tmp_path):
    with new_fake(fake_lib, tmp_path, preset="ideal") as f:
        f.configure(0, "power_instant", SensorModel(0.001, 0.001, resolution=250))
        f.configure(0, "energy", SensorModel(0.001, 0.001, resolution=100))
        start = time.time_ns() + 100 * MS
        f.set_power_at(0, 100.1, start)
        f.set_power_at(0, 100.2, start + 10 * MS)
        assert f.power_at(0, INSTANT, start + 5 * MS) == 100_000  # 100.1 W -> 400.4 quanta
        assert f.power_at(0, INSTANT, start + 15 * MS) == 100_250  # 100.2 W -> 400.8 quanta
        origin = f.counter_origin(0)
        for t in range(start, start + 20 * MS, MS // 3):
            c = f.counter_at(0, t)
            u = f.update_visible_at(0, ENERGY, f.update_index_at(0, ENERGY, t))
            assert c % 100 == 0 and c == 100 * math.floor(f.true_energy(0, origin, u) * 1000 / 100)


def test_noise_is_deterministic_gaussian_one_percent(fake_lib, tmp_path):
    def values(seed, ks):
        with new_fake(fake_lib, tmp_path, name=f"s{seed}", preset="a100", seed=seed) as f:
            return np.array([f.power_at(0, INSTANT, f.update_visible_at(0, INSTANT, k)) for k in ks])

    ks = range(3000)  # a constant 60 W idle signal, 3000 updates
    a = values(5, ks)
    rel = a / 60_000 - 1
    assert 0.0093 < rel.std() < 0.0107
    assert abs(rel.mean()) < 0.0008
    assert 0.64 < np.mean(np.abs(rel) < 0.01) < 0.72  # ~68% within one sigma
    assert np.array_equal(values(5, range(100)), a[:100])  # same seed, same draws
    assert np.mean(values(6, range(100)) != a[:100]) > 0.9  # another seed, other draws


def test_update_grid_phase(fake_lib, tmp_path):
    P = 100 * MS
    with new_fake(fake_lib, tmp_path, preset="h100", seed=3) as f:
        t = time.time_ns()
        # equal periods share the derived phase (one driver tick refreshes both readings)
        assert np.array_equal(f.update_times(0, INSTANT, t, t + 10**9), f.update_times(0, AVERAGE, t, t + 10**9))
        f.configure(0, "power_instant", SensorModel(0.1, 0.025, phase_s=0.042))
        assert f.get_model(0, "power_instant").phase_s == 0.042
        v0 = f.update_visible_at(0, INSTANT, 0)
        assert f.update_visible_at(0, INSTANT, 7) - v0 == 7 * P
        times = f.update_times(0, INSTANT, v0, v0 + 10**9)
        assert times[0] == v0 and times[-1] == v0 + 10 * P and len(times) == 11
        f.configure(0, "power_instant", SensorModel(0.1, 0.025, phase_s=0.0))
        assert v0 - f.update_visible_at(0, INSTANT, 0) == 42 * MS  # the grid is anchored at state creation
    phases = []
    for seed in range(4, 9):  # derived phases: a fraction of the period drawn from the seed
        with new_fake(fake_lib, tmp_path, name=f"s{seed}", preset="h100", seed=seed) as g:
            g.configure(0, "energy", SensorModel(0.02, 0.02, phase_s=0.0))
            phases.append(g.update_visible_at(0, INSTANT, 0) - g.update_visible_at(0, ENERGY, 0))
    assert all(0 <= p < P for p in phases) and len(set(phases)) == len(phases)


def test_continuous_counter_is_the_floored_true_energy(fake_lib, tmp_path):
    rng = np.random.default_rng(3)
    with new_fake(fake_lib, tmp_path, preset="a100", seed=4) as f:
        start = time.time_ns() + 200 * MS
        events = random_schedule(rng, start, 150)
        program(f, 0, events)
        origin = f.counter_origin(0)
        sig = Signal([(origin, 60)] + events)
        times = f.update_times(0, ENERGY, start, events[-1][0])
        assert len(times) > 100
        for v in times:
            assert f.counter_at(0, int(v)) == 8_000_000_000 + sig.energy_nj(origin, int(v)) // 10**6


def test_windowed_counter_sums_window_average_times_period(fake_lib, tmp_path):
    rng = np.random.default_rng(5)
    P, W = 101 * MS, 25 * MS
    with new_fake(fake_lib, tmp_path, preset="a100") as f:
        f.configure(0, "energy", SensorModel(P / 1e9, W / 1e9, phase_s=0.007, mode="windowed", initial_mj=1000))
        start = time.time_ns() + 300 * MS
        events = random_schedule(rng, start, 120)
        program(f, 0, events)
        origin = f.counter_origin(0)
        sig = Signal([(origin, 60)] + events)
        times = [int(v) for v in f.update_times(0, ENERGY, origin, events[-1][0] + P)]
        assert len(times) > 20
        total = Fraction(0)  # sum over updates of window average * P, in nJ
        for v in times:
            total += Fraction(sig.energy_nj(max(v - W, origin), v) * P, W)
            assert f.counter_at(0, v) == 1000 + math.floor(total / 10**6)
        # it saw only a quarter of the time: far below the true energy
        true_mj = sig.energy_nj(origin, times[-1]) / 1e6
        assert abs((f.counter_at(0, times[-1]) - 1000) / true_mj - 1) > 1e-3


def test_gain_scales_power_and_counter(fake_lib, tmp_path):
    with new_fake(fake_lib, tmp_path, preset="ideal") as f:
        f.configure(0, "power_instant", SensorModel(0.001, 0.001, gain=1.05))
        f.configure(0, "energy", SensorModel(0.001, 0.001, gain=1.05))
        start = time.time_ns() + 100 * MS
        f.set_power_at(0, 200, start)
        f.set_power_at(0, 333, start + 7 * MS + 123)
        origin = f.counter_origin(0)
        sig = Signal([(origin, 60), (start, 200), (start + 7 * MS + 123, 333)])
        for v in f.update_times(0, INSTANT, start, start + 20 * MS):
            v = int(v)
            assert f.power_at(0, INSTANT, v) == math.floor(sig.energy_nj(v - MS, v) * 1e3 / MS * 1.05 + 0.5)
            assert f.counter_at(0, v) == math.floor(sig.energy_nj(origin, v) / 1e6 * 1.05)
        assert f.power_at(0, INSTANT, start + 5 * MS) == 210_000


def test_reset_counter_restarts_at_zero(fake):
    fake.set_power(0, 150)
    before = fake.counter_at(0, time.time_ns())
    assert before >= 8_000_000_000
    fake.reset_counter(0)
    origin = fake.counter_origin(0)
    assert abs(origin - time.time_ns()) < 10**9
    start = origin + 200 * MS
    fake.set_power_at(0, 300, start)
    sig = Signal([(origin - 10**9, 150), (start, 300)])
    assert fake.counter_at(0, origin - 1) == 0  # an update before the reset: never negative
    for v in fake.update_times(0, ENERGY, origin, start + 100 * MS):
        assert fake.counter_at(0, int(v)) == sig.energy_nj(origin, int(v)) // 10**6
    assert fake.counter_at(1, time.time_ns()) >= 8_000_000_000  # the other GPU is not reset


# -- the signal --------------------------------------------------------------------------


def test_tag_energies_add_up_to_the_true_energy(fake):
    origin = fake.counter_origin(0)
    start = time.time_ns() + 100 * MS
    fake.set_power_at(0, 90, start, tag=7)
    end = fake.square_wave(0, 300, 100, 0.05, 0.3, start + 10 * MS, 20, tag_high=1, tag_low=2)
    assert end == start + 10 * MS + 20 * 50 * MS
    assert fake.tag_energy(0, 1) == 90.0  # 300 W * 15 ms * 20, exact
    assert fake.tag_energy(0, 2) == 70.0  # 100 W * 35 ms * 20
    assert fake.tag_energy(0, 7) == 0.9  # 90 W * 10 ms
    parts = sum(fake.tag_energy(0, tag) for tag in (0, 1, 2, 7))
    assert parts == pytest.approx(fake.true_energy(0, origin, end), rel=1e-12)
    assert fake.true_energy(0, start, end) == pytest.approx(90.0 + 70.0 + 0.9, rel=1e-12)
    # an interval counts once it is closed by the next event
    fake.set_power_at(0, 500, end + MS, tag=5)
    assert fake.tag_energy(0, 5) == 0
    fake.set_power_at(0, 60, end + MS + 10**9, tag=0)
    assert fake.tag_energy(0, 5) == 500.0
    assert fake.tag_energy(1, 1) == 0


def test_bad_arguments_are_clear_errors(fake, fake_lib, tmp_path):
    t = time.time_ns() + 10**9
    fake.set_power_at(0, 100, t)
    with pytest.raises(ValueError, match="earlier than the device's last event"):
        fake.set_power_at(0, 100, t - 1)
    with pytest.raises(ValueError, match="device"):
        fake.set_power(2, 100)
    with pytest.raises(ValueError, match="tag"):
        fake.set_power(0, 100, tag=1024)
    with pytest.raises(ValueError, match="set_power"):
        fake.set_power(0, -5)
    with pytest.raises(ValueError, match="unknown field"):
        fake.power_at(0, "power", t)
    with pytest.raises(ValueError, match="counter_at"):
        fake.power_at(0, "energy", t)
    with pytest.raises(ValueError, match="configure"):  # windowed counters need window <= period
        fake.configure(0, "energy", SensorModel(0.02, 0.05, mode="windowed"))
    with pytest.raises(ValueError, match="preset"):
        FakeNvml(fake_lib, tmp_path / "x", preset="b200")
    newer = FakeNvml(fake_lib, tmp_path / "newer")
    with pytest.raises(FakeNvmlError, match="superseded"):
        fake.set_power(0, 100)
    newer.close()
    with pytest.raises(FakeNvmlError, match="closed"):
        newer.counter_at(0, t)


def test_ring_overrun_is_reported(fake_lib, tmp_path, capfd):
    with new_fake(fake_lib, tmp_path, n_devices=2, preset="a100", ring_capacity=64) as f:
        for i in range(200):
            f.set_power(0, 100 + i)
        lib = load_nvml(fake_lib)
        assert lib.nvmlInit_v2() == 0
        try:
            for _ in range(2):  # a 25 ms window reaches back before the 63 retained events
                rc, vals, _, _ = read_fields(lib, handle(lib, 0), [186])
                assert rc == 0 and vals[0].nvmlReturn == 999  # NVML_ERROR_UNKNOWN
            rc, vals, _, _ = read_fields(lib, handle(lib, 1), [186])
            assert vals[0].nvmlReturn == 0
        finally:
            lib.nvmlShutdown()
        assert f.overrun(0) and not f.overrun(1)
        err = capfd.readouterr().err
        assert err.count("overrun") == 1 and "device 0" in err
        with pytest.raises(FakeNvmlError, match="overrun"):
            f.power_at(0, INSTANT, time.time_ns())


def test_busy_state_does_not_overrun(fake, nvml):
    h = handle(nvml, 0)
    mj = ctypes.c_ulonglong()
    for i in range(500):
        fake.set_power(0, 100 + i % 7)
        assert nvml.nvmlDeviceGetTotalEnergyConsumption(h, ctypes.byref(mj)) == 0
    assert not fake.overrun(0)


def test_defaults_match_the_a100_preset(fake_lib, tmp_path):
    raw = ctypes.CDLL(str(fake_lib))
    raw.fake_nvml_create.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_longlong]
    assert raw.fake_nvml_create(str(tmp_path / "raw").encode(), 1, 1024) == 0
    with FakeNvml.attach(fake_lib, tmp_path / "raw") as f:
        for field in fake_nvml.FIELDS:
            assert f.get_model(0, field) == fake_nvml.PRESETS["a100"][field]
        assert abs(f.power_at(0, INSTANT, time.time_ns()) / 60_000 - 1) < 0.05
        lib = load_nvml(fake_lib)
        assert lib.nvmlInit_v2() == 0
        try:
            h, name, value = handle(lib, 0), ctypes.create_string_buffer(96), ctypes.c_uint()
            info = fake_nvml.PRESET_DEVICES["a100"]
            assert lib.nvmlDeviceGetName(h, name, 96) == 0 and name.value.decode() == info.name
            assert lib.nvmlDeviceGetArchitecture(h, ctypes.byref(value)) == 0 and value.value == info.architecture
            assert lib.nvmlDeviceGetPowerManagementLimit(h, ctypes.byref(value)) == 0
            assert value.value == info.power_limit_w * 1000
            memory = (ctypes.c_ulonglong * 3)()  # total, free, used
            assert lib.nvmlDeviceGetMemoryInfo(h, memory) == 0 and memory[0] == info.memory_total_bytes
        finally:
            lib.nvmlShutdown()


# -- other processes ------------------------------------------------------------------------


def run_python(code, env, check=True):
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, timeout=60)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_pynvml_in_a_subprocess_sees_the_shared_signal(fake, fake_lib):
    pytest.importorskip("pynvml", reason="nvidia-ml-py (pynvml) is not installed")
    fake.set_name(1, "Fake GPU one")
    fake.set_power(1, 250)
    env = {**os.environ, **fake.env, "LD_LIBRARY_PATH": str(fake_lib.parent)}
    out = run_python("""
        import json, time, pynvml
        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(1)
        r = {"count": pynvml.nvmlDeviceGetCount(), "name": pynvml.nvmlDeviceGetName(h)}
        r["e0"] = time.time_ns(); r["energy"] = pynvml.nvmlDeviceGetTotalEnergyConsumption(h); r["e1"] = time.time_ns()
        r["p0"] = time.time_ns(); r["power"] = pynvml.nvmlDeviceGetPowerUsage(h); r["p1"] = time.time_ns()
        fv = pynvml.nvmlDeviceGetFieldValues(h, [pynvml.NVML_FI_DEV_POWER_INSTANT])[0]
        r["instant"], r["ts"] = fv.value.uiVal, fv.timestamp
        try:
            pynvml.nvmlDeviceGetHandleByIndex(2)
        except pynvml.NVMLError as e:
            r["bad_index"] = str(e)
        pynvml.nvmlShutdown()
        print(json.dumps(r))
    """, env).stdout
    r = json.loads(out)
    assert r["count"] == 2 and r["name"] == "Fake GPU one" and r["bad_index"] == "Invalid Argument"

    def possible(read, field, t0, t1):  # the values a read somewhere in [t0, t1] can return
        ts = [t0] + [int(v) for v in fake.update_times(1, field, t0, t1)]
        return {read(t) for t in ts}

    assert r["energy"] in possible(lambda t: fake.counter_at(1, t), ENERGY, r["e0"], r["e1"])
    assert r["energy"] > 8_000_000_000
    assert r["power"] in possible(lambda t: fake.power_at(1, AVERAGE, t), AVERAGE, r["p0"], r["p1"])
    us = r["ts"] * 1000  # same noise draw in both processes
    assert r["instant"] in {fake.power_at(1, INSTANT, us), fake.power_at(1, INSTANT, us + 999)}


def test_writes_from_another_process_are_seen(fake, fake_lib):
    t = time.time_ns() + 10**9
    run_python(f"""
        import sys
        sys.path.insert(0, {str(REPO / 'tools')!r})
        from fake_nvml import FakeNvml
        f = FakeNvml.attach({str(fake_lib)!r}, {str(fake.state_path)!r})
        f.set_power_at(1, 123, {t}, tag=5)
        f.set_power_at(1, 60, {t + 10**9}, tag=0)
    """, {**os.environ})
    assert fake.true_energy(1, t, t + 10**9) == 123.0
    assert fake.tag_energy(1, 5) == 123.0


@pytest.mark.integration
def test_reads_during_writes_from_another_process_are_consistent(fake, fake_lib, nvml):
    # the writer goes on (150 bursts at least) until this process has read enough while it
    # wrote, and closes its stdin to say so: however slow a loaded machine is
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import select, sys, time
        sys.path.insert(0, {str(REPO / 'tools')!r})
        from fake_nvml import FakeNvml
        f = FakeNvml.attach({str(fake_lib)!r}, {str(fake.state_path)!r})
        burst = 0
        while burst < 150 or not select.select([sys.stdin], [], [], 0)[0]:
            for i in range(100):
                f.set_power(0, 60 + (burst * 37 + i * 11) % 340, tag=1)
            burst += 1
            time.sleep(0.002)
    """)], stdin=subprocess.PIPE)
    h = handle(nvml, 0)
    mj = ctypes.c_ulonglong()
    energy, instant = [], []
    deadline = time.monotonic() + 60
    try:
        while writer.poll() is None:
            t0 = time.time_ns()
            assert nvml.nvmlDeviceGetTotalEnergyConsumption(h, ctypes.byref(mj)) == 0
            energy.append((t0, time.time_ns(), mj.value))
            rc, vals, _, _ = read_fields(nvml, h, [186])
            assert rc == 0 and vals[0].nvmlReturn == 0
            instant.append((vals[0].timestamp * 1000, vals[0].value.uiVal))
            if len(energy) == 101:
                writer.stdin.close()  # read enough: the writer may stop after its 150 bursts
            assert time.monotonic() < deadline, "the writer did not finish within 60 s"
            time.sleep(0.0001)
    finally:
        if writer.poll() is None:
            writer.kill()
        writer.wait()
    assert writer.returncode == 0 and len(energy) > 100
    assert fake.tag_energy(0, 1) > 0  # the writes happened
    values = [v for _, _, v in energy]
    assert values == sorted(values) and values[-1] > values[0]  # monotonic, and counting
    for t0, t1, v in energy:  # each read shows one update visible during the call
        ks = range(fake.update_index_at(0, ENERGY, t0), fake.update_index_at(0, ENERGY, t1) + 1)
        assert v in {fake.counter_at(0, fake.update_visible_at(0, ENERGY, k)) for k in ks}
    for us, v in instant:
        assert v in {fake.power_at(0, INSTANT, us), fake.power_at(0, INSTANT, us + 999)}
    assert not fake.overrun(0)


def test_a_process_without_the_state_sees_no_gpu(fake, fake_lib):
    """A subprocess not given the fake's state gets NVML's no-driver error, never another GPU:
    through ctypes, through pynvml (which loads the library by name, as the peers do), and from
    the nvidia-smi stand-in (whose --help still works, as the real one's does)."""
    env = {**os.environ, **fake.env}
    del env["PHPROF_FAKE_NVML_STATE"]
    proc = run_python(f"import ctypes; print(ctypes.CDLL({str(fake_lib)!r}).nvmlInit_v2())", env)
    assert proc.stdout.strip() == "9"  # NVML_ERROR_DRIVER_NOT_LOADED
    assert "PHPROF_FAKE_NVML_STATE is not set" in proc.stderr and "FakeNvml.env" in proc.stderr
    if importlib.util.find_spec("pynvml"):
        proc = run_python("""
            import pynvml
            try:
                pynvml.nvmlInit()
            except pynvml.NVMLError_DriverNotLoaded as e:
                print("error:", e)
        """, env)
        assert proc.stdout.strip() == "error: Driver Not Loaded"
    smi = subprocess.run(["nvidia-smi", "-L"], env=env, capture_output=True, text=True, timeout=60)
    assert smi.returncode == 9 and "couldn't communicate with the NVIDIA driver" in smi.stdout
    smi = subprocess.run(["nvidia-smi", "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert smi.returncode == 0 and "--query-gpu" in smi.stdout
    # with the state, the same subprocess sees the test's GPUs
    smi = subprocess.run(["nvidia-smi", "-L"], env={**os.environ, **fake.env}, capture_output=True, text=True,
                         timeout=60)
    assert smi.returncode == 0 and smi.stdout.count("NVIDIA A100-SXM4-80GB") == 2


# -- what CodeCarbon and Zeus ask for ------------------------------------------------------------

PEER_CALLS = json.loads((REPO / "tests" / "data" / "peer_nvml_calls.json").read_text())
GIB = 1 << 30


@pytest.fixture
def pynvml_on_fake(fake, fake_lib):
    """pynvml in this process, on the fake library (as tools/peers.py points the peers at it)."""
    pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py (pynvml) is not installed")
    if pynvml.nvmlLib is None:
        pynvml.nvmlLib = ctypes.CDLL(str(fake_lib))
    elif Path(pynvml.nvmlLib._name).resolve() != fake_lib.resolve():
        pytest.fail(f"pynvml already loaded {pynvml.nvmlLib._name} in this process")
    pynvml.nvmlInit()
    yield pynvml
    pynvml.nvmlShutdown()


def _replay_checks(fake, pid, t0):
    """What each call the peers make must return from device 0 of `fake`, which has drawn 230 W
    for a second (utilisation (230 - 60) / (400 - 60) = 50%, 30 C + 0.1 C/W * 230 W = 53 C) and
    runs one compute process holding 3 GiB."""
    info = fake_nvml.PRESET_DEVICES["a100"]
    total = info.memory_total_bytes

    def near_230w(mw):  # a power field: 1% noise, one update
        return abs(mw / 230_000 - 1) < 0.05

    return {
        "nvmlInit": lambda r: r is None,
        "nvmlDeviceGetCount": lambda r: r == 2,
        "nvmlDeviceGetHandleByIndex": lambda r: r is not None,
        "nvmlDeviceGetName": lambda r: r == info.name,
        "nvmlDeviceGetUUID": lambda r: r.startswith("GPU-fake-"),
        "nvmlDeviceGetEnforcedPowerLimit": lambda r: r == info.power_limit_w * 1000,
        "nvmlDeviceGetMemoryInfo": lambda r: (r.total, r.used, r.free) == (total, 3 * GIB, total - 3 * GIB),
        "nvmlDeviceGetTotalEnergyConsumption": lambda r: fake.counter_at(0, t0) <= r <= fake.counter_at(0, time.time_ns()),
        "nvmlDeviceGetTemperature": lambda r: r == 53,
        "nvmlDeviceGetPowerUsage": near_230w,
        "nvmlDeviceGetUtilizationRates": lambda r: (r.gpu, r.memory) == (50, 50),
        "nvmlDeviceGetComputeMode": lambda r: r == 0,
        "nvmlDeviceGetComputeRunningProcesses": lambda r: [(p.pid, p.usedGpuMemory) for p in r] == [(pid, 3 * GIB)],
        "nvmlDeviceGetGraphicsRunningProcesses": lambda r: r == [],
        "nvmlDeviceGetC2cModeInfoV": lambda r: r.isC2cEnabled == 0,
        "nvmlDeviceGetArchitecture": lambda r: r == info.architecture,
        "nvmlDeviceGetFieldValues": lambda r: len(r) == 1 and r[0].nvmlReturn == 0 and near_230w(r[0].value.uiVal),
    }


def test_every_call_codecarbon_and_zeus_make_is_answered_consistently(fake, pynvml_on_fake):
    """Replays the calls CodeCarbon and Zeus were recorded making (tests/data/peer_nvml_calls.json;
    tests/test_peers.py checks that the installed peers still make exactly these) and checks
    each answer against the fake's device: no peer needs to be installed."""
    from fake_nvml.recorder import replay

    pynvml = pynvml_on_fake
    pid = os.getpid()
    fake.set_processes(0, [(pid, 3 * GIB)])
    t0 = time.time_ns()
    fake.set_power(0, 230.0)
    time.sleep(1.0)  # the temperature follows the mean power over the last second
    handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(2)]
    checks = _replay_checks(fake, pid, t0)
    assert {"codecarbon", "zeus"} <= set(PEER_CALLS)
    for peer in ("codecarbon", "zeus"):
        for entry in PEER_CALLS[peer]:
            assert entry["call"] in checks, f"{peer} calls {entry['call']}: add what it must return"
            result = replay(entry, handles)
            assert checks[entry["call"]](result), (peer, entry, result)
    # the recorded C entry points are all exported
    lib = ctypes.CDLL(str(fake.lib_path))
    for entry in PEER_CALLS["codecarbon"] + PEER_CALLS["zeus"]:
        for symbol in entry["symbols"]:
            assert hasattr(lib, symbol), symbol


def test_utilisation_memory_and_processes_follow_the_device(fake, pynvml_on_fake):
    pynvml = pynvml_on_fake
    h = pynvml.nvmlDeviceGetHandleByIndex(1)
    # at idle since the state was made: nothing running, nothing used
    assert pynvml.nvmlDeviceGetUtilizationRates(h).gpu == 0
    assert pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU) == round(30 + 0.1 * 60)
    assert pynvml.nvmlDeviceGetTemperatureV(h, pynvml.NVML_TEMPERATURE_GPU) == round(30 + 0.1 * 60)
    assert pynvml.nvmlDeviceGetMemoryInfo(h).used == 0
    assert pynvml.nvmlDeviceGetComputeRunningProcesses(h) == []
    fake.set_processes(1, [(11, GIB), (12, 2 * GIB)])
    fake.set_processes(1, [(13, GIB // 2)], kind="graphics")
    m = pynvml.nvmlDeviceGetMemoryInfo(h)
    assert m.used == 3 * GIB + GIB // 2 and m.free == m.total - m.used
    v2 = pynvml.nvmlDeviceGetMemoryInfo(h, version=pynvml.nvmlMemory_v2)
    assert (v2.total, v2.used, v2.free) == (m.total, m.used, m.free)
    assert [(p.pid, p.usedGpuMemory) for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h)] == [(11, GIB), (12, 2 * GIB)]
    assert [p.pid for p in pynvml.nvmlDeviceGetGraphicsRunningProcesses(h)] == [13]
    assert [p.pid for p in pynvml.nvmlDeviceGetComputeRunningProcesses_v2(h)] == [11, 12]
    fake.set_memory_total(1, 40 * GIB)
    assert pynvml.nvmlDeviceGetMemoryInfo(h).total == 40 * GIB
    with pytest.raises(ValueError, match="at most 16"):
        fake.set_processes(1, [(i, 1) for i in range(17)])
    # a full-power second: utilisation at the limit is 100%, and clamps there
    fake.set_power(1, 500.0)
    time.sleep(0.2)  # longer than the 1/6 s sample period
    assert pynvml.nvmlDeviceGetUtilizationRates(h).gpu == 100
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        pynvml.nvmlDeviceGetTemperature(h, 1)  # not a sensor


def test_nvidia_smi_stand_in_answers_from_nvml(fake):
    fake.set_processes(0, [(os.getpid(), 5 * GIB)])
    env = {**os.environ, **fake.env}
    q = subprocess.run(["nvidia-smi", "--query-gpu=index,name,memory.used,memory.total,enforced.power.limit",
                        "--format=csv,noheader,nounits"], env=env, capture_output=True, text=True, timeout=60)
    assert q.returncode == 0, q.stdout + q.stderr
    assert q.stdout.splitlines() == ["0, NVIDIA A100-SXM4-80GB, 5120, 81920, 400.00",
                                     "1, NVIDIA A100-SXM4-80GB, 0, 81920, 400.00"]
    q = subprocess.run(["nvidia-smi", "--query-gpu=power.draw", "--format=csv", "-i", "1"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert q.returncode == 0 and q.stdout.splitlines()[0] == "power.draw [W]"
    assert abs(float(q.stdout.splitlines()[1].split()[0]) / 60 - 1) < 0.05
    for bad in (["--query-gpu=bogus", "--format=csv"], ["--frobnicate"], ["--query-gpu=name", "--format=xml"]):
        q = subprocess.run(["nvidia-smi", *bad], env=env, capture_output=True, text=True, timeout=60)
        assert q.returncode == 2, bad


def test_layout_mismatch_fails_init_with_a_clear_message(fake, fake_lib, tmp_path):
    data = bytearray(fake.state_path.read_bytes())
    data[8:12] = (99).to_bytes(4, "little")  # the layout version
    bad = tmp_path / "bad-version"
    bad.write_bytes(bytes(data))
    small = tmp_path / "too-small"
    small.write_bytes(b"\0" * 100)
    code = f"""
        import ctypes
        print(ctypes.CDLL({str(fake_lib)!r}).nvmlInit_v2())
    """
    for path, message in [(bad, "incompatible layout"), (small, "too small"), (tmp_path / "missing", "cannot open")]:
        proc = run_python(code, {**os.environ, "PHPROF_FAKE_NVML_STATE": str(path)})
        assert proc.stdout.strip() == "999"
        assert message in proc.stderr and str(path) in proc.stderr


def test_power_per_module_everywhere_finds_a_scripts_model_and_names_it_as_phprof_does(fake):
    """The ground truth of a user's script: the first module called outside any other is a root,
    its modules named by path (the root by its class), each drawing its own level while it is the
    innermost one running, OUTSIDE_W between calls; a module made on the fly inside a forward is
    part of its caller; outside the block nothing is hooked."""
    import torch

    inner = torch.nn.Sequential(torch.nn.Linear(2, 2))

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(2, 2), inner

        def forward(self, x):
            return torch.nn.ReLU()(self.b(self.a(x)))  # ReLU made on the fly

    net, levels, tags = Net(), {}, {}
    with fake_nvml.power_per_module_everywhere(fake, levels, tags):
        net(torch.zeros(1, 2))
        assert sorted(tags) == ["Net", "a", "b", "b.0"] and set(levels) == set(tags)
        assert all(80 <= w <= 400 for w in levels.values())
        net(torch.zeros(1, 2))
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())
    drawn = {name: fake.tag_energy(0, tag) for name, tag in tags.items()}
    assert all(j > 0 for j in drawn.values()), drawn  # each drew its own power while it ran
    net(torch.zeros(1, 2))  # after the block: no power switched
    assert {name: fake.tag_energy(0, tag) for name, tag in tags.items()} == drawn
