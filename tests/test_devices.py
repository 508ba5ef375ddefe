"""One process on two GPUs: each GPU's kernels attributed against that GPU's own sensor, per layer
and in total, and the time each GPU waits for the other (phprof.attribution.attribute,
Results.devices).

The run is a model split in two stages (``stage0`` on cuda:0, ``stage1`` on cuda:1, as with
``device_map`` or ``.to("cuda:1")``): each inference runs stage 0's two layers on GPU 0, then
stage 1's on GPU 1, durations drawn at random. The truth is the fake NVML with two A100-like
boards (its sensor model: a 25 ms window every 101 ms, 1% noise; the 20 ms energy counter), each
drawing a known power during its own layers' kernels and its idle level otherwise, the energy of
each layer tagged in the fake. Its sensors are read at 1 kHz at the instants the sampler would
have read them (the fake's readings are a function of time), so the test runs in no real time."""
from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest

import phprof
from phprof import load
from phprof.attribution import attribute
from phprof.energy import Method
from phprof.render.units import joules
from phprof.sources import Channel, PowerLog
from phprof.sources.base import READING_DTYPE
from phprof.store import TraceWriter
from phprof.store.schema import is_module_scope, run_meta
from phprof.store.results import Role
from test_gpu_path import four_gpus  # noqa: F401  (the fake NVML with 4 boards)

MS = 1_000_000
IDLE_W = 60.0  # the a100 preset's idle level
# (layer, GPU, power while its kernels run): the model's stages, stage 0 on GPU 0, stage 1 on GPU 1
LAYERS = [("stage0.attn", 0, 330.0), ("stage0.mlp", 0, 210.0), ("stage1.attn", 1, 280.0), ("stage1.mlp", 1, 140.0)]
NAME = "NVIDIA A100-SXM4-80GB"
UUIDS = {0: "GPU-0a0a0a0a-1111-4222-8333-444444444444", 1: "GPU-1b1b1b1b-5555-4666-8777-888888888888"}


def _x(cat, name, ts_ns, dur_ns, base_ns, pid=100, tid=10, **args):
    """A Kineto trace event (its time in µs from the trace's base, as torch.profiler writes it)."""
    args = {("External id" if k == "ext" else k): v for k, v in args.items()}
    return {"ph": "X", "cat": cat, "name": name, "pid": pid, "tid": tid, "ts": f"{(ts_ns - base_ns) / 1e3:.3f}",
            "dur": f"{dur_ns / 1e3:.3f}", "args": args}


def two_gpu_run(fake, path, n=260, seed=7, windows=2, host_w=None):
    """The trace file of ``n`` pipelined inferences on the fake's GPUs 0 and 1, recorded by
    phprof's recorder from ``windows`` synthetic Kineto windows (each inference's CPU side
    launches its four layers' kernels in their module scopes; GPU 0 runs stage 0's, then GPU 1
    stage 1's), and the truth: the fake's energy per layer (its tag), per GPU over the
    inferences' span, and each GPU's busy time. ``host_w``: the host's RAPL package counter read
    beside them, rising at that power (its truth over the span in ``span_j["package-0"]``)."""
    import json
    import tempfile
    from pathlib import Path
    from types import SimpleNamespace

    from phprof.sources import TimeOnlySource
    from phprof.tracing.kineto import load_kineto
    from phprof.tracing.recorder import Recorder

    rng = np.random.default_rng(seed)
    t0 = time.time_ns() + 2_000 * MS  # the fake's signal is scheduled ahead of its clock: every event in the future
    base = t0 - 10 * MS
    kineto, busy, corr, t = [[] for _ in range(windows)], {0: 0, 1: 0}, 0, t0
    firsts = []
    for i in range(n):
        events = kineto[i * windows // n]
        s = t
        events.append(_x("user_annotation", f"phprof.inference.{i}", s, MS, base, ext=100_000 + i))
        gpu_t = s + 1_200_000  # the device starts after the host has launched the four layers
        for k, (name, gpu, watts) in enumerate(LAYERS):
            corr += 1
            c = s + k * 250_000
            events += [_x("user_annotation", name, c + 10_000, 200_000, base, ext=200_000 + corr),
                       _x("cpu_op", "aten::mm", c + 20_000, 100_000, base, ext=corr),
                       _x("cuda_runtime", "cudaLaunchKernel", c + 50_000, 20_000, base, ext=corr, correlation=corr)]
            dur = int(rng.uniform(2, 14) * MS)
            fake.set_power_at(gpu, watts, gpu_t, tag=k + 1)
            fake.set_power_at(gpu, IDLE_W, gpu_t + dur, tag=0)
            kernel = "flash_fwd_kernel" if name.endswith("attn") else "ampere_sgemm_128x64_tn"
            events.append(_x("kernel", kernel, gpu_t, dur, base, pid=gpu, tid=7, ext=corr, correlation=corr,
                             device=gpu, stream=7))
            busy[gpu] += dur
            gpu_t += dur
        if i == 0:
            firsts.append(s + 50_000)  # the first launch
        t = gpu_t + int(rng.uniform(2, 12) * MS)  # the host's loop between inferences: both GPUs idle
    last_end = gpu_t
    end = t
    span = (firsts[0], last_end)

    meta = run_meta(model="two-stage", task="", device="cuda:0", device_name=NAME, versions={},
                    sensor={"source": "nvml", "devices": {"gpu0": NAME, "gpu1": NAME},
                            "power_limits_w": {"gpu0": 400.0, "gpu1": 400.0}},
                    device_ids={"gpu0": UUIDS[0], "gpu1": UUIDS[1]},
                    cuda_devices={"cuda:0": "gpu0", "cuda:1": "gpu1"}, devices=["cuda:0", "cuda:1"])
    writer = TraceWriter(path, meta)

    class Signals:
        aborted = False

        def abortable(self):
            import contextlib

            return contextlib.nullcontext()

    def read(window, scope_filter):  # the window's events as torch.profiler would hold them
        with tempfile.TemporaryDirectory() as folder:
            file = Path(folder) / "window.json"
            file.write_text(json.dumps({"schemaVersion": 1, "baseTimeNanoseconds": base, "traceEvents": window}))
            return load_kineto(file, scope_filter=scope_filter)

    # the sampler's reads, 1 kHz, from 300 ms before the run to 300 ms after, each channel of each GPU
    reads = np.arange(t0 - 300 * MS, end + 300 * MS, MS)
    channels, rows = [], []
    for gpu in (0, 1):
        for field, quantity, unit in (("energy", "energy", "mJ"), ("power_instant", "power", "mW")):
            c = len(channels)
            channels.append(Channel(f"gpu{gpu}.{field}", f"gpu{gpu}", quantity, unit, "fake NVML"))
            r = np.zeros(len(reads), READING_DTYPE)
            r["t_before_ns"], r["t_after_ns"] = reads - 10_000, reads + 10_000
            at = fake.counter_at if field == "energy" else (lambda d, x: fake.power_at(d, "power_instant", x))
            r["value"] = [at(gpu, int(x)) for x in reads]
            r["seq"], r["channel"] = np.arange(len(reads)), c
            rows.append(r)
    if host_w is not None:  # a RAPL counter (uJ) read by the same thread, one update a millisecond
        channels.append(Channel("rapl.package-0", "package-0", "energy", "uJ", "fake RAPL", wrap=2**38,
                                status_codes="errno"))
        r = np.zeros(len(reads), READING_DTYPE)
        r["t_before_ns"], r["t_after_ns"] = reads - 10_000, reads + 10_000
        r["value"] = (reads - reads[0]) * host_w / 1e3
        r["seq"], r["channel"] = np.arange(len(reads)), len(channels) - 1
        rows.append(r)
    readings = np.concatenate(rows)
    readings = readings[np.argsort(readings["t_after_ns"], kind="stable")]
    writer.append_power(PowerLog("nvml", tuple(channels), readings))  # (the recorder's own source reads nothing)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("phprof.tracing.recorder.read_profiler_result", read)
        rec = Recorder(writer, TimeOnlySource(), lambda idx: np.ones(len(idx), bool), is_module_scope, {}, Signals())
        rec.cuda = True
        for events in kineto:
            rec.on_trace_ready(SimpleNamespace(profiler=SimpleNamespace(kineto_results=events)))
    writer.close("complete", {})
    fake.set_power_at(0, IDLE_W, end + 400 * MS)  # close the last intervals, so that every tag is counted
    fake.set_power_at(1, IDLE_W, end + 400 * MS)
    truth = {"layers": {name: fake.tag_energy(gpu, k + 1) for k, (name, gpu, _) in enumerate(LAYERS)},
             "span": span, "span_j": {g: fake.true_energy(g, *span) for g in (0, 1)}
             | ({"package-0": host_w * (span[1] - span[0]) / 1e9} if host_w is not None else {}),
             "busy_s": {g: busy[g] / 1e9 for g in (0, 1)}, "kernel_devices": dict(rec.kernel_devices)}
    return path, truth


@pytest.fixture(scope="module")
def two_gpus(fake_lib, tmp_path_factory):
    """The two-GPU run's file (shared: the tests read it, and store its results) and its truth."""
    from fake_nvml import FakeNvml

    work = tmp_path_factory.mktemp("two_gpus")
    with FakeNvml(fake_lib, work / "state", n_devices=2, preset="a100", seed=11) as fake:
        for gpu, uuid in UUIDS.items():
            fake.set_uuid(gpu, uuid)
        yield two_gpu_run(fake, work / "split.h5")


def test_each_gpus_kernels_are_attributed_against_its_own_sensor(two_gpus):
    """Per GPU: its total is its own counter's, within the counter's bound of the fake's truth,
    and its layers are its own kernels' (stage 0's on GPU 0, stage 1's on GPU 1), each within 5%
    of that GPU's inferences' energy of the fake's per-layer truth; the run's total is the two
    GPUs' added, measured."""
    path, truth = two_gpus
    t = load(path)
    kernels = t.events[t.events["kind"] == 2]
    assert np.bincount(kernels["device"]).tolist() == [520, 520]  # Kineto's device ids, kept
    assert (int(t.inferences["start_ns"].min()), int(t.inferences["end_ns"].max())) == truth["span"]
    r = attribute(t)
    assert [(d.device, d.cuda, d.id) for d in r.devices] == [("gpu0", "cuda:0", UUIDS[0]), ("gpu1", "cuda:1", UUIDS[1])]
    assert r.several_devices and r.device == "gpu0+gpu1"
    for gpu, d in enumerate(r.devices):
        assert d.total.method is Method.COUNTER and d.total.bound
        assert abs(d.total.joules - truth["span_j"][gpu]) <= d.total_uncertainty_j, (d.total, truth["span_j"][gpu])
        assert d.method is Method.WLS and d.sensor is not None and d.sensor_updates >= 100
        mine = [x for x in r.layers if x.device == d.device]
        # its rows add up to its counter's energy: nothing of the other GPU's
        assert sum(x.energy.joules for x in mine) == pytest.approx(d.total.joules, rel=1e-9)
        modules = {x.label: x for x in mine if x.role is Role.MODULE}
        assert set(modules) == {name for name, g, _ in LAYERS if g == gpu}
        own = d.inferences_energy.joules
        for name, x in modules.items():
            assert abs(x.energy.joules - truth["layers"][name]) / own < 0.05, (name, x.energy, truth["layers"][name])
        assert d.busy_s == pytest.approx(truth["busy_s"][gpu], rel=1e-9)
        # it waits while the other GPU runs its stage: the other's busy time, exactly (they never overlap)
        assert d.waiting_s == pytest.approx(truth["busy_s"][1 - gpu], rel=1e-9)
        # its draw meanwhile: at its idle level in the fake (it runs nothing), estimated
        assert d.waiting.method is Method.AT_LAYER_POWER
        assert d.waiting.joules == pytest.approx(IDLE_W * d.waiting_s, rel=0.03)
    assert r.total.joules == pytest.approx(sum(d.total.joules for d in r.devices), rel=1e-12)
    assert r.total.method is Method.COUNTER and r.total_measured
    assert abs(r.total.joules - sum(truth["span_j"].values())) <= r.total_uncertainty_j
    assert r.inferences_energy.joules == pytest.approx(sum(d.inferences_energy.joules for d in r.devices), rel=1e-9)
    assert sum(e.joules for e in r.per_inference) == pytest.approx(r.inferences_energy.joules, rel=1e-9)
    # every figure keeps an interval that holds it (the devices' bootstrap draws added draw by draw)
    assert r.inferences_energy.low_j <= r.inferences_energy.joules <= r.inferences_energy.high_j
    # the kernels are named per GPU: one flash kernel row on each
    assert sorted((k.device, k.name) for k in r.kernels if k.name == "flash_fwd_kernel") == \
        [("gpu0", "flash_fwd_kernel"), ("gpu1", "flash_fwd_kernel")]


def test_a_gpu_read_off_the_other_ones_sensor_would_be_wrong(two_gpus):
    """Not vacuous: GPU 1's layers against GPU 0's sensor (what a one-device attribution did)
    miss their truth by far; against GPU 1's own they are within 5%."""
    path, truth = two_gpus
    t = load(path)
    wrong = attribute(t, device="gpu0")  # one device: the kernels of the GPU with most, GPU 0's readings
    right = attribute(t)
    assert [d.device for d in wrong.devices] == ["gpu0"]
    assert "attributed against gpu0 only: the kernels of cuda:1 (gpu1) and their energy are left out" in wrong.notes
    assert {x.label for x in wrong.layers if x.role is Role.MODULE} == {"stage0.attn", "stage0.mlp"}
    got = {x.label: x.energy.joules for x in right.layers if x.role is Role.MODULE}
    assert abs(got["stage1.attn"] - truth["layers"]["stage1.attn"]) / truth["layers"]["stage1.attn"] < 0.1
    # the single-device attribution has no stage-1 layer at all: GPU 1's energy is missing from its total
    assert wrong.total.joules < 0.7 * right.total.joules


def test_the_split_is_stored_and_reported(two_gpus, tmp_path):
    """The results keep the device dimension through the file, and the text report shows each
    GPU's energy and method, and its layers by GPU."""
    path, _ = two_gpus
    r = phprof.results(path)
    back = load(path).results
    assert back is not None and [d.device for d in back.devices] == ["gpu0", "gpu1"]
    assert back.devices[1].sensor == r.devices[1].sensor and back.devices[1].total == r.devices[1].total
    assert {x.device for x in back.layers} == {"gpu0", "gpu1"}
    text = phprof.render(phprof.report(path), "text")
    lines = text.splitlines()
    head = next(i for i, x in enumerate(lines) if x.startswith("by device"))
    assert lines[head + 1].split() == ["device", "where", "name", "energy", "over", "the", "run", "how",
                                       "inferences'", "own", "method", "busy", "waits"]
    for d, line in zip(r.devices, lines[head + 2:head + 4]):
        assert line.split()[:2] == [d.device, d.cuda] and "measured (energy counter)" in line
        assert line.rstrip().endswith(f"{d.busy_s:.3f} s  {d.waiting_s:.3f} s ({joules(d.waiting.joules)})")
    # the layers' table names each one's device
    assert re.search(r"^stage1\.attn\s+gpu1\s", text, re.M) and re.search(r"^stage0\.mlp\s+gpu0\s", text, re.M)


def test_the_flamegraph_has_a_device_level_under_each_layer(two_gpus):
    """Each layer's frame holds one frame per GPU it ran on (its own energy against that GPU's
    sensor), its kernels under it; the no-kernel time is on both GPUs; the root is the
    inferences' own energy, the two GPUs' added."""
    from phprof.render.frames import frame_tree

    path, _ = two_gpus
    r = phprof.results(path)
    tree = frame_tree(r)
    root = tree["root"]
    assert root["energy_j"] == pytest.approx(r.inferences_energy.joules, rel=1e-9)
    frames = {f["path"]: f for f in root["children"]}
    for name, gpu, _ in LAYERS:
        (dev,) = frames[name]["children"]
        row = next(x for x in r.layers if x.label == name)
        assert (dev["kind"], dev["name"], dev["path"]) == ("device", f"gpu{gpu} (cuda:{gpu})", f"{name};gpu{gpu}")
        assert dev["energy_j"] == pytest.approx(row.energy.joules, rel=1e-9)
        assert [k["path"].split(";")[1] for k in dev["children"]] == [f"gpu{gpu}"]  # its kernels, on its GPU
    waiting = frames[Role.NO_KERNEL.label]
    assert sorted(c["name"] for c in waiting["children"]) == ["gpu0 (cuda:0)", "gpu1 (cuda:1)"]
    assert waiting["low_j"] is None  # one GPU's inclusive interval is not the layer's
    page = phprof.render(phprof.report(path), "html")
    assert "<h2>By device</h2>" in page
    assert page.count("<td>cuda:0</td>") == 1 and page.count("<td>cuda:1</td>") == 1


def test_compare_shows_each_gpus_part(two_gpus, tmp_path):
    import json
    import shutil

    from phprof.attribution.compare import Comparison

    path, _ = two_gpus
    other = tmp_path / "again.h5"
    shutil.copy(path, other)
    c = phprof.compare([path, other])
    info = c.runs[0]
    r = phprof.results(path)
    assert list(info.devices) == ["gpu0 (cuda:0)", "gpu1 (cuda:1)"]
    parts = [e.joules for e in info.devices.values()]
    assert sum(parts) == pytest.approx(info.energy.joules, rel=1e-9)
    assert parts[1] == pytest.approx(r.devices[1].inferences_energy.joules / r.inferences, rel=1e-9)
    text = phprof.render(c, "text")
    assert re.search(r"by device \(each its own sensor\)\s+gpu0 \(cuda:0\) [\d.]+ J \[", text)
    back = Comparison.from_dict(json.loads(phprof.render(c, "json")))
    assert back.runs[0].devices == info.devices


# ------------------------------------------------------------------ recording two GPUs (one process)


def test_a_host_zone_beside_two_gpus_is_kept_whole(fake_lib, tmp_path):
    """Two GPUs and the host's package counter (50 W) in one log: the package is a device row of
    its own, kept whole (no layers, no kernels), its energy the counter's over the span within its
    bound of the truth; the run stays attributed over two devices, its total theirs, and all
    devices added are the three; the device table, JSON, comparison and flamegraph take the row."""
    from fake_nvml import FakeNvml

    with FakeNvml(fake_lib, tmp_path / "state", n_devices=2, preset="a100", seed=11) as fake:
        for gpu, uuid in UUIDS.items():
            fake.set_uuid(gpu, uuid)
        path, truth = two_gpu_run(fake, tmp_path / "host.h5", n=60, host_w=50.0)
    r = attribute(load(path))
    assert [d.device for d in r.devices] == ["gpu0", "gpu1", "package-0"] and r.several_devices
    host = r.device_row("package-0")
    assert host.kept_whole and host.cuda == "" and host.inferences_energy is None and host.sensor is None
    assert host.total.measured and host.total.low_j <= truth["span_j"]["package-0"] <= host.total.high_j
    assert {x.device for x in r.layers} == {"gpu0", "gpu1"}
    assert r.total.joules == pytest.approx(sum(d.total.joules for d in r.attributed_devices), rel=1e-12)
    assert r.run_total.joules == pytest.approx(r.total.joules + host.total.joules, rel=1e-12)
    text = phprof.render(phprof.report(path), "text")
    row = next(line for line in text.splitlines() if line.strip().startswith("package-0") and "kept whole" in line
               and " - " in line)  # the device table's row: no inferences' own, no busy time
    assert joules(host.total.joules) in row
    assert re.search(r"^all devices\s+" + re.escape(joules(r.run_total.joules)), text, re.M), text
    js = json.loads(phprof.render(phprof.report(path), "json"))["summary"]
    assert [d["kept_whole"] is not None for d in js["devices"]] == [False, False, True]
    info = phprof.compare([path, path]).runs[0]
    assert list(info.devices) == ["gpu0 (cuda:0)", "gpu1 (cuda:1)"]
    assert "package-0" not in phprof.render(phprof.flamegraph(path), "folded")


def test_a_session_on_two_gpus_samples_each_on_its_own_board(four_gpus, monkeypatch, tmp_path):
    """``gpus="0,1"`` under CUDA_VISIBLE_DEVICES=3,1: each CUDA device is matched to its NVML board
    by UUID, both boards are sampled (board b draws 100 + 50 b W in the fake), and the file maps
    each CUDA device to the readings that measure it, for the attribution."""
    import torch

    from test_gpu_path import torch_sees

    torch_sees(monkeypatch, [3, 1])
    cpu_only = torch.profiler.profile
    monkeypatch.setattr(torch.profiler, "profile", lambda activities, **kw: cpu_only(
        activities=[a for a in activities if a != torch.profiler.ProfilerActivity.CUDA], **kw))
    synced = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append(device))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA A100-SXM4-80GB")
    with phprof.profile(tmp_path / "t.h5", gpus="0,1", source="nvml", idle_s=0.2, anti_alias=False) as prof:
        assert prof.devices == ["cuda:0", "cuda:1"]
    assert {"cuda:0", "cuda:1"} <= set(synced)  # every recorded device is waited for, not the current one only
    t = load(tmp_path / "t.h5")
    assert t.meta["cuda_devices"] == {"cuda:0": "gpu3", "cuda:1": "gpu1"} and t.meta["devices"] == ["cuda:0", "cuda:1"]
    from test_gpu_path import UUIDS

    assert t.meta["device_ids"] == {"gpu1": UUIDS[1], "gpu3": UUIDS[3]}
    log = t.all_power()
    assert sorted(log.devices) == ["gpu1", "gpu3"]
    for board in (1, 3):
        r = log.of(f"gpu{board}.power_instant")
        assert np.mean(r["value"][r["status"] == 0]) / 1e3 == pytest.approx(100.0 + 50 * board, rel=0.05)
    from phprof.attribution.attribute import cuda_power_map

    assert cuda_power_map(t.meta) == {0: "gpu3", 1: "gpu1"}


@pytest.mark.parametrize("gpus, devices", [("0,1", ["cuda:0", "cuda:1"]), ([2, 0], ["cuda:2", "cuda:0"]),
                                           (1, ["cuda:1"]), ("none", ["cpu"]), (None, ["cpu"]), ("auto", None)])
def test_one_gpus_parser_for_every_front_end(gpus, devices):
    from phprof.api import parse_gpus

    assert parse_gpus(gpus) == devices


@pytest.mark.parametrize("gpus, message", [("0,0", "each GPU once"), ("two", "give auto, all, none"),
                                           ([0, True], "give auto, all, none"), (-1, "give auto, all, none")])
def test_a_bad_gpus_value_is_one_clear_error(gpus, message):
    with pytest.raises(phprof.errors.OptionError, match=message):
        phprof.profile("unused.h5", gpus=gpus)


def test_kernels_on_a_gpu_no_readings_measure_are_said(two_gpus, tmp_path):
    """A file whose readings measure GPU 0 only (a run recorded with the default --gpus auto):
    the kernels of cuda:1 are not given GPU 0's power; the note says their energy is missing and
    how to record it."""
    r = attribute(load(_with_cuda_map(two_gpus[0], tmp_path / "one.h5", {"cuda:0": "gpu0"})))
    assert [d.device for d in r.devices] == ["gpu0"]
    assert {x.label for x in r.layers if x.role is Role.MODULE} == {"stage0.attn", "stage0.mlp"}
    assert any(n.startswith("520 kernels ran on cuda:1, which no power readings in the file measure: its energy is "
                            "not in the run's (record it too: --gpus 0,1)") for n in r.notes), r.notes


def test_a_run_that_measured_one_of_the_gpus_its_kernels_ran_on_says_so(two_gpus, tmp_path):
    """The recorder counts where the device events ran; a session that measured cuda:0 only
    (the default --gpus auto) says in its summary that cuda:1's energy is not in the run's."""
    from phprof.tracing.session import Profile

    _, truth = two_gpus
    assert truth["kernel_devices"] == {0: 520, 1: 520}
    one = Profile(tmp_path / "x.h5", device="cuda:0", source="none")
    one._cuda = True
    assert one._unmeasured_devices(truth["kernel_devices"]) == [
        "device events ran on cuda:1 (520), which this run did not measure: their energy is not in the run's "
        "(record every device the model uses: --gpus 0,1)"]
    both = Profile(tmp_path / "y.h5", device=["cuda:0", "cuda:1"], source="none")
    both._cuda = True
    assert both._unmeasured_devices(truth["kernel_devices"]) == []


def test_a_recorded_gpu_the_run_did_not_use_is_not_in_its_energy(tmp_path):
    """--gpus all on a node where the model ran on one of the GPUs: the session's energy is that
    GPU's; the other is said, not added."""
    from types import SimpleNamespace

    from phprof.sources import Measurement
    from phprof.tracing.session import Profile

    s = Profile(tmp_path / "x.h5", device=["cuda:0", "cuda:1"], source="none")
    s._cuda, s._cuda_devices = True, {"cuda:0": "gpu3", "cuda:1": "gpu1"}
    s._recorder = SimpleNamespace(kernel_devices={0: 12})
    parts = [Measurement("gpu3", 10.0, Method.COUNTER, 1.0), Measurement("gpu1", 4.0, Method.COUNTER, 1.0)]
    notes = []
    assert [p.device for p in s._used(parts, notes)] == ["gpu3"]
    assert notes == ["gpu1 (cuda:1) ran none of the run's device events: not in its energy"]
    s._recorder = SimpleNamespace(kernel_devices={0: 12, 1: 3})
    assert s._used(parts) == parts


def test_kernels_on_a_gpu_whose_board_is_not_in_the_file_get_no_other_boards_power(two_gpus, tmp_path):
    """The file's readings measure cuda:0 only, and every kernel ran on cuda:1 (a model moved to
    another GPU than the one recorded): no energy, and why; never cuda:0's board's power."""
    r = attribute(load(_with_cuda_map(two_gpus[0], tmp_path / "moved.h5", {"cuda:2": "gpu0"})))
    assert not r.has_energy and r.devices == []
    assert r.why_no_energy.startswith("none of the file's power readings measure a device the run's kernels ran on: "
                                      "520 kernels ran on cuda:0")
    assert {x.label for x in r.layers if x.role is Role.MODULE} >= {"stage0.attn", "stage0.mlp"}  # times kept


def test_a_device_asked_for_that_ran_no_kernel_is_refused_not_given_another_ones(two_gpus, tmp_path):
    """gpu1 measured, but by the file's map no kernel ran on it: `attribute(device="gpu1")` is an
    error, not cuda:0's kernels fitted against gpu1's readings."""
    from phprof.attribution import AttributionError

    one = load(_with_cuda_map(two_gpus[0], tmp_path / "one.h5", {"cuda:0": "gpu0"}))
    with pytest.raises(AttributionError, match="gpu1 measures none of the devices the run's kernels ran on"):
        attribute(one, device="gpu1")


def _with_cuda_map(path, copy, cuda_devices: dict):
    """A copy of the trace at ``path`` whose map of CUDA devices to readings is ``cuda_devices``
    (its stored results dropped)."""
    import json
    import shutil

    import h5py

    shutil.copy(path, copy)
    with h5py.File(copy, "r+") as f:
        f["meta"].attrs["cuda_devices"] = json.dumps(cuda_devices)
        if "results" in f:
            del f["results"]
    return copy
