"""phprof: a per-layer energy profiler for machine-learning inference.

The data flows one way: record (``phprof.sources``: power sensors sampled by a
native thread) -> store -> analyse -> render. This release has the recording
stage: see ``phprof.sources`` and the ``phprof devices`` command.
"""
__version__ = "0.1.0"
