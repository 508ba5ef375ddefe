"""Each completed profiler window, as rows of the trace file.

When torch.profiler completes a window, its events are read as torch holds
them (``prof.profiler.kineto_results``, no JSON export:
``phprof.tracing.kineto.read_profiler_result``), joined to the run's string and scope tables
(``phprof.tracing.catalog``), and appended to the file with the power
readings taken so far; nothing of it is kept in memory but the few figures
the end-of-run summary needs (each window's span and energy, the instant
power field's updates and the inferences' spans, for the sensor's coverage).
Window sizes adapt so that each holds about ``budget`` events.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import time

import numpy as np

from ..energy import Method
from ..sources import Measurement, PowerLog, PowerSource, sensor_updates
from ..store import (DEVICE_KINDS, INFERENCE_DTYPE, INFERENCE_PREFIX, INFERENCE_TAG_DTYPE, MODULE_DTYPE, PHASE_DTYPE,
                     PHASE_PREFIX, PROFILER_WORK_DTYPE, STEP_PREFIX, Kind, ProfilerWork, TraceWriter, event_rows)
from .catalog import Catalog
from .kineto import device_spans, read_profiler_result, span_of_events
from .kinetolog import KinetoLog, findings
from .ranks import skew_ns

#: A window's events: torch holds ~1 kB an event when it stops, and reading them adds ~0.5 kB, so a
#: window of 25,000 costs ~40 MiB at its peak, on top of the program's own memory (~420 MiB for a tiny
#: BERT on the CPU, measured: torch ~220, transformers' imports for BertModel ~170, phprof and h5py ~20).
EVENTS_PER_WINDOW = 25_000
_EDGE_READINGS = 256  # per channel, kept at each end of the run: a counter's updates around its first and last instant


class Windows:
    """A torch.profiler schedule of windows, each preceded by ``warmup`` profiler
    warm-up steps (the profiler runs, its events are dropped: after a save the
    device is back at its working power before recording starts again).

    The first window records ``first`` inferences (profiler steps); each later one
    is sized from what the last ones held: about ``budget`` events, and at most
    ``window_s`` seconds of inferences, whichever is fewer (2 to 1,000
    inferences). ``total``: the steps to record in all (None: open-ended; the
    profiler's stop saves the last window); once they are recorded the schedule
    is :attr:`done` and records nothing more."""

    def __init__(self, first: int, budget: int, total: int | None = None, warmup: int = 0,
                 window_s: float | None = None) -> None:
        self.budget, self.total, self.warmup, self.window_s = budget, total, warmup, window_s
        self.recorded = 0  # steps of the windows before the current one
        self.final = False  # the current window is the last (its steps make the total)
        self._open(min(first, total) if total else first, after=-1)

    def _open(self, size: int, after: int) -> None:
        self.record_from = after + 1 + self.warmup  # the current window's first recorded step
        self.last_step = self.record_from + size - 1  # the step that ends it
        self.final = self.total is not None and self.recorded + size >= self.total

    def __call__(self, step: int):
        from torch.profiler import ProfilerAction

        if step > self.last_step:  # the next window's, before it is sized (its warm-up, or its first step)
            if self.final:
                return ProfilerAction.NONE
            return ProfilerAction.WARMUP if step <= self.last_step + self.warmup else ProfilerAction.RECORD
        if step < self.record_from:
            return ProfilerAction.WARMUP
        return ProfilerAction.RECORD_AND_SAVE if step == self.last_step else ProfilerAction.RECORD

    def warming(self, step: int) -> bool:
        """Whether this step is a warm-up step (run, not recorded)."""
        if step > self.last_step:
            return not self.final and step <= self.last_step + self.warmup
        return step < self.record_from

    def done(self, steps: int) -> bool:
        """Whether ``steps`` steps complete the schedule (never, open-ended)."""
        return self.final and steps > self.last_step

    def advance(self, events_per_inference: float, seconds_per_inference: float | None = None) -> None:
        """The window that ended held this many events and seconds per inference: the next one."""
        if self.final:
            return
        self.recorded += self.last_step - self.record_from + 1
        size = self.budget / max(events_per_inference, 1.0)
        if self.window_s and seconds_per_inference:
            size = min(size, self.window_s / seconds_per_inference)
        size = int(np.clip(size, 2, 1000))
        if self.total:
            size = min(size, self.total - self.recorded)
        self._open(size, after=self.last_step)


class Recorder:
    """Turns each completed profiler window into rows of the trace file.

    ``complete(indices)``: which of a window's inferences completed (an
    inference cut short by an exception or an interrupt is left out, its
    events with it); ``is_scope(name)``: which annotations are module scopes
    (any other annotation a program opens is dropped, its ops kept);
    ``tags``: each tagged inference's (name, tags JSON), taken as written;
    ``signals``: the session's (its ``aborted``, and ``abortable()`` around the
    reading of a window, which an abort cuts short)."""

    def __init__(self, writer: TraceWriter, source: PowerSource, complete, is_scope, tags: dict, signals) -> None:
        self.writer, self.source, self.complete, self.is_scope, self.tags = writer, source, complete, is_scope, tags
        self.signals = signals
        self.catalog = Catalog()
        self.windows = 0
        self.dropped_windows = 0  # not saved: a second Ctrl-C came first
        self._density: tuple[float, float | None] = (1.0, None)  # events and seconds per inference, last window
        self.inferences_written = 0
        self.outside = 0  # events outside any inference (dropped, counted)
        self.spans: list[tuple[int, int]] = []  # (first start, last end) of each window's inferences
        self.energies: list[Measurement] = []  # per window and device, over the window's inferences
        self.measured_energies: list[Measurement] = []  # per device, over the measurement pass's span
        # spans whose energy waits for a counter update after their end, where each goes, and the readings they need
        self._pending: list[tuple[int, int]] = []
        self._pending_sinks: list[list[Measurement]] = []
        self._pending_log: PowerLog | None = None
        self.schedule: Windows | None = None
        self._tail: PowerLog | None = None  # the last readings of each channel, for the next window's start
        self._joined: PowerLog | None = None  # the last tail and the readings just added
        self.head: PowerLog | None = None  # the readings around the recording's start
        self.start_ns: int | None = None  # when the recording began (``began``)
        self.instant_updates: list[np.ndarray] = []  # when the instant power field changed (ns)
        self._last_update: dict[str, int] = {}  # per channel, the last update counted in instant_updates
        self.inference_starts: list[np.ndarray] = []  # every stored inference's span (ns)
        self.inference_ends: list[np.ndarray] = []
        # a CUDA run: Kineto's log (tracing.kinetolog), and what it and the windows' kernels said
        self.cuda = False
        self.kineto_log: KinetoLog | None = None
        self.kineto_messages: dict[str, int] = {}  # Kineto's warnings and errors, with how often each came
        self.dropped_records = 0  # activity records Kineto said it dropped
        self.kernels = 0  # kernel events stored
        self.kernel_devices: dict[int, int] = {}  # device events stored per CUDA device (where the kernels ran)
        self.kernelless: list[tuple[int, int, int, bool]] = []  # (window, inferences without kernels, of, stopped)
        self.failure: str | None = None  # why the run must stop: a CUDA window without any kernel
        # test-only (phprof.tracing.ranks.SKEW_ENV): this process's clock off by that much, in
        # every stamp it records (its readings, events and clock probes), as another host's would be
        self.skew_ns = skew_ns()

    def now_ns(self) -> int:
        """The session's clock: CLOCK_REALTIME (with the test-only skew)."""
        return time.time_ns() + self.skew_ns

    def skewed(self, log: PowerLog) -> PowerLog:
        """Readings as the source took them, put on the session's clock (the test-only skew added)."""
        if not self.skew_ns:
            return log
        r = log.readings.copy()
        r["t_before_ns"] += self.skew_ns
        r["t_after_ns"] += self.skew_ns
        pairs = log.clock_pairs.copy()
        pairs[:, 1] += self.skew_ns
        return dataclasses.replace(log, readings=r, clock_pairs=pairs)

    def add_idle(self, idle: PowerLog) -> PowerLog:
        """The idle period's readings, stored apart (group ``idle``); returns them on the session's clock."""
        idle = self.skewed(idle)
        self.writer.append_power(idle, group="idle")
        return idle

    def start(self, idle: PowerLog) -> None:
        """After the idle period: its last readings are the first the run's are joined to."""
        self._tail = edge_readings(idle, last=True) if idle.channels else None

    def began(self, t0_ns: int) -> None:
        """The recording began at ``t0_ns``: the readings around it are kept (``run_energy``),
        however long the profiler took to start after the idle period."""
        self.start_ns = t0_ns

    def write_modules(self, rows) -> None:
        """``rows``: (name, module, calls) of every module (``ModuleScopes.module_rows``)."""
        table = np.zeros(len(rows), dtype=MODULE_DTYPE)
        for i, (name, module, calls) in enumerate(rows):
            table[i] = (self.catalog.string(name), self.catalog.string(type(module).__name__),
                        sum(p.numel() for p in module.parameters(recurse=False)), calls)
        self.writer.append_strings(self.catalog.take_new()[0])
        self.writer.append_modules(table)

    def add_profiler_work(self, kind: ProfilerWork, start_ns: int, end_ns: int) -> None:
        """A span of phprof's own work between windows (a warm-up step, a window's save), to the file."""
        row = np.zeros(1, PROFILER_WORK_DTYPE)
        row[0] = (int(kind), start_ns, end_ns)
        self.writer.append_profiler_work(row)

    def on_trace_ready(self, prof) -> None:
        if self.signals.aborted:  # a second Ctrl-C: this window is dropped
            self.dropped_windows += 1
            return
        try:
            with self.signals.abortable():  # the events torch holds, read as they are: no JSON export
                trace = read_profiler_result(prof.profiler.kineto_results, scope_filter=self.is_scope)
        except (KeyboardInterrupt, SystemExit):  # the abort, caught here: torch.profiler never sees it
            self.dropped_windows += 1
            return
        stopped = self.add_kineto_lines(self.kineto_log.take()) if self.kineto_log is not None else False
        span = self._write(trace, stopped)
        del trace
        prof.profiler.kineto_results = None  # torch's copy of the window (~1 kB an event): not kept to the next one
        _release_freed_memory()
        if self.schedule is not None:  # the next window, sized from the last one that held inferences
            self.schedule.advance(*self._density)
        self.add_power(self.source.drain())
        self.writer.flush()
        log = self._joined
        if span is not None and log.channels:
            self._wait_for(span, self.energies, log)
        for c in log.channels:
            if c.name.endswith(".power_instant"):
                u = sensor_updates(log.of(c.name))[0]
                last = self._last_update.get(c.name)
                if last is not None:  # the tail's readings (joined before the chunk) were counted last time
                    u = u[u > last]
                if len(u):
                    self._last_update[c.name] = int(u[-1])
                self.instant_updates.append(u)

    def add_kineto_lines(self, lines: list[str]) -> bool:
        """Counts Kineto's warnings and errors; returns whether it said it stopped recording."""
        found = findings(lines)
        for m in found.messages:
            self.kineto_messages[m] = self.kineto_messages.get(m, 0) + 1
        self.dropped_records += found.dropped
        return found.stopped

    def _wait_for(self, span: tuple[int, int], sink: list, log: PowerLog) -> None:
        self._pending.append(span)
        self._pending_sinks.append(sink)
        if self._pending_log is None:
            self._pending_log = log

    def add_measured(self, inferences: np.ndarray) -> None:
        """The measurement pass's inferences (INFERENCE_DTYPE), after its readings
        (``add_power``): stored, and its energy measured once the counter updates after it."""
        self.writer.append_measured(inferences)
        self.writer.flush()
        if len(inferences) and self._joined is not None and self._joined.channels:
            self._wait_for((int(inferences["start_ns"].min()), int(inferences["end_ns"].max())),
                           self.measured_energies, self._joined)

    def add_power(self, chunk: PowerLog) -> None:
        """Appends readings to the file; keeps the edges the next window and the summary read."""
        chunk = self.skewed(chunk)
        self.writer.append_power(chunk)
        log = PowerLog.concat([self._tail, chunk]) if self._tail is not None else chunk
        if self.head is None and log.channels and self.start_ns is not None:  # the readings around the start
            self.head = readings_around(log, self.start_ns, _EDGE_READINGS)
        self._joined = log
        self._tail = edge_readings(log, last=True)
        self._measure_pending(chunk)

    def _measure_pending(self, chunk: PowerLog | None, final: bool = False) -> None:
        """The energy of the windows that were waiting for later readings: each once the
        counter has updated after its end (so that the end is bounded), all of them at the end."""
        if not self._pending:
            return
        log = self._pending_log if chunk is None else PowerLog.concat([self._pending_log, chunk])
        per_device = [log.energies_between(d, self._pending) for d in log.devices]
        measured = [list(ms) for ms in zip(*per_device)]  # per window, per device
        if final or all(m.high_j is not None or m.method is not Method.COUNTER for ms in measured for m in ms):
            for sink, ms in zip(self._pending_sinks, measured):
                sink.extend(ms)
            self._pending, self._pending_sinks, self._pending_log = [], [], None
        else:
            self._pending_log = log

    def finish(self) -> None:
        """After the last readings (``add_power``): the energies of the windows still pending."""
        self._measure_pending(None, final=True)

    def run_energy(self, t0_ns: int, t1_ns: int) -> list[Measurement]:
        """Per device, the energy from ``t0_ns`` to ``t1_ns`` (the whole recording)
        read off an energy counter at both ends; [] without one."""
        if self.head is None or self._tail is None:
            return []
        log = PowerLog.concat([self.head, self._tail])  # on a short run the two overlap: each reading once
        keep = np.unique(log.readings, return_index=True)[1]
        order = keep[np.argsort(log.readings["t_before_ns"][keep], kind="stable")]
        log = dataclasses.replace(log, readings=log.readings[order])
        out = [log.energy_between(d, t0_ns, t1_ns) for d in log.devices]
        return [m for m in out if m.measured]

    def _write(self, trace, stopped: bool = False) -> tuple[int, int] | None:
        """Appends a parsed window; returns the span of its inferences. ``stopped``: Kineto
        said it stopped recording device activity during the window."""
        ev = trace.events
        if self.skew_ns:
            ev["start_ns"] += self.skew_ns
            ev["end_ns"] += self.skew_ns
        names = trace.names
        # what each distinct name is, then per event by indexing (no per-event Python)
        def named(test) -> np.ndarray:
            return np.array([test(n) for n in names], dtype=bool)[ev["name"]]

        is_ann = ev["kind"] == Kind.USER_ANNOTATION
        inf_mask = is_ann & named(lambda n: n.startswith(INFERENCE_PREFIX))
        phase_mask = is_ann & named(lambda n: n.startswith(PHASE_PREFIX))
        # torch.profiler's steps, and annotations the program opened itself: not stored
        other_mask = is_ann & ~inf_mask & ~phase_mask & named(lambda n: n.startswith(STEP_PREFIX) or
                                                             not self.is_scope(n))

        # inferences of this window; an inference cut short (an exception, an interrupt) is left out
        if not inf_mask.any():
            return None  # the empty trace torch.profiler closes after the last step
        inf_ev = ev[inf_mask]
        inf_idx = np.array([int(names[i][len(INFERENCE_PREFIX):]) for i in inf_ev["name"]], dtype=np.int32)
        keep_inf = self.complete(inf_idx)
        inf_ev, inf_idx = inf_ev[keep_inf], inf_idx[keep_inf]
        order = np.argsort(inf_ev["start_ns"])
        inf_ev, inf_idx = inf_ev[order], inf_idx[order]

        # every CPU event belongs to the inference whose span holds it; device
        # events to the inference of the CPU op (else the runtime call) that launched them
        pos = span_of_events(ev, inf_ev["start_ns"], inf_ev["end_ns"], trace.launch)
        inside = pos >= 0
        inference = np.full(len(ev), -1, dtype=np.int32)
        inference[inside] = inf_idx[pos[inside]]

        ours = inf_mask | phase_mask | other_mask
        keep = ~ours & (inference >= 0)
        self.outside += int((~ours & (inference < 0)).sum())
        # only the names the file refers to: not the inference, phase and step annotations' own
        used = np.unique(np.concatenate([ev["name"][keep], trace.stacks["scope"][1:]])).tolist()
        names_map = self.catalog.strings_map(names, used)
        stacks_map = self.catalog.stacks_map(trace.stacks, names_map)

        out = event_rows(ev, keep, inference, names_map, stacks_map, base=self.writer.events_written)

        infs = np.zeros(len(inf_ev), dtype=INFERENCE_DTYPE)
        infs["index"], infs["cpu_start_ns"], infs["cpu_end_ns"] = inf_idx, inf_ev["start_ns"], inf_ev["end_ns"]
        infs["start_ns"], infs["end_ns"], infs["kernels"] = device_spans(ev, trace.launch, pos, inf_ev["start_ns"],
                                                                         inf_ev["end_ns"])
        infs["window"] = self.windows
        self.inference_starts.append(infs["start_ns"])
        self.inference_ends.append(infs["end_ns"])

        ph_ev, ph_pos = ev[phase_mask], pos[phase_mask]
        ph_ok = ph_pos >= 0  # a phase of an inference left out (cut short) is left out with it
        phases = np.zeros(int(ph_ok.sum()), dtype=PHASE_DTYPE)
        phases["inference"] = inf_idx[ph_pos[ph_ok]]
        phases["name"] = [self.catalog.string(names[i][len(PHASE_PREFIX):]) for i in ph_ev["name"][ph_ok]]
        phases["start_ns"], phases["end_ns"] = _phase_spans(ev, trace.launch, ph_ev[ph_ok])
        tagged = [(i, self.tags.pop(i)) for i in inf_idx.tolist() if i in self.tags]
        tags = np.zeros(len(tagged), dtype=INFERENCE_TAG_DTYPE)
        for row, (i, (name, tag_json)) in zip(tags, tagged):
            row["index"], row["name"], row["tags"] = i, self.catalog.string(name), self.catalog.string(tag_json)
        new_strings, new_stacks = self.catalog.take_new()
        self.writer.append_strings(new_strings)
        self.writer.append_stacks(new_stacks)

        device = np.isin(ev["kind"], np.asarray(DEVICE_KINDS, np.uint8))
        for d, count in zip(*np.unique(ev["device"][device & keep & (ev["device"] >= 0)], return_counts=True)):
            self.kernel_devices[int(d)] = self.kernel_devices.get(int(d), 0) + int(count)
        join = trace.join_stats
        kernels, kernelless = int((ev["kind"] == Kind.KERNEL).sum()), int((infs["kernels"] == 0).sum())
        window = (
            self.windows,
            int(inf_idx.min()) if len(inf_idx) else -1,
            int(inf_idx.max()) if len(inf_idx) else -1,
            int(infs["start_ns"].min()) if len(infs) else 0,
            int(infs["end_ns"].max()) if len(infs) else 0,
            len(out),
            join["device_events"],
            join["device_events"] - join["with_launch"],
            join["unjoined"],
            int((device & (inference < 0)).sum()),
            kernels,
            kernelless,
            stopped,
        )
        if self.cuda and len(infs):
            self._check_kernels(self.windows, len(infs), kernels, kernelless, stopped)
        self.writer.append_window(out, infs, phases, window, tags)
        self.inferences_written += len(inf_ev)
        self.windows += 1
        if not len(inf_ev):
            return None
        self.spans.append((window[3], window[4]))
        self._density = len(out) / len(inf_ev), (window[4] - window[3]) / 1e9 / len(inf_ev)
        return window[3], window[4]

    def kernel_notes(self) -> list[str]:
        """What a CUDA run's windows and Kineto's log say of kernels lost."""
        notes = []
        if self.kernelless:
            n = sum(k for _, k, _, _ in self.kernelless)
            stopped = [w for w, _, _, s in self.kernelless if s]
            notes.append(f"{n} inferences in {len(self.kernelless)} profiler windows hold no kernel event"
                         + (f" (Kineto stopped recording device activity in window{'s' if len(stopped) > 1 else ''} "
                            f"{', '.join(map(str, stopped))})" if stopped else "")
                         + ": on the GPU they are time without a kernel, their energy not split by layer")
        if self.dropped_records:
            notes.append(f"Kineto dropped {self.dropped_records} activity records: some kernels are missing")
        shown = list(self.kineto_messages.items())[:10]
        notes += [f"Kineto: {m}" + (f" ({c} times)" if c > 1 else "") for m, c in shown]
        if len(self.kineto_messages) > len(shown):
            notes.append(f"Kineto said {len(self.kineto_messages) - len(shown)} other things (meta: kineto_messages)")
        return notes

    def _check_kernels(self, window: int, inferences: int, kernels: int, kernelless: int, stopped: bool) -> None:
        """A CUDA window's kernels: none at all yet is a failure (torch.profiler records no GPU
        activity: every inference would be split by CPU time); inferences without any are flagged."""
        if self.kernels == 0 and kernels == 0:
            said = "; Kineto said: " + "; ".join(self.kineto_messages) if self.kineto_messages else ""
            self.failure = (f"the CUDA run's first profiler window ({inferences} inferences) holds no kernel event: "
                            "torch.profiler recorded no GPU activity (CUPTI unavailable or failing, or a model that "
                            f"runs no kernel on the GPU){said}. Its energy cannot be split by kernels; phprof "
                            "stopped rather than split it by CPU time")
            return
        self.kernels += kernels
        if kernelless:
            self.kernelless.append((window, kernelless, inferences, stopped))


def _phase_spans(ev: np.ndarray, launch: np.ndarray, phases: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The spans of a window's phases (annotation events, in start order): on a GPU, their
    device spans as the inferences' (``device_spans``); their CPU spans where they overlap."""
    start, end = phases["start_ns"], phases["end_ns"]
    if len(start) > 1 and (start[1:] < end[:-1]).any():
        return start, end
    return device_spans(ev, launch, span_of_events(ev, start, end, launch), start, end)[:2]


def readings_around(log: PowerLog, t_ns: int, n: int) -> PowerLog:
    """Each channel's last ``n`` readings taken before ``t_ns`` and its first ``n`` from then on."""
    r = log.readings
    idx = []
    for c in range(len(log.channels)):
        mine = np.flatnonzero(r["channel"] == c)
        k = int(np.searchsorted(r["t_before_ns"][mine], t_ns))
        idx.append(mine[max(k - n, 0):k + n])
    return PowerLog(log.source, log.channels, r[np.sort(np.concatenate(idx or [[]]).astype(np.int64))],
                    settings=log.settings)


def _release_freed_memory() -> None:
    """Hands the heap's freed pages back to the system (glibc's malloc_trim), so
    that a window's peak does not stay resident through the next ones."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _glibc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _glibc()


def edge_readings(log: PowerLog, last: bool, n: int = _EDGE_READINGS) -> PowerLog:
    """The first (or last) ``n`` readings of each channel of a log."""
    r = log.readings
    pick = (lambda idx: idx[-n:]) if last else (lambda idx: idx[:n])
    idx = np.concatenate([pick(np.flatnonzero(r["channel"] == c)) for c in range(len(log.channels))] or [[]])
    return PowerLog(log.source, log.channels, r[np.sort(idx.astype(np.int64))], settings=log.settings)
