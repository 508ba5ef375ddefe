"""The trace file's vocabulary: what its tables hold and what their values mean.

Everything that reads or makes rows of a trace file (the tracer, the importer,
the attribution, the Perfetto export) takes these names from here: the kinds
of event and their Chrome-trace categories, the table layouts, the names of
the scopes phprof opens (inferences, phases) and of torch.profiler's step
annotations, the walk up the scope-stack trie, and the builders of the
``/meta`` and ``/summary`` attributes. Nothing here touches HDF5 (that is
``phprof.store.file``), so any stage can import it cheaply.
"""
from __future__ import annotations

from enum import IntEnum

import numpy as np

FORMAT = "phprof-trace"
SCHEMA_VERSION = 1


class Kind(IntEnum):
    """What an event is; stored in ``EVENT_DTYPE['kind']``."""

    CPU_OP = 0  # an aten operator or other dispatched op
    USER_ANNOTATION = 1  # a record_function span on a CPU thread
    KERNEL = 2
    MEMCPY = 3
    MEMSET = 4
    GPU_ANNOTATION = 5  # a record_function span mirrored on a stream
    RUNTIME = 6  # CUDA runtime / driver calls: launches and other API calls


#: The kinds that run on a device and are launched by a runtime call.
DEVICE_KINDS = (Kind.KERNEL, Kind.MEMCPY, Kind.MEMSET)
#: Every kind whose event sits on a device's stream rather than a CPU thread.
ON_DEVICE = (*DEVICE_KINDS, Kind.GPU_ANNOTATION)
#: The Chrome-trace category Kineto writes for each kind (and phprof's Perfetto export).
CATEGORY = {
    Kind.CPU_OP: "cpu_op",
    Kind.USER_ANNOTATION: "user_annotation",
    Kind.KERNEL: "kernel",
    Kind.MEMCPY: "gpu_memcpy",
    Kind.MEMSET: "gpu_memset",
    Kind.GPU_ANNOTATION: "gpu_user_annotation",
    Kind.RUNTIME: "cuda_runtime",
}

# Scopes phprof opens around the work (record_function annotations), and
# torch.profiler's own step annotations: none of them is a module path.
INFERENCE_PREFIX = "phprof.inference."  # + the inference's index
PHASE_PREFIX = "phprof.phase."  # + prefill, decode.<k>, encode, denoise.<k>...
STEP_PREFIX = "ProfilerStep#"  # + the step number of prof.step()


def is_module_scope(name: str) -> bool:
    """Whether an annotation name is a module's scope (a path like ``transformer.h.3.attn``)."""
    return not name.startswith("phprof.") and not name.startswith(STEP_PREFIX)


def phase_kind(name: str) -> str:
    """The kind of a phase: ``decode.3`` and ``decode`` are both ``decode``."""
    return name.split(".")[0]


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
        ("kind", "u1"),  # Kind
    ]
)
STACK_DTYPE = np.dtype([("parent", "<u4"), ("scope", "<u4")])
# An inference's span is where its energy is read: on a GPU, from its first launch to its last
# device event's end (its kernels run on after its CPU span, see phprof.tracing.kineto.device_spans);
# on the CPU, its CPU span. cpu_start_ns, cpu_end_ns: the CPU span (its annotation); kernels: its kernel
# events (-1: unknown, a file written before these columns).
INFERENCE_DTYPE = np.dtype([("index", "<i4"), ("start_ns", "<i8"), ("end_ns", "<i8"), ("window", "<i4"),
                            ("cpu_start_ns", "<i8"), ("cpu_end_ns", "<i8"), ("kernels", "<i4")])
PHASE_DTYPE = np.dtype([("inference", "<i4"), ("name", "<u4"), ("start_ns", "<i8"), ("end_ns", "<i8")])
WINDOW_DTYPE = np.dtype(
    [
        ("index", "<i4"),
        ("first_inference", "<i4"),
        ("last_inference", "<i4"),
        ("start_ns", "<i8"),
        ("end_ns", "<i8"),
        ("events", "<i8"),
        # the window's device events (kernels, memcpys, memsets) and how they joined (-1: unknown,
        # a file written before these columns): those with no launching runtime call, with no CPU
        # op, with no inference (not stored); its kernels; its inferences with no kernel at all
        ("device_events", "<i8"),
        ("without_launch", "<i8"),
        ("without_op", "<i8"),
        ("without_inference", "<i8"),
        ("kernels", "<i8"),
        ("kernelless", "<i4"),
        ("capture_stopped", "u1"),  # Kineto said it stopped recording device activity in this window
    ]
)
#: phprof's own work between profiler windows, on the device's time line but in no inference: the
#: profiler's warm-up steps before a window (inferences that run, not recorded) and the saves of windows
#: (torch stopping, phprof reading and writing the events). The attribution gives each kind its own
#: power, so that neither is read as idle time (``phprof.attribution.timeline``).
PROFILER_WORK_DTYPE = np.dtype([("kind", "u1"), ("start_ns", "<i8"), ("end_ns", "<i8")])


class ProfilerWork(IntEnum):
    """What a /profiler_work span was; stored in ``PROFILER_WORK_DTYPE['kind']``."""

    WINDOW_WARMUP = 0  # an inference run as a profiler warm-up step before a window, not recorded
    WINDOW_SAVE = 1  # a window's save


MODULE_DTYPE = np.dtype([("path", "<u4"), ("type", "<u4"), ("parameters", "<i8"), ("calls", "<i8")])
# an inference a program named or tagged (``prof.inference("warm", batch=8)``): its name, and its tags as JSON
INFERENCE_TAG_DTYPE = np.dtype([("index", "<i4"), ("name", "<u4"), ("tags", "<u4")])

#: the units of every stored time and reading
UNITS = {"time": "ns, CLOCK_REALTIME", "energy_counter": "per channel (mJ/uJ)", "power": "mW"}


def stack_path(stacks: np.ndarray, strings, stack_id: int) -> list[str]:
    """The scopes of a stack of the trie (rows ``(parent, scope)``, row 0 the
    root), outermost first; [] for the root."""
    path = []
    i = int(stack_id)
    while i:
        parent, scope = stacks[i]
        path.append(strings[int(scope)])
        i = int(parent)
    return path[::-1]


def event_rows(events: np.ndarray, keep: np.ndarray, inference: np.ndarray, names: np.ndarray | None = None,
               stacks: np.ndarray | None = None, base: int = 0) -> np.ndarray:
    """The /events rows of the kept events of a Kineto event table
    (``phprof.tracing.kineto.KINETO_EVENT_DTYPE``). ``inference``: per event; ``names``,
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


def run_meta(*, model: str, task: str, device: str, device_name: str, sensor: dict, versions: dict,
             **more) -> dict:
    """The ``/meta`` attributes every trace file has, and ``more`` of the run's:
    ``sensor`` holds the power source's name, settings and channels."""
    return {"model": model, "task": task, "device": device, "device_name": device_name, **more,
            "sensor": sensor, "units": dict(UNITS), "versions": versions}


def run_summary(*, status: str, model: str, task: str, inferences: int, inference_s: float, span_s: float,
                energy, notes: list[str], device: str = "", device_name: str = "", source: str = "",
                **more) -> dict:
    """The ``/summary`` attributes: what a run (or an import) measured.
    ``energy``: a :class:`phprof.sources.Measurement` over the inferences'
    span (None without a sensor); ``device``, ``device_name``: where it ran;
    ``source``: the power source and what it read; ``more``: what a recording
    session adds (how inferences were found, the recording's time and energy)."""
    e = energy
    joules = None if e is None else e.joules
    return {
        "status": status,
        "model": model,
        "task": task,
        "inferences": inferences,
        "inference_s": inference_s,
        "span_s": span_s,
        "seconds_per_inference": inference_s / inferences if inferences else float("nan"),
        "energy_j": joules,
        "energy_method": None if e is None else e.energy.method_text,
        "energy_kind": None if e is None else e.kind,
        "energy_uncertainty_j": None if e is None else e.uncertainty_j,
        "energy_low_j": None if e is None else e.low_j,  # the bound the truth lies in (high: None unbounded)
        "energy_high_j": None if e is None else e.high_j,
        "joules_per_inference": None if joules is None or not inferences else joules / inferences,
        "notes": list(notes) + (list(e.notes) if e else []),
        "device": device,
        "device_name": device_name,
        "power_source": source,
        **more,
    }
