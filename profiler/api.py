"""The library: one call per job, what the commands and a Python user call alike.

    import phprof
    summary = phprof.trace("gpt2", inferences=100)        # record a model of the catalogue
    with phprof.profile("run.h5") as prof:                 # or record any code
        out = pipe(batch)
    results = phprof.results(summary.path)                 # analyse (computed once, then read back)
    print(phprof.render(phprof.report(summary.path), "text"))
    phprof.render(phprof.flamegraph(summary.path), "flame.html")
    phprof.render(phprof.compare(["a.h5", "b.h5"]), "markdown")

Each step lives in its own package (``tracing`` records, ``store`` keeps,
``attribution`` analyses, ``render`` shows); this module only strings them
together: where results are computed or read back and stored, which defaults
a report takes, how runs are named in a comparison.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

from . import carbon
from .errors import OptionError, PhprofError, PhprofWarning
from .render import Flamegraph, Report
from .render import render  # noqa: F401  (part of the library's face: phprof.render)
from .store import Trace, TraceFileError, load, write_results
from .tracing.recorder import EVENTS_PER_WINDOW
from .store.results import Results


class StoreWarning(PhprofWarning):
    """Results computed but not stored in the trace file (it is read-only, say)."""


class CompareError(PhprofError):
    """Runs that cannot be compared."""


def trace(model, task=None, **options):
    """Runs a model's inferences under the power sampler and torch.profiler into one
    trace file and returns its summary; see :func:`phprof.tracing.run.trace`."""
    from .tracing.run import trace as run_trace

    return run_trace(model, task, **options)


def profile(output: str | Path | None = None, *, gpus="auto", source: str = "auto", inferences: str = "auto",
            idle_s: float = 2.0, anti_alias: bool = True, overwrite: bool = False,
            events_per_window: int = EVENTS_PER_WINDOW, sensor_gpu: int | str | None = None):
    """A recording session around any code, as a context manager
    (:class:`phprof.tracing.session.Profile`)::

        with phprof.profile("run.h5") as prof:
            for batch in data:
                with prof.inference():      # optional
                    out = pipe(batch)
        print(prof.summary.path)

    Every torch module that runs in the block is a scope named by its path;
    inferences are the ``prof.inference()`` spans, or each outermost call
    (``inferences="auto"``; ``"marks"``, ``"calls"`` to choose). ``gpus``:
    ``"auto"`` (the first CUDA device torch sees, else the CPU), a CUDA
    index, several (``"0,1"``, ``[0, 1]``: a model split over GPUs, each
    measured on its own board), ``"all"``, or None for the CPU; ``source``: the power source (``auto``,
    ``nvml``, ``rapl``, ``none``); ``sensor_gpu``: the NVML GPU to read when it
    is not the one the work runs on (an index, or ``"local-rank"``). Inside a
    session already recording (a script under ``phprof run``), the block joins
    it and ``output`` is not written. A rank of a distributed job writes
    ``output`` with ``.rank<r>`` before ``.h5`` (``phprof.tracing.ranks``)."""
    from .tracing.session import Profile, active

    current = active()
    if current is not None:
        warnings.warn(f"phprof.profile() inside a running profile ({current.recorded_by}): recording into "
                      f"{current.path}" + (f"; {output} is not written" if output else ""), PhprofWarning,
                      stacklevel=2)
        return _Joined(current)
    return Profile(output, device=_device_of(gpus), source=source, inferences=inferences, idle_s=idle_s,
                   anti_alias=anti_alias, overwrite=overwrite, events_per_window=events_per_window,
                   sensor_gpu=sensor_gpu)


class _Joined:
    """The session already recording, as a ``with`` block that neither starts nor ends it."""

    def __init__(self, session) -> None:
        self.session = session

    def __enter__(self):
        return self.session

    def __exit__(self, *exc) -> bool:
        return False


def parse_gpus(gpus, what: str = "gpus=") -> list[str] | None:
    """The devices a session records (or a study runs its cells on, one at a time), from
    ``gpus`` as every front end gives it (the library, ``phprof run --gpus``, ``%%phprof
    --gpus``, ``phprof study --gpus``): ``"auto"`` None (the caller's default); ``"all"``
    every CUDA device torch sees, else the CPU; ``None``, ``"none"``, ``"cpu"`` or ``[]``
    the CPU; a CUDA index or several (``1``, ``"0,2"``, ``[0, 2]``). ``what`` names the
    option in the error of a bad value."""
    if isinstance(gpus, str):
        gpus = gpus.strip()
    if gpus == "auto":
        return None
    if gpus is None or gpus in ("none", "cpu") or (isinstance(gpus, (list, tuple)) and not gpus):
        return ["cpu"]
    if gpus == "all":
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return [f"cuda:{i}" for i in range(n)] or ["cpu"]
    bad = OptionError(f"{what}{gpus!r}: give auto, all, none (the CPU), or CUDA indices (0, or 0,1 for a model "
                      "over two GPUs)")
    if isinstance(gpus, str):
        try:
            indices = [int(x) for x in gpus.split(",")]
        except ValueError:
            raise bad from None
    elif isinstance(gpus, int) and not isinstance(gpus, bool):
        indices = [gpus]
    elif isinstance(gpus, (list, tuple)) and all(isinstance(x, int) and not isinstance(x, bool) for x in gpus):
        indices = list(gpus)
    else:
        raise bad
    if min(indices) < 0:
        raise bad
    if len(set(indices)) != len(indices):
        raise OptionError(f"{what}{gpus!r}: each GPU once, indices from 0")
    return [f"cuda:{i}" for i in indices]


def _device_of(gpus) -> str | list[str] | None:
    """The device(s) a session records, from ``gpus`` as the library, ``phprof run --gpus``
    and ``%%phprof --gpus`` give it (:func:`parse_gpus`): None for
    ``"auto"`` (the session's default), one device, or the CUDA devices of a model split
    over several GPUs."""
    found = parse_gpus(gpus)
    return found if found is None or len(found) > 1 else found[0]


def inference(name: str | None = None, **tags):
    """One inference of the session recording in this process (``with
    phprof.inference(): out = pipe(x)``); outside a session it does nothing, so a
    script marked this way runs as well under plain ``python``."""
    from contextlib import nullcontext

    from .tracing.session import active

    current = active()
    return current.inference(name, **tags) if current is not None else nullcontext()


def active():
    """The session recording in this process (``phprof run``, ``phprof.profile()``,
    ``%%phprof``), or None."""
    from .tracing.session import active as current

    return current()


def run(target: str, args: Sequence[str] = (), *, module: bool = False, output: str | Path | None = None,
        **options):
    """Runs a user's program (a script's path, or with ``module`` a module's name)
    as plain ``python`` would, with ``args`` as its arguments, under a recording
    session (``options``: those of :func:`profile`); returns how it ended
    (:class:`phprof.tracing.program.ProgramExit`: its exit status, the signal it
    died of, and the session's summary). The file is closed whatever the program did."""
    from .tracing.program import Program, run_program
    from .tracing.session import Profile, default_output

    program = Program(target, tuple(args), module)
    program.check()
    if output is None:
        output = default_output(program.name)
        output.parent.mkdir(parents=True, exist_ok=True)
    gpus = options.pop("gpus", "auto")
    session = Profile(output, device=_device_of(gpus), meta={"program": program.describe()},
                      recorded_by=options.pop("recorded_by", "phprof run"), **options)
    return run_program(program, session)


def import_trace(kineto, power_csv, output, **options) -> Path:
    """A torch.profiler trace and a power log recorded elsewhere, as a trace file;
    see :func:`phprof.tracing.importing.import_trace`."""
    from .tracing.importing import import_trace as run_import

    return run_import(kineto, power_csv, output, **options)


def results(path: str | Path, *, calibration: str | Path | None = None, recompute: bool = False,
            store: bool = True) -> Results:
    """Where a trace's energy went (:class:`phprof.store.results.Results`).

    The first call attributes the trace (``phprof.attribution``) and, with
    ``store``, keeps the results in the file; later calls read them back.
    ``recompute`` attributes again; ``calibration``: a sensor calibration JSON
    (``period_s``, ``window_s``, ``lag_s``) used as given instead of the
    published model refitted to the run (always recomputes). A trace without
    usable power readings gets results of times only (``why_no_energy``)."""
    return _results(load(path), path, calibration, recompute, store)[0]


def _results(t: Trace, path, calibration, recompute: bool, store: bool, rollups=None) -> tuple[Results, bool]:
    """The trace's results and whether they were just computed (then stored with
    ``store``, with ``rollups`` for other readers of the file)."""
    from .attribution import attribute

    sensor, note = sensor_for(t, calibration)
    if t.results is not None and not recompute and calibration is None:
        if not _calibration_since(t.results, sensor):
            return t.results, False
        note = f"attributed again: {note}, newer than the results the file held"
    out = attribute(t, sensor=sensor, fit=sensor is None or sensor.window_low_s is not None)
    if note:
        out.notes.insert(0, note)
    if store and out.has_energy:
        _store(path, out, rollups)
    return out, True


def sensor_for(t: Trace, calibration: str | Path | None):
    """The sensor model a trace is attributed with, and a note saying where it came from:
    ``calibration`` (a `phprof calibrate` file or a hand-written JSON), else the
    calibration of the trace's GPU in the calibration directory, else None (the
    published model, refitted to the run)."""
    from .store.calibration import calibrated_model, find_calibration, read_sensor_file

    log = t.power
    device = log.devices[0] if log is not None and log.devices else "gpu0"
    found = log.windowed_power(device) if log is not None and log.channels else None
    field = found[0] if found else "power_instant"
    if calibration is not None:
        model, _ = read_sensor_file(calibration, field)
        return model, f"sensor model from {calibration} (--sensor)"
    gpu = ((t.meta.get("sensor") or {}).get("devices") or {}).get(device) or t.meta.get("device_name") or ""
    hit = find_calibration(gpu, t.meta.get("driver"))
    if hit is None:
        return None, ""
    cal_path, cal, differs = hit
    f = cal.of(field)
    model = calibrated_model(cal_path, cal, f) if f is not None else None
    if model is None:
        return None, (f"the calibration {cal_path} of {gpu} has no identified model of {field}: the published "
                      "model is refitted to the run")
    return model, f"sensor calibration {cal_path} ({gpu}, driver {cal.driver or 'unknown'}, field {f.field})" + \
        (f"; {differs}" if differs else "")


def _calibration_since(stored: Results, sensor) -> bool:
    """Whether the calibration directory now holds a calibration of the trace's GPU that its
    stored results were not attributed with (they were computed before it was written)."""
    if sensor is None:
        return False
    # several GPUs: each one's model
    models = [stored.sensor] if stored.sensor is not None else [d.sensor for d in stored.attributed_devices]
    return not any(m is not None and m.source.startswith(sensor.source) for m in models)


def _store(path, r: Results, rollups=None) -> None:
    try:
        write_results(path, r, rollups)
    except (PermissionError, TraceFileError) as e:
        warnings.warn(f"results not stored ({e})", StoreWarning, stacklevel=3)


def calibrate_from_log(driver_log: str | Path, schedule: str | Path | None = None, meter: str | Path | None = None,
                       *, gpu: str | None = None, driver: str | None = None, utc_offset_h: float | None = None,
                       output: str | Path | None = None):
    """A sensor calibration from a log recorded elsewhere (see
    :func:`phprof.attribution.sensor.calibrate`): ``driver_log`` an nvidia-smi-style
    CSV of the driver's power fields (or a phprof trace file: its power readings),
    ``schedule`` the load's switching marks, ``meter`` an external meter's log.
    Written to ``output``, else to the calibration directory when the GPU is known
    (so reports pick it up), else nowhere (a calibration of no named GPU is for no trace:
    nothing is written beside someone's data). Returns (calibration, path or None)."""
    from .attribution.sensor import Meter, Schedule, calibrate, log_fields
    from .sources.csvlog import NVML_FIELD_OF, read_driver_fields, read_load_marks, read_meter
    from .store.calibration import default_path, write_calibration

    driver_log = Path(driver_log)
    if driver_log.suffix == ".h5":
        t = load(driver_log)
        if t.power is None or not t.power.channels:
            raise OptionError(f"{driver_log} holds no power readings to calibrate")
        fields = log_fields(t.power, t.power.devices[0])
        names = ((t.meta.get("sensor") or {}).get("devices") or {})
        gpu = gpu or names.get(t.power.devices[0], "")
        driver = driver or t.meta.get("driver") or ""
    else:
        fields = read_driver_fields(driver_log, utc_offset_h)
    if not fields:
        raise OptionError(f"{driver_log} has no power field to calibrate")
    plan = None
    if schedule is not None:
        marks, states = read_load_marks(schedule, utc_offset_h)
        plan = Schedule.alternating(marks) if states is None else Schedule.from_states(marks, states)
    truth = Meter(*read_meter(meter, utc_offset_h)) if meter is not None else None
    how = f"from-log {driver_log.name}" + (f", schedule {Path(schedule).name}" if schedule else "") + \
        (f", meter {Path(meter).name}" if meter else "")
    cal = calibrate(fields, schedule=plan, meter=truth, gpu=gpu or "", driver=driver or "", how=how,
                    nvml_fields={k: NVML_FIELD_OF.get(k, "") for k in fields})
    if output is None and not cal.gpu:
        return cal, None
    return cal, write_calibration(cal, output if output is not None else default_path(cal.gpu, cal.driver))


def calibrate_gpu(gpu: int = 0, *, quick: bool = False, output: str | Path | None = None, progress=None,
                  load=None, library: str | None = None):
    """Calibrates GPU ``gpu``'s power fields by running the CUDA load kernels
    (``phprof.tracing.calibration``) and fitting every field against the schedule
    they ran; ``load``: another load with the same ``run`` (the tests' fake GPU).
    Written to ``output``, else to the calibration directory. Returns (calibration, path)."""
    from .attribution.sensor import Schedule, calibrate, log_fields
    from .sources import NvmlSource
    from .sources.sensors import NOMINAL_INSTANT, nominal_sensor
    from .store.calibration import default_path, write_calibration
    from .tracing.calibration import calibration_plan, record_calibration
    from .tracing.gpuload import CudaLoad, LoadUnavailable

    found = NvmlSource.probe(library)
    if not found.available:
        raise LoadUnavailable(f"no GPU to calibrate: {found.reason}")
    names = {d["index"]: d["name"] for d in found.devices}
    if gpu not in names:
        raise OptionError(f"no GPU {gpu} (GPUs: {', '.join(map(str, names))})")
    if load is None:
        load = CudaLoad(gpu)
    period = (nominal_sensor(names[gpu]) or NOMINAL_INSTANT).period_s
    plan = calibration_plan(period, quick=quick)
    rec = record_calibration(load, plan, gpu, library, progress)
    device = f"gpu{gpu}"
    fields = log_fields(rec.log, device)
    schedule = Schedule.from_states(rec.marks_ns / 1e9, rec.busy)
    idle = rec.log.energy_between(device, *rec.idle_span_ns)
    # the calibration says "energy counter": an idle power integrated from the power field is not kept
    idle_w = idle.joules / idle.seconds if idle.measured and idle.joules is not None and idle.seconds > 0 else None
    if idle_w is None:
        rec.notes.append(f"idle power not measured: {'; '.join(idle.notes) or 'no energy counter readings'}")
    cal = calibrate(fields, schedule=schedule, gpu=rec.gpu, driver=rec.driver,
                    how=f"on the GPU ({'quick ' if quick else ''}schedule of {plan.seconds:.0f} s: "
                        + "; ".join(plan.parts) + ")",
                    nvml_fields={k: k for k in fields}, idle_w=idle_w, nvml_call_us=rec.nvml_call_us,
                    notes=rec.notes)
    return cal, write_calibration(cal, output or default_path(cal.gpu, cal.driver))


def grid_intensity(region: str | None = None, g_per_kwh: float | None = None) -> carbon.CarbonIntensity:
    """The grid intensity a report converts energy to carbon with: a bundled region
    (default: world), or the user's own figure in gCO2eq/kWh."""
    if region and g_per_kwh is not None:
        raise OptionError("give --region or --carbon-intensity, not both")
    try:
        return carbon.custom(g_per_kwh) if g_per_kwh is not None else carbon.lookup(region or carbon.DEFAULT_REGION)
    except ValueError as e:
        raise OptionError(str(e)) from None


def report(path: str | Path, *, region: str | None = None, carbon_intensity: float | None = None,
           pue: float = 1.0, training_kwh: float | None = None, calibration: str | Path | None = None,
           recompute: bool = False) -> Report:
    """A trace's report: its results (computed and stored, or read back, as by
    :func:`results`) and the roll-ups a reader wants of them: per inference, per
    1,000, per token, gCO2eq at a grid's intensity (``region`` or
    ``carbon_intensity``) and a facility's ``pue``, and the training parity
    (``training_kwh``; default for the study's BLOOMz models: its published
    training + fine-tuning energy)."""
    from .attribution.excerpt import power_excerpt
    from .attribution.rollups import rollups as make_rollups
    from .attribution.rollups import study_training_kwh

    intensity = grid_intensity(region, carbon_intensity)
    t = load(path)
    r, fresh = _results(t, path, calibration, recompute, store=False)
    if not r.has_energy:
        return Report(r, None)
    if training_kwh is None:
        training_kwh = study_training_kwh(r.model)
    roll = make_rollups(r, intensity, pue, training_kwh)
    if fresh:  # stored once, with the roll-ups of this report
        _store(path, r, roll)
    return Report(r, roll, lambda: power_excerpt(t, r))


def flamegraph(path: str | Path, *, calibration: str | Path | None = None, recompute: bool = False,
               title: str | None = None) -> Flamegraph:
    """A trace's frames (module path down to the kernel or op; widths its energy, or
    its time where energy was not measured) and its timeline, to render as a page,
    folded stacks, speedscope or Perfetto."""
    t = load(path)
    r, _ = _results(t, path, calibration, recompute, store=True)
    return Flamegraph(r, t, title)


def compare(paths: Sequence[str | Path], *, recompute: bool = False, names: Sequence[str] | None = None):
    """Runs side by side per (stack, component), phase, token and parameter, each
    against the first (:class:`phprof.attribution.compare.Comparison`). Every
    trace's results are computed and stored, or read back, as by :func:`results`.
    ``names``: what to call the runs (default: their models, with the file's name
    where two runs share a model)."""
    from .attribution.compare import Run, compare as compare_runs

    if len(paths) < 2:
        raise CompareError(f"a comparison needs at least two trace files, got {len(paths)}")
    loaded = []
    for path in paths:
        try:
            t = load(path)
            r, _ = _results(t, path, None, recompute, store=True)
        except PhprofError as e:
            if str(path) not in str(e):
                e.args = (f"{path}: {e}",)
            raise
        if not r.has_energy:
            raise CompareError(f"{path}: no energy to compare ({r.why_no_energy}); `phprof report {path}` shows "
                               "its time per layer")
        loaded.append((path, t, r))
    names = list(names) if names is not None else run_names([(p, r.model or t.meta.get("model"))
                                                              for p, t, r in loaded])
    return compare_runs([Run.from_trace(t, r, name) for (_, t, r), name in zip(loaded, names)])


def rank_files(paths) -> list[Path]:
    """The rank files a merge reads: ``paths`` (one or several) are files, globs
    (``traces/run.rank*.h5``) or folders (their ``*.rank<r>.h5``), in rank order
    of their names; an OptionError for a pattern or folder that finds none."""
    import glob
    import re

    if isinstance(paths, (str, Path)):
        paths = [paths]
    found: list[Path] = []
    for p in map(str, paths):
        if Path(p).is_dir():
            hits = sorted(q for q in Path(p).glob("*.rank*.h5") if re.search(r"\.rank\d+\.h5$", q.name))
            if not hits:
                raise OptionError(f"{p} holds no rank files (NAME.rank<r>.h5)")
        elif glob.has_magic(p):
            hits = [Path(q) for q in sorted(glob.glob(p))]
            if not hits:
                raise OptionError(f"{p} matches no file")
        else:
            hits = [Path(p)]
        found += [h for h in hits if h not in found]
    return found


def is_rank_set(paths) -> bool:
    """Whether the paths a report or flamegraph was given are a job's rank files to merge
    (several files, a glob, a folder) rather than one trace."""
    import glob

    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    return len(paths) > 1 or any(Path(p).is_dir() or glob.has_magic(str(p)) for p in paths)


def merge(paths, *, recompute: bool = False):
    """The rank files of one distributed job merged (see
    :mod:`phprof.attribution.ranks`): energy per physical device counted once,
    per-rank and per-device rows, the slowest rank and the waiting it causes,
    communication, the clocks aligned to rank 0's. ``paths``: as
    :func:`rank_files` takes them. Each rank's results are computed and
    stored, or read back, as by :func:`results`."""
    from .attribution.ranks import merge as merge_ranks

    runs = []
    for path in rank_files(paths):
        t = load(path)
        r = _results(t, path, None, recompute, store=True)[0] if t.meta.get("distributed") else None
        runs.append((t, r))
    return merge_ranks(runs)


def run_names(runs: list[tuple[str, str | None]]) -> list[str]:
    """A name per run: its model, with the file's name where two runs share a model."""
    models = [m or Path(p).stem for p, m in runs]
    names = [m if models.count(m) == 1 else f"{m} ({Path(p).name})" for (p, _), m in zip(runs, models)]
    return [n if names.count(n) == 1 else f"{n} #{i + 1}" for i, n in enumerate(names)]
