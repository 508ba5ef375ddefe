"""The native sampler against the fake NVML library (tools/fake_nvml).

The fake holds a true power signal and passes it through a sensor model, so
these tests compare what phprof recorded with what the "GPU" really did.

Two tiers. Tests marked ``integration`` run the native sampling thread in real
time: what they check is the thread itself (its stamps, its polling, its
lifetime), and none depends on how fast the machine is: they record until what
they need has been seen (with a generous timeout), and their margins come from
what the code states (a counter's own uncertainty, the fake's noise). The others
are the fast tier: the power log's bookkeeping on readings taken by a fake
clock (``fake_nvml.sampling``: the fake polled at simulated instants), which
``test_the_fake_clock_sees_what_the_native_sampler_sees`` checks against the
native sampler once.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import fake_nvml
from fake_nvml import sampling
from phprof import _sampler
from phprof.energy import Method
from phprof.sources import READING_DTYPE, Channel, NvmlSource, PowerLog, change_instants, recording, value_changes

integration = pytest.mark.integration
TIMEOUT_S = 60.0  # for what a loaded machine may take long to show; an idle one takes well under 2 s


def sampler_threads(expect: int | None = None, timeout_s: float = 2.0) -> int:
    """Sampling threads alive in this process (the native thread names itself).

    With `expect`, waits up to `timeout_s` for the count to reach it: the kernel
    lists a joined thread in /proc for a moment after pthread_join returns."""
    deadline = time.monotonic() + timeout_s
    while True:
        names = []
        for t in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{t}/comm") as f:
                    names.append(f.read().strip())
            except FileNotFoundError:  # a thread that just ended
                pass
        n = names.count("phprof-sampler")
        if expect is None or n == expect or time.monotonic() > deadline:
            return n
        time.sleep(0.001)


def wait_until(condition, what: str, timeout_s: float = TIMEOUT_S, poll_s: float = 0.005) -> None:
    """Returns once condition() holds; fails the test after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not seen within {timeout_s:.0f} s")
        time.sleep(poll_s)


def _levels_until(fake, stop: threading.Event, devices=(0,), period_s=0.004, seed=0):
    """Changes each device's true power every few ms, like a model's layers."""
    rng = np.random.default_rng(seed)
    while not stop.is_set():
        for d in devices:
            fake.set_power(d, float(rng.uniform(60, 400)), tag=1)
        time.sleep(period_s)


def _record(source, enough, fake=None, devices=(0,), what="enough readings"):
    """Records `source` (while, optionally, the true power moves) until `enough(log so far)`
    holds: however slowly a loaded machine samples, the test gets the data it needs."""
    stop = threading.Event()
    mover = None
    if fake is not None:
        mover = threading.Thread(target=_levels_until, args=(fake, stop, devices))
        mover.start()
    def seen_enough():
        rec.drain()
        return enough(rec.log)

    try:
        with recording(source) as rec:
            wait_until(seen_enough, what, poll_s=0.05)
    finally:
        stop.set()
        if mover:
            mover.join()
    return rec


def _sample(source, enough, fake=None, devices=(0,), what="enough readings"):
    """:func:`_record`'s log."""
    return _record(source, enough, fake, devices, what).log


def _span_s(log, seconds):
    """`enough` for _sample: the log spans at least `seconds` of wall time."""
    r = log.readings
    return len(r) > 0 and (r["t_after_ns"].max() - r["t_before_ns"].min()) / 1e9 >= seconds


def _possible_counter(fake, dev, t0, t1):
    """The counter values a read somewhere in [t0, t1] can return (one per update shown)."""
    return {fake.counter_at(dev, t) for t in [int(t0)] + [int(v) for v in fake.update_times(dev, "energy", t0, t1)]}


def _schedule_levels(fake, start_ns, seconds, devices=(0,), period_s=0.004, seed=0):
    """The fake-clock counterpart of _levels_until: random levels every `period_s`, scheduled
    ahead from `start_ns`; returns the schedule's end."""
    rng = np.random.default_rng(seed)
    n = int(seconds / period_s)
    for d in devices:
        for i, w in enumerate(rng.uniform(60, 400, n)):
            fake.set_power_at(d, float(w), start_ns + round(i * period_s * 1e9), tag=1)
    return start_ns + round(n * period_s * 1e9)


def test_record_layout_is_the_native_one():
    layout = _sampler.READING_LAYOUT
    assert READING_DTYPE.itemsize == _sampler.READING_SIZE == 32
    assert list(READING_DTYPE.names) == [name for name, _, _ in layout]
    for name, typestr, offset in layout:
        dtype, off = READING_DTYPE.fields[name]
        assert (dtype.str, off) == (np.dtype(typestr).str, offset)


def test_the_fake_clocks_records_are_the_native_ones():
    assert sampling.READING_DTYPE == READING_DTYPE


@integration
def test_the_fake_clock_sees_what_the_native_sampler_sees(fake, fake_lib):
    """fake_nvml.sampling stands in for the native sampler in the fast tier. Against a real run
    over the same schedule it reads the same channels in the same order, a field the GPU lacks
    once, the same updates with the same values inside brackets that agree, and its log gives
    the same energy within the uncertainties both state."""
    from fake_nvml import SensorModel

    fake.configure(1, "power_average", SensorModel(0.1, 1.0, status=3))  # NOT_SUPPORTED on gpu1
    start = time.time_ns() + 20_000_000
    end = _schedule_levels(fake, start, 1.5, devices=(0, 1))
    real = _sample(NvmlSource(gpus=[0, 1], library=str(fake_lib)),
                   lambda log: log.readings["t_before_ns"].max() > end + 50_000_000, what="the schedule's end")
    r = real.readings
    sim = sampling.power_log(fake, int(r["t_before_ns"][0]), int(r["t_before_ns"][-1]), gpus=[0, 1])
    s = sim.readings
    assert sim.channels == real.channels and s.dtype == r.dtype == READING_DTYPE
    for poll in (0, 1):  # the first poll reads every channel, later ones skip the missing field
        assert r["channel"][r["seq"] == poll].tolist() == s["channel"][s["seq"] == poll].tolist()
    assert [c for c, _ in sampling.channels((0, 1))] == [0, 0, 0, 1, 1, 1]
    missing = real.channel_index("gpu1.power_average")
    for log in (real, sim):
        assert log.readings["status"][log.readings["channel"] == missing].tolist() == [3]
    # the same updates: each change the real log brackets inside the simulated run is one of the
    # simulated log's, with the same value, in a bracket that overlaps it (both hold the update's
    # true instant); each change the simulated log brackets inside the real run is one of the
    # real log's too, unless a late poll of the real sampler (a loaded machine) skipped it:
    # then it lies inside one bracket of the real log
    compared = 0
    for c in real.channels:
        if c.name == "gpu1.power_average":
            continue
        rr, ss = real.of(c.name), sim.of(c.name)
        (rlo, rhi), (slo, shi) = value_changes(rr), value_changes(ss)
        rv, sv = (x["value"][1:][np.diff(x["value"]) != 0] for x in (rr, ss))
        same = (rv[:, None] == sv[None, :]) & (np.maximum(rlo[:, None], slo[None, :])
                                               <= np.minimum(rhi[:, None], shi[None, :]))
        within = (rlo[:, None] <= slo[None, :]) & (shi[None, :] <= rhi[:, None])
        in_sim = (rlo >= ss["t_after_ns"][0]) & (rhi <= ss["t_before_ns"][-1])
        in_real = (slo >= rr["t_after_ns"][0]) & (shi <= rr["t_before_ns"][-1])
        assert in_sim.sum() > 0 and same[in_sim].any(axis=1).all(), c.name
        assert (same | within)[:, in_real].any(axis=0).all(), c.name
        compared += int(in_sim.sum())
    assert compared > 150  # 20 ms counter updates over 1.5 s on two GPUs, and the power fields'
    # the same energy: within the uncertainties the two state, and each the true one within its own
    a, b = int(s["t_after_ns"][0]) + 100_000_000, int(s["t_before_ns"][-1]) - 100_000_000
    for dev in ("gpu0", "gpu1"):
        er, es = real.energy_between(dev, a, b), sim.energy_between(dev, a, b)
        assert abs(er.joules - es.joules) <= er.uncertainty_j + es.uncertainty_j
        truth = fake.true_energy(int(dev[-1]), a, b)
        assert abs(er.joules - truth) <= er.uncertainty_j and abs(es.joules - truth) <= es.uncertainty_j


def test_the_counter_gives_the_true_energy_within_the_bound_it_states(fake):
    """The power log's counter arithmetic, on the fake clock: over the whole log (between the
    counter's first and last updates) and over any span inside it, the fake's true energy lies
    in the bound stated (the updates around each end), under levels that move every 4 ms."""
    start = time.time_ns() + 100_000_000
    end = _schedule_levels(fake, start, 3.0)
    log = sampling.power_log(fake, start - 50_000_000, end + 50_000_000)
    e = log.of("gpu0.energy")
    total = log.energy("gpu0")
    assert total.method is Method.COUNTER and total.measured and total.energy.method_text == "energy counter"
    updates = fake.update_times(0, "energy", int(e["t_after_ns"][0]), int(e["t_before_ns"][-1]))
    truth = fake.true_energy(0, int(updates[0]), int(updates[-1]))
    assert total.low_j <= truth <= total.high_j and total.high_j - total.low_j == pytest.approx(0.002)  # a mJ each end
    update_j = 0.02 * 400  # a 20 ms update at <= 400 W
    rng = np.random.default_rng(1)
    spans = np.sort(rng.integers(start, end, (200, 2)), axis=1)
    for a, b in spans:
        m = log.energy_between("gpu0", int(a), int(b))
        assert m.method is Method.COUNTER and 0 < m.high_j - m.low_j <= 4 * update_j + 0.002  # <= 2 each end
        assert m.low_j <= fake.true_energy(0, int(a), int(b)) <= m.high_j, (a, b)
        assert m.low_j <= m.joules <= m.high_j


@integration
def test_energy_readings_are_the_fake_counter_exactly(fake, fake_lib):
    # a counter update is at most 20 ms at 400 W: 0.8 J at each end of the run; so record at
    # least 400 J, over which that stated uncertainty is < 5% (and at least 500 readings)
    max_uncertainty_j = 2 * 0.02 * 400

    def enough(log):
        e = log.of("gpu0.energy")
        return len(e) > 500 and fake.true_energy(0, int(e["t_before_ns"][0]), int(e["t_after_ns"][-1])) >= 400

    log = _sample(NvmlSource(gpus=[0], library=str(fake_lib)), enough, fake, what="500 readings and 400 J")
    e = log.of("gpu0.energy")
    assert len(e) > 500 and (e["status"] == 0).all()
    # Each reading is the counter as it stood at some instant inside the call.
    for r in e[:: max(1, len(e) // 400)]:
        assert r["value"] in _possible_counter(fake, 0, r["t_before_ns"], r["t_after_ns"])
    # the run's counter difference is the fake's, to the millijoule
    first, last = e[0], e[-1]
    fake_diff = {b - a for a in _possible_counter(fake, 0, first["t_before_ns"], first["t_after_ns"])
                 for b in _possible_counter(fake, 0, last["t_before_ns"], last["t_after_ns"])}
    assert int(last["value"] - first["value"]) in fake_diff
    # the log's energy is the counter's, between its first and last updates: the true
    # energy between those instants, to the counter's unit
    total = log.energy("gpu0")
    assert total.method is Method.COUNTER and total.energy.method_text == "energy counter" and total.measured
    updates = fake.update_times(0, "energy", int(first["t_after_ns"]), int(last["t_before_ns"]))
    truth = fake.true_energy(0, int(updates[0]), int(updates[-1]))
    assert total.low_j <= truth <= total.high_j and total.high_j - total.low_j == pytest.approx(0.002)
    # its span runs between those updates' instants, each known to within its bracket
    lo, hi = value_changes(e)
    assert abs(total.seconds - (updates[-1] - updates[0]) / 1e9) <= ((hi - lo)[0] + (hi - lo)[-1]) / 2e9 + 1e-9
    # a span of the run: within the updates around each end
    a, b = int(first["t_after_ns"]) + 50_000_000, int(last["t_before_ns"]) - 50_000_000
    span = log.energy_between("gpu0", a, b)
    assert span.low_j <= fake.true_energy(0, a, b) <= span.high_j
    assert 0 < span.high_j - span.low_j <= 2 * max_uncertainty_j + 0.002


@integration
def test_instant_power_samples_land_at_the_update_instants(fake, fake_lib):
    interval_ms = 1.0

    def brackets(log):
        r = log.of("gpu0.power_instant")
        lo, hi = value_changes(r)
        truth = fake.update_times(0, "power_instant", int(r["t_after_ns"][0]), int(r["t_before_ns"][-1]))
        return r, lo, hi, truth

    def enough(log):  # 20 updates (~2 s), 10 of them bracketed by polls that ran on time
        r, lo, hi, truth = brackets(log)
        return len(truth) >= 20 and ((hi - lo) <= 2 * interval_ms * 1e6).sum() >= 10

    log = _sample(NvmlSource(gpus=[0], fields=["power_instant"], library=str(fake_lib)), enough, fake,
                  what="20 updates, 10 bracketed on time")
    r, lo, hi, truth = brackets(log)
    assert len(truth) >= 20  # ~101 ms updates
    assert len(lo) == len(truth)  # every update of the sensor was seen, and nothing else
    # each change's bracket holds the true update instant: the stamps are right
    assert ((lo <= truth) & (truth <= hi)).all()
    # each change is bracketed by two consecutive polls: a poll is never lost
    changed = np.flatnonzero(np.diff(r["value"]) != 0) + 1
    assert (r["seq"][changed].astype(np.int64) - r["seq"][changed - 1] == 1).all()
    # at 1 kHz, when the OS woke the thread on time (the two polls 1 ms apart), the midpoint
    # finds the update within 1 ms; when it woke it late (a loaded machine, this VM now and
    # then by up to ~10 ms), the bracket widens and says so: the error stays within half of it
    error_ms = np.abs((lo + hi) / 2 - truth) / 1e6
    width_ms = (hi - lo) / 1e6
    on_time = width_ms <= 2 * interval_ms
    assert on_time.sum() >= 10
    assert (error_ms[on_time] <= interval_ms).all(), error_ms[on_time]
    assert (error_ms <= width_ms / 2).all()


@integration
def test_timestamps_are_monotonic_and_bracket_each_call(fake, fake_lib):
    log = _sample(NvmlSource(gpus=[0, 1], library=str(fake_lib)), lambda log: len(log.readings) > 1000, fake,
                  devices=(0, 1), what="1000 readings")
    r = log.readings
    assert len(r) > 1000
    assert (r["t_after_ns"] >= r["t_before_ns"]).all()
    assert (r["t_before_ns"][1:] >= r["t_after_ns"][:-1]).all()  # one thread, one call at a time
    assert (np.diff(r["seq"].astype(np.int64)) >= 0).all()
    # realtime stamps agree with the clock pairs taken around the run
    assert log.clock_pairs[0, 1] <= r["t_before_ns"][0] and r["t_after_ns"][-1] <= log.clock_pairs[-1, 1]


@integration
def test_two_gpus_are_sampled_together(fake, fake_lib):
    fake.set_power(0, 100.0)
    fake.set_power(1, 300.0)
    # every update the run sees is at these levels: wait until the sensors show them
    # (the counter's 20 ms update, the instant field's 101 ms one after its 25 ms window)
    changed = time.time_ns()
    ready = max(sampling.settled_at(fake, d, "power_instant", changed) for d in (0, 1))
    ready = max(ready, *(fake.update_visible_at(d, "energy", fake.update_index_at(d, "energy", changed) + 2)
                         for d in (0, 1)))
    wait_until(lambda: time.time_ns() >= ready, "the sensors showing the new levels")
    t0 = time.time_ns()
    rec = _record(NvmlSource(gpus=[0, 1], library=str(fake_lib)), lambda log: _span_s(log, 0.8), what="0.8 s")
    t1 = time.time_ns()
    log = rec.log
    assert log.devices == ["gpu0", "gpu1"]
    for dev, watts in (("gpu0", 100.0), ("gpu1", 300.0)):
        r = log.of(f"{dev}.energy")
        p = log.of(f"{dev}.power_instant")
        # one poll reads every channel: the two GPUs share poll numbers
        assert set(r["seq"]) == set(log.of("gpu0.energy")["seq"])
        assert abs(np.median(p["value"][len(p) // 2 :]) / 1e3 - watts) < 0.05 * watts
        total = rec.energy(dev)  # the recording's body
        truth = fake.true_energy(int(dev[-1]), rec.start_ns, rec.end_ns)
        # the counter steps every 20 ms: the bound is one step at each end (and a mJ each),
        # two at an end that falls between the reads around an update
        assert 2 * watts * 0.02 * 0.95 <= total.high_j - total.low_j <= 4 * watts * 0.02 * 1.05
        assert total.low_j <= truth <= total.high_j
        assert abs(total.joules - truth) < 0.01 * truth
    assert t0 <= log.readings["t_before_ns"].min() and log.readings["t_after_ns"].max() <= t1


@integration
def test_start_stop_drain_1000_times_leaks_no_threads_or_memory(fake, fake_lib):
    source = NvmlSource(gpus=[0], library=str(fake_lib), interval_s=1e-4, capacity=4096)

    def cycle(n):
        for _ in range(n):
            source.start()
            source.drain()
            source.stop()
            assert not source.running

    def rss_kib():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024

    cycle(100)  # warm up allocators
    before_rss, before_fds = rss_kib(), len(os.listdir("/proc/self/fd"))
    cycle(1000)
    assert sampler_threads(expect=0) == 0
    assert len(os.listdir("/proc/self/fd")) == before_fds
    assert rss_kib() - before_rss < 1024, "RSS grew by more than 1 MiB over 1000 cycles"
    assert source.stats()["polls"] >= 2 * 1100  # every run is bracketed by a first and a last poll


@integration
def test_samplers_come_and_go_without_leaking(fake, fake_lib):
    for _ in range(200):
        # a small ring: the default one (32 MiB, zeroed) takes longer to allocate than the rest
        s = NvmlSource(gpus=[0, 1], library=str(fake_lib), capacity=4096)
        s.start()
        assert sampler_threads(expect=1) == 1
        del s  # dropped while running: the thread is stopped and joined
    assert sampler_threads(expect=0) == 0


@integration
@pytest.mark.parametrize(
    "ending",
    [
        "pass",  # the interpreter exits with the sampler still running
        "keep = [src, keep_cycle]; keep_cycle.append(keep)",  # unreachable until the very end
        "raise SystemExit(3)",
        "os._exit(4)",
        # never deallocated at all: only the native exit hook can stop it
        "import ctypes; ctypes.pythonapi.Py_IncRef(ctypes.py_object(src._sampler))",
    ],
)
def test_interpreter_exit_while_sampling_is_clean(fake, fake_lib, ending):
    code = textwrap.dedent(
        f"""
        import os, sys, time
        from phprof.sources import NvmlSource
        src = NvmlSource(gpus=[0, 1], library={str(fake_lib)!r}, interval_s=1e-4)
        keep_cycle = []
        src.start()
        time.sleep(0.2)
        {ending}
        """
    )
    env = {**os.environ, **fake.env}
    t = time.monotonic()
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert time.monotonic() - t < 30
    expected = {"pass": 0, "raise SystemExit(3)": 3, "os._exit(4)": 4}.get(ending, 0)
    assert p.returncode == expected, p.stderr
    assert p.stderr == ""


def test_missing_library_is_a_clear_error(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere" / "libnvidia-ml.so.1"
    with pytest.raises(OSError, match="cannot load the NVML library") as e:
        NvmlSource(gpus=[0], library=str(missing))
    assert str(missing) in str(e.value)
    monkeypatch.setenv("PHPROF_NVML_LIB", str(missing))
    with pytest.raises(_sampler.NvmlUnavailable, match="PHPROF_NVML_LIB is set"):
        NvmlSource(gpus=[0])
    probe = NvmlSource.probe()
    assert not probe.available and str(missing) in probe.reason


def test_a_library_that_is_not_nvml_is_refused():
    libm = "libm.so.6"
    with pytest.raises(_sampler.NvmlUnavailable, match="not a usable NVML library"):
        NvmlSource(gpus=[0], library=libm)


@pytest.mark.parametrize(
    "gpus, message",
    [
        ([2], r"GPU 2 requested, but NVML .* sees 2 GPUs \(indices 0-1\)"),
        ([-1], "negative"),
        ([0, 0], "twice"),
        ([2**32], "out of range"),
        ([1, 2**32 + 1], "out of range"),
    ],
)
def test_bad_gpu_index_is_a_clear_error(fake, fake_lib, gpus, message):
    with pytest.raises(ValueError, match=message):
        NvmlSource(gpus=gpus, library=str(fake_lib))


def test_bad_options_are_clear_errors(fake, fake_lib):
    with pytest.raises(ValueError, match="unknown NVML field 'power'"):
        NvmlSource(gpus=[0], fields=["power"], library=str(fake_lib))
    with pytest.raises(ValueError, match="interval_ns must be >= 0"):
        NvmlSource(gpus=[0], interval_s=-1, library=str(fake_lib))
    with pytest.raises(ValueError, match="select at least one GPU"):
        NvmlSource(gpus=[], library=str(fake_lib))


@integration
def test_starting_a_running_source_is_a_clear_error(fake, fake_lib):
    source = NvmlSource(gpus=[0], library=str(fake_lib))
    source.start()
    with pytest.raises(RuntimeError, match="already running"):
        source.start()
    source.stop()


@integration
def test_no_energy_counter_falls_back_to_integrated_instant_power(fake, fake_lib):
    """Regression: this test once failed on a loaded machine (189.6 J against 200.0 J). It set
    the power and started sampling at once, so the first readings showed the instant field's
    update from *before* the change, whose window had averaged the idle level (60 W): the
    integral held that value until the next update, up to 101 ms + the 25 ms window later,
    i.e. up to 140 W x 0.126 s = 18 J (9%) too little. How much depended on where the fake's
    update grid stood when set_power ran, i.e. on how fast the machine reached it. Now the test
    waits until the sensor shows only windows after the change (its truth is then the same
    constant signal the readings saw), and compares over the span the integral covers."""
    from fake_nvml import SensorModel

    fake.configure(0, "energy", SensorModel(period_s=0.02, window_s=0.02, status=3))  # NOT_SUPPORTED
    fake.set_power(0, 200.0)
    ready = sampling.settled_at(fake, 0, "power_instant", time.time_ns())
    wait_until(lambda: time.time_ns() >= ready, "the instant field showing 200 W")
    log = _sample(NvmlSource(gpus=[0], library=str(fake_lib)), lambda log: _span_s(log, 1.0), what="1 s")
    e = log.of("gpu0.energy")
    assert len(e) == 1 and e["status"][0] == 3  # recorded once, then no longer asked
    total = log.energy("gpu0")
    assert total.method is Method.INTEGRATED and total.detail == "gpu0.power_instant" and not total.measured
    assert total.energy.method_text == "integrated gpu0.power_instant"
    assert any("gpu0.energy unusable: not supported" in n for n in total.notes)
    p = log.of("gpu0.power_instant")
    # every reading shows the level, within the fake's noise (1% per update: 5 sigma)
    margin = 5 * fake.get_model(0, "power_instant").noise
    assert (np.abs(p["value"] / 200_000 - 1) < margin).all()
    # the integral runs from the first reading to the last (each value holds until the next one)
    mid = p["t_before_ns"] + (p["t_after_ns"] - p["t_before_ns"]) // 2
    truth = fake.true_energy(0, int(mid[0]), int(mid[-1]))
    assert abs(total.joules - truth) < margin * truth


def test_integrating_a_power_field_from_just_after_a_change_sees_the_old_level_first(fake):
    """What the test above waits out, on the fake clock: the first update after a change of
    level shows a window from before it, and the integral holds that value until the next
    update; once the field has settled, only the fake's noise is left."""
    from fake_nvml import SensorModel

    fake.configure(0, "energy", SensorModel(period_s=0.02, window_s=0.02, status=3))  # NOT_SUPPORTED
    change = fake.update_visible_at(0, "power_instant", fake.update_index_at(0, "power_instant", time.time_ns()) + 3)
    change += 10_000_000  # 10 ms after an update: the old level is shown for the next ~91 ms
    fake.set_power_at(0, 200.0, change)
    settled = sampling.settled_at(fake, 0, "power_instant", change)
    assert change + 25_000_000 <= settled <= change + 126_000_000  # a window later, at most a period more
    noise = fake.get_model(0, "power_instant").noise
    for t0, stale in ((change + 1_000_000, True), (settled, False)):
        log = sampling.power_log(fake, t0, t0 + 1_000_000_000)
        assert log.of("gpu0.energy")["status"].tolist() == [3]  # one NOT_SUPPORTED reading, as the sampler's
        total = log.energy("gpu0")
        assert total.method is Method.INTEGRATED and not total.measured
        p = log.of("gpu0.power_instant")
        mid = p["t_before_ns"] + (p["t_after_ns"] - p["t_before_ns"]) // 2
        truth = fake.true_energy(0, int(mid[0]), int(mid[-1]))
        if stale:  # idle (60 W) shown until the settled update: 140 W x that long missing, +-noise
            missing = (200.0 - fake_nvml.PRESET_IDLE_W["a100"]) * (settled - mid[0]) / 1e9
            assert truth - total.joules == pytest.approx(missing, abs=2 * noise * truth)
            assert truth - total.joules > 0.05 * truth  # more than the old test's 5% margin
        else:
            assert abs(total.joules - truth) < 5 * noise * truth


@integration
def test_no_power_field_at_all_gives_no_energy_and_says_why(fake, fake_lib):
    from fake_nvml import SensorModel

    for field in ("energy", "power_instant", "power_average"):
        fake.configure(0, field, SensorModel(period_s=0.1, window_s=0.025, status=3))
    source = NvmlSource(gpus=[0], library=str(fake_lib))
    log = _sample(source, lambda log: source.stats()["polls"] >= 20, what="20 polls")
    assert len(log.readings) == 3  # one NOT_SUPPORTED reading per field, then silence
    total = log.energy("gpu0")
    assert total.joules is None and total.method is Method.NONE and len(total.notes) == 3
    assert total.energy.method_text == "none"


@integration
def test_counter_reset_is_recorded_and_bridged(fake, fake_lib):
    fake.set_power(0, 150.0)
    source = NvmlSource(gpus=[0], fields=["energy"], library=str(fake_lib))

    def updates_seen(rec, n):  # n counter updates (20 ms each) seen since the last reset
        def seen():
            rec.drain()
            v = rec.log.of("gpu0.energy")["value"]
            after = v[np.flatnonzero(np.diff(v) < 0)[-1] + 1:] if (np.diff(v) < 0).any() else v
            return len(np.unique(after)) > n
        return seen

    with recording(source) as rec:
        wait_until(updates_seen(rec, 10), "10 counter updates")
        fake.reset_counter(0)
        reset = fake.counter_origin(0)
        wait_until(updates_seen(rec, 10), "10 counter updates after the reset")
    log = rec.log
    e = log.of("gpu0.energy")
    assert (np.diff(e["value"]) < 0).sum() == 1
    total = log.energy("gpu0")
    assert total.counter_resets == 1 and any("reset" in n for n in total.notes)
    updates = fake.update_times(0, "energy", int(e["t_after_ns"][0]), int(e["t_before_ns"][-1]))
    truth = fake.true_energy(0, int(updates[0]), int(updates[-1]))
    # between the first and last updates, to a unit, less what the reset hid: the energy from
    # the last update read before it to the reset itself, i.e. at most one more update and the
    # time from the last reading before the reset to the reset
    before = e[np.flatnonzero(np.diff(e["value"]) < 0)[0]]
    hidden_s = 0.02 + (reset - int(before["t_before_ns"])) / 1e9
    assert total.low_j <= truth <= total.high_j + hidden_s * 150


def test_change_instants_of_integer_times():
    """Each change lies between the start of the last read of the old value and the end of
    the first read of the new one; its instant is the middle, in integer ns."""
    t_lo = np.array([0, 10, 20, 30, 40, 50], np.int64)
    t_hi = t_lo + 3
    values = np.array([5, 5, 7, 7, 7, 9])
    instants, new = change_instants(t_lo, t_hi, values)
    assert instants.dtype.kind == "i" and new.tolist() == [7, 9]
    assert instants.tolist() == [(10 + 23) // 2, (40 + 53) // 2]  # 16 (floored), 46
    none = change_instants(t_lo, t_hi, np.full(6, 4))
    assert len(none[0]) == 0 and len(none[1]) == 0


def test_change_instants_of_float_times_read_at_one_instant():
    """Readings stamped with one time (a CSV row, a probe) pass it twice; float times stay float."""
    t_s = np.array([0.0, 0.1, 0.2, 0.3, 0.45])
    watts = np.array([100.0, 100.0, 250.5, 250.5, 90.0])
    instants, new = change_instants(t_s, t_s, watts)
    assert instants.dtype.kind == "f" and new.tolist() == [250.5, 90.0]
    assert instants == pytest.approx([0.15, 0.375])


def test_a_counter_reset_to_zero_and_read_as_zero_is_bridged():
    """A 64-bit counter read as 0 right after a reset: the read is no update (regression:
    the update instants and the energies once disagreed in length)."""
    r = np.zeros(10, READING_DTYPE)
    r["t_before_ns"] = np.arange(10) * 10_000_000
    r["t_after_ns"] = r["t_before_ns"] + 1_000
    r["value"] = [0, 100, 200, 300, 400, 0, 0, 100, 200, 300]  # mJ; reset between rows 4 and 5
    log = PowerLog("nvml", (Channel("gpu0.energy", "gpu0", "energy", "mJ", "test counter"),), r)
    total = log.energy("gpu0")
    assert total.method is Method.COUNTER and total.counter_resets == 1 and any("reset" in n for n in total.notes)
    # from the first update (100 mJ) to the last: 300 mJ more before the reset, 300 after it
    assert total.joules == pytest.approx(0.6) and (total.low_j, total.high_j) == pytest.approx((0.599, 0.601))


@integration
def test_changed_only_keeps_every_change_bracketed(fake, fake_lib):
    full = NvmlSource(gpus=[0], library=str(fake_lib))
    sparse = NvmlSource(gpus=[0], library=str(fake_lib), changed_only=True)
    names = ("gpu0.power_instant", "gpu0.energy")
    stop = threading.Event()
    mover = threading.Thread(target=_levels_until, args=(fake, stop))
    mover.start()

    def enough():  # more than 5 changes of each field in the sparse log (~0.6 s)
        b.drain()
        return all(len(value_changes(b.log.of(name))[0]) > 5 for name in names)

    try:
        with recording(full) as a, recording(sparse) as b:
            wait_until(enough, "6 changes of each field")
            stopping = time.time_ns()
    finally:
        stop.set()
        mover.join()
    for name in names:
        field = name.split(".")[1]
        f, s = a.log.of(name), b.log.of(name)
        changed = np.flatnonzero(np.diff(s["value"]) != 0) + 1
        assert len(changed) > 5
        # only the changes are kept, each with the reading of the poll just before it (and the
        # first and last observations), so each stays bracketed to one polling interval
        assert len(s) <= 2 * len(changed) + 2 < len(f)
        assert (s["seq"][changed].astype(np.int64) - s["seq"][changed - 1] == 1).all()
        # and the sparse log sees the same changes as the full one (both sample the same
        # sensor): every update of the fake while both ran, with its value
        updates = fake.update_times(0, field, int(s["t_after_ns"][0]), int(s["t_before_ns"][-1]))
        read = (lambda t: fake.counter_at(0, t)) if field == "energy" else (lambda t: fake.power_at(0, field, t))
        shown = {read(int(u)) for u in updates}
        assert len(shown) >= len(changed) - 2  # the sparse log's changes, less one at each end at most
        assert shown <= set(s["value"][changed]) and shown <= set(f["value"][1:][np.diff(f["value"]) != 0])
    # the last observation is kept, so the energy over the run is not cut short: the sparse log
    # ends with the poll its stop() took, after the run's last instant
    e = b.log.of("gpu0.energy")
    assert stopping <= e["t_after_ns"][-1] <= b.log.clock_pairs[-1, 1]


@integration
def test_polling_interval_is_honoured(fake, fake_lib):
    interval_ms = 10.0
    source = NvmlSource(gpus=[0], fields=["energy"], interval_s=interval_ms / 1e3, library=str(fake_lib))
    log = _sample(source, lambda log: len(log.readings) >= 50, what="50 polls")
    t = log.readings["t_before_ns"]
    polls = len(t)
    assert polls >= 50
    # never a burst: each deadline is at least one interval after the one before and a poll
    # never comes before its deadline (a late one is not made up for), so over the span from
    # the first poll to the last there are at most span / interval of them, plus the first,
    # the one stop() takes, and a last partial interval
    assert polls <= (t[-1] - t[0]) / 1e6 / interval_ms + 3
    # and the interval holds: never shorter, longer only by the OS's wake-up delays (a loaded
    # machine adds a few ms to some of them, not to most)
    gaps = np.diff(t[:-1]) / 1e6  # the last poll is the one stop() takes, at once
    assert interval_ms - 0.05 <= np.median(gaps) <= 1.5 * interval_ms


@integration
def test_a_full_buffer_drops_new_readings_and_counts_them(fake, fake_lib):
    source = NvmlSource(gpus=[0], library=str(fake_lib), interval_s=None, capacity=16)
    source.start()
    wait_until(lambda: source.stats()["dropped"] > 0, "a dropped reading")
    log = source.stop()
    assert len(log.readings) == 16
    assert log.dropped > 0 and log.dropped == source.stats()["dropped"]
    assert (np.diff(log.readings["seq"].astype(np.int64)) >= 0).all()


@integration
def test_drains_while_running_lose_nothing(fake, fake_lib):
    source = NvmlSource(gpus=[0], library=str(fake_lib), interval_s=1e-4)
    with recording(source) as rec:
        for _ in range(20):
            time.sleep(0.02)
            rec.drain()
    log = rec.log
    seq = log.readings["seq"].astype(np.int64)
    polls = np.unique(seq)
    assert (np.diff(polls) == 1).all()  # no poll missing between drains
    assert len(log.readings) == 3 * len(polls) == source.stats()["stored"]
    assert log.dropped == 0
    assert len(log.clock_pairs) == 22  # start, 20 drains, stop


def anon_rss_kib() -> int:
    """This process's resident anonymous memory (kB), after handing freed heap pages back."""
    import ctypes

    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:"))


@integration
def test_the_ring_is_resident_only_while_it_holds_readings(fake, fake_lib):
    before = anon_rss_kib()
    # 2**24 readings of 32 bytes: 512 MiB of address space; zeroed up front it would all be resident
    source = NvmlSource(gpus=[0], library=str(fake_lib), interval_s=None, capacity=1 << 24)
    assert anon_rss_kib() - before < 16 * 1024
    source.start()
    wait_until(lambda: source.stats()["undrained"] >= 1 << 19, "2**19 readings buffered (16 MiB)")
    log = source.stop()
    assert len(log.readings) >= 1 << 19 and log.dropped == 0
    del log
    # what was drained is handed back: the ring's 16 MiB written are no longer resident
    assert anon_rss_kib() - before < 6 * 1024


@integration
def test_a_small_ring_drained_while_running_wraps_and_keeps_every_reading(fake, fake_lib):
    # 4096 readings: 32 pages, wrapped dozens of times, each emptied page handed back as it is drained
    source = NvmlSource(gpus=[0], library=str(fake_lib), interval_s=1e-4, capacity=4096)
    with recording(source) as rec:
        while source.stats()["stored"] < 20 * 4096:
            time.sleep(0.01)
            rec.drain()
    r = rec.log.readings
    polls = np.unique(r["seq"].astype(np.int64))
    assert source.stats()["dropped"] == 0
    assert (np.diff(polls) == 1).all() and len(r) == 3 * len(polls) == source.stats()["stored"]
    assert (r["t_before_ns"] > 0).all() and (np.diff(r["t_before_ns"]) >= 0).all()  # no page read back as zeros
    assert (np.diff(r[r["channel"] == 0]["value"]) >= 0).all()  # the energy counter's readings, in order


@integration
def test_concurrent_starts_and_stops_are_safe(fake, fake_lib):
    source = NvmlSource(gpus=[0], library=str(fake_lib), interval_s=1e-4)
    native = source._sampler
    errors, unexpected = [], []

    def hammer():
        # messages, not the exceptions: a traceback would hold this frame, whose cells hold the
        # sampler, in a cycle that the garbage collector frees (and shuts NVML down) in some
        # later test
        try:
            for _ in range(200):
                try:
                    native.start()
                except RuntimeError as e:
                    errors.append(str(e))  # another thread's run: refused, and said so
                native.drain()
                native.stop()
        except BaseException as e:  # noqa: BLE001 - reported to the test's own thread below
            unexpected.append(repr(e))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a stop() hung"
    assert not unexpected, unexpected
    assert all("already running" in e for e in errors), errors
    assert not native.running and sampler_threads(expect=0) == 0


@integration
def test_a_child_forked_while_sampling_exits_cleanly(fake, fake_lib):
    code = textwrap.dedent(
        f"""
        import os, sys, time
        from phprof.sources import NvmlSource
        src = NvmlSource(gpus=[0], library={str(fake_lib)!r}, interval_s=1e-4)
        src.start()
        time.sleep(0.05)
        pid = os.fork()
        if pid == 0:
            assert not src.running  # the sampling thread was not forked
            src.stop()
            sys.exit(0)             # the child's exit must not wait for the parent's thread
        _, status = os.waitpid(pid, 0)
        src.stop()
        sys.exit(os.waitstatus_to_exitcode(status))
        """
    )
    p = subprocess.run([sys.executable, "-c", code], env={**os.environ, **fake.env}, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
