"""Running a model's inferences under the power sampler and torch.profiler.

The run: resolve and build the model, synthesise the task's inputs, start the
power source, sample idle power, run warm-up inferences (not recorded), then
run the inferences under torch.profiler in *windows*. When a window completes,
its trace is exported, parsed (phprof.tracing.kineto), joined to the run's
string and scope tables, and appended to the trace file with the power
readings taken so far; nothing of it is kept in memory. Window sizes adapt so
that each holds about ``events_per_window`` events.

Ctrl-C or SIGTERM ends the run after writing what was complete: the file is
valid and marked ``interrupted``.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import signal
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from .. import __version__
from ..energy import Method
from ..errors import PhprofError
from ..sources import SETTLE_S, Measurement, PowerLog, PowerSource, open_source, sensor_updates
from ..sources.sensors import phase_coverage
from ..store import (INFERENCE_DTYPE, INFERENCE_PREFIX, MODULE_DTYPE, PHASE_DTYPE, PHASE_PREFIX, STEP_PREFIX, Kind,
                     TraceWriter, event_rows, is_module_scope, run_meta, run_summary)
from .aliasing import AliasBreaker
from .catalog import Catalog
from .kineto import load_kineto, span_of_events
from .scopes import ModuleScopes, PhaseScopes, inference_scope

DEFAULT_TRACES_DIR = Path("traces")
DTYPES = ("float32", "float16", "bfloat16")


class TraceError(PhprofError):
    """A run that cannot start: bad model, task, shapes, device or output."""


@dataclass
class TraceSummary:
    """What a run produced, for the end-of-run message and for callers."""

    path: Path
    status: str
    model: str
    task: str
    inferences: int
    inference_s: float  # the traced inferences' own time, added up
    span_s: float  # the windows' spans, first to last inference: also the gaps between inferences
    energy: Measurement | None  # over the windows' spans; None without a sensor
    notes: list[str] = field(default_factory=list)

    @property
    def seconds_per_inference(self) -> float:
        return self.inference_s / self.inferences if self.inferences else float("nan")

    @property
    def joules_per_inference(self) -> float | None:
        if self.energy is None or self.energy.joules is None or not self.inferences:
            return None
        return self.energy.joules / self.inferences

    def as_dict(self) -> dict:
        return run_summary(status=self.status, model=self.model, task=self.task, inferences=self.inferences,
                           inference_s=self.inference_s, span_s=self.span_s, energy=self.energy, notes=self.notes)


def default_output(model: str, task: str, directory: Path = DEFAULT_TRACES_DIR) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = model.replace("/", "--").replace(os.sep, "--").strip("-.") or "model"
    return directory / f"{safe}.{task}.{stamp}.h5"


class _Windows:
    """A torch.profiler schedule whose windows hold about `budget` events each:
    the first window is `first` inferences; later ones are sized from the
    events per inference seen so far."""

    def __init__(self, first: int, budget: int, total: int) -> None:
        self.budget, self.total = budget, total
        self.last_step = min(first, total) - 1  # the step that ends the current window

    def __call__(self, step: int):
        from torch.profiler import ProfilerAction

        return ProfilerAction.RECORD_AND_SAVE if step == self.last_step else ProfilerAction.RECORD

    def advance(self, events_per_inference: float) -> None:
        size = int(np.clip(self.budget / max(events_per_inference, 1.0), 2, 1000))
        self.last_step = min(self.last_step + size, self.total - 1)


class _StopRequest:
    """Ctrl-C (SIGINT) or SIGTERM asks the run to stop after the current
    inference, so the profiler is never interrupted in the middle of a window's
    hand-over (torch crashes then); a second signal aborts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, object] = {}

    def _handler(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt(f"signal {signum} (second)")
        self.requested = True
        print("\nphprof: stopping after this inference and saving what is done (again to abort)",
              file=sys.stderr, flush=True)

    def __enter__(self) -> _StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread: signals stay as they are
                pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.requested and (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 0.05))


class _Recorder:
    """Turns each completed profiler window into rows of the trace file."""

    def __init__(self, writer: TraceWriter, source: PowerSource, completed: list[int]) -> None:
        self.writer, self.source, self.completed = writer, source, completed
        self.catalog = Catalog()
        self.windows = 0
        self.inferences_written = 0
        self.outside = 0  # events outside any inference (dropped, counted)
        self.spans: list[tuple[int, int]] = []  # (first start, last end) of each window's inferences
        self.energies: list[Measurement] = []  # per window and device, over the window's inferences
        # windows whose energy waits for a counter update after their end, and the readings they need
        self._pending: list[tuple[int, int]] = []
        self._pending_log: PowerLog | None = None
        self.schedule: _Windows | None = None
        self._tail: PowerLog | None = None  # the last readings of each channel, for the next window's start
        self.instant_updates: list[np.ndarray] = []  # when the instant power field changed (ns)
        self.inference_starts: list[np.ndarray] = []  # every stored inference's span (ns)
        self.inference_ends: list[np.ndarray] = []

    def write_modules(self, scopes: ModuleScopes) -> None:
        rows = np.zeros(len(scopes.modules), dtype=MODULE_DTYPE)
        for i, (name, module) in enumerate(scopes.modules):
            rows[i] = (
                self.catalog.string(name),
                self.catalog.string(type(module).__name__),
                sum(p.numel() for p in module.parameters(recurse=False)),
                scopes.calls[i],
            )
        self.writer.append_strings(self.catalog.take_new()[0])
        self.writer.append_modules(rows)

    def on_trace_ready(self, prof) -> None:
        with tempfile.TemporaryDirectory(prefix="phprof-window-") as tmp:
            path = os.path.join(tmp, "window.json")
            prof.export_chrome_trace(path)
            trace = load_kineto(path, scope_filter=is_module_scope)
        span = self._write(trace)
        chunk = self.source.drain()
        self.writer.append_power(chunk)
        self.writer.flush()
        log = PowerLog.concat([self._tail, chunk]) if self._tail is not None else chunk
        self._measure_pending(chunk)
        if span is not None and log.channels:
            self._pending.append(span)
            if self._pending_log is None:
                self._pending_log = log
        for c in log.channels:
            if c.name.endswith(".power_instant"):
                self.instant_updates.append(sensor_updates(log.of(c.name))[0])
        self._tail = _last_readings(log, 2)

    def _measure_pending(self, chunk: PowerLog | None, final: bool = False) -> None:
        """The energy of the windows that were waiting for later readings: each once the
        counter has updated after its end (so that the end is bounded), all of them at the end."""
        if not self._pending:
            return
        log = self._pending_log if chunk is None else PowerLog.concat([self._pending_log, chunk])
        per_device = [log.energies_between(d, self._pending) for d in log.devices]
        measured = [list(ms) for ms in zip(*per_device)]  # per window, per device
        if final or all(m.high_j is not None or m.method is not Method.COUNTER for ms in measured for m in ms):
            self.energies += [m for ms in measured for m in ms]
            self._pending, self._pending_log = [], None
        else:
            self._pending_log = log

    def finish(self, last: PowerLog | None) -> None:
        """Takes the readings after the last window (None: there are none): the pending windows' energies."""
        self._measure_pending(last, final=True)

    def _write(self, trace) -> tuple[int, int] | None:
        """Appends a parsed window; returns the span of its inferences."""
        ev = trace.events
        names = trace.names
        # what each distinct name is, then per event by indexing (no per-event Python)
        def named(prefix: str) -> np.ndarray:
            return np.array([n.startswith(prefix) for n in names], dtype=bool)[ev["name"]]

        is_ann = ev["kind"] == Kind.USER_ANNOTATION
        inf_mask = is_ann & named(INFERENCE_PREFIX)
        phase_mask = is_ann & named(PHASE_PREFIX)
        step_mask = is_ann & named(STEP_PREFIX)

        # inferences of this window; an inference cut short by an interrupt is left out
        if not inf_mask.any():
            return None  # the empty trace torch.profiler closes after the last step
        inf_ev = ev[inf_mask]
        inf_idx = np.array([int(names[i][len(INFERENCE_PREFIX):]) for i in inf_ev["name"]], dtype=np.int32)
        keep_inf = inf_idx < len(self.completed)  # inferences complete in order: 0, 1, ... len - 1
        inf_ev, inf_idx = inf_ev[keep_inf], inf_idx[keep_inf]
        order = np.argsort(inf_ev["start_ns"])
        inf_ev, inf_idx = inf_ev[order], inf_idx[order]

        # every CPU event belongs to the inference whose span holds it; device
        # events to the inference of the CPU op that launched them
        pos = span_of_events(ev, inf_ev["start_ns"], inf_ev["end_ns"])
        inside = pos >= 0
        inference = np.full(len(ev), -1, dtype=np.int32)
        inference[inside] = inf_idx[pos[inside]]

        keep = ~(inf_mask | phase_mask | step_mask) & (inference >= 0)
        self.outside += int((~(inf_mask | phase_mask | step_mask) & (inference < 0)).sum())
        # only the names the file refers to: not the inference, phase and step annotations' own
        used = np.unique(np.concatenate([ev["name"][keep], trace.stacks["scope"][1:]])).tolist()
        names_map = self.catalog.strings_map(names, used)
        stacks_map = self.catalog.stacks_map(trace.stacks, names_map)

        out = event_rows(ev, keep, inference, names_map, stacks_map, base=self.writer.events_written)

        infs = np.zeros(len(inf_ev), dtype=INFERENCE_DTYPE)
        infs["index"], infs["start_ns"], infs["end_ns"] = inf_idx, inf_ev["start_ns"], inf_ev["end_ns"]
        infs["window"] = self.windows
        self.inference_starts.append(infs["start_ns"])
        self.inference_ends.append(infs["end_ns"])

        ph_ev, ph_pos = ev[phase_mask], pos[phase_mask]
        ph_ok = ph_pos >= 0  # a phase of an inference left out (cut short) is left out with it
        phases = np.zeros(int(ph_ok.sum()), dtype=PHASE_DTYPE)
        phases["inference"] = inf_idx[ph_pos[ph_ok]]
        phases["name"] = [self.catalog.string(names[i][len(PHASE_PREFIX):]) for i in ph_ev["name"][ph_ok]]
        phases["start_ns"], phases["end_ns"] = ph_ev["start_ns"][ph_ok], ph_ev["end_ns"][ph_ok]
        new_strings, new_stacks = self.catalog.take_new()
        self.writer.append_strings(new_strings)
        self.writer.append_stacks(new_stacks)

        window = (
            self.windows,
            int(inf_idx.min()) if len(inf_idx) else -1,
            int(inf_idx.max()) if len(inf_idx) else -1,
            int(inf_ev["start_ns"].min()) if len(inf_ev) else 0,
            int(inf_ev["end_ns"].max()) if len(inf_ev) else 0,
            len(out),
        )
        self.writer.append_window(out, infs, phases, window)
        self.inferences_written += len(inf_ev)
        self.windows += 1
        if not len(inf_ev):
            return None
        self.spans.append((window[3], window[4]))
        if self.schedule is not None:
            self.schedule.advance(len(out) / len(inf_ev))
        return window[3], window[4]


def _run_meta(spec, task, options: dict, source: PowerSource, device_name: str) -> dict:
    import torch

    config = json.loads(json.dumps(dict(spec.config), default=str))
    versions = {"phprof": __version__, "torch": torch.__version__, "python": platform.python_version(),
                "cuda": torch.version.cuda}
    sensor_devices, driver = source.device_names()
    for lib in ("transformers", "diffusers", "numpy", "h5py"):
        try:
            versions[lib] = __import__(lib).__version__
        except ImportError:
            pass
    return run_meta(
        model=spec.id, task=task, device=options["device"], device_name=device_name,
        sensor={"source": source.name, "settings": source.settings, "channels": [c.name for c in source.channels],
                "devices": sensor_devices, "power_limits_w": source.power_limits()},
        versions=versions, model_source=spec.source, config=config,
        config_hash=hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16],
        options=options, driver=driver, host=platform.node())


def trace(
    model: str,
    task: str | None = None,
    *,
    inferences: int = 1000,
    warmup: int = 10,
    output: str | Path | None = None,
    batch_size: int = 1,
    seq_len: int | None = None,
    new_tokens: int | None = None,
    steps: int | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    weights: str = "random",
    size: str = "full",
    source: str = "auto",
    idle_s: float = 2.0,
    anti_alias: bool = True,
    events_per_window: int = 100_000,
    setup=None,
    progress=None,
    overwrite: bool = False,
) -> TraceSummary:
    """Runs `inferences` inferences of `model` for `task` under the power sampler
    and torch.profiler, streaming them to one HDF5 file; returns a summary.

    ``anti_alias``: with a sensor that averages short windows (NVML), pause a
    random time (up to one inference) once per sensor period, so that its
    windows fall on every part of the inferences (see
    phprof.attribution.aliasing); the pauses are idle time between inferences.
    ``setup(model)`` is called after warm-up, once the module scopes are
    installed and before the first traced inference: hooks it adds run inside
    the modules' scopes (to make each module draw a known power in a fake
    GPU, for instance).
    ``size="tiny"`` shrinks the architecture (2 layers, narrow) for quick checks;
    its energy is not the real model's. ``progress(done, total)`` is called
    after each inference.
    """
    import torch

    from .. import models

    # Kineto prints two lines per profiler window to stderr (its USDT level sits
    # above ERROR, so quieting them quiets its errors too): quiet unless the user
    # chose a level. Read when the profiler starts, so setting it here works.
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    if inferences < 1:
        raise TraceError("--inferences must be at least 1")
    if warmup < 0:
        raise TraceError("--warmup cannot be negative")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TraceError(
            f"device {device!r} requested, but torch sees no CUDA GPU here "
            f"(torch {torch.__version__}, built {'with' if torch.version.cuda else 'without'} CUDA)"
        )
    if dtype not in DTYPES:
        raise TraceError(f"unknown dtype {dtype!r} (choose {', '.join(DTYPES)})")
    if size not in ("full", "tiny"):
        raise TraceError(f"unknown size {size!r} (choose full or tiny)")
    try:
        spec = models.resolve(model)
        task = models.get_task(task).name if task else spec.task
        built = models.build(spec, task, weights=weights, size=size, dtype=getattr(torch, dtype), device=device)
        sized = models.tiny(spec) if size == "tiny" else spec
        inputs = models.make_inputs(
            sized, task, batch_size=batch_size, seq_len=seq_len, new_tokens=new_tokens, device=device,
            dtype=getattr(torch, dtype),
        )
    except (models.UnknownModel, models.UnsupportedTask, models.ModelTooLarge, models.WeightsNotFound,
            ValueError) as e:
        raise TraceError(str(e)) from None

    path = Path(output) if output else default_output(spec.id, task)
    if output is None:
        path.parent.mkdir(parents=True, exist_ok=True)
    power = open_source(source, device)
    device_name = _device_name(device)
    options = {
        "inferences": inferences, "warmup": warmup, "batch_size": batch_size, "seq_len": seq_len,
        "new_tokens": new_tokens, "steps": steps, "dtype": dtype, "device": device, "weights": weights,
        "idle_s": idle_s, "events_per_window": events_per_window, "size": size, "anti_alias": anti_alias,
    }
    options["input_shapes"] = {k: list(v.shape) for k, v in inputs.items() if hasattr(v, "shape")}
    try:
        writer = TraceWriter(path, _run_meta(sized, task, options, power, device_name), overwrite=overwrite)
    except (OSError, FileExistsError) as e:
        raise TraceError(str(e)) from None

    run = lambda: models.infer(built, task, inputs, new_tokens=new_tokens, steps=steps)  # noqa: E731
    sensor = power.windowed_sensor()
    breaker = AliasBreaker(sensor.period_s) if anti_alias and sensor is not None else None
    completed: list[int] = []
    recorder = _Recorder(writer, power, completed)
    status, notes = "failed", []
    cuda = device.startswith("cuda")
    scopes = phases = None
    try:
        with _StopRequest() as stop:
            try:
                power.start()
                stop.sleep(idle_s)
                writer.append_power(power.drain(), group="idle")
                for _ in range(warmup):
                    if stop.requested:
                        break
                    run()
                if cuda:
                    torch.cuda.synchronize()
                scopes = ModuleScopes(built)
                phases = PhaseScopes(models.phase_modules(built, task))
                if setup is not None:
                    setup(built)
                activities = [torch.profiler.ProfilerActivity.CPU]
                if cuda:
                    activities.append(torch.profiler.ProfilerActivity.CUDA)
                schedule = recorder.schedule = _Windows(first=min(10, inferences), budget=events_per_window,
                                                        total=inferences)
                # torch warns that each cycle clears the last one's events: per-window clearing is the design
                warnings.filterwarnings("ignore", message=".*Profiler clears events", category=UserWarning)
                with torch.profiler.profile(
                    activities=activities, schedule=schedule, on_trace_ready=recorder.on_trace_ready
                ) as prof:
                    for i in range(inferences):
                        if stop.requested:
                            break
                        began = time.perf_counter()
                        phases.new_inference()
                        with inference_scope(i):
                            run()
                        if cuda and i == schedule.last_step:
                            torch.cuda.synchronize()  # the window's kernels are done before it is saved
                        completed.append(i)
                        if breaker is not None:
                            now = time.perf_counter()
                            stop.sleep(breaker.pause_after(now - began, now))
                        prof.step()
                        if progress:
                            progress(i + 1, inferences)
                status = "interrupted" if stop.requested else "complete"
                if stop.requested:
                    notes.append(f"interrupted after {len(completed)} of {inferences} inferences")
            except KeyboardInterrupt:
                status = "interrupted"
                notes.append(f"aborted after {len(completed)} of {inferences} inferences")
    finally:
        for s in (scopes, phases):
            if s is not None:
                s.remove()
        if scopes is not None:
            recorder.write_modules(scopes)
        last = None
        if power.running:
            last = power.stop(settle_s=SETTLE_S)  # a counter update after the last window bounds its end
            writer.append_power(last)
        recorder.finish(last)
        if breaker is not None and breaker.paused_s:
            notes.append(f"anti-aliasing pauses between inferences: {breaker.paused_s:.2f} s in all")
        summary = _summary(path, status, spec.id, task, recorder, power, sensor, notes)
        writer.close(status, summary.as_dict())
    return summary


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device).index or 0)
    return platform.processor() or platform.machine()


def _last_readings(log: PowerLog, n: int) -> PowerLog:
    r = log.readings
    idx = np.concatenate([np.flatnonzero(r["channel"] == c)[-n:] for c in range(len(log.channels))] or [[]])
    return PowerLog(log.source, log.channels, r[np.sort(idx.astype(np.int64))], settings=log.settings)


def _total(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else sum(values)


def _sum_energy(parts: list[Measurement]) -> Measurement | None:
    """The run's energy over its traced inferences: the windows' energies added up."""
    if not parts:
        return None
    notes = tuple(dict.fromkeys(n for p in parts for n in p.notes))
    devices = sorted({p.device for p in parts})
    methods = {(p.method, p.detail) for p in parts}
    method, detail = methods.pop() if len(methods) == 1 else \
        (Method.MIXED, " + ".join(sorted({p.energy.method_text for p in parts})))
    return Measurement(
        "+".join(devices), _total([p.joules for p in parts]), method, sum(p.seconds for p in parts) / len(devices),
        notes=notes + ("summed over the profiler windows' inferences; the pauses between windows, while phprof "
                       "saves a window, are left out",
                       "the device's whole draw, idle (static) power included: `phprof report` splits it, "
                       "and per layer"),
        counter_resets=sum(p.counter_resets for p in parts), low_j=_total([p.low_j for p in parts]),
        high_j=_total([p.high_j for p in parts]), detail=detail,
    )


def _summary(path, status, model, task, recorder: _Recorder, power: PowerSource, sensor, notes) -> TraceSummary:
    span = sum((e - s) for s, e in recorder.spans) / 1e9
    own = (sum(int((e - s).sum()) for s, e in zip(recorder.inference_starts, recorder.inference_ends)) / 1e9)
    if power.channels and span > 0:
        notes.append(f"the energy covers the windows' spans, {span:.2f} s, of which {span - own:.2f} s "
                     f"({(span - own) / span:.0%}) lies between inferences (loop overhead, anti-aliasing pauses)")
    if recorder.outside:
        notes.append(f"{recorder.outside} profiler events fell outside every inference and were not stored")
    if not power.channels:
        notes.append("no power sensor (source 'none'): time only, energy not measured")
    if recorder.instant_updates and recorder.spans and sensor is not None:
        updates = np.concatenate(recorder.instant_updates)
        centres = updates - int((sensor.lag_s + sensor.window_s / 2) * 1e9)
        cov = phase_coverage(centres, np.concatenate(recorder.inference_starts),
                             np.concatenate(recorder.inference_ends))
        notes.append(cov.describe() + f" ({sensor.source})")
    return TraceSummary(
        path, status, model, task, recorder.inferences_written, own, span, _sum_energy(recorder.energies), notes
    )
