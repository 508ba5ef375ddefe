"""phprof: a per-layer energy profiler for machine-learning inference.

The data flows one way: record (``phprof.sources``: power sensors sampled by a
native thread; ``phprof.tracing``: a model's inferences under torch.profiler)
-> store (``phprof.store``: one HDF5 file per run) -> analyse -> render.

    import phprof
    summary = phprof.trace("gpt2", inferences=100)
    trace = phprof.load(summary.path)
"""
__version__ = "0.1.0"


def trace(model, task=None, **options):
    """Runs a model's inferences under the power sampler and torch.profiler; see
    :func:`phprof.tracing.run.trace` for the options."""
    from .tracing.run import trace as _trace

    return _trace(model, task, **options)


def load(path):
    """Reads a trace file (see :mod:`phprof.store`)."""
    from .store import load as _load

    return _load(path)
