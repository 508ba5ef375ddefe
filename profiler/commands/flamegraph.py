"""`phprof flamegraph`: per-layer energy as a flamegraph page, folded stacks, speedscope or Perfetto."""
from __future__ import annotations

import click

from . import command, echo_written, writable

# the flamegraph view's formats (phprof.render; a test checks they agree): listed here so that
# `phprof --help` need not import the renderers
FORMATS = ["html", "folded", "speedscope", "perfetto"]


@command()
@click.argument("trace_files", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True,
              help="File to write; its name chooses the format: .html (interactive flamegraph), .folded "
              "(folded stacks, integer microjoules), .speedscope.json, .perfetto.json or .trace.json (kernel "
              "timeline with the power samples as a counter track).")
@click.option("--format", "fmt", type=click.Choice(FORMATS),
              help="The format, whatever the file name.")
@click.option("--min-share", type=click.FloatRange(min=0, max=0.5), default=0.001, show_default=True,
              help="HTML: frames below this share of the total are collapsed into one per parent.")
@click.option("--sensor", "calibration", type=click.Path(dir_okay=False),
              help="A sensor calibration (`phprof calibrate` file, or JSON with period_s, window_s, lag_s), as "
              "for `phprof report`; default: the trace's GPU's calibration if there is one.")
@click.option("--recompute", is_flag=True, help="Attribute again even if the file holds results.")
def flamegraph(trace_files, output, fmt, min_share, calibration, recompute) -> None:
    """Per-layer energy as a flamegraph: widths are joules, frames the module path down to the kernel or op.

    The HTML file is self-contained (no network): click a frame to zoom, search to
    highlight, hover for joules per inference with the interval, calls and time; switch
    widths between energy and time; flip to an icicle. Energies are estimates (see
    `phprof report`); the attribution is computed and stored in the trace file if needed.
    A trace without power readings gives the same views by time (folded and speedscope
    counts are then integer microseconds), titled "time, energy not measured".

    A distributed job's rank files (several files, a glob or their folder) give its
    merged timeline (Perfetto only): one process per rank, every rank's events on rank 0's
    clock (the offsets the ranks measured), a power track per physical GPU, and
    `distributedInfo` (backend, world size).
    """
    from ..api import flamegraph as frames
    from ..api import is_rank_set, merge
    from ..render import RenderError, format_of, render

    if is_rank_set(trace_files):
        if (fmt or format_of("flamegraph", output)) != "perfetto":
            raise click.UsageError("a job's rank files merge into a Perfetto timeline only (-o NAME.perfetto.json); "
                                   "for one rank's flamegraph give its file")
        writable(output)
        echo_written(render(merge(trace_files, recompute=recompute), output, fmt="perfetto"))
        return
    trace_file = trace_files[0]

    if fmt is None:
        try:
            fmt = format_of("flamegraph", output)
        except RenderError as e:
            raise click.UsageError(f"{e}; or give --format") from None
    writable(output)
    view = frames(trace_file, calibration=calibration, recompute=recompute)
    path = render(view, output, fmt=fmt, min_share=min_share)
    echo_written(path)
    if not view.results.has_energy:
        click.echo(f"note: time only, energy not measured ({view.results.why_no_energy})", err=True)
