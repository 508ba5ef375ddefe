"""`phprof report`: where a trace's energy went."""
from __future__ import annotations

import click

from . import command
from ._report_options import echo_regions, print_report, report_options


@command()
@click.argument("trace_files", nargs=-1, required=True, type=click.Path())
@report_options
@click.option("--recompute", is_flag=True, help="Attribute again even if the file holds results.")
@click.option("--html", "html", type=click.Path(dir_okay=False),
              help="Also write the report as one self-contained HTML page: the summary, the energy "
              "flamegraph, power over time with the sensor's windows, and energy against time per layer "
              "(a trace without energy: its time flamegraph).")
def report(trace_files, form, top, region, carbon_intensity, pue, training_kwh, calibration, list_regions,
           recompute, html) -> None:
    """Where a trace's energy went: totals, per inference and per 1,000, carbon, top layers.

    The first report of a trace attributes its measured energy to layers (windowed least
    squares over the power sensor's updates, with bootstrap intervals) and stores the
    results in the file (group /results); later reports read them back. Every figure
    says whether it was measured or estimated, and how. A trace without power readings
    gets its time per layer, and why.

    The rank files of a distributed job (`torchrun ... -m phprof run`), given together
    (several files, a glob, or their folder), are merged: each physical device (GPU UUID,
    a host's CPU) counted once over the job's span, rows per rank and per device, the
    slowest rank and the waiting it causes, communication, and the ranks' clocks aligned
    to rank 0's (with the bound of each offset). A missing rank gives a merge labelled
    PARTIAL; files of different runs or a rank twice are an error.
    """
    from ..api import is_rank_set

    if list_regions:
        echo_regions()
        return
    if is_rank_set(trace_files):
        from ..api import merge
        from ..render import render

        ctx = click.get_current_context()
        given = [f"--{name.replace('_', '-')}" for name in ("top", "region", "carbon_intensity", "pue", "training_kwh")
                 if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT]
        if html or calibration or given:
            raise click.UsageError(f"{', '.join(given + ['--html'] * bool(html) + ['--sensor'] * bool(calibration))}: "
                                   "these take one trace file; the merge of a job's rank files has none of them")
        click.echo(render(merge(trace_files, recompute=recompute), form or "text"), nl=False)
        return
    print_report(trace_files[0], form, top, region, carbon_intensity, pue, training_kwh, calibration, recompute,
                 html)
