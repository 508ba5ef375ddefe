"""The trace file: one HDF5 file per run. The only module that reads or writes it
(the vocabulary of its tables is ``phprof.store.schema``; the results it holds,
``phprof.store.results``).

Schema version 1 (every table is a chunked, compressed, appendable dataset):

    /                   attrs: format="phprof-trace", schema_version, status
                        ("recording" | "complete" | "interrupted" | "failed"),
                        complete (bool), created_ns, phprof_version
    /meta               attrs: the run's metadata (model, config hash, task, shapes,
                        dtype, device, driver, library versions, sensor, units...);
                        nested values are JSON strings
    /strings            UTF-8 strings; events, phases and stacks refer to them by row
    /stacks             (parent u4, scope u4): the scope-stack trie; row 0 is the root,
                        every other row is its parent's stack plus one scope (a string)
    /events             EVENT_DTYPE: CPU ops, annotations, kernels, memcpy/memset
    /inferences         (index i4, start_ns i8, end_ns i8, window i4, cpu_start_ns i8,
                         cpu_end_ns i8, kernels i4): the span is the device's on a GPU
                         (first launch to last kernel end), cpu_* the CPU span (the
                         last three absent in older files: read as the span and -1)
    /phases             (inference i4, name u4, start_ns i8, end_ns i8)
    /windows            (index i4, first_inference i4, last_inference i4,
                         start_ns i8, end_ns i8, events i8, device_events i8,
                         without_launch i8, without_op i8, without_inference i8,
                         kernels i8, kernelless i4, capture_stopped u1): the
                         device events' join statistics (absent in older files: -1)
    /modules            (path u4, type u4, parameters i8, calls i8): every module of
                        the model (named_modules order; several models one after
                        the other), its class, its own parameters, and how often
                        its forward ran while traced (0: never called, e.g. a
                        ModuleList; it has no scope)
    /inference_tags     (index i4, name u4, tags u4): the inferences a program named
                        or tagged, the tags a JSON object (absent in older files)
    /profiler_work      (kind u1, start_ns i8, end_ns i8): phprof's own work between
                        windows, each span a ProfilerWork (a warm-up step before a
                        window, a window's save); absent in older files
    /measured_inferences  INFERENCE_DTYPE, window -1: the measurement pass's
                        inferences (run with the profiler off, before the
                        profiled ones; their power readings are in /power with
                        the rest); absent without a measurement pass
    /power/readings     the power source's readings (phprof.sources.READING_DTYPE)
    /power/clock_pairs  (monotonic_ns, realtime_ns) pairs taken by the source
    /power              attrs: source, channels (JSON), settings (JSON), dropped
    /idle/...           the same as /power, for the idle period sampled before the run
    /summary            attrs: the end-of-run summary (JSON values)
    /results            written by `phprof report` (phprof.attribution): attrs: the
                        results' scalars and the first report's roll-ups (JSON
                        values); one subgroup per table of rows (layers, groups,
                        leaves, kernels, components, stack_components, phases,
                        inferences), one 1-D dataset per column, strings UTF-8
                        (phprof.store.results.to_tables)

Times are CLOCK_REALTIME nanoseconds (the clock of torch.profiler and of the
power readings). A window's rows are appended and flushed together when the
window completes, so a run that is interrupted leaves every finished window
readable and the file marked incomplete.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from ..errors import PhprofError
from ..sources import READING_DTYPE, Channel, PowerLog
from . import results as _results
from .results import Results, Rollups
from .schema import (EVENT_DTYPE, FORMAT, INFERENCE_DTYPE, INFERENCE_TAG_DTYPE, MODULE_DTYPE, PHASE_DTYPE,
                     PROFILER_WORK_DTYPE, SCHEMA_VERSION, STACK_DTYPE, WINDOW_DTYPE, stack_path)

_TABLES = {
    "stacks": STACK_DTYPE,
    "events": EVENT_DTYPE,
    "inferences": INFERENCE_DTYPE,
    "phases": PHASE_DTYPE,
    "windows": WINDOW_DTYPE,
    "modules": MODULE_DTYPE,
    "inference_tags": INFERENCE_TAG_DTYPE,
}
_CHUNK_ROWS = 16384
_STR = h5py.string_dtype("utf-8")


class TraceFileError(PhprofError):
    """A file that is not a readable phprof trace."""


class TraceNotFound(TraceFileError, FileNotFoundError):
    """No file at the path given."""


def _json_attrs(attrs: h5py.AttributeManager, values: dict) -> None:
    """Numbers, booleans and plain strings as themselves; anything else (None,
    lists, dicts, and strings a reader would take for JSON) as JSON text, so that
    :func:`_read_attrs` gives back what was written."""
    for k, v in values.items():
        if isinstance(v, str):
            attrs[k] = json.dumps(v) if _looks_json(v) else v
        elif isinstance(v, (int, float, bool, np.integer, np.floating)):
            attrs[k] = v
        else:
            attrs[k] = json.dumps(v)


def _looks_json(text: str) -> bool:
    return text == "null" or text[:1] in ('[', '{', '"')


def _read_attrs(attrs: h5py.AttributeManager) -> dict:
    out = {}
    for k, v in attrs.items():
        if isinstance(v, bytes):
            v = v.decode()
        if isinstance(v, str) and _looks_json(v):
            try:
                v = json.loads(v)
            except json.JSONDecodeError:
                pass
        elif isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out


def _appendable(group: h5py.Group, name: str, dtype, shape_tail=()) -> h5py.Dataset:
    return group.create_dataset(
        name,
        shape=(0, *shape_tail),
        maxshape=(None, *shape_tail),
        dtype=dtype,
        chunks=(_CHUNK_ROWS, *shape_tail),
        compression="gzip",
        compression_opts=4,
        shuffle=True,
    )


def _append(ds: h5py.Dataset, rows) -> None:
    rows = np.asarray(rows, dtype=ds.dtype) if ds.dtype != _STR else rows
    n = len(rows)
    if n:
        ds.resize(ds.shape[0] + n, axis=0)
        ds[-n:] = rows


class TraceWriter:
    """Writes one trace file, window by window.

    Created with the run's metadata, the file is marked ``status="recording"``
    at once; :meth:`close` sets the final status. Everything appended before a
    :meth:`flush` survives an interrupted run.
    """

    def __init__(self, path: str | Path, meta: dict, overwrite: bool = False) -> None:
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path} exists (choose another -o/--output, or remove it)")
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"cannot write {self.path}: the folder {self.path.parent} does not exist")
        try:
            self._f = h5py.File(self.path, "w")
        except OSError as e:
            raise PermissionError(f"cannot write {self.path}: {e}") from None
        f = self._f
        f.attrs.update(
            format=FORMAT,
            schema_version=SCHEMA_VERSION,
            status="recording",
            complete=False,
            created_ns=time.time_ns(),
            phprof_version=__version__,
        )
        _json_attrs(f.create_group("meta").attrs, meta)
        _appendable(f, "strings", _STR)
        for name, dtype in _TABLES.items():
            _appendable(f, name, dtype)
        f["stacks"].resize(1, axis=0)  # the root stack
        f["stacks"][0] = (0, 0)
        _append(f["strings"], [""])  # string 0: the root's scope name
        self._power: dict[str, h5py.Group] = {}
        f.flush()

    @property
    def events_written(self) -> int:
        return self._f["events"].shape[0]

    def append_strings(self, strings: list[str]) -> None:
        _append(self._f["strings"], list(strings))

    def append_stacks(self, rows: np.ndarray) -> None:
        _append(self._f["stacks"], rows)

    def append_window(self, events: np.ndarray, inferences: np.ndarray, phases: np.ndarray, window,
                      tags: np.ndarray | None = None) -> None:
        f = self._f
        _append(f["events"], events)
        _append(f["inferences"], inferences)
        _append(f["phases"], phases)
        _append(f["windows"], window_row(window))
        if tags is not None:
            _append(f["inference_tags"], tags)

    def update_meta(self, values: dict) -> None:
        """Adds to the /meta attributes what is known only as the run ends (the
        models a program ran, say)."""
        _json_attrs(self._f["meta"].attrs, values)

    def append_measured(self, inferences: np.ndarray) -> None:
        """The measurement pass's inferences (profiler off): /measured_inferences."""
        f = self._f
        if "measured_inferences" not in f:
            _appendable(f, "measured_inferences", INFERENCE_DTYPE)
        _append(f["measured_inferences"], inferences)

    def append_profiler_work(self, rows: np.ndarray) -> None:
        """Spans of phprof's own work between windows (PROFILER_WORK_DTYPE): /profiler_work."""
        f = self._f
        if "profiler_work" not in f:
            _appendable(f, "profiler_work", PROFILER_WORK_DTYPE)
        _append(f["profiler_work"], rows)

    def append_modules(self, rows: np.ndarray) -> None:
        _append(self._f["modules"], rows)

    def append_power(self, log: PowerLog, group: str = "power") -> None:
        """Appends a power log chunk to /power (or /idle)."""
        g = self._power.get(group)
        if g is None:
            g = self._power[group] = self._f.create_group(group)
            _appendable(g, "readings", READING_DTYPE)
            _appendable(g, "clock_pairs", np.int64, (2,))
            g.attrs["source"] = log.source
            g.attrs["channels"] = json.dumps([c.__dict__ for c in log.channels])
            g.attrs["settings"] = json.dumps(log.settings)
            g.attrs["dropped"] = 0
        _append(g["readings"], log.readings)
        _append(g["clock_pairs"], log.clock_pairs)
        g.attrs["dropped"] = int(g.attrs["dropped"]) + log.dropped

    def flush(self) -> None:
        self._f.flush()

    def close(self, status: str, summary: dict | None = None) -> None:
        if status not in ("complete", "interrupted", "failed"):
            raise ValueError(f"unknown final status {status!r}")
        if summary:
            _json_attrs(self._f.require_group("summary").attrs, summary)
        self._f.attrs["status"] = status
        self._f.attrs["complete"] = status == "complete"
        self._f.close()


@dataclass
class Trace:
    """A trace file, read whole."""

    path: Path
    status: str
    schema_version: int
    meta: dict
    strings: list[str]
    stacks: np.ndarray
    events: np.ndarray
    inferences: np.ndarray
    phases: np.ndarray
    windows: np.ndarray
    modules: np.ndarray
    power: PowerLog | None
    idle: PowerLog | None
    summary: dict = field(default_factory=dict)
    results: Results | None = None  # the stored attribution; None: not attributed yet (or by another version)
    inference_tags: np.ndarray = field(default_factory=lambda: np.empty(0, INFERENCE_TAG_DTYPE))
    #: the measurement pass's inferences (the profiler off); empty without one
    measured_inferences: np.ndarray = field(default_factory=lambda: np.empty(0, INFERENCE_DTYPE))
    #: phprof's own work between windows (warm-up steps, saves); empty in older files
    profiler_work: np.ndarray = field(default_factory=lambda: np.empty(0, PROFILER_WORK_DTYPE))

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    def all_power(self) -> PowerLog | None:
        """The idle period's readings and the recording's, one log (the recording's alone
        where their channels differ)."""
        logs = [g for g in (self.idle, self.power) if g is not None and g.channels]
        if not logs:
            return None
        try:
            return PowerLog.concat(logs)
        except ValueError:
            return logs[-1]

    def stack_path(self, stack_id: int) -> list[str]:
        """The scopes of a stack, outermost first."""
        return stack_path(self.stacks, self.strings, stack_id)

    def inference_names(self) -> dict[int, tuple[str, dict]]:
        """The inferences a program named or tagged: index -> (name, tags)."""
        return {int(r["index"]): (self.strings[int(r["name"])], json.loads(self.strings[int(r["tags"])] or "{}"))
                for r in self.inference_tags}


def _power_log(g: h5py.Group | None) -> PowerLog | None:
    if g is None:
        return None
    channels = tuple(Channel(**c) for c in json.loads(g.attrs["channels"]))
    return PowerLog(
        source=str(g.attrs["source"]),
        channels=channels,
        readings=g["readings"][:],
        clock_pairs=g["clock_pairs"][:],
        settings=json.loads(g.attrs["settings"]),
        dropped=int(g.attrs["dropped"]),
    )


def load(path: str | Path) -> Trace:
    """Reads a trace file written by phprof (complete or not)."""
    path = Path(path)
    if not path.exists():
        raise TraceNotFound(f"no such trace file: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        if "unable to lock file" in str(e):
            raise TraceFileError(f"{path} is open for writing by another process (a trace still running?): "
                                 "try again when it has finished") from None
        raise TraceFileError(f"{path} is not a readable HDF5 file ({e})") from None
    try:
        return _read(path, f)
    except (KeyError, OSError, ValueError) as e:
        raise TraceFileError(f"{path} is damaged: {e}") from None
    finally:
        f.close()


@dataclass
class TraceHeader:
    """What a trace file says of itself without its large tables."""

    path: Path
    status: str
    meta: dict
    summary: dict
    modules: np.ndarray  # every module of the model(s): path, class, own parameters, calls

    @property
    def complete(self) -> bool:
        return self.status == "complete"


def load_header(path: str | Path) -> TraceHeader:
    """A trace file's status, /meta, /summary and /modules, its other tables left unread (cheap on a
    large trace)."""
    path = Path(path)
    if not path.exists():
        raise TraceNotFound(f"no such trace file: {path}")
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise TraceFileError(f"{path} is not a phprof trace (no format={FORMAT!r} mark)")
            return TraceHeader(path, str(f.attrs["status"]), _read_attrs(f["meta"].attrs),
                               _read_attrs(f["summary"].attrs) if "summary" in f else {},
                               f["modules"][:] if "modules" in f else np.empty(0, MODULE_DTYPE))
    except (KeyError, OSError, ValueError) as e:
        raise TraceFileError(f"{path} cannot be read: {e}") from None


def _read(path: Path, f: h5py.File) -> Trace:
    if f.attrs.get("format") != FORMAT:
        raise TraceFileError(f"{path} is not a phprof trace (no format={FORMAT!r} mark)")
    version = int(f.attrs["schema_version"])
    if version > SCHEMA_VERSION:
        raise TraceFileError(
            f"{path} has schema version {version}; this phprof reads up to {SCHEMA_VERSION}: upgrade phprof"
        )
    return Trace(
        path=path,
        status=str(f.attrs["status"]),
        schema_version=version,
        meta=_read_attrs(f["meta"].attrs),
        strings=[s.decode() if isinstance(s, bytes) else s for s in f["strings"][:]],
        stacks=f["stacks"][:],
        events=f["events"][:],
        inferences=_upgraded(f["inferences"][:], INFERENCE_DTYPE),
        phases=f["phases"][:],
        windows=_upgraded(f["windows"][:], WINDOW_DTYPE),
        modules=f["modules"][:] if "modules" in f else np.empty(0, MODULE_DTYPE),
        power=_power_log(f.get("power")),
        idle=_power_log(f.get("idle")),
        summary=_read_attrs(f["summary"].attrs) if "summary" in f else {},
        results=_read_results(f["results"]) if "results" in f else None,
        inference_tags=f["inference_tags"][:] if "inference_tags" in f else np.empty(0, INFERENCE_TAG_DTYPE),
        measured_inferences=f["measured_inferences"][:] if "measured_inferences" in f
        else np.empty(0, INFERENCE_DTYPE),
        profiler_work=f["profiler_work"][:] if "profiler_work" in f else np.empty(0, PROFILER_WORK_DTYPE),
    )


def window_row(window) -> np.ndarray:
    """A /windows row from a tuple of its first fields (index, first and last inference, start,
    end, events, then any of the join statistics); the statistics not given are unknown (-1)."""
    row = _upgraded(np.zeros(1, WINDOW_DTYPE[list(WINDOW_DTYPE.names[:len(window)])]), WINDOW_DTYPE)
    for name, value in zip(WINDOW_DTYPE.names, window):
        row[name] = value
    return row


def _upgraded(rows: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Rows of a table written before some of its columns: those columns are unknown (-1),
    an inference's CPU span is its span (files of then stored the CPU span)."""
    if rows.dtype == dtype:
        return rows
    out = np.zeros(len(rows), dtype)
    for name in dtype.names:
        if name in rows.dtype.names:
            out[name] = rows[name]
        elif name in ("cpu_start_ns", "cpu_end_ns"):
            out[name] = rows[name[4:]]
        elif dtype[name].kind == "i":
            out[name] = -1
    return out


def _read_results(g: h5py.Group) -> Results | None:
    tables = {}
    for name, t in g.items():
        tables[name] = {c: (np.array([x.decode() if isinstance(x, bytes) else x for x in t[c][:]], dtype=object)
                            if t[c].dtype.kind == "O" else t[c][:]) for c in t.attrs.get("columns", list(t))}
    return _results.from_tables(_read_attrs(g.attrs), tables)


def write_results(path: str | Path, results: Results, rollups: Rollups | None = None) -> None:
    """Stores an attribution's results (and the roll-ups a report made of them, for
    other readers of the file) in a trace file's /results group, replacing any
    earlier one. Raises PermissionError for a file that cannot be written."""
    attrs, tables = _results.to_tables(results, rollups)
    path = Path(path)
    try:
        f = h5py.File(path, "r+")
    except OSError as e:
        raise PermissionError(f"cannot write the results into {path}: {e}") from None
    with f:
        if f.attrs.get("format") != FORMAT:
            raise TraceFileError(f"{path} is not a phprof trace (no format={FORMAT!r} mark)")
        if "results" in f:
            del f["results"]
        g = f.create_group("results")
        _json_attrs(g.attrs, attrs)
        for name, columns in tables.items():
            t = g.create_group(name)
            t.attrs["columns"] = list(columns)
            for c, values in columns.items():
                if values.dtype.kind == "O":
                    t.create_dataset(c, data=values, dtype=_STR)
                else:
                    t.create_dataset(c, data=values)
