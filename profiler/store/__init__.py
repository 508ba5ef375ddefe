"""The store: one HDF5 file per run, and the only code that reads or writes it.

``phprof.store.schema``: what the trace file's tables hold (event kinds,
layouts, scope names, the /meta and /summary builders); ``phprof.store.results``:
the typed results of an attribution, which the file keeps in /results;
``phprof.store.file``: the HDF5 reading and writing.
"""
from .file import Trace, TraceFileError, TraceHeader, TraceWriter, load, load_header, write_results
from .schema import (CATEGORY, DEVICE_KINDS, EVENT_DTYPE, FORMAT, INFERENCE_DTYPE, INFERENCE_PREFIX,
                     INFERENCE_TAG_DTYPE, MODULE_DTYPE, ON_DEVICE, PHASE_DTYPE, PHASE_PREFIX, PROFILER_WORK_DTYPE,
                     SCHEMA_VERSION, STACK_DTYPE, STEP_PREFIX, WINDOW_DTYPE, Kind, ProfilerWork, event_rows, is_module_scope, phase_kind, run_meta,
                     run_summary, stack_path)

__all__ = [
    "CATEGORY", "DEVICE_KINDS", "EVENT_DTYPE", "FORMAT", "INFERENCE_DTYPE", "INFERENCE_PREFIX", "INFERENCE_TAG_DTYPE",
    "MODULE_DTYPE", "ON_DEVICE", "PHASE_DTYPE", "PHASE_PREFIX", "PROFILER_WORK_DTYPE", "ProfilerWork", "SCHEMA_VERSION", "STACK_DTYPE", "STEP_PREFIX", "WINDOW_DTYPE", "Kind",
    "Trace", "TraceFileError", "TraceHeader", "TraceWriter", "event_rows", "is_module_scope", "load", "load_header", "phase_kind", "run_meta",
    "run_summary", "stack_path", "write_results",
]
