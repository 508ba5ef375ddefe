"""Tracing: recording a workload under the profiler and the power sampler.

``phprof.tracing.session``: one recording session around any code (the
sampler, torch.profiler in windows, the trace file), which everything below
records through; ``phprof.tracing.recorder``: each profiler window streamed
into the file; ``phprof.tracing.run``: a model of the catalogue in phprof's
own loop (``phprof trace``); ``phprof.tracing.program``: a user's program run
as plain ``python`` would (``phprof run``); ``phprof.tracing.frameworks``:
``generate()`` and diffusers pipeline calls as inferences;
``phprof.tracing.scopes``: the module, inference and phase scopes a session
opens; ``phprof.tracing.aliasing``: the pauses that keep a
windowed sensor from aliasing with the inferences; ``phprof.tracing.kineto``:
a Kineto Chrome trace as numpy tables, kernels joined to their CPU ops and
scopes; ``phprof.tracing.importing``: a trace recorded elsewhere (Kineto JSON
and a power log) into a trace file.
"""
from __future__ import annotations

from .kineto import KINETO_EVENT_DTYPE, KinetoTrace, load_kineto

__all__ = ["KINETO_EVENT_DTYPE", "KinetoTrace", "load_kineto"]
