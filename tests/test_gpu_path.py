"""The CUDA path, checked without a GPU: which GPU is measured, whether kernels were recorded,
each inference's span on the device, kernels launched outside any op, and a missing NVML.
Synthetic Kineto traces (the layout of ../shared/data/kineto, see its README) and the fake
NVML library stand in for the GPU."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import phprof
from phprof import load
from phprof.attribution.timeline import trace_timeline
from phprof.store import DEVICE_KINDS, Kind
from phprof.store.results import Role
from power_logs import power_csv

MS = 1_000_000
BASE_NS = 1_750_000_000 * 10**9  # a CLOCK_REALTIME epoch, as torch.profiler writes it
NO_KERNEL = Role.NO_KERNEL.label


def _x(cat, name, ts_ns, dur_ns, pid=100, tid=10, **args):
    args = {("External id" if k == "ext" else k): v for k, v in args.items()}
    return {"ph": "X", "cat": cat, "name": name, "pid": pid, "tid": tid, "ts": f"{(ts_ns - BASE_NS) / 1e3:.3f}",
            "dur": f"{dur_ns / 1e3:.3f}", "args": args}


def lagging_kernels(n=4, step_ms=12, cpu_ms=10, lag_ms=8, kernel_ms=6):
    """``n`` ProfilerSteps of ``cpu_ms`` every ``step_ms``; step k runs in module ``layer{k}``
    and launches two kernels of ``kernel_ms`` that the GPU runs back to back from ``lag_ms`` after
    the step began, on after the step's CPU span. The second kernel of step 2 is launched by
    a driver call outside any CPU op (cuLaunchKernelEx: Triton, a custom op).
    Returns (events, kernel intervals per step)."""
    events, kernels, corr = [], {}, 0
    gpu = BASE_NS + lag_ms * MS
    for k in range(n):
        t = BASE_NS + k * step_ms * MS
        events += [_x("user_annotation", f"ProfilerStep#{k}", t, cpu_ms * MS, ext=1000 + k),
                   _x("user_annotation", f"layer{k}", t + MS // 2, cpu_ms * MS - MS, ext=2000 + k)]
        for j in range(2):
            corr += 1
            launch_ns = t + MS + j * 3 * MS
            orphan = k == 2 and j == 1
            if not orphan:
                events.append(_x("cpu_op", "aten::mm", launch_ns - MS // 4, MS, ext=corr))
            events.append(_x("cuda_driver" if orphan else "cuda_runtime", "cuLaunchKernelEx" if orphan else
                             "cudaLaunchKernel", launch_ns, MS // 10, correlation=corr,
                             **({} if orphan else {"ext": corr})))
            events.append(_x("kernel", f"gemm_{k}_{j}", gpu, kernel_ms * MS, pid=0, tid=7, correlation=corr,
                             device=0, stream=7, **({} if orphan else {"ext": corr})))
            kernels.setdefault(k, []).append((gpu, gpu + kernel_ms * MS))
            gpu += kernel_ms * MS
    return events, kernels


def write_kineto(path: Path, events) -> Path:
    path.write_text(json.dumps({"schemaVersion": 1, "baseTimeNanoseconds": BASE_NS, "traceEvents": events}))
    return path


def test_each_inference_spans_its_own_kernels_and_gets_their_energy(tmp_path):
    """Kernels that run past their step's CPU span: each inference's span runs from its first
    launch to its last kernel's end (never into the next one's kernels), the kernel launched
    outside any op keeps its inference, and what each inference's energy is made of (the
    timeline's time inside its span, the counter's energy over it) is its own kernels'."""
    events, kernels = lagging_kernels()
    watts = {0: 100.0, 1: 400.0, 2: 150.0, 3: 350.0}  # the GPU's power while each step's kernels run
    busy = [(a, b, watts[k]) for k, spans in kernels.items() for a, b in spans]

    def power(i, t):
        return next((w for a, b, w in busy if a <= t < b), 60.0)

    t0, t1 = BASE_NS, max(b for a, b, _ in busy)
    out = phprof.import_trace(write_kineto(tmp_path / "t.json", events),
                              power_csv(tmp_path / "p.csv", t0, t1, power, step_ns=MS // 10), tmp_path / "t.h5")
    t = load(out)
    inf = np.sort(t.inferences, order="index")
    first_launch = [BASE_NS + k * 12 * MS + MS for k in range(4)]
    assert inf["cpu_end_ns"].tolist() == [BASE_NS + k * 12 * MS + 10 * MS for k in range(4)]
    assert inf["end_ns"].tolist() == [spans[-1][1] for spans in kernels.values()]  # the last kernel's end
    # the first launch, or the end of the device's previous work when that is later
    assert inf["start_ns"].tolist() == [max(first_launch[k], kernels[k - 1][-1][1] if k else 0) for k in range(4)]
    assert (inf["start_ns"][1:] >= inf["end_ns"][:-1]).all() and inf["kernels"].tolist() == [2, 2, 2, 2]
    ev = t.events
    orphan = ev[ev["name"] == t.strings.index("gemm_2_1")]
    assert orphan["inference"].tolist() == [2] and orphan["op"].tolist() == [-1]  # by its launch, not -1
    assert (ev["inference"][np.isin(ev["kind"], DEVICE_KINDS)] >= 0).all()
    w = t.windows
    assert (w["kernels"], w["device_events"], w["without_op"], w["kernelless"]).__eq__(([8], [8], [1], [0]))
    assert (w["start_ns"][0], w["end_ns"][0]) == (inf["start_ns"][0], inf["end_ns"][-1])

    # per-inference energy is each label's power times its time inside the inference's span:
    # inference k's span holds layer k's kernels, whole, and nothing of another layer
    timeline, what = trace_timeline(t)
    assert what == "device kernels"
    seconds = timeline.seconds_in(inf["start_ns"], inf["end_ns"])
    for k in range(4):
        own = {timeline.names[j]: s for j, s in enumerate(seconds[k]) if s > 0 and timeline.names[j] != NO_KERNEL}
        assert own == {f"layer{k}": pytest.approx(12e-3)}
    # the counter's energy over each span (what a window's energy and the report's total read) is
    # the inference's own kernels' energy, and the idle draw of the gap before inference 0's
    truth = [sum((b - a) / 1e9 * watts[k] for a, b in kernels[k]) for k in range(4)]
    truth[0] += (kernels[0][0][0] - first_launch[0]) / 1e9 * 60.0
    measured = [t.power.energy_between("gpu0", int(a), int(b)).joules for a, b in zip(inf["start_ns"], inf["end_ns"])]
    assert measured == pytest.approx(truth, abs=0.1)  # the log's rows: 0.1 ms of up to 400 W at each edge
    # the CPU spans would have mixed them: inference 1's CPU span holds step 0's kernels mostly
    on_cpu = t.power.energy_between("gpu0", int(inf["cpu_start_ns"][1]), int(inf["cpu_end_ns"][1])).joules
    assert on_cpu == pytest.approx(8e-3 * watts[0] + 2e-3 * watts[1], rel=0.05)
    assert phprof.report(out, recompute=True).results.inferences == 4


# ------------------------------------------------------------------ kernels recorded (item 2)


def test_a_cuda_run_without_cuda_activity_in_the_profiler_is_refused(monkeypatch, tmp_path):
    """torch.profiler without CUPTI records no kernel: refused before anything starts."""
    import torch

    from phprof.tracing.session import Profile, ProfileError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.profiler, "supported_activities", lambda: {torch.profiler.ProfilerActivity.CPU})
    with pytest.raises(ProfileError, match="cannot record CUDA kernels here .*supports CPU"):
        Profile(tmp_path / "x.h5", device="cuda:0", source="none").__enter__()
    assert not (tmp_path / "x.h5").exists()


def test_kinetos_lines_are_kept_off_stderr_and_the_rest_passes(capfd):
    """Kineto's warnings and errors are taken (not printed); its stage lines are dropped; every
    other byte written to fd 2 reaches stderr, lines cut in pieces and \\r progress included."""
    import os
    import sys

    from phprof.tracing.kinetolog import KinetoLog, findings

    log = KinetoLog()
    log.start()
    try:
        print("the program's own line", file=sys.stderr, flush=True)
        os.write(2, b"STAGE:2026-12-02 02:10:00 123:456 ActivityProfilerController.cpp:314] Completed Stage: Warm Up\n")
        os.write(2, b"WARNING:2026-12-02 02:10:00 123:457 CuptiActivityApi.cpp:88] Exceeded max GPU buffer ")
        os.write(2, b"count (33 >= 33) - terminating tracing\nstep 1\rstep 2")
        os.write(2, b"\nERROR:2026-12-02 02:10:01 123:457 CuptiActivityApi.cpp:99] Dropped 12 activity records\n")
        first = log.take()
    finally:
        rest = log.stop()
    print("after", file=sys.stderr, flush=True)
    lines = first + rest
    assert len(lines) == 2 and lines[0].startswith("WARNING:") and lines[1].startswith("ERROR:")
    found = findings(lines)
    assert found.stopped and found.dropped == 12
    assert found.messages == ["Exceeded max GPU buffer count (33 >= 33) - terminating tracing",
                              "Dropped 12 activity records"]
    err = capfd.readouterr().err
    assert err == "the program's own line\nstep 1\rstep 2\nafter\n"


class _Signals:
    aborted = False

    def abortable(self):
        import contextlib

        return contextlib.nullcontext()


class _Log:
    """Kineto's log (phprof.tracing.kinetolog.KinetoLog) as a window's lines."""

    lines: list[str] = []

    def take(self):
        out, self.lines = self.lines, []
        return out


class _Window:
    """A torch.profiler stand-in whose window is a synthetic Kineto trace (read by ``_read_window``
    in place of torch's events)."""

    def __init__(self, events):
        self.events = events
        self.profiler = SimpleNamespace(kineto_results=self)


def _read_window(window, scope_filter):
    import tempfile

    from phprof.tracing.kineto import load_kineto

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "window.json"
        write_kineto(path, window.events)
        return load_kineto(path, scope_filter=scope_filter)


def phprof_window(first, n, kernels_until=None, step_ms=12):
    """``n`` inferences (phprof's annotations) from ``first``, each with one launch and one kernel
    running after it; from ``kernels_until`` on, their kernels were lost (no kernel event)."""
    events = []
    for i in range(first, first + n):
        t = BASE_NS + i * step_ms * MS
        events += [_x("user_annotation", f"phprof.inference.{i}", t, 10 * MS, ext=10_000 + i),
                   _x("user_annotation", "layer", t + MS // 2, 9 * MS, ext=20_000 + i),
                   _x("cpu_op", "aten::mm", t + MS, MS, ext=i + 1),
                   _x("cuda_runtime", "cudaLaunchKernel", t + MS + MS // 4, MS // 10, ext=i + 1, correlation=i + 1)]
        if kernels_until is None or i < kernels_until:
            events.append(_x("kernel", "gemm", t + 5 * MS, 6 * MS, pid=0, tid=7, ext=i + 1, correlation=i + 1,
                             device=0, stream=7))
    return _Window(events)


def _recorder(path, monkeypatch):
    monkeypatch.setattr("phprof.tracing.recorder.read_profiler_result", _read_window)
    from phprof.sources import TimeOnlySource
    from phprof.store import TraceWriter
    from phprof.tracing.recorder import Recorder

    writer = TraceWriter(path, {"model": "m", "device": "cuda:0"})
    rec = Recorder(writer, TimeOnlySource(), lambda idx: np.ones(len(idx), bool), lambda name: True, {}, _Signals())
    rec.cuda = True
    return rec, writer


def test_a_cuda_run_that_records_no_kernel_stops_with_an_error(four_gpus, monkeypatch, tmp_path):
    """torch.profiler asked for CUDA activity records none (here: a CPU build told it has a GPU,
    its profiler recording the CPU only, as torch's fallback without CUPTI does): the run stops
    after its first window with the error, the file closed ``failed``. (Its meta says which
    board measured the device: CUDA_VISIBLE_DEVICES=2's, by UUID.)"""
    import torch

    from phprof.tracing.session import Profile, ProfileError

    torch_sees(monkeypatch, [2])
    cpu_only = torch.profiler.profile
    monkeypatch.setattr(torch.profiler, "profile", lambda activities, **kw: cpu_only(
        activities=[a for a in activities if a != torch.profiler.ProfilerActivity.CUDA], **kw))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA A100-SXM4-80GB")
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU())
    session = Profile(tmp_path / "t.h5", device="cuda:0", source="nvml", idle_s=0, anti_alias=False)
    with pytest.raises(ProfileError, match="first profiler window .* holds no kernel event"):
        with session as prof:
            prof.watch(model)
            for _ in range(30):
                with prof.inference():
                    model(torch.ones(1, 4))
    assert session.summary.status == "failed" and session.summary.inferences == 10
    t = load(tmp_path / "t.h5")
    assert t.status == "failed" and t.power.devices == ["gpu2"]
    identity = t.meta["device_identity"]
    assert (identity["nvml_index"], identity["nvml_uuid"], identity["matched_by"]) == (2, UUIDS[2], "uuid")


def test_a_window_whose_tail_lost_its_kernels_is_flagged(tmp_path, monkeypatch):
    """Kineto stopped recording device activity in the second window: its last inferences have
    no kernel; the window says so, the run's notes and the report's too."""
    from phprof.attribution import AttributionError, attribute

    rec, writer = _recorder(tmp_path / "t.h5", monkeypatch)
    rec.kineto_log = _Log()
    rec.on_trace_ready(phprof_window(0, 3))
    rec.kineto_log.lines = [
        "WARNING:2026-12-02 02:10:00 123:457 CuptiActivityApi.cpp:88] Exceeded max GPU buffer count (33 >= 33) - "
        "terminating tracing"]
    rec.on_trace_ready(phprof_window(3, 4, kernels_until=5))
    assert rec.failure is None
    notes = rec.kernel_notes()
    assert notes[0] == ("2 inferences in 1 profiler windows hold no kernel event (Kineto stopped recording device "
                        "activity in window 1): on the GPU they are time without a kernel, their energy not split "
                        "by layer")
    assert notes[1].startswith("Kineto: Exceeded max GPU buffer count")
    writer.close("complete")
    t = load(tmp_path / "t.h5")
    assert t.windows["kernelless"].tolist() == [0, 2] and t.windows["capture_stopped"].tolist() == [0, 1]
    assert t.windows["kernels"].tolist() == [3, 2]
    assert np.sort(t.inferences, order="index")["kernels"].tolist() == [1, 1, 1, 1, 1, 0, 0]
    notes = []
    from phprof.attribution.attribute import _check_kernels

    _check_kernels(t, notes)
    assert notes == ["2 of 7 inferences hold no kernel event (Kineto stopped recording device activity in window 1): "
                     "their time counts as (inference, no kernel running), their energy is not split by layer"]
    # a CUDA trace without any kernel is refused, not split by CPU time
    rec, writer = _recorder(tmp_path / "none.h5", monkeypatch)
    rec.cuda = False  # (written anyway, as an older phprof would have)
    rec.on_trace_ready(phprof_window(0, 3, kernels_until=0))
    writer.close("complete")
    with pytest.raises(AttributionError, match="CUDA run .*holds no device event"):
        attribute(load(tmp_path / "none.h5"))


# ------------------------------------------------------------------ which GPU is measured (item 1)

UUIDS = ["GPU-6f0b3d9a-1c2e-4f5a-8b7c-0d1e2f3a4b5c", "GPU-1a2b3c4d-5e6f-4a8b-9c0d-e1f2a3b4c5d6",
         "GPU-9e8d7c6b-5a49-4382-a1b0-c9d8e7f6a5b4", "GPU-0f1e2d3c-4b5a-4968-8776-655443322110"]


@pytest.fixture
def four_gpus(fake_lib, tmp_path, monkeypatch):
    """The fake NVML with 4 boards of distinct UUIDs (and PCI buses 0x07, 0x17, 0x27, 0x37), each
    drawing its own power: board b draws 100 + 50 b W."""
    from fake_nvml import FakeNvml

    f = FakeNvml(fake_lib, tmp_path / "state", n_devices=4, preset="ideal", seed=1)
    for b, uuid in enumerate(UUIDS):
        f.set_uuid(b, uuid)
        f.set_power(b, 100.0 + 50 * b)
    monkeypatch.setenv("PHPROF_NVML_LIB", str(fake_lib))
    yield f
    f.close()


def torch_sees(monkeypatch, boards, name="NVIDIA A100-SXM4-80GB", uuid=True, pci=True):
    """torch as under CUDA_VISIBLE_DEVICES=<boards>: its ordinal i is NVML's board boards[i],
    with that board's UUID as torch prints it (no GPU- prefix) and PCI place."""
    import types

    import torch

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", ",".join(map(str, boards)))

    def properties(i):
        b = boards[i]
        p = types.SimpleNamespace(name=name, uuid=UUIDS[b][4:] if uuid else "00000000-0000-0000-0000-000000000000")
        if pci:
            p.pci_domain_id, p.pci_bus_id, p.pci_device_id = 0, 0x07 + 0x10 * b, 0
        return p

    monkeypatch.setattr(torch.cuda, "get_device_properties", properties)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.profiler, "supported_activities",
                        lambda: {torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA})


def _mean_power_w(source, readings=20):
    """The device a source samples and the mean of its first ``readings`` instant-power reads
    (the boards' power is constant: any reading will do, however late the sampler polls)."""
    import time

    from phprof.sources import PowerLog

    source.start()
    logs, deadline = [], time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(0.02)
        logs.append(source.drain())
        if sum(len(x.readings) for x in logs) >= 3 * readings:  # of its three fields
            break
    logs.append(source.stop())
    log = PowerLog.concat(logs)
    (device,) = log.devices
    r = log.of(f"{device}.power_instant")
    ok = r["value"][r["status"] == 0]
    assert len(ok) >= 1
    return device, float(np.mean(ok[:readings])) / 1e3


@pytest.mark.parametrize("boards, device, board",
                         [([2], "cuda:0", 2), ([3, 1], "cuda:1", 1), ([0, 1, 2, 3], "cuda:3", 3)])
def test_the_cuda_device_is_measured_on_its_own_board(four_gpus, monkeypatch, boards, device, board):
    """Under CUDA_VISIBLE_DEVICES, NVML's index of the CUDA device is found by its UUID, and the
    source samples that board (its own power), not NVML's board of the CUDA ordinal."""
    from phprof.sources import open_source
    from phprof.tracing.cudadevice import measuring_gpu

    torch_sees(monkeypatch, boards)
    gpu, identity = measuring_gpu(device, "auto")
    assert gpu == board and identity["matched_by"] == "uuid" and identity["nvml_uuid"] == UUIDS[board]
    assert identity["cuda_uuid"] == UUIDS[board][4:] and identity["cuda_visible_devices"] == ",".join(map(str, boards))
    assert _mean_power_w(open_source("auto", device, gpu=gpu)) == (f"gpu{board}", pytest.approx(100.0 + 50 * board,
                                                                                                rel=0.05))


def test_without_a_uuid_the_pci_bus_id_matches(four_gpus, monkeypatch):
    from phprof.tracing.cudadevice import measuring_gpu

    torch_sees(monkeypatch, [3], uuid=False)
    gpu, identity = measuring_gpu("cuda:0", "nvml")
    assert (gpu, identity["matched_by"], identity["cuda_pci"]) == (3, "pci", [0, 0x37, 0])


def test_a_cuda_device_that_is_none_of_nvmls_gpus_is_refused(four_gpus, monkeypatch):
    """A board NVML does not see (another driver's library, a container's view): refused in one
    line naming both sides, before anything is recorded."""
    from phprof.tracing.cudadevice import DeviceError, measuring_gpu
    from phprof.tracing.session import Profile, ProfileError

    torch_sees(monkeypatch, [2])
    four_gpus.set_uuid(2, "GPU-00000000-1111-2222-3333-444444444444")
    four_gpus.set_pci(2, 0, 0x99)
    with pytest.raises(DeviceError) as e:
        measuring_gpu("cuda:0", "auto")
    message = str(e.value)
    assert "\n" not in message and UUIDS[2][4:] in message and "CUDA_VISIBLE_DEVICES=2" in message
    assert "none of the GPUs NVML sees" in message and UUIDS[0] in message
    with pytest.raises(ProfileError, match="none of the GPUs NVML sees"):
        Profile(four_gpus.state_path.parent / "x.h5", device="cuda:0", source="auto").__enter__()
    assert not (four_gpus.state_path.parent / "x.h5").exists()
    assert measuring_gpu("cuda:0", "none") == (None, {})  # time only: no board to find


def test_a_mig_slice_is_refused(four_gpus, monkeypatch):
    """NVML's energy of a MIG slice is its parent GPU's: never given to the slice's layers."""
    from phprof.tracing.cudadevice import DeviceError, measuring_gpu

    torch_sees(monkeypatch, [1], name="NVIDIA A100-SXM4-40GB MIG 1g.5gb")
    with pytest.raises(DeviceError, match=r"cuda:0 is a MIG slice \(NVIDIA A100-SXM4-40GB MIG 1g.5gb\): NVML's "
                                          r"energy and power are the whole parent GPU's"):
        measuring_gpu("cuda:0", "auto")
    assert measuring_gpu("cuda:0", "none") == (None, {})


# ------------------------------------------------------------------ NVML missing or failing (item 5)


def test_auto_on_a_cuda_device_without_nvml_is_an_error_naming_the_cause(monkeypatch, tmp_path):
    from phprof.sources import SourceError, TimeOnlySource, open_source

    monkeypatch.setenv("PHPROF_NVML_LIB", str(tmp_path / "libnvidia-ml.so.1"))
    with pytest.raises(SourceError, match=r"--source auto on cuda:0: NVML cannot measure it: cannot load the NVML "
                                          r"library .*libnvidia-ml.so.1.*--source none records time only"):
        open_source("auto", "cuda:0")
    assert isinstance(open_source("none", "cuda:0"), TimeOnlySource)  # asked for: time only


def test_a_failing_board_does_not_hide_the_others(four_gpus, monkeypatch):
    """The probe goes on past a board whose NVML handle fails: the other boards are measured,
    the failing one is named; a CUDA device that is the failing board is refused, saying why;
    with every board failing, auto is an error naming the cause."""
    from phprof.sources import NvmlSource, SourceError, open_source
    from phprof.tracing.cudadevice import DeviceError, measuring_gpu

    four_gpus.set_handle_status(0, 15)  # NVML_ERROR_GPU_IS_LOST
    found = NvmlSource.probe()
    assert found.available and [d["index"] for d in found.devices] == [1, 2, 3]
    assert [d["index"] for d in found.unreadable] == [0] and "GPU is lost" in found.unreadable[0]["error"]
    assert "1 GPU unreadable: GPU 0: nvmlDeviceGetHandleByIndex_v2 failed" in found.reason
    torch_sees(monkeypatch, [2, 0])
    assert measuring_gpu("cuda:0", "auto")[0] == 2
    with pytest.raises(DeviceError, match=r"GPU 0 cannot be read \(nvmlDeviceGetHandleByIndex_v2 failed: GPU is lost"):
        measuring_gpu("cuda:1", "auto")
    for b in (1, 2, 3):
        four_gpus.set_handle_status(b, 4)  # NVML_ERROR_NO_PERMISSION
    with pytest.raises(SourceError, match="NVML cannot measure it: NVML .* sees 4 GPUs but can read none: GPU 0: "):
        open_source("auto", "cuda:0")
