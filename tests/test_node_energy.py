"""Several sources in one run: a GPU run records the host's RAPL package and DRAM counters beside its
GPU's NVML readings (one sampling thread), the summary adds them, and the report shows the CPU apart,
kept whole. On the fake NVML and a fake powercap tree (PHPROF_POWERCAP_ROOT) whose counters a thread
of the test drives at a known power."""
from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
import pytest

from phprof import load
from phprof.attribution import attribute
from phprof.sources import NvmlSource, open_source
from phprof.sources.rapl import ROOT_ENV, default_zones
from test_rapl import make_zone


def make_powercap(root):
    """A package zone, its core subzone (not sampled) and a DRAM zone, counters at 0."""
    for dirname, name in (("intel-rapl:0", "package-0"), ("intel-rapl:0:0", "core"), ("intel-rapl:0:1", "dram")):
        make_zone(root, dirname, name)
    return root


class Counters:
    """A thread that adds ``uj_per_step`` to each zone's counter every ``step_s``, as RAPL does,
    and keeps (time, value) of each write: the truth of any span."""

    def __init__(self, root, uj_per_step: dict[str, int], step_s: float = 0.002) -> None:
        self.files = {"package-0": root / "intel-rapl:0" / "energy_uj", "dram-0": root / "intel-rapl:0:1" / "energy_uj"}
        self.uj, self.step_s = uj_per_step, step_s
        self.written = {d: [(0, 0)] for d in self.files}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        fds = {d: os.open(f, os.O_WRONLY) for d, f in self.files.items()}
        try:
            while not self._stop.is_set():
                for d, fd in fds.items():
                    value = self.written[d][-1][1] + self.uj[d]
                    os.pwrite(fd, f"{value:020d}\n".encode(), 0)  # fixed width, in place
                    self.written[d].append((time.time_ns(), value))
                time.sleep(self.step_s)
        finally:
            for fd in fds.values():
                os.close(fd)

    def truth_j(self, device: str, t0_ns: int, t1_ns: int) -> float:
        """The counter's rise from t0 to t1 (the value of the last write before each)."""
        t = np.array([w[0] for w in self.written[device]])
        v = np.array([w[1] for w in self.written[device]])
        at = lambda x: v[np.searchsorted(t, x, side="right") - 1]  # noqa: E731
        return float(at(t1_ns) - at(t0_ns)) / 1e6

    def __enter__(self) -> Counters:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def test_a_gpu_source_reads_the_host_zones_on_its_own_thread(fake, tmp_path, monkeypatch):
    """auto: NVML and the package and DRAM zones in one sampler (core is part of the package: not
    read); nvml alone with --source nvml; each host zone identified by the host's name."""
    for k, v in fake.env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv(ROOT_ENV, str(make_powercap(tmp_path / "powercap")))
    src = open_source("auto", "cpu", gpu=0)
    assert isinstance(src, NvmlSource)
    assert [c.name for c in src.channels][-2:] == ["rapl.package-0", "rapl.dram-0"]
    assert [c.device for c in src.channels][:3] == ["gpu0"] * 3
    ids = src.device_ids()
    assert ids["gpu0"].startswith("GPU-") and ids["package-0"].endswith("/package-0") and "dram-0" in ids
    assert src.device_names()[0]["package-0"] == "CPU package (RAPL)"
    assert not any(c.name.startswith("rapl.") for c in open_source("nvml", "cpu", gpu=0).channels)
    monkeypatch.setenv(ROOT_ENV, str(tmp_path / "absent"))
    assert default_zones()[0] == [] and "does not exist" in default_zones()[1]
    assert len(open_source("auto", "cpu", gpu=0).channels) == 3


@pytest.mark.integration
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_rapl_beside_nvml_both_totals_right_and_the_cpu_shown_apart(fake, tmp_path, monkeypatch):
    """The issue's check: a run read off the fake GPU (250 W in each inference, 80 W between) with
    the host's counters driven by the test (package 50 W, DRAM 5 W): the GPU's and each zone's energy
    over the inferences hold the truth; the summary adds them, the report keeps the CPU apart, whole."""
    import torch

    import phprof
    from phprof.tracing.session import Profile

    for k, v in fake.env.items():
        monkeypatch.setenv(k, v)
    root = make_powercap(tmp_path / "powercap")
    monkeypatch.setenv(ROOT_ENV, str(root))
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
    with Counters(root, {"package-0": 100_000, "dram-0": 10_000}) as counters:  # per 2 ms: 50 W and 5 W
        session = Profile(tmp_path / "t.h5", device="cpu", source="auto", sensor_gpu=0, idle_s=0.2)
        with session as prof:
            for _ in range(30):
                with prof.inference():
                    fake.set_power(0, 250.0)
                    until = time.perf_counter() + 0.01
                    while time.perf_counter() < until:
                        model(torch.randn(4, 64))
                    fake.set_power(0, 80.0)
                time.sleep(0.01)
    s = session.summary
    assert [m.device for m in s.device_energy] == ["gpu0", "package-0", "dram-0"]
    assert s.energy.joules == pytest.approx(sum(m.joules for m in s.device_energy))
    assert any("package-0" in n and "beside gpu0" in n for n in s.notes), s.notes
    assert "the sum of: gpu0" in phprof.render(s, "text")

    trace = load(s.path)
    assert {c.name for c in trace.power.channels} >= {"gpu0.energy", "rapl.package-0", "rapl.dram-0"}
    r = attribute(trace)
    assert r.device == "gpu0"
    rows = {d.device: d for d in r.devices}
    assert list(rows) == ["gpu0", "package-0", "dram-0"] and rows["gpu0"].attributed
    assert not rows["package-0"].attributed and rows["package-0"].kept_whole and rows["package-0"].cuda == ""
    assert rows["package-0"].inferences_energy is None and not r.several_devices  # one GPU: its one-device layout
    assert {x.device for x in r.layers} == {"gpu0"}
    # no layer holds the CPU's energy: the layers add up to the GPU's measured total
    assert sum(x.energy.joules for x in r.layers) == pytest.approx(r.total.joules, rel=1e-6)
    assert r.run_total.joules == pytest.approx(sum(d.total.joules for d in r.devices))
    assert r.run_total.low_j <= r.run_total.joules <= r.run_total.high_j
    span = (int(trace.inferences["start_ns"].min()), int(trace.inferences["end_ns"].max()))
    truth = {"gpu0": fake.true_energy(0, *span), **{d: counters.truth_j(d, *span) for d in counters.files}}
    for device, d in rows.items():
        e = d.total
        assert e.measured and e.low_j <= truth[device] <= e.high_j, (device, e, truth[device])
    # 30 x ~20 ms: 50 W and 5 W over ~0.6 s, within the counters' bounds (one 2 ms step at each end)
    assert rows["package-0"].total.joules == pytest.approx(truth["package-0"], abs=0.25)
    rep = phprof.report(s.path)
    text = phprof.render(rep, "text")
    assert "package-0" in text and "kept whole" in text and "all devices" in text, text
    js = json.loads(phprof.render(rep, "json"))["summary"]
    assert [d["device"] for d in js["devices"] if d["kept_whole"]] == ["package-0", "dram-0"]
    assert js["run_total"]["joules"] == pytest.approx(r.run_total.joules)
    assert "package-0" in phprof.render(rep, "markdown") and "package-0" in phprof.render(rep, "html")
    assert "package-0" not in phprof.render(phprof.flamegraph(s.path), "folded")  # no layer holds the CPU's
