"""Every output phprof writes, behind one interface (``phprof.render.base``):

- a report of one trace (``report``): text, markdown, JSON, an HTML page;
- a flamegraph of one trace (``flamegraph``, ``formats``): an interactive HTML
  page, folded stacks, speedscope, a Perfetto timeline;
- a comparison of runs (``compare``): text, markdown, JSON, an HTML page with a
  differential flamegraph.

``frames`` builds the frame tree the flamegraphs draw; ``palette`` and
``page.css`` are the one palette and stylesheet of every page; ``units`` how a
figure reads.

    import phprof
    phprof.render(view, "markdown")        # the text
    phprof.render(view, "report.html")     # a file, its format chosen by its name

(the package itself is callable: ``phprof.render(...)`` is ``phprof.render.render(...)``).
"""
import sys

from .base import RENDERERS, RenderError, Renderer, format_names, format_of, render, renderers
from .views import Flamegraph, Report

__all__ = ["RENDERERS", "Flamegraph", "RenderError", "Renderer", "Report", "format_names", "format_of", "render",
           "renderers"]


class _CallableModule(sys.modules[__name__].__class__):
    """``phprof.render`` is this package and the library's call at once:
    ``phprof.render(view, "flame.html")`` is :func:`~phprof.render.base.render`."""

    def __call__(self, view, fmt_or_path, fmt=None, **options):
        return render(view, fmt_or_path, fmt, **options)


sys.modules[__name__].__class__ = _CallableModule
