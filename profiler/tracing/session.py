"""One recording session around any code: the power sampler, torch.profiler and the trace file.

    with Profile("run.h5") as prof:
        for batch in data:
            with prof.inference():          # optional: without marks, each outermost call is one
                out = pipe(batch)

Everything phprof records goes through here: ``phprof trace`` (a model of
the catalogue in phprof's own loop, ``phprof.tracing.run``), ``phprof run``
(a user's program, ``phprof.tracing.program``), ``phprof.profile()`` and the
notebook magic. A session

1. opens the trace file (marked ``recording``), starts the power source,
   samples idle power for ``idle_s`` and runs ``warmup`` (not recorded);
   with ``measure``, runs the measurement pass: the inferences with the
   profiler off (the power source only, the same anti-aliasing pauses),
   their spans and energy stored apart from the profiled ones;
2. records: torch.profiler in windows of about ``events_per_window`` events
   and at most about ``window_s`` seconds, each after ``window_warmup``
   profiler warm-up steps (inferences that run with the profiler on but are
   not recorded, so that a window does not start on a device idled by the
   last save), each streamed to the file as it completes, read from torch's
   own event list (``phprof.tracing.recorder``); a
   scope for every module that runs (``phprof.tracing.scopes``); inferences:
   the program's ``prof.inference()`` spans, else each outermost call (a
   module's forward, a Hugging Face ``generate()``, a diffusers pipeline's
   call; ``phprof.tracing.frameworks``) with its phases; with a windowed
   sensor, a random pause after an inference once per sensor period
   (``phprof.tracing.aliasing``), so the sensor's windows fall on every part
   of the inferences;
3. on leaving the block, whatever ended it (the end, an exception,
   ``sys.exit``, Ctrl-C, SIGTERM), saves the last window and closes the file
   ``complete``, ``failed`` or ``interrupted`` with its summary.

Ctrl-C and SIGTERM (while recording, in the main thread): the first one stops
the program at the end of the inference that runs (at once when none runs)
by raising KeyboardInterrupt, or for SIGTERM :class:`Terminated` (a
SystemExit of status 143), so every stored inference is whole; phprof's own
loop (``stop_at="flag"``) reads :attr:`Profile.stopping` instead. A second
one aborts at once; the file is still closed, ``interrupted``.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import sys
import threading
import time
import warnings
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import PhprofError
from ..sources import SETTLE_S, Measurement, PowerSource, add_measurements, open_source
from ..sources.sensors import phase_coverage
from ..store import INFERENCE_DTYPE, INFERENCE_PREFIX, ProfilerWork, TraceWriter, run_meta, run_summary
from ..store.results import PerInference
from . import kinetolog
from .aliasing import AliasBreaker
from .cudadevice import DeviceError, measuring_gpu
from .frameworks import EntryPoints
from .ranks import ClockProbes, detect, rank_output
from .recorder import EVENTS_PER_WINDOW, Recorder, Windows
from .scopes import ModuleScopes, PhaseScopes

DEFAULT_TRACES_DIR = Path("traces")
RULES = ("auto", "marks", "calls")
_OWNERS = {"mark": "prof.inference() spans", "call": "outermost module calls", "generate": "generate() calls",
           "pipeline": "diffusers pipeline calls"}

_ACTIVE: Profile | None = None


def active() -> Profile | None:
    """The session recording in this process, if any."""
    return _ACTIVE


class ProfileError(PhprofError):
    """A session that cannot start: its output, device or options."""


class Terminated(SystemExit):
    """SIGTERM, raised in the program at the end of its current inference (at
    once when none runs): the program unwinds and the file is saved; the exit
    status is a SIGTERM's (128 + 15)."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


@dataclass
class MeasuredPass(PerInference):
    """The measurement pass: inferences run with the profiler off (the power
    source only), before the profiled ones: the run's time and energy per
    inference without the profiler's own cost."""

    inferences: int
    inference_s: float  # their own time, added up
    span_s: float  # first start to last end: the anti-aliasing pauses between them included
    energy: Measurement | None  # over the span; None without a sensor
    paused_s: float = 0.0  # the anti-aliasing pauses in it


@dataclass
class TraceSummary(PerInference):
    """What a session recorded, for the end-of-run message and for callers."""

    VIEW = "summary"

    path: Path
    status: str
    model: str
    task: str
    inferences: int
    inference_s: float  # the stored inferences' own time, added up
    span_s: float  # the windows' spans, first to last inference: also the gaps between inferences
    energy: Measurement | None  # over the windows' spans, every measured device's added; None without a sensor
    notes: list[str] = field(default_factory=list)
    device_energy: list[Measurement] = field(default_factory=list)  # ``energy`` by device (a GPU, package-0...)
    device: str = ""  # where the work ran: cpu, cuda:0...
    device_name: str = ""
    device_chosen: bool = False  # by phprof (the first CUDA device, else the CPU), not by the caller
    source: str = ""  # the power source, and what it read
    inference_rule: str = ""  # how inferences were found (see Profile)
    recording_s: float | None = None  # from the start of recording to its end (the program's run)
    recording_energy: list[Measurement] = field(default_factory=list)  # over that time, from a counter
    measured: MeasuredPass | None = None  # the measurement pass (profiler off), if one ran
    window_saves_s: list[float] = field(default_factory=list)  # each profiler window's save
    paused_s: float = 0.0  # the anti-aliasing pauses between the recorded inferences, added up

    def as_dict(self) -> dict:
        return run_summary(status=self.status, model=self.model, task=self.task, inferences=self.inferences,
                           inference_s=self.inference_s, span_s=self.span_s, energy=self.energy, notes=self.notes,
                           device=self.device, device_name=self.device_name, source=self.source,
                           inference_rule=self.inference_rule, recording_s=self.recording_s,
                           recording_j=add_measurements(self.recording_energy, "all").joules
                           if self.recording_energy else None, paused_s=self.paused_s,
                           window_saves_s=float(sum(self.window_saves_s)), **_measured_dict(self.measured),
                           **({"energy_by_device_j": {m.device: m.joules for m in self.device_energy}}
                              if len(self.device_energy) > 1 else {}))


def _measured_dict(m: MeasuredPass | None) -> dict:
    if m is None:
        return {}
    e = m.energy
    return {"measured_inferences": m.inferences, "measured_inference_s": m.inference_s, "measured_span_s": m.span_s,
            "measured_j": None if e is None else e.joules,
            "measured_method": None if e is None else e.energy.method_text,
            "measured_kind": None if e is None else e.kind,
            "measured_low_j": None if e is None else e.low_j, "measured_high_j": None if e is None else e.high_j}


def default_output(name: str, kind: str | None = None, directory: Path = DEFAULT_TRACES_DIR) -> Path:
    """``traces/NAME[.KIND].TIME.h5``; for a rank of a job the launcher named
    (``TORCHELASTIC_RUN_ID``), that name instead of the time, so that every rank's
    file has the same name (the session adds ``.rank<r>``)."""
    rank = detect()
    stamp = rank.run_id if rank is not None and rank.run_id_from == "TORCHELASTIC_RUN_ID" else \
        time.strftime("%Y%m%d-%H%M%S")
    safe = name.replace("/", "--").replace(os.sep, "--").strip("-.") or "run"
    return directory / (f"{safe}.{kind}.{stamp}.h5" if kind else f"{safe}.{stamp}.h5")


def source_text(power: PowerSource) -> str:
    """The power source and what it reads: ``nvml (gpu0: NVIDIA A100-SXM4-80GB)``,
    ``rapl (package-0, dram)``, ``none (time only)``."""
    names, _ = power.device_names()
    what = [f"{d}: {n}" for d, n in names.items()] or [c.name for c in power.channels] or ["time only"]
    return f"{power.name} ({', '.join(what)})"


def default_device() -> str:
    """The first CUDA device when torch sees one (for a rank of a job, the one of its
    local rank, as ``torchrun`` scripts choose it), else the CPU."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    rank = detect()
    return f"cuda:{rank.local_rank % torch.cuda.device_count()}" if rank is not None else "cuda:0"


@dataclass
class _Open:
    index: int
    owner: str  # mark | call | generate | pipeline
    scope: object  # its record_function
    began: float  # perf_counter
    began_ns: int  # the session's clock


class _Mark:
    """``prof.inference()``: one inference, around any code."""

    __slots__ = ("session", "name", "tags", "opened")

    def __init__(self, session: Profile, name, tags) -> None:
        self.session, self.name, self.tags, self.opened = session, name, tags, False

    def __enter__(self):
        self.opened = self.session._begin("mark", self.name, self.tags)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self.opened:
            self.session._end(exc_type is None)
        return False


class _Signals:
    """Ctrl-C and SIGTERM while recording (see the module's docstring).

    A second signal aborts: it raises at once, except inside torch.profiler's
    window hand-over (torch crashes when interrupted there) or a write to the
    file (``critical``), where it only marks the abort: what would come next
    (reading and saving the window) is skipped. Reading a window is
    :meth:`abortable` even there. Python runs a handler once the main thread is
    back from the C++ call it is in, and once for all the signals that came
    meanwhile, so signals are counted as they arrive: each writes a byte to a
    wakeup pipe (``signal.set_wakeup_fd``)."""

    def __init__(self, session: Profile, raise_in_program: bool) -> None:
        self.session = session
        self.raise_in_program = raise_in_program
        self.requested: int | None = None  # the first signal's number
        self.aborted = False  # a second signal came
        self.received = 0  # SIGINT and SIGTERM, counted as they arrived
        self.critical = False  # inside a window's hand-over, the anti-aliasing pause or the final save
        self._abortable = 0  # inside work a second signal may cut short, critical or not
        self._raised = False
        self._old: dict[int, object] = {}
        self._pipe: tuple[int, int] | None = None
        self._old_fd = -1

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signals are delivered to the main thread only: they stay as they are
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handler)
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        self._pipe = (r, w)
        self._old_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)

    def restore(self) -> None:
        if self._pipe is not None:
            signal.set_wakeup_fd(self._old_fd)
            for fd in self._pipe:
                os.close(fd)
            self._pipe = None
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    @staticmethod
    def exception(signum: int) -> BaseException:
        return KeyboardInterrupt() if signum == signal.SIGINT else Terminated()

    def _say(self, text: str) -> None:
        print(f"\nphprof: {text}", file=sys.stderr, flush=True)

    def _arrived(self) -> int:
        """The stop signals that arrived since the last look (0 without the pipe)."""
        if self._pipe is None:
            return 0
        try:
            data = os.read(self._pipe[0], 4096)
        except OSError:
            return 0
        return sum(1 for b in data if b in (signal.SIGINT, signal.SIGTERM))

    @contextlib.contextmanager
    def abortable(self):
        """Work that a second signal cuts short with its exception, critical or not."""
        self._abortable += 1
        try:
            yield
        finally:
            self._abortable -= 1

    def _handler(self, signum, frame) -> None:
        s = self.session
        s.scopes.check_stale = True
        self.received += max(1, self._arrived())
        what = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
        first = self.requested is None
        if first:
            self.requested = signum
        if self.received >= 2:
            if self.aborted:
                return
            self.aborted = True
            self._say(f"{what} again: aborting (the trace file keeps the windows already saved)")
            if self._abortable or not self.critical:
                raise self.exception(signum)
            return
        if s.finishing:
            self._say(f"{what}: saving the trace file first (again to abort)")
        elif self.raise_in_program and s._current is None and not self.critical:
            self._raised = True
            self._say(f"{what}: stopping the program and saving the trace file (again to abort)")
            raise self.exception(signum)
        else:
            self._say(f"{what}: stopping after this inference and saving what is done (again to abort)")

    def raise_pending(self) -> None:
        """At an inference's end: the stop a signal asked for."""
        if self.requested is not None and self.raise_in_program and not self._raised:
            self._raised = True
            raise self.exception(self.requested)

    def sleep(self, seconds: float) -> None:
        """Sleeps, ending early once a stop is asked for."""
        end = time.monotonic() + seconds
        while self.requested is None and (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 0.05))


class Profile:
    """A recording session (see the module's docstring).

    ``output``: the trace file (default ``traces/profile.TIME.h5``);
    ``device``: where the work runs (``cpu``, ``cuda``, ``cuda:N``; default the
    first CUDA device torch sees, else the CPU), which chooses the power
    source with ``source`` (``auto``: NVML for a GPU, RAPL for the CPU where
    readable, else time only; or ``nvml``, ``rapl``, ``none``);
    ``inferences``: ``auto`` (the program's ``prof.inference()`` spans once it
    marks one, each outermost call until then), ``marks`` or ``calls``;
    ``idle_s``: idle power sampled first; ``anti_alias``: the pauses after
    inferences; ``meta``: more of the run for the file's /meta (the model, the
    program); ``warmup()``: run after the idle period, not recorded;
    ``expected``: the inferences the caller will have recorded (the windows'
    schedule, ``progress(done, expected)``; with ``window_warmup``, the caller
    runs until :attr:`windows_done`); ``window_warmup``: warm-up steps before
    each window (default 0: a program's every inference is recorded);
    ``window_s``: a window's time limit; ``measure``: ``(n, run_one)``, the
    measurement pass (``n`` calls of ``run_one()`` with the profiler off,
    after ``warmup()``, before recording); ``stop_at``: ``"raise"`` (a signal stops the
    program at an inference's end) or ``"flag"`` (the caller's loop reads
    :attr:`stopping`); ``sensor_gpu``: the NVML GPU measured when it is not the
    device the work runs on (a CPU run read off a GPU's sensor: the tests' fake
    GPUs), an index or ``"local-rank"`` (each rank of a job its ``LOCAL_RANK``).

    A rank of a distributed job (``RANK`` and ``WORLD_SIZE`` set by the launcher,
    ``phprof.tracing.ranks``) writes ``NAME.rank<r>.h5`` with where it stands in
    the job, and measures its clock against rank 0's through the program's process
    group.
    """

    def __init__(self, output: str | Path | None = None, *, device: str | None = None, source: str = "auto",
                 inferences: str = "auto", idle_s: float = 2.0, anti_alias: bool = True,
                 events_per_window: int = EVENTS_PER_WINDOW, overwrite: bool = False, meta: dict | None = None,
                 warmup=None, expected: int | None = None, progress=None, stop_at: str = "raise",
                 recorded_by: str = "phprof.profile", sensor_gpu: int | str | None = None, window_warmup: int = 0,
                 window_s: float | None = 30.0, measure=None) -> None:
        if inferences not in RULES:
            raise ProfileError(f"unknown inference rule {inferences!r} (choose {', '.join(RULES)})")
        if idle_s < 0:
            raise ProfileError("the idle period cannot be negative")
        if window_warmup < 0:
            raise ProfileError("the warm-up steps before each window cannot be negative")
        if window_s is not None and window_s <= 0:
            raise ProfileError("a window's time limit must be positive")
        self.path = Path(output) if output else default_output("profile")
        self._make_folder = output is None
        devices = [device] if isinstance(device, str) else list(device or [])
        self.devices = devices or [default_device()]  # a model split over GPUs: each of its CUDA devices
        self.device = self.devices[0]
        self.device_chosen = device is None
        if len(self.devices) > 1 and not all(d.startswith("cuda") for d in self.devices):
            raise ProfileError(f"devices {', '.join(self.devices)}: several devices are CUDA devices only (a model "
                               "split over GPUs)")
        self.source_name, self.rule, self.idle_s, self.anti_alias = source, inferences, idle_s, anti_alias
        self.rank = detect()
        self._rank_notes: list[str] = []
        if self.rank is not None:
            self.path = rank_output(self.path, self.rank.rank)
            self._rank_notes.append(f"rank {self.rank.rank} of {self.rank.world_size} ({self.rank.host}): merge the "
                                    f"ranks' files with `phprof report {self.path.parent}`")
            if self.anti_alias:
                self.anti_alias = False  # a pause in one rank holds the others in their next collective
                self._rank_notes.append("anti-aliasing pauses off: a pause in one rank would hold the others "
                                        "waiting in their collectives")
        if sensor_gpu == "local-rank":
            sensor_gpu = self.rank.local_rank if self.rank is not None else 0
        if sensor_gpu is not None and (isinstance(sensor_gpu, bool) or not isinstance(sensor_gpu, int)
                                       or sensor_gpu < 0):
            raise ProfileError(f"sensor_gpu={sensor_gpu!r}: give a GPU index or 'local-rank'")
        self.sensor_gpu = sensor_gpu
        self._clocks: ClockProbes | None = None
        self.events_per_window, self.overwrite, self.meta = events_per_window, overwrite, dict(meta or {})
        self.warmup, self.expected, self.progress, self.recorded_by = warmup, expected, progress, recorded_by
        self.window_warmup, self.window_s, self.measure = window_warmup, window_s, measure
        self.window_saves_s: list[float] = []  # each window's hand-over: torch stopping, reading, writing
        self.scopes = ModuleScopes(self._on_outermost)
        self.summary: TraceSummary | None = None
        self.finishing = False
        self._signals = _Signals(self, raise_in_program=stop_at == "raise")
        self._entries = EntryPoints(self._enter_call, self._leave_call)
        self._phases: list[PhaseScopes] = []  # the caller's own (phprof trace's), for the whole session
        self._current: _Open | None = None
        self._next = 0  # the next inference's index
        self._cut: set[int] = set()  # inferences cut short by an exception or an interrupt
        self._tags: dict[int, tuple[str, str]] = {}
        self._counts = dict.fromkeys(_OWNERS, 0)
        self._marks_seen = False
        self._nested = 0  # inferences begun inside another one: part of it
        self._warmed = 0  # inferences run as the profiler's warm-up steps before a window: not recorded
        self._measured: tuple[np.ndarray, float] | None = None  # the measurement pass's rows and pauses
        self._progress_base = 0  # the measurement pass's inferences, for progress()
        self._local = threading.local()
        self._recording = False
        self._schedule = None
        self._prof = None
        self._writer = None
        self._recorder: Recorder | None = None
        self._power: PowerSource | None = None
        self._identity: dict = {}  # which NVML GPU measures the (first) CUDA device, and how it was matched
        self._cuda_devices: dict[str, str] = {}  # each CUDA device -> the power device that measures it

    # -- the program's face ------------------------------------------------------------------
    def inference(self, name: str | None = None, **tags) -> _Mark:
        """One inference around any code (``with prof.inference(): out = pipe(x)``);
        ``name`` and ``tags`` are stored with it. Inside another inference, part of it."""
        return _Mark(self, name, tags)

    def watch(self, model, name: str | None = None):
        """Names a model's modules before it runs: ``name`` prefixes their paths
        (``encoder.layer.0``). A diffusers pipeline is watched component by
        component (``text_encoder``, ``unet``, ``vae``), a Hugging Face pipeline
        by its model."""
        import torch

        if isinstance(model, torch.nn.Module):
            try:
                return self.scopes.watch(model, name)
            except ValueError as e:
                raise ProfileError(str(e)) from None
        components = getattr(model, "components", None)
        if isinstance(components, dict):
            return [self.scopes.watch(m, key) for key, m in components.items() if isinstance(m, torch.nn.Module)]
        if isinstance(getattr(model, "model", None), torch.nn.Module):
            return self.scopes.watch(model.model, name)
        raise ProfileError(f"watch() takes a torch.nn.Module or a pipeline, not a {type(model).__name__}")

    def phase_modules(self, modules: dict) -> None:
        """Phases from the calls of these modules, for the whole session (see
        ``phprof.models.phase_modules``); generation and diffusers pipelines need none."""
        self._phases.append(PhaseScopes(modules))

    @property
    def stopping(self) -> bool:
        """Whether Ctrl-C or SIGTERM asked the run to stop."""
        return self._signals.requested is not None

    @property
    def inferences(self) -> int:
        """Inferences ended so far (complete or cut short), the warm-up steps before windows included."""
        return self._next - (1 if self._current is not None else 0)

    @property
    def windows_done(self) -> bool:
        """Whether the ``expected`` inferences are recorded (never, without ``expected``)."""
        return self._schedule is not None and self._schedule.done(self._next)

    # -- inferences ----------------------------------------------------------------------------
    def _begin(self, owner: str, name: str | None = None, tags: dict | None = None) -> bool:
        if not self._recording:
            return False
        if owner == "mark":
            self._marks_seen = True
        if self._current is not None:
            self._nested += owner == "mark"
            return False
        if owner != "mark" and (self.rule == "marks" or (self.rule == "auto" and self._marks_seen)):
            return False
        from torch.autograd.profiler import record_function

        i = self._next
        self._next += 1
        scope = record_function(f"{INFERENCE_PREFIX}{i}")
        scope.__enter__()
        self._current = _Open(i, owner, scope, time.perf_counter(), self._recorder.now_ns())
        if name is not None or tags:
            self._tags[i] = (name or "", json.dumps(tags or {}, default=str))
        for p in self._phases:
            p.new_inference()
        return True

    def _end(self, ok: bool) -> None:
        cur, self._current = self._current, None
        cur.scope.__exit__(None, None, None)
        if ok:
            self._counts[cur.owner] += 1
        else:
            self._cut.add(cur.index)
        warming = self._schedule.warming(cur.index)
        self._warmed += warming
        saves = cur.index == self._schedule.last_step
        self._signals.critical = True
        try:
            if self._cuda and (saves or warming):
                import torch

                # the window's kernels are done before it is saved; a warm-up step's span holds its kernels
                _synchronize(torch, self.devices)
            if warming:  # its span is the attribution's to know: it is not idle time (phprof.attribution.timeline)
                self._recorder.add_profiler_work(ProfilerWork.WINDOW_WARMUP, cur.began_ns, self._recorder.now_ns())
            if self._breaker is not None and ok:
                now = time.perf_counter()
                self._signals.sleep(self._breaker.pause_after(now - cur.began, now))
            began, began_ns = time.perf_counter(), self._recorder.now_ns()
            self._prof.step()
            if saves:
                self.window_saves_s.append(time.perf_counter() - began)
                self._recorder.add_profiler_work(ProfilerWork.WINDOW_SAVE, began_ns, self._recorder.now_ns())
        finally:
            self._signals.critical = False
        if self._recorder.failure is not None:
            raise ProfileError(self._recorder.failure)
        if self.progress is not None:
            total = self.expected + self._progress_base if self.expected else None
            self.progress(self._progress_base + self.inferences - self._warmed, total)
        if ok:
            self._signals.raise_pending()

    def _complete(self, indices: np.ndarray) -> np.ndarray:
        """Which of these inferences ended whole (for the recorder)."""
        below = self._current.index if self._current is not None else self._next
        return (indices < below) & ~np.isin(indices, np.fromiter(self._cut, np.int64, len(self._cut)))

    def _on_outermost(self, start: bool | None) -> None:
        if start:
            self._local.opened = self._begin("call")
        elif getattr(self._local, "opened", False):
            self._local.opened = False
            # the hooks run in an except block when the forward raised: then the call did not end whole
            self._end(start is False and sys.exc_info()[0] is None)

    def _enter_call(self, kind: str, obj):
        if not self._recording:
            return None
        from .. import models

        if kind == "pipeline":
            self.watch(obj)
            modules = models.pipeline_phase_modules(obj)
        else:
            modules = models.generation_phase_modules(obj)
        phases = PhaseScopes(modules)
        return self._begin(kind), phases

    def _leave_call(self, token, ok: bool) -> None:
        if token is None:
            return
        opened, phases = token
        phases.remove()
        if opened and self._current is not None:
            self._end(ok)

    # -- the session -----------------------------------------------------------------------------
    def __enter__(self) -> Profile:
        global _ACTIVE
        if _ACTIVE is not None:
            raise ProfileError(f"a profile is already recording in this process (into {_ACTIVE.path})")
        import torch

        # Kineto prints two lines per profiler window to stderr, at a level above its
        # errors: on the CPU it is quiet; on a GPU its warnings say when kernels were lost,
        # so they are read off stderr (phprof.tracing.kinetolog). A level the user chose stays.
        cuda = self.device.startswith("cuda")
        kinetolog.choose_level(cuda)
        if cuda and not torch.cuda.is_available():
            raise ProfileError(f"device {self.device!r} requested, but torch sees no CUDA GPU here (torch "
                               f"{torch.__version__}, built {'with' if torch.version.cuda else 'without'} CUDA)")
        if cuda and torch.profiler.ProfilerActivity.CUDA not in torch.profiler.supported_activities():
            raise ProfileError(
                f"torch.profiler cannot record CUDA kernels here (torch {torch.__version__} supports "
                f"{', '.join(a.name for a in torch.profiler.supported_activities())}: built without Kineto's CUPTI "
                "support): the run's energy could not be split by kernels")
        if cuda and self.sensor_gpu is not None:
            raise ProfileError(f"sensor_gpu={self.sensor_gpu!r} is for a run off the GPU: {self.device} is measured "
                               "on its own NVML board, found by its UUID")
        try:
            found = [measuring_gpu(d, self.source_name) for d in self.devices]
        except DeviceError as e:
            raise ProfileError(str(e)) from None
        gpus = [g for g, _ in found]
        self._identity = found[0][1]
        # which power device (its NVML board's readings) measures each CUDA device: the attribution's map
        self._cuda_devices = {d: f"gpu{g}" for d, (g, _) in zip(self.devices, found) if g is not None}
        if len(set(self._cuda_devices.values())) < len(self._cuda_devices):
            raise ProfileError(f"devices {', '.join(self.devices)} are measured on the same board "
                               f"({', '.join(f'{d}: NVML GPU {g}' for d, g in zip(self.devices, gpus))}): give each "
                               "GPU once")
        gpu = gpus[0] if len(gpus) == 1 else (gpus if all(g is not None for g in gpus) else None)
        self._power = power = open_source(self.source_name, self.device, gpu=self.sensor_gpu if gpu is None else gpu)
        self._cuda = cuda
        sensor = self._sensor = power.windowed_sensor()
        self._breaker = AliasBreaker(sensor.period_s) if self.anti_alias and sensor is not None else None
        if self._make_folder:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._writer = TraceWriter(self.path, self._meta(power), overwrite=self.overwrite)
        except (OSError, FileExistsError) as e:
            raise ProfileError(str(e)) from None
        self._recorder = Recorder(self._writer, power, self._complete, self.scopes.is_scope, self._tags,
                                  self._signals)
        self._recorder.cuda = cuda
        _ACTIVE = self
        self._signals.install()
        try:
            power.start()
            self._signals.sleep(self.idle_s)
            self._recorder.start(self._recorder.add_idle(power.drain()))
            if self.warmup is not None and not self.stopping:
                self.warmup()
            if self.measure is not None and not self.stopping:
                self._measurement_pass(*self.measure)
            if self._cuda:
                _synchronize(torch, self.devices)
            self._start_profiler(torch)
        except BaseException as e:
            self._finish(_status_of(type(e), e))
            raise
        return self

    def _measurement_pass(self, n: int, run_one) -> None:
        """``n`` calls of ``run_one()`` with the profiler off (no hooks, no
        profiler: the power source only) and the same anti-aliasing pauses:
        their spans go to the file's measurement pass, their readings to its
        power log, and their energy is measured once the counter has updated."""
        import torch

        rows = np.zeros(n, INFERENCE_DTYPE)
        rows["window"] = -1
        breaker = AliasBreaker(self._sensor.period_s) if self._breaker is not None else None
        done = 0
        for i in range(n):
            if self.stopping:
                break
            began, t0 = time.perf_counter(), self._recorder.now_ns()
            run_one()
            if self._cuda:
                _synchronize(torch, self.devices)  # the span ends with its last kernel
            t1 = self._recorder.now_ns()
            rows[i] = (i, t0, t1, -1, t0, t1, -1)  # no profiler: its kernels are not counted (-1)
            done += 1
            if breaker is not None:
                now = time.perf_counter()
                self._signals.sleep(breaker.pause_after(now - began, now))
            if self.progress is not None:
                self.progress(done, n + (self.expected or 0))
        rows = rows[:done]
        self._progress_base = done
        self._recorder.add_power(self._power.drain())
        self._recorder.add_measured(rows)
        self._measured = (rows, breaker.paused_s if breaker is not None else 0.0)

    def _start_profiler(self, torch) -> None:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if self._cuda:
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self._schedule = self._recorder.schedule = Windows(first=min(10, self.expected or 10),
                                                           budget=self.events_per_window, total=self.expected,
                                                           warmup=self.window_warmup, window_s=self.window_s)
        # torch warns that each cycle clears the last one's events: per-window clearing is the design
        warnings.filterwarnings("ignore", message=".*Profiler clears events", category=UserWarning)
        self._prof = torch.profiler.profile(activities=activities, schedule=self._schedule,
                                            on_trace_ready=self._recorder.on_trace_ready)
        if self._cuda:
            self._recorder.kineto_log = kinetolog.KinetoLog(echo=kinetolog.user_level())
            self._recorder.kineto_log.start()
        self._prof.__enter__()
        self.started_ns = self._recorder.now_ns()
        self._recorder.began(self.started_ns)
        self._clocks = ClockProbes(self._recorder.now_ns, lambda: self.started_ns)
        self._clocks.install()
        self.scopes.install()
        self._entries.install()
        self._recording = True

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._finish(_status_of(exc_type, exc))
        if exc_type is None and self._recorder is not None and self._recorder.failure is not None:
            raise ProfileError(self._recorder.failure)  # found in the last window (the file is closed, failed)
        return False

    def _finish(self, status: str) -> None:
        """Saves the last window and closes the file (once)."""
        global _ACTIVE
        if self.summary is not None:
            return
        self.finishing = True
        self._signals.critical = True
        notes: list[str] = []
        writer = self._writer
        try:
            try:
                self._stop_recording()
            except KeyboardInterrupt:
                status = "interrupted"
                notes.append("the last profiler window was lost: the save was aborted")
            finally:
                self._stop_kineto_log()
            if self._recorder is not None and self._recorder.failure is not None:
                status = "failed"
                notes.append(self._recorder.failure)
            if self._signals.requested is not None and status == "complete":  # stopped by Ctrl-C or SIGTERM
                status = "interrupted"
            if self._clocks is not None:
                self._clocks.at_end(status == "complete")
                self._clocks.remove()
            if self._power is not None and self._power.running:
                # a counter update after the last window bounds its end (not waited for when aborting)
                self._recorder.add_power(self._power.stop(settle_s=0 if self._signals.aborted else SETTLE_S))
            if self._recorder is not None:
                self._recorder.finish()
            self.summary = self._summary(status, notes)
            writer.update_meta(self._meta_at_end())
        finally:
            if writer is not None:
                writer.close(status, self.summary.as_dict() if self.summary else None)
            self._signals.restore()
            _ACTIVE = None

    def _stop_kineto_log(self) -> None:
        log = self._recorder.kineto_log if self._recorder is not None else None
        if log is not None:
            self._recorder.kineto_log = None
            self._recorder.add_kineto_lines(log.stop())

    def _stop_recording(self) -> None:
        was_recording, self._recording = self._recording, False
        self.ended_ns = self._recorder.now_ns() if self._recorder is not None else time.time_ns()
        self._entries.remove()
        if self._current is not None:  # an inference the program never finished
            cur, self._current = self._current, None
            cur.scope.__exit__(None, None, None)
            self._cut.add(cur.index)
        self.scopes.remove()
        for p in self._phases:
            p.remove()
        if was_recording:
            if self._cuda:
                import torch

                _synchronize(torch, self.devices)
            self._prof.__exit__(None, None, None)  # saves the window in progress
            self._recorder.write_modules(self.scopes.module_rows())

    # -- what the file says ------------------------------------------------------------------------
    def _meta(self, power: PowerSource) -> dict:
        import torch

        versions = {"phprof": __version__, "torch": torch.__version__, "python": platform.python_version(),
                    "cuda": torch.version.cuda}
        for lib in ("transformers", "diffusers", "numpy", "h5py"):
            module = sys.modules.get(lib)
            if module is not None or lib in ("numpy", "h5py"):
                try:
                    versions[lib] = (module or __import__(lib)).__version__
                except (ImportError, AttributeError):
                    pass
        sensor_devices, driver = power.device_names()
        meta = dict(self.meta)
        options = {"device": self.device, "source": self.source_name, "inference_rule": self.rule,
                   "idle_s": self.idle_s, "anti_alias": self.anti_alias, "events_per_window": self.events_per_window,
                   "window_warmup": self.window_warmup, "window_s": self.window_s,
                   **meta.pop("options", {})}
        return run_meta(
            model=meta.pop("model", ""), task=meta.pop("task", ""), device=self.device,
            device_name=_device_name(self.device),
            sensor={"source": power.name, "settings": power.settings, "channels": [c.name for c in power.channels],
                    "devices": sensor_devices, "power_limits_w": power.power_limits()},
            versions=versions, options=options, driver=driver, host=platform.node(), recorded_by=self.recorded_by,
            **({"device_identity": self._identity} if self._identity else {}),
            **({"cuda_devices": self._cuda_devices} if self._cuda_devices else {}),
            **({"devices": list(self.devices)} if len(self.devices) > 1 else {}),
            device_ids=power.device_ids(), **({"distributed": self.rank.as_meta()} if self.rank else {}), **meta)

    def _models(self) -> list[dict]:
        out = []
        for root in self.scopes.roots:
            m = root.module
            config = getattr(m, "config", None)
            out.append({"name": root.name, "class": type(m).__name__,
                        "name_or_path": getattr(config, "name_or_path", "") or "",
                        "parameters": sum(p.numel() for p in m.parameters())})
        return out

    def _meta_at_end(self) -> dict:
        out = {"models": self._models()}
        if self._recorder is not None and self._recorder.kineto_messages:
            out["kineto_messages"] = dict(self._recorder.kineto_messages)  # Kineto's warnings and errors, counted
        if self._clocks is not None and (self._clocks.probes or self._clocks.failed):
            out["clock"] = self._clocks.as_meta()
        if not self.meta.get("model"):
            out["model"] = " + ".join(m["name_or_path"] or m["class"] for m in out["models"]) or "(no model ran)"
        return out

    def _used(self, parts: list[Measurement], notes: list[str] | None = None) -> list[Measurement]:
        """Of several GPUs recorded, the energies of those the run's device events ran on
        (a GPU it did not use is not in its energy; ``notes`` says which)."""
        ran = self._recorder.kernel_devices if self._recorder is not None else {}
        if not self._cuda or len(self._cuda_devices) < 2 or not ran:
            return parts
        used = {dev for cuda, dev in self._cuda_devices.items()
                if (int(cuda.split(":")[1]) if ":" in cuda else 0) in ran}
        idle = [f"{dev} ({cuda})" for cuda, dev in self._cuda_devices.items() if dev not in used]
        if idle and notes is not None:
            notes.append(f"{', '.join(idle)} ran none of the run's device events: not in its energy")
        gpus = set(self._cuda_devices.values())  # a host zone measured beside them (RAPL) stays
        return [p for p in parts if p.device in used or p.device not in gpus]

    def _unmeasured_devices(self, kernel_devices: dict[int, int]) -> list[str]:
        """Where the kernels ran that this run did not measure (a model over several GPUs
        recorded with one): their energy is not in the run's."""
        if not self._cuda or not kernel_devices:
            return []
        measured = {int(d.split(":")[1]) if ":" in d else 0 for d in self.devices if d.startswith("cuda")}
        missed = {d: n for d, n in sorted(kernel_devices.items()) if d not in measured}
        if not missed:
            return []
        every = ",".join(str(d) for d in sorted(set(kernel_devices) | measured))
        return [f"device events ran on {', '.join(f'cuda:{d} ({n})' for d, n in missed.items())}, which this run "
                f"did not measure: their energy is not in the run's (record every device the model uses: --gpus "
                f"{every})"]

    def _host_notes(self, power: PowerSource) -> list[str]:
        """What a GPU run recorded of its host besides the GPU, or why not."""
        gpus = [d for d in dict.fromkeys(c.device for c in power.channels) if d.startswith("gpu")]
        host = [d for d in dict.fromkeys(c.device for c in power.channels) if not d.startswith("gpu")]
        if not gpus:
            return []
        if host:
            return [f"the host's {', '.join(host)} energy (RAPL counters, read by the same thread) is recorded "
                    f"beside {', '.join(gpus)}: the energy is their sum; `phprof report` keeps the CPU's whole, "
                    "not per layer"]
        if self.source_name == "auto":
            from ..sources.rapl import default_zones

            return [f"no CPU or DRAM energy recorded: {default_zones()[1]}"]
        return []

    def _rule_text(self) -> str:
        counts = {k: v for k, v in self._counts.items() if v}
        if not counts:
            return "none: no module ran" if not self.scopes.roots else "none recorded"
        parts = ", ".join(f"{n} {_OWNERS[k]}" for k, n in counts.items())
        if set(counts) == {"mark"}:
            return f"the program's prof.inference() spans ({parts})"
        if "mark" not in counts:
            return f"each outermost call, the program marked none ({parts})"
        return f"each outermost call until the program's first prof.inference() mark, then its marks ({parts})"

    def _summary(self, status: str, notes: list[str]) -> TraceSummary:
        rec, power, sensor = self._recorder, self._power, self._sensor
        span = sum((e - s) for s, e in rec.spans) / 1e9
        own = sum(int((e - s).sum()) for s, e in zip(rec.inference_starts, rec.inference_ends)) / 1e9
        recording_s = (self.ended_ns - self.started_ns) / 1e9 if hasattr(self, "started_ns") else None
        if status == "interrupted":
            why = "aborted" if self._signals.aborted else "interrupted"
            whole = self._next - len(self._cut) - self._warmed
            notes.append(f"{why} after {whole}{f' of {self.expected}' if self.expected else ''} inferences: the file "
                         f"holds {rec.inferences_written}"
                         + ("; the last window was dropped" if rec.dropped_windows else ""))
        if self._cut:
            notes.append(f"{len(self._cut)} inferences cut short (an exception or an interrupt) were left out")
        if self._warmed:
            notes.append(f"{self._warmed} inferences ran as the profiler's warm-up steps, {self.window_warmup} before "
                         "each window (so that each starts from a working device, not one idled by the last save), "
                         "and were not recorded; their spans are stored, as the saves' are, so that the attribution "
                         "does not read them as idle time")
        if self.window_saves_s:
            saves = np.array(self.window_saves_s)
            notes.append(f"{len(saves)} profiler windows saved, {saves.sum():.2f} s in all (median "
                         f"{np.median(saves):.3f} s each: torch stopping, reading its events, writing them), between inferences and outside "
                         "the windows' spans")
        if self._nested:
            notes.append(f"{self._nested} prof.inference() spans inside another inference were part of it")
        if rec.inferences_written == 0 and recording_s is not None:
            ran = "ran no torch.nn.Module" if not self.scopes.roots else "marked no whole inference"
            readings = " and the power readings" if power.channels else ""
            notes.append(f"the program {ran}: the file holds its {recording_s:.2f} s of run{readings}, nothing "
                         "to attribute per layer")
        if self._breaker is not None and self._breaker.paused_s:
            notes.append(f"anti-aliasing pauses between inferences: {self._breaker.paused_s:.2f} s in all")
        if power.channels and span > 0:
            notes.append(f"the energy covers the windows' spans, {span:.2f} s, of which {span - own:.2f} s "
                         f"({(span - own) / span:.0%}) lies between inferences (loop overhead or the program's own "
                         "work, anti-aliasing pauses)")
        if rec.outside:
            notes.append(f"{rec.outside} profiler events fell outside every inference and were not stored")
        notes += rec.kernel_notes()
        notes += self._unmeasured_devices(rec.kernel_devices)
        if self.scopes.dynamic:
            notes.append(f"{self.scopes.dynamic} calls of modules made during a forward (nn.ReLU()(x), say) are "
                         "part of their caller's scope")
        notes += [f"not recognised, so its calls count as module calls: {m}" for m in self._entries.missed]
        notes += self._rank_notes
        if self._clocks is not None:
            notes += [f"clock probe failed ({f})" for f in self._clocks.failed]
            if self.rank is not None and self.rank.world_size > 1 and not self._clocks.probes \
                    and not self._clocks.failed:
                notes.append("no clock probe: the program made no process group while recorded; the merge aligns "
                             "ranks of one host by its clock, not those of other hosts")
        if not power.channels:
            notes.append("no power sensor (source 'none'): time only, energy not measured")
        notes += self._host_notes(power)
        if rec.instant_updates and rec.spans and sensor is not None:
            updates = np.concatenate(rec.instant_updates)
            centres = updates - int((sensor.lag_s + sensor.window_s / 2) * 1e9)
            cov = phase_coverage(centres, np.concatenate(rec.inference_starts), np.concatenate(rec.inference_ends))
            notes.append(cov.describe() + f" ({sensor.source})")
        measured = None
        if self._measured is not None:
            rows, paused = self._measured
            measured = MeasuredPass(len(rows), float((rows["end_ns"] - rows["start_ns"]).sum()) / 1e9,
                                    float(rows["end_ns"].max() - rows["start_ns"].min()) / 1e9 if len(rows) else 0.0,
                                    _sum_energy(self._used(rec.measured_energies), over="the measurement pass's span"),
                                    paused)
        elif self.recorded_by == "phprof trace" and rec.inferences_written:
            notes.append("no measurement pass (--no-measure-pass): the energy per inference includes the profiler's "
                         "own cost")
        source = source_text(power)
        meta = self.meta
        model = meta.get("model") or self._meta_at_end().get("model", "")
        used = self._used(rec.energies, notes)
        return TraceSummary(
            self.path, status, model, meta.get("task", ""), rec.inferences_written, own, span,
            _sum_energy(used), notes, device_energy=_by_device(used), device=",".join(self.devices),
            device_name=" + ".join(dict.fromkeys(_device_name(d) for d in self.devices)),
            device_chosen=self.device_chosen,
            source=source, inference_rule=self._rule_text(), recording_s=recording_s,
            recording_energy=rec.run_energy(self.started_ns, self.ended_ns) if recording_s is not None else [],
            measured=measured, window_saves_s=list(self.window_saves_s),
            paused_s=self._breaker.paused_s if self._breaker is not None else 0.0)


def _status_of(exc_type, exc) -> str:
    if exc_type is None:
        return "complete"
    if issubclass(exc_type, (KeyboardInterrupt, Terminated)):
        return "interrupted"
    if issubclass(exc_type, SystemExit) and exc is not None and exc.code in (None, 0):
        return "complete"
    return "failed"


def _synchronize(torch, devices: list[str]) -> None:
    """Waits for every recorded CUDA device's kernels (a model split over GPUs runs on each)."""
    for d in devices:
        if d.startswith("cuda"):
            torch.cuda.synchronize(d)


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device).index or 0)
    return platform.processor() or platform.machine()


def _by_device(parts: list[Measurement]) -> list[Measurement]:
    """The windows' energies added up per device, in the order the devices come."""
    devices = list(dict.fromkeys(p.device for p in parts))
    return [add_measurements([p for p in parts if p.device == d], d) for d in devices]


def _sum_energy(parts: list[Measurement], over: str | None = None) -> Measurement | None:
    """The run's energy over its stored inferences: the windows' energies added up
    (``over``: what else the parts cover, a span of their own)."""
    if not parts:
        return None
    devices = sorted({p.device for p in parts})
    m = add_measurements(parts, "+".join(devices), seconds=sum(p.seconds for p in parts) / len(devices))
    return dataclasses.replace(m, notes=m.notes + (
        f"over {over}" if over else "summed over the profiler windows' inferences; the pauses between windows, "
        "while phprof saves a window, are left out",
        "the device's whole draw, idle (static) power included: `phprof report` splits it, and per layer"))
