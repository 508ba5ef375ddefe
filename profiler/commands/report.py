"""`phprof report`: where a trace's energy went."""
from __future__ import annotations

import click

from . import command
from ._report_options import echo_regions, print_report, report_options


@command()
@click.argument("trace_file", type=click.Path(dir_okay=False))
@report_options
@click.option("--recompute", is_flag=True, help="Attribute again even if the file holds results.")
@click.option("--html", "html", type=click.Path(dir_okay=False),
              help="Also write the report as one self-contained HTML page: the summary, the energy "
              "flamegraph, power over time with the sensor's windows, and energy against time per layer "
              "(a trace without energy: its time flamegraph).")
def report(trace_file, form, top, region, carbon_intensity, pue, training_kwh, calibration, list_regions,
           recompute, html) -> None:
    """Where a trace's energy went: totals, per inference and per 1,000, carbon, top layers.

    The first report of a trace attributes its measured energy to layers (windowed least
    squares over the power sensor's updates, with bootstrap intervals) and stores the
    results in the file (group /results); later reports read them back. Every figure
    says whether it was measured or estimated, and how. A trace without power readings
    gets its time per layer, and why.
    """
    if list_regions:
        echo_regions()
        return
    print_report(trace_file, form, top, region, carbon_intensity, pue, training_kwh, calibration, recompute, html)
