"""phprof: a per-layer energy profiler for machine-learning inference.

The data flows one way: record (``phprof.sources``: power sensors sampled by a
native thread; ``phprof.tracing``: a model's inferences under torch.profiler)
-> store (``phprof.store``: one HDF5 file per run) -> analyse
(``phprof.attribution``) -> render (``phprof.render``). The library's face:

    import phprof
    summary = phprof.trace("gpt2", inferences=100)      # record a model of the catalogue
    with phprof.profile("run.h5") as prof:              # or record any code (`phprof run script.py`)
        with prof.inference():
            out = pipe(batch)
    trace = phprof.load(summary.path)                    # the file, read whole
    results = phprof.results(summary.path)               # where its energy went
    text = phprof.render(phprof.report(summary.path), "text")
    phprof.render(phprof.flamegraph(summary.path), "flame.html")
    phprof.render(phprof.compare([a, b]), "compare.html")
    merged = phprof.merge("traces/")                     # a torchrun job's rank files, merged

See ``phprof.api`` for each call.
"""
__version__ = "0.1.0"

_API = ("trace", "profile", "inference", "active", "run", "load", "results", "report", "flamegraph", "compare",
        "import_trace", "grid_intensity", "merge", "rank_files")
__all__ = ["__version__", "render", "study", "study_merge", *_API]


def load_ipython_extension(ipython) -> None:
    """``%load_ext phprof``: the ``%%phprof`` cell magic, ``%phprof_report`` and
    ``%phprof_flamegraph`` (see ``phprof.notebook``; needs IPython)."""
    from .notebook import load_ipython_extension as load

    load(ipython)


def __getattr__(name):
    # the library's calls, imported on first use: `import phprof` stays cheap
    if name in _API:
        from . import api

        return getattr(api, name)
    if name in ("study", "study_merge"):  # the package phprof.study, which is callable: phprof.study(...)
        import importlib

        module = importlib.import_module(".study", __name__)
        return module if name == "study" else module.study_merge
    if name == "render":  # the package phprof.render, which is callable (see its docstring)
        import importlib

        return importlib.import_module(".render", __name__)
    raise AttributeError(f"module 'phprof' has no attribute {name!r}")
