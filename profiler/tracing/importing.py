"""Traces recorded elsewhere: a torch.profiler (Kineto) trace plus a power log CSV.

Users of other tools bring the two files they already have and get a phprof
trace file (schema v1, what ``phprof trace`` writes), so that attribution and
reports run on it unchanged:

    from phprof import import_trace
    import_trace("run.pt.trace.json.gz", "power.csv", "run.h5")

The data flows one way: this module reads the foreign formats
(:func:`phprof.tracing.kineto.load_kineto` for the Chrome-trace JSON,
:func:`phprof.sources.csvlog.read_power_csv` for the CSV) and writes through
:class:`phprof.store.TraceWriter` only.

What an imported trace holds, and what it cannot know:

* inferences are the ``ProfilerStep#N`` annotations of ``prof.step()``, one per
  step, numbered 0, 1, ... in time order (``meta["profiler_steps"]`` keeps the
  N's). CPU events belong to the step whose span holds them, device events to
  the step of the CPU op (else the runtime call) that launched them; the rest
  get inference -1. A step's span is where its device work ran, from its first
  launch to its last kernel's end (its CPU span without device events; see
  :func:`phprof.tracing.kineto.device_spans`). The step annotations themselves
  are not stored as events (like phprof's own inference scopes, they are the
  /inferences table). A trace without steps is one inference spanning the
  whole trace;
* one window holds everything; there are no phases, and the modules table is
  empty (the model is unknown); every ``record_function`` annotation is a scope;
* the power log is stored under /power as source ``csv``: each row is one
  reading per value column, stamped ``t_before_ns = t_after_ns =`` the row's
  time, because when the logger's read began and ended is unknown. A counter's
  updates are therefore placed halfway between rows (the uncertainty of
  :meth:`PowerLog.energy_between` covers it), and a power value is taken to
  hold from its row until the next. There are no idle readings and no
  (monotonic, realtime) clock pairs.
"""
from __future__ import annotations

import gzip
import json
import time
import zlib
from pathlib import Path

import numpy as np

from .. import __version__
from ..clock import utc_text
from ..errors import PhprofError
from ..sources import PowerLog
from ..sources.csvlog import read_power_csv
from ..store import (DEVICE_KINDS, INFERENCE_DTYPE, PHASE_DTYPE, STACK_DTYPE, STEP_PREFIX, Kind, TraceWriter,
                     event_rows, run_meta, run_summary)
from .kineto import KinetoTrace, device_spans, load_kineto, span_of_events

__all__ = ["ClockMismatchError", "TraceImportError", "import_trace"]

class TraceImportError(PhprofError, ValueError):
    """Input that cannot be imported: what is wrong, and in which file."""


class ClockMismatchError(TraceImportError):
    """The power log and the Kineto trace do not overlap in time: different clocks."""


# ---------------------------------------------------------------- the import


def import_trace(
    kineto_path: str | Path,
    power_csv: str | Path,
    output: str | Path,
    *,
    device: str = "gpu0",
    overwrite: bool = False,
    model: str | None = None,
) -> Path:
    """Converts a torch.profiler Chrome trace (``.json`` or ``.json.gz``) and a
    power log CSV into a phprof trace file at ``output``; returns its path.

    ``device`` names the power log's device (``gpu0``: its channels become
    ``gpu0.energy`` / ``gpu0.power_instant``). ``model``: a name to record, as
    the trace cannot tell. Raises :class:`TraceImportError` (or a subclass:
    :class:`PowerCsvError`, :class:`ClockMismatchError` when the two files do
    not overlap in time) before anything is written; an existing ``output``
    without ``overwrite``, or an unwritable one, is a :class:`TraceImportError` too.
    See the module docstring for what the file holds.
    """
    kineto_path, power_csv, output = Path(kineto_path), Path(power_csv), Path(output)
    log = read_power_csv(power_csv, device)
    kt = _read_kineto(kineto_path)
    ev = kt.events
    k0, k1 = int(ev["start_ns"].min()), int(ev["end_ns"].max())
    t = log.readings["t_after_ns"]
    p0, p1 = int(t.min()), int(t.max())
    if p1 < k0 or p0 > k1:
        gap = (k0 - p1) if p1 < k0 else (p0 - k1)
        raise ClockMismatchError(
            f"the power log and the trace do not overlap in time: {kineto_path.name} runs from {utc_text(k0)} to "
            f"{utc_text(k1)}, {power_csv.name} from {utc_text(p0)} to {utc_text(p1)} ({_seconds(gap)} apart). Were they "
            "recorded on different machines or clocks, or is the power log's time zone or unit wrong?"
        )
    notes: list[str] = []
    if p0 > k0 or p1 < k1:
        covered = min(p1, k1) - max(p0, k0)
        notes.append(
            f"the power log ({utc_text(p0)} to {utc_text(p1)}) covers only {_seconds(covered)} of the trace's "
            f"{_seconds(k1 - k0)} ({utc_text(k0)} to {utc_text(k1)}): energy outside it is not measured"
        )

    events, inferences, window, steps, table_notes = _tables(kt)
    notes += table_notes
    span = (int(inferences["start_ns"].min()), int(inferences["end_ns"].max()))
    if p0 > span[0] or p1 < span[1]:
        notes.append(f"the power log does not cover every inference ({utc_text(span[0])} to {utc_text(span[1])})")
    gpu_index = int(device[3:]) if device.startswith("gpu") and device[3:].isdigit() else None
    devices_in_trace = sorted({int(d) for d in np.unique(ev["device"]) if d >= 0})
    if gpu_index is not None and devices_in_trace and gpu_index not in devices_in_trace:
        notes.append(
            f"the power log is for {device}, but the trace's device events ran on device(s) "
            f"{', '.join(map(str, devices_in_trace))}"
        )
    meta = _meta(kt, log, kineto_path, power_csv, device, gpu_index, model, steps, notes)
    summary = _summary(log, device, model, inferences, notes)

    try:
        writer = TraceWriter(output, meta, overwrite=overwrite)
    except (OSError, FileExistsError) as e:
        raise TraceImportError(str(e)) from None
    try:
        writer.append_strings(kt.names[1:])  # string 0 ("") and stack 0 (the root) the writer has
        writer.append_stacks(np.asarray(kt.stacks[1:]).astype(STACK_DTYPE))
        writer.append_window(events, inferences, np.empty(0, PHASE_DTYPE), window)
        writer.append_power(log)
    except BaseException:
        writer.close("failed")
        output.unlink(missing_ok=True)  # half an import is of no use to anyone
        raise
    writer.close("complete", summary)
    return output


def _read_kineto(path: Path) -> KinetoTrace:
    if not path.is_file():
        raise TraceImportError(f"no such Kineto trace: {path}" if not path.exists() else f"{path} is not a file")
    try:
        kt = load_kineto(path, scope_filter=lambda name: not name.startswith(STEP_PREFIX))
    except (json.JSONDecodeError, UnicodeDecodeError, gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise TraceImportError(
            f"{path} is not a torch.profiler Chrome trace (.json or .json.gz): {type(e).__name__}: {e}"
        ) from None
    except (AttributeError, TypeError) as e:  # valid JSON of another shape
        raise TraceImportError(f"{path} is JSON but not a Chrome trace with traceEvents ({e})") from None
    if not len(kt.events):
        raise TraceImportError(
            f"{path} holds no duration events of torch.profiler (cpu_op, kernel, ...); skipped: {kt.skipped or 'none'}"
        )
    if kt.names[:1] != [""] or len(kt.stacks) == 0 or tuple(kt.stacks[0]) != (0, 0):
        raise AssertionError("load_kineto's tables no longer start with the root string and stack")
    return kt


def _tables(kt: KinetoTrace):
    """Events, inferences and the one window, in the store's layout; the step numbers; notes."""
    ev = kt.events
    n = len(ev)
    is_step_name = np.array([s.startswith(STEP_PREFIX) for s in kt.names], dtype=bool)[ev["name"]]
    steps_mask = is_step_name & (ev["kind"] == Kind.USER_ANNOTATION)
    drop = is_step_name & ((ev["kind"] == Kind.USER_ANNOTATION) | (ev["kind"] == Kind.GPU_ANNOTATION))
    notes: list[str] = []

    inference = np.full(n, -1, np.int32)
    if steps_mask.any():
        st = ev[steps_mask]  # already in start order
        numbers = [_step_number(kt.names[i]) for i in st["name"]]
        infs = np.zeros(len(st), INFERENCE_DTYPE)
        infs["index"] = np.arange(len(st))
        infs["cpu_start_ns"], infs["cpu_end_ns"] = st["start_ns"], st["end_ns"]
        inference[:] = span_of_events(ev, st["start_ns"], st["end_ns"], kt.launch)
        infs["start_ns"], infs["end_ns"], infs["kernels"] = device_spans(ev, kt.launch, inference, st["start_ns"],
                                                                         st["end_ns"])
        steps = {"inferences_from": "ProfilerStep annotations", "profiler_steps": numbers}
    else:
        infs = np.zeros(1, INFERENCE_DTYPE)
        infs["start_ns"], infs["end_ns"] = int(ev["start_ns"].min()), int(ev["end_ns"].max())
        infs["cpu_start_ns"], infs["cpu_end_ns"] = infs["start_ns"], infs["end_ns"]
        infs["kernels"] = int((ev["kind"] == Kind.KERNEL).sum())
        inference[:] = 0
        steps = {"inferences_from": "the whole trace (no ProfilerStep annotations)", "profiler_steps": []}
        notes.append(
            "the trace has no ProfilerStep#N annotations (prof.step() was not called): the whole trace is "
            "one inference, so per-inference figures are for the whole trace"
        )

    keep = ~drop
    out = event_rows(ev, keep, inference)

    outside = int((out["inference"] < 0).sum())
    if outside:
        notes.append(f"{outside} of {len(out)} events lie outside every ProfilerStep (inference -1)")
    unjoined = int((keep & np.isin(ev["kind"], DEVICE_KINDS) & (ev["op"] < 0)).sum())  # no copy of the table
    if unjoined:
        notes.append(f"{unjoined} device events could not be joined to the CPU op that launched them")
    join = kt.join_stats
    window = (0, 0, len(infs) - 1, int(infs["start_ns"].min()), int(infs["end_ns"].max()), len(out),
              join["device_events"], join["device_events"] - join["with_launch"], join["unjoined"],
              int((np.isin(ev["kind"], DEVICE_KINDS) & (inference < 0)).sum()), int((ev["kind"] == Kind.KERNEL).sum()),
              int((infs["kernels"] == 0).sum()))
    steps["step_annotations_dropped"] = int(drop.sum())
    return out, infs, window, steps, notes


def _step_number(name: str) -> int:
    tail = name[len(STEP_PREFIX):]
    return int(tail) if tail.isdigit() else -1


def _seconds(ns: int) -> str:
    s = ns / 1e9
    if s >= 86400:
        return f"{s / 86400:.1f} days"
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    return f"{s:.3f} s" if s < 60 else f"{s / 60:.1f} min"


def _meta(kt, log, kineto_path, power_csv, device, gpu_index, model, steps, notes) -> dict:
    s = kt.summary()
    props = kt.device_properties
    device_name = "unknown"
    if gpu_index is not None:
        named = [p for p in props if isinstance(p, dict) and p.get("id", None) == gpu_index]
        if named and named[0].get("name"):
            device_name = str(named[0]["name"])
    unknown = [
        "task", "model configuration", "input shapes", "dtype", "module structure (no modules table)",
        "phases", "idle power", "the power logger's read brackets and sensor behaviour",
        "clock pairs (NTP steps during the run cannot be detected)",
    ]
    if model is None:
        unknown.insert(0, "model")
    kineto = {
        "schema_version": s["schema_version"],
        "trace_name": str(kt.metadata.get("traceName", "")),
        "base_time_ns": s["base_time_ns"],
        "events": s["events"],
        "kinds": s["kinds"],
        "start_ns": s["start_ns"],
        "end_ns": s["end_ns"],
        "devices": s["devices"],
        "device_names": [str(p.get("name", "")) for p in props if isinstance(p, dict)],
        "join": s["join"],
        "skipped": s["skipped"],
    }
    return run_meta(
        model=model or "unknown", task="unknown", device=f"cuda:{gpu_index}" if gpu_index is not None else device,
        device_name=device_name,
        sensor={"source": log.source, "settings": log.settings, "channels": [c.name for c in log.channels]},
        versions={"phprof": __version__}, imported=True, imported_ns=time.time_ns(), power_device=device,
        source_files={"kineto": kineto_path.name, "power_csv": power_csv.name}, kineto=kineto, **steps,
        unknown=unknown, notes=list(notes))


def _summary(log: PowerLog, device: str, model, inferences, notes) -> dict:
    """The end-of-run summary phprof trace writes, from what an import knows."""
    span = (int(inferences["start_ns"].min()), int(inferences["end_ns"].max()))
    summary = run_summary(
        status="complete", model=model or "unknown", task="unknown", inferences=len(inferences),
        inference_s=float((inferences["end_ns"] - inferences["start_ns"]).sum()) / 1e9,
        span_s=(span[1] - span[0]) / 1e9, energy=log.energy_between(device, *span), notes=notes)
    summary["notes"].append("imported trace: the device's whole draw, idle power included")
    return summary
