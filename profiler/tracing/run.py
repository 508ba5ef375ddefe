"""A model of the catalogue, its inferences run under a recording session.

The run: resolve and build the model, synthesise the task's inputs, then in
one :class:`phprof.tracing.session.Profile` (which samples idle power, runs
the warm-up unrecorded, runs the measurement pass with the profiler off,
records the profiled inferences window by window into the trace file and
closes it): one marked inference per loop turn, with the task's phases.

Ctrl-C or SIGTERM ends the run after the current inference: the file is
valid and marked ``interrupted``.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import PhprofError
from .recorder import EVENTS_PER_WINDOW
from .session import Profile, ProfileError, Terminated, TraceSummary, default_device, default_output

DTYPES = ("float32", "float16", "bfloat16")

__all__ = ["DTYPES", "TraceError", "TraceSummary", "trace"]


class TraceError(PhprofError):
    """A run that cannot start: bad model, task, shapes, device or output."""


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
    device: str | None = None,
    weights: str = "random",
    size: str = "full",
    source: str = "auto",
    idle_s: float = 2.0,
    anti_alias: bool = True,
    events_per_window: int = EVENTS_PER_WINDOW,
    measure_pass: bool = True,
    measure_inferences: int | None = None,
    window_warmup: int = 1,
    window_s: float | None = 30.0,
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
    after each inference. ``device``: default the first CUDA device torch
    sees, else the CPU (and the power source that measures it, with
    ``source="auto"``).
    ``measure_pass``: first run ``measure_inferences`` (default: as many as
    ``inferences``) with the profiler off, the power source only, and the same
    anti-aliasing pauses: the run's time and energy per inference without the
    profiler's own cost; the profiled pass then gives the split, and `phprof
    report` scales it to the measurement pass and gives the profiler's overhead.
    ``window_warmup``: inferences run as the profiler's warm-up steps before
    each window, not recorded (more are run, so that ``inferences`` are
    recorded), so that a window does not start on a device idled by the pause
    in which the last one was saved. Their spans, and the saves', are stored,
    and the attribution gives each kind a power of its own (rows
    ``(window warm-up)`` and ``(window save)``), not idle time. ``window_s``: a window holds at most about
    this many seconds of inferences (and about ``events_per_window`` events).
    """
    import torch

    from .. import models

    if inferences < 1:
        raise TraceError("--inferences must be at least 1")
    if warmup < 0:
        raise TraceError("--warmup cannot be negative")
    if measure_inferences is not None and measure_inferences < 1:
        raise TraceError("--measure-inferences must be at least 1")
    if window_warmup < 0:
        raise TraceError("--window-warmup cannot be negative")
    if setup is not None and measure_pass:
        raise TraceError("setup() hooks run once the module scopes are installed, after the measurement pass: the two "
                         "passes would run different workloads; give measure_pass=False with setup")
    chosen, device = device is None, device or default_device()
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
            models.ConfigRejected, ValueError) as e:
        raise TraceError(str(e)) from None

    path = Path(output) if output else default_output(spec.id, task)
    if output is None:
        path.parent.mkdir(parents=True, exist_ok=True)
    options = {
        "inferences": inferences, "warmup": warmup, "batch_size": batch_size, "seq_len": seq_len,
        "new_tokens": new_tokens, "steps": steps, "dtype": dtype, "weights": weights, "size": size,
        "window_warmup": window_warmup,
        "measure_inferences": (measure_inferences or inferences) if measure_pass else 0,
    }
    options["input_shapes"] = {k: list(v.shape) for k, v in inputs.items() if hasattr(v, "shape")}
    config = json.loads(json.dumps(dict(sized.config), default=str))
    meta = {"model": sized.id, "task": task, "model_source": sized.source, "config": config, "options": options,
            "config_hash": hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]}

    def run():
        return models.infer(built, task, inputs, new_tokens=new_tokens, steps=steps)

    def warm():
        for _ in range(warmup):
            run()

    session = Profile(path, device=device, source=source, inferences="marks", idle_s=idle_s, anti_alias=anti_alias,
                      events_per_window=events_per_window, overwrite=overwrite, meta=meta, warmup=warm,
                      expected=inferences, stop_at="flag", recorded_by="phprof trace",
                      progress=progress, window_warmup=window_warmup, window_s=window_s,
                      measure=(measure_inferences or inferences, run) if measure_pass else None)
    session.device_chosen = chosen
    try:
        with session as prof:
            prof.watch(built)
            if models.get_task(task).call != "generate":  # generate() calls are found with their phases
                prof.phase_modules(models.phase_modules(built, task))
            if setup is not None:
                setup(built)
            while not prof.windows_done and not prof.stopping:  # the warm-up steps before windows too
                with prof.inference():
                    run()
    except ProfileError as e:
        raise TraceError(str(e)) from None
    except (KeyboardInterrupt, Terminated):  # a second Ctrl-C or SIGTERM: the file is closed, interrupted
        pass
    return session.summary
