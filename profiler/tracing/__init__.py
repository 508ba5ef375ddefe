"""Tracing: running a model under torch.profiler, and reading what it wrote.

``phprof.tracing.kineto`` turns a Kineto Chrome trace into numpy tables of
events, with kernels joined to their CPU ops and scope stacks.
"""
from __future__ import annotations

from .kineto import DEVICE_KINDS, EVENT_DTYPE, STACK_DTYPE, Kind, KinetoTrace, load_kineto

__all__ = ["DEVICE_KINDS", "EVENT_DTYPE", "STACK_DTYPE", "Kind", "KinetoTrace", "load_kineto"]
