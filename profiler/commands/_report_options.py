"""Options `phprof report` and `phprof attribute` share: output form, carbon, parity, sensor."""
from __future__ import annotations

import click


def carbon_options() -> list:
    """--region, --carbon-intensity, --pue: how energy becomes gCO2eq (`report`, `attribute`, `study`)."""
    return [
        click.option("--region", help="Grid whose carbon intensity converts energy to gCO2eq: a country code "
                     "(fr, us...), world, or a cloud region (aws:us-east-1, gcp:europe-west4...); see "
                     "--list-regions. Default: world."),
        click.option("--carbon-intensity", type=click.FloatRange(min=0, max=2000), metavar="G_PER_KWH",
                     help="Your own grid intensity in gCO2eq/kWh, instead of --region."),
        click.option("--pue", type=click.FloatRange(min=1.0), default=1.0, show_default=True,
                     help="The facility's power usage effectiveness: energy at the wall over energy of the IT."),
    ]


def report_options(f):
    options = [
        click.option("--json", "form", flag_value="json", help="Print the results as JSON (all tables)."),
        click.option("--markdown", "form", flag_value="markdown", help="Print markdown tables."),
        click.option("--top", type=click.IntRange(min=1), default=15, show_default=True,
                     help="Layers (and kernels) listed."),
        *carbon_options(),
        click.option("--training-kwh", type=click.FloatRange(min=0, min_open=True), metavar="KWH",
                     help="Training energy of the model: prints how many inferences use as much (the study's parity). "
                     "Default for the study's BLOOMz models: its published training + fine-tuning kWh."),
        click.option("--sensor", "calibration", type=click.Path(dir_okay=False),
                     help="A sensor calibration to use: a `phprof calibrate` file (lag and window refitted within "
                     "its intervals) or JSON with period_s, window_s, lag_s (used as given). Default: the "
                     "calibration of the trace's GPU in the calibration directory if there is one, else the "
                     "published model, period, lag and window fitted to the run."),
        click.option("--list-regions", is_flag=True, help="List the bundled grid intensities and exit."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def echo_regions() -> None:
    from .. import carbon

    for key, c in carbon.load_table().items():
        click.echo(f"{key:<24} {c.g_co2eq_per_kwh:>7.0f} g/kWh  {c.name} ({c.year}; {c.source})")


def print_report(path, form, top, region, carbon_intensity, pue, training_kwh, calibration, recompute=False,
                 html=None) -> None:
    """The report of a trace on stdout (and with ``html``, its page in that file)."""
    from ..api import report
    from ..render import render
    from . import echo_written, writable

    if html is not None:
        writable(html)
    view = report(path, region=region, carbon_intensity=carbon_intensity, pue=pue, training_kwh=training_kwh,
                  calibration=calibration, recompute=recompute)
    if html is not None:
        echo_written(render(view, html, fmt="html"), err=True)
    click.echo(render(view, form or "text", top=top), nl=False)
