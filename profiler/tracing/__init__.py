"""Tracing: recording a workload under the profiler and the power sampler.

``phprof.tracing.run``: a model's inferences under torch.profiler, streamed to
a trace file window by window; ``phprof.tracing.scopes``: the module, inference
and phase scopes it opens; ``phprof.tracing.aliasing``: the pauses that keep a
windowed sensor from aliasing with the inferences; ``phprof.tracing.kineto``:
a Kineto Chrome trace as numpy tables, kernels joined to their CPU ops and
scopes; ``phprof.tracing.importing``: a trace recorded elsewhere (Kineto JSON
and a power log) into a trace file.
"""
from __future__ import annotations

from .kineto import KINETO_EVENT_DTYPE, KinetoTrace, load_kineto

__all__ = ["KINETO_EVENT_DTYPE", "KinetoTrace", "load_kineto"]
