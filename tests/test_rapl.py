"""RAPL through the native sampler, on a fake powercap tree (no machine here has RAPL).

The tests that run the sampling thread in real time are the ``integration`` tier; they wait for
what they need to have happened (with a generous timeout), never a fixed time."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from phprof.energy import Method
from phprof.sources import RaplSource

MAX_RANGE = 262143328850  # a real package zone's max_energy_range_uj
TIMEOUT_S = 60.0  # for what a loaded machine may take long to show; an idle one takes well under 1 s


def wait_until(condition, what: str, timeout_s: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not seen within {timeout_s:.0f} s")
        time.sleep(0.002)


def make_zone(root: Path, dirname: str, name: str, value: int = 0) -> Path:
    z = root / dirname
    z.mkdir(parents=True)
    (z / "name").write_text(name + "\n")
    (z / "max_energy_range_uj").write_text(f"{MAX_RANGE}\n")
    (z / "energy_uj").write_text(f"{value}\n")
    return z


@pytest.fixture
def powercap(tmp_path):
    root = tmp_path / "powercap"
    root.mkdir()
    (root / "intel-rapl").mkdir()  # the control type, not a zone
    make_zone(root, "intel-rapl:0", "package-0", MAX_RANGE - 5_000_000)  # wraps during the test
    make_zone(root, "intel-rapl:0:0", "core")
    make_zone(root, "intel-rapl:0:1", "dram", 1000)
    return root


def test_missing_powercap_says_why(tmp_path):
    probe = RaplSource.probe(tmp_path / "absent")
    assert not probe.available and "does not exist" in probe.reason
    empty = tmp_path / "empty"
    empty.mkdir()
    probe = RaplSource.probe(empty)
    assert not probe.available and "no RAPL zones" in probe.reason
    with pytest.raises(OSError, match="RAPL is not available: .* no RAPL zones"):
        RaplSource(root=empty)


def test_unreadable_counters_say_how_to_fix(powercap, monkeypatch):
    real = Path.read_text

    def deny(self, *a, **k):
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "read_text", deny)  # the tests run as root, who may read anything
    probe = RaplSource.probe(powercap)
    assert not probe.available
    assert "permission denied" in probe.reason and "root" in probe.reason and "chmod" in probe.reason


def test_zones_found_and_subzones_not_double_counted(powercap):
    probe = RaplSource.probe(powercap)
    assert probe.available
    assert {d["name"]: d["default"] for d in probe.devices} == {"package-0": True, "core-0": False, "dram-0": True}
    src = RaplSource(root=powercap)
    assert [c.name for c in src.channels] == ["rapl.package-0", "rapl.dram-0"]
    assert all(c.wrap == MAX_RANGE and c.unit == "uJ" for c in src.channels)


@pytest.mark.integration
def test_energy_follows_the_counter_through_a_wrap(powercap):
    pkg = powercap / "intel-rapl:0" / "energy_uj"
    written = [MAX_RANGE - 5_000_000]
    written_ns = []  # when each write was done
    stop = threading.Event()

    def cpu_burns():
        # fixed-width in-place writes, as a counter file changes under a reader
        fd = os.open(pkg, os.O_WRONLY)
        try:
            while not stop.is_set():
                nxt = (written[-1] + 1_000_000) % (MAX_RANGE + 1)
                os.pwrite(fd, f"{nxt:020d}\n".encode(), 0)
                written.append(nxt)
                written_ns.append(time.time_ns())
                time.sleep(0.003)
        finally:
            os.close(fd)

    os.truncate(pkg, 0)
    pkg.write_text(f"{written[0]:020d}\n")
    src = RaplSource(zones=["package"], root=powercap, interval_s=5e-4)
    writer = threading.Thread(target=cpu_burns)
    src.start()
    writer.start()
    # 40 writes (the counter wraps after 5) read by more than 100 polls
    wait_until(lambda: len(written) > 40 and src.stats()["polls"] > 100, "40 writes and 100 polls")
    stop.set()
    writer.join()
    # then the counter seen unchanged for three write periods (the curve ends flat after 1.25)
    period_ns = float(np.median(np.diff(written_ns)))
    wait_until(lambda: time.time_ns() > written_ns[-1] + 3 * period_ns, "three write periods")
    polls = src.stats()["polls"]
    wait_until(lambda: src.stats()["polls"] > polls, "a poll after them")
    log = src.stop()
    r = log.of("rapl.package-0")
    assert (r["status"] == 0).all() and len(r) > 100
    i0, i1 = written.index(int(r["value"][0])), written.index(int(r["value"][-1]))
    assert i1 - i0 > 20 and written[i1] < written[i0]  # went round
    total = log.energy("package-0")
    assert total.measured and total.method is Method.COUNTER and total.counter_resets == 0
    assert total.energy.method_text == "energy counter"
    # 1 J per write, between the counter's first and last updates in the log: exact, to a uJ
    first_update = written.index(int(r["value"][np.flatnonzero(np.diff(r["value"]) != 0)[0] + 1]))
    assert total.joules == pytest.approx(i1 - first_update)
    assert total.low_j <= i1 - first_update <= total.high_j and total.high_j - total.low_j == pytest.approx(2e-6)
    # a span of the log: within the writes around each end
    t, last_change = r["t_after_ns"], np.flatnonzero(np.diff(r["value"]) != 0)[-1]
    span = log.energy_between("package-0", int(t[10]), int(t[last_change - 3]))
    # what the counter showed there (the writes are the energy: it steps at each)
    truth = written.index(int(r["value"][last_change - 3])) - written.index(int(r["value"][10]))
    assert span.low_j <= truth <= span.high_j and span.high_j - span.low_j <= 2.0 + 1e-5


@pytest.mark.integration
def test_a_counter_file_that_cannot_be_read_is_recorded(powercap):
    dram = powercap / "intel-rapl:0:1" / "energy_uj"
    src = RaplSource(zones=["dram"], root=powercap, interval_s=1e-3)
    dram.write_text("garbage\n")
    src.start()
    wait_until(lambda: src.stats()["polls"] > 5, "6 polls")
    log = src.stop()
    r = log.of("rapl.dram-0")
    assert len(r) > 5 and (r["status"] == 22).all()  # EINVAL, an errno
    total = log.energy("dram-0")
    assert total.joules is None and "does not hold an integer" in total.notes[0]
    assert np.all(r["value"] == 0)
