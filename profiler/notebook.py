"""The notebook magic: ``%load_ext phprof``, then

    %%phprof [-o FILE] [--source S] [--gpus G] [--idle SECONDS] [--inferences RULE] [--no-anti-alias]
    ...the cell's code...

profiles the cell (a :func:`phprof.profile` session around it) and shows,
in the cell's output, the run's summary, the report's (energy per layer, or
time where no sensor measured energy) and the interactive flamegraph: the
self-contained page of ``phprof flamegraph``, in an ``iframe`` so its script
and style stay its own. ``%phprof_report FILE`` and ``%phprof_flamegraph
FILE`` show the same for a trace file.

IPython is needed here only (``pip install 'phprof[notebook]'``); nothing
else in phprof imports this module.
"""
from __future__ import annotations

import shlex
from html import escape
from pathlib import Path

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.display import HTML, display

from . import api
from .errors import PhprofError
from .render import render

IFRAME_HEIGHT = 620


def flamegraph_cell(path: str | Path, height: int = IFRAME_HEIGHT) -> str:
    """A trace's flamegraph page, as HTML for an output cell: the whole page in an
    iframe's ``srcdoc`` (no file, no network)."""
    page = render(api.flamegraph(path), "html")
    return (f'<iframe srcdoc="{escape(page, quote=True)}" style="width: 100%; height: {height}px; border: 0" '
            f'title="phprof flamegraph of {escape(str(path))}"></iframe>')


def report_cell(path: str | Path) -> str:
    """A trace's report as preformatted text."""
    return f"<pre>{escape(render(api.report(path), 'text'))}</pre>"


def summary_cell(summary) -> str:
    return f"<pre>{escape(render(summary, 'text'))}</pre>"


def _options(line: str) -> tuple[dict, bool]:
    """The ``%%phprof`` line's options (those of ``phprof run``), and whether to draw the flamegraph."""
    words = shlex.split(line)
    out: dict = {}
    flame = True
    i = 0
    while i < len(words):
        w = words[i]
        value = words[i + 1] if i + 1 < len(words) else None
        if w in ("-o", "--output", "--source", "--gpus", "--idle", "--inferences") and value is None:
            raise PhprofError(f"%%phprof: {w} needs a value")
        if w in ("-o", "--output"):
            out["output"] = value
        elif w == "--source":
            out["source"] = value
        elif w == "--gpus":
            out["gpus"] = value
        elif w == "--idle":
            out["idle_s"] = float(value)
        elif w == "--inferences":
            out["inferences"] = value
        elif w == "--no-anti-alias":
            out["anti_alias"] = False
            i -= 1
        elif w == "--overwrite":
            out["overwrite"] = True
            i -= 1
        elif w == "--no-flamegraph":
            flame = False
            i -= 1
        else:
            raise PhprofError(f"%%phprof: unknown option {w!r} (-o FILE, --source, --gpus, --idle, --inferences, "
                              "--no-anti-alias, --overwrite, --no-flamegraph)")
        i += 2
    return out, flame


@magics_class
class PhprofMagics(Magics):
    """``%%phprof``, ``%phprof_report``, ``%phprof_flamegraph`` (see the module's docstring)."""

    @cell_magic
    def phprof(self, line: str, cell: str):
        """Profile this cell: %%phprof [-o FILE] [--source auto|nvml|rapl|none] [--gpus auto|N|N,M|all|none]
        [--idle SECONDS] [--inferences auto|marks|calls] [--no-anti-alias] [--overwrite] [--no-flamegraph]"""
        try:
            options, flame = _options(line)
            if api.active() is not None:  # the kernel itself runs under `phprof run`
                raise PhprofError(f"%%phprof: this process is already recorded ({api.active().recorded_by}, into "
                                  f"{api.active().path}); run the cell without %%phprof")
            session = api.profile(**options)  # default output: traces/profile.TIME.h5
            session.recorded_by = "%%phprof"
            session.__enter__()
        except (PhprofError, ValueError) as e:
            print(f"Error: {e}")
            return None
        result = None
        try:
            result = self.shell.run_cell(cell, store_history=False)
        finally:
            error = result.error_in_exec if result is not None else KeyboardInterrupt()
            session.__exit__(type(error) if error is not None else None, error, None)
        summary = session.summary
        parts = [summary_cell(summary)]
        if summary.inferences:
            parts.append(report_cell(summary.path))
            if flame:
                parts.append(flamegraph_cell(summary.path))
        display(HTML("\n".join(parts)))
        return None

    @line_magic
    def phprof_report(self, line: str):
        """The report of a trace file: %phprof_report FILE"""
        return self._show(line, report_cell)

    @line_magic
    def phprof_flamegraph(self, line: str):
        """The interactive flamegraph of a trace file: %phprof_flamegraph FILE"""
        return self._show(line, flamegraph_cell)

    def _show(self, line: str, cell) -> None:
        words = shlex.split(line)
        if len(words) != 1:
            print("Error: give one trace file")
            return None
        try:
            display(HTML(cell(words[0])))
        except PhprofError as e:
            print(f"Error: {e}")
        return None


def load_ipython_extension(ipython) -> None:
    ipython.register_magics(PhprofMagics)
