"""`phprof attribute`: a trace recorded elsewhere (torch.profiler JSON and a power log), reported."""
from __future__ import annotations

from pathlib import Path

import click

from . import command
from ._report_options import echo_regions, print_report, report_options


@command(name="attribute")
@click.argument("kineto_json", type=click.Path(dir_okay=False))
@click.argument("power_csv", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Trace file to write (default: KINETO_JSON's name with .h5).")
@click.option("--overwrite", is_flag=True, help="Replace the output file if it exists.")
@click.option("--device", default="gpu0", show_default=True, help="Name of the device the power log measured.")
@report_options
def attribute_command(kineto_json, power_csv, output, overwrite, device, form, top, region, carbon_intensity, pue,
                      training_kwh, calibration, list_regions) -> None:
    """Attribute a trace recorded elsewhere: a torch.profiler JSON plus a power log CSV.

    \b
    KINETO_JSON  a Chrome-trace JSON from torch.profiler (.json or .json.gz);
                 ProfilerStep#N spans become the inferences (else the whole trace is one)
    POWER_CSV    a header line, then one row per reading: a time column
                 (timestamp_ns, timestamp_us, timestamp_ms, or timestamp_s / timestamp /
                 time in seconds: Unix epoch, CLOCK_REALTIME, the clock torch.profiler
                 uses) and power_w / power_mw (instant power) and/or energy_j /
                 energy_mj (a cumulative counter)

    Both are converted into a phprof trace file, then reported as `phprof report` does.
    """
    from ..api import grid_intensity, import_trace

    if list_regions:
        echo_regions()
        return
    grid_intensity(region, carbon_intensity)  # bad options fail before the import
    src = Path(kineto_json)
    out = Path(output) if output else src.with_name(src.name.removesuffix(".gz").removesuffix(".json") + ".h5")
    import_trace(src, Path(power_csv), out, device=device, overwrite=overwrite)
    click.echo(f"imported into {out}", err=True)
    print_report(out, form, top, region, carbon_intensity, pue, training_kwh, calibration, recompute=True)
