"""The trace file: one HDF5 file per run. The only module that reads or writes it.

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
    /inferences         (index i4, start_ns i8, end_ns i8, window i4)
    /phases             (inference i4, name u4, start_ns i8, end_ns i8)
    /windows            (index i4, first_inference i4, last_inference i4,
                         start_ns i8, end_ns i8, events i8)
    /modules            (path u4, type u4, parameters i8, calls i8): every module of
                        the model (named_modules order), its class, its own
                        parameters, and how often its forward ran while traced
                        (0: never called, e.g. a ModuleList; it has no scope)
    /power/readings     the power source's readings (phprof.sources.READING_DTYPE)
    /power/clock_pairs  (monotonic_ns, realtime_ns) pairs taken by the source
    /power              attrs: source, channels (JSON), settings (JSON), dropped
    /idle/...           the same as /power, for the idle period sampled before the run
    /summary            attrs: the end-of-run summary (JSON values)
    /results            written by `phprof report` (phprof.attribution): attrs: the
                        attribution's summary and roll-ups (JSON values); one
                        subgroup per table (layers, groups, phases, kernels,
                        inferences), one 1-D dataset per column, strings UTF-8

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

from . import __version__
from .sources import READING_DTYPE, Channel, PowerLog

FORMAT = "phprof-trace"
SCHEMA_VERSION = 1

EVENT_DTYPE = np.dtype(
    [
        ("start_ns", "<i8"),
        ("end_ns", "<i8"),
        ("name", "<u4"),  # row of /strings
        ("stack", "<u4"),  # row of /stacks: the scopes the event ran in
        ("inference", "<i4"),  # -1: outside any inference
        ("op", "<i4"),  # device events: row of the CPU op that launched them; -1 otherwise
        ("stream", "<i4"),  # CUDA stream, or the CPU thread id for CPU events
        ("device", "<i2"),  # -1: CPU
        ("kind", "u1"),  # phprof.tracing.kineto.Kind
    ]
)
STACK_DTYPE = np.dtype([("parent", "<u4"), ("scope", "<u4")])
INFERENCE_DTYPE = np.dtype([("index", "<i4"), ("start_ns", "<i8"), ("end_ns", "<i8"), ("window", "<i4")])
PHASE_DTYPE = np.dtype([("inference", "<i4"), ("name", "<u4"), ("start_ns", "<i8"), ("end_ns", "<i8")])
WINDOW_DTYPE = np.dtype(
    [
        ("index", "<i4"),
        ("first_inference", "<i4"),
        ("last_inference", "<i4"),
        ("start_ns", "<i8"),
        ("end_ns", "<i8"),
        ("events", "<i8"),
    ]
)

MODULE_DTYPE = np.dtype([("path", "<u4"), ("type", "<u4"), ("parameters", "<i8"), ("calls", "<i8")])

_TABLES = {
    "stacks": STACK_DTYPE,
    "events": EVENT_DTYPE,
    "inferences": INFERENCE_DTYPE,
    "phases": PHASE_DTYPE,
    "windows": WINDOW_DTYPE,
    "modules": MODULE_DTYPE,
}
_CHUNK_ROWS = 16384
_STR = h5py.string_dtype("utf-8")


def event_rows(events: np.ndarray, keep: np.ndarray, inference: np.ndarray, names: np.ndarray | None = None,
               stacks: np.ndarray | None = None, base: int = 0) -> np.ndarray:
    """The /events rows of the kept events of a Kineto event table
    (``phprof.tracing.kineto.EVENT_DTYPE``). ``inference``: per event; ``names``,
    ``stacks``: maps of the table's name and stack ids to the file's (None: the same
    ids); ``base``: rows the file already holds. An op link to an event not kept
    becomes -1."""
    new_row = np.cumsum(keep) - 1 + base
    k = events[keep]
    out = np.zeros(len(k), dtype=EVENT_DTYPE)
    out["start_ns"], out["end_ns"] = k["start_ns"], k["end_ns"]
    out["name"] = k["name"] if names is None else names[k["name"]]
    out["stack"] = k["stack"] if stacks is None else stacks[k["stack"]]
    out["inference"] = inference[keep]
    op = k["op"].astype(np.int64)
    has_op = op >= 0
    out["op"] = -1
    out["op"][has_op] = np.where(keep[op[has_op]], new_row[op[has_op]], -1)
    out["stream"], out["device"], out["kind"] = k["stream"], k["device"], k["kind"]
    return out


class TraceFileError(Exception):
    """A file that is not a readable phprof trace."""


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

    def append_window(self, events: np.ndarray, inferences: np.ndarray, phases: np.ndarray, window) -> None:
        f = self._f
        _append(f["events"], events)
        _append(f["inferences"], inferences)
        _append(f["phases"], phases)
        _append(f["windows"], np.array([window], dtype=WINDOW_DTYPE))

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
    results: dict | None = None  # {"summary": {...}, "tables": {name: {column: array}}}; None: not attributed yet

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    def stack_path(self, stack_id: int) -> list[str]:
        """The scopes of a stack, outermost first."""
        path = []
        while stack_id:
            parent, scope = self.stacks[stack_id]
            path.append(self.strings[scope])
            stack_id = int(parent)
        return path[::-1]


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
        raise FileNotFoundError(f"no such trace file: {path}")
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
        inferences=f["inferences"][:],
        phases=f["phases"][:],
        windows=f["windows"][:],
        modules=f["modules"][:] if "modules" in f else np.empty(0, MODULE_DTYPE),
        power=_power_log(f.get("power")),
        idle=_power_log(f.get("idle")),
        summary=_read_attrs(f["summary"].attrs) if "summary" in f else {},
        results=_read_results(f["results"]) if "results" in f else None,
    )


def _read_results(g: h5py.Group) -> dict:
    tables = {}
    for name, t in g.items():
        tables[name] = {c: (np.array([x.decode() if isinstance(x, bytes) else x for x in t[c][:]], dtype=object)
                            if t[c].dtype.kind == "O" else t[c][:]) for c in t.attrs.get("columns", list(t))}
    return {"summary": _read_attrs(g.attrs), "tables": tables}


def write_results(path: str | Path, summary: dict, tables: dict[str, dict[str, np.ndarray | list]]) -> None:
    """Stores an attribution's results in a trace file's /results group, replacing
    any earlier one. ``tables``: per table, its columns (equal lengths)."""
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
        _json_attrs(g.attrs, summary)
        for name, columns in tables.items():
            t = g.create_group(name)
            t.attrs["columns"] = list(columns)
            for c, values in columns.items():
                column = np.asarray(values) if len(values) else np.zeros(0)  # an empty column: numbers
                if column.dtype.kind in "OU":
                    t.create_dataset(c, data=column.astype(object), dtype=_STR)
                else:
                    t.create_dataset(c, data=column)
