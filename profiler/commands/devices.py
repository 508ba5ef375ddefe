"""`phprof devices`: what can be measured on this machine, and why a missing source is missing."""
from __future__ import annotations

import dataclasses
import json
import sys

import click

from . import command


@command()
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.option(
    "--measure",
    type=click.FloatRange(min=0, min_open=True, max=600),
    metavar="SECONDS",
    help="Also sample every available sensor as fast as it answers for SECONDS and report, per "
    "channel, the measured cost of one read and how often its value changes.",
)
def devices(as_json: bool, measure: float | None) -> None:
    """List the power sources on this machine, what each measures, and why a missing one is missing.

    \b
    Sources:
      nvml  NVIDIA GPUs: energy counter, instant power, 1 s average (libnvidia-ml,
            or the file named by PHPROF_NVML_LIB)
      rapl  CPU package and DRAM energy counters (Linux powercap; root may be needed)
      none  wall-clock time only; energy is never measured with it

    Update periods shown without --measure are the published ones for the GPU
    family, not measurements of this GPU.
    """
    from ..sources import SOURCES, measure as sample, probe_all

    found = probe_all()
    observed = _sample(sample, found, measure) if measure else {}
    if as_json:
        out = [dataclasses.asdict(a) for a in found]
        for entry in out:
            if entry["source"] in observed:
                rows, dropped = observed[entry["source"]]
                entry["observed"] = [dataclasses.asdict(o) for o in rows]
                entry["observed_seconds"] = measure
                entry["observed_dropped"] = dropped
        click.echo(json.dumps(out, indent=2))
        return
    for a in found:
        state = "available" if a.available else "not available"
        click.echo(f"{a.source:<5} {state}" + (f": {a.reason}" if a.available else ""))
        click.echo(f"      measures: {a.measures}")
        if not a.available:
            click.echo(f"      why: {a.reason}")
        for d in a.devices:
            for line in SOURCES[a.source].device_lines(d):
                click.echo(f"      {line}")
        for d in a.unreadable:
            click.echo(f"      GPU {d['index']}: cannot be read: {d['error']}")
        if a.source in observed:
            _echo_observed(observed[a.source], measure)
        click.echo()


def _sample(sample, found, seconds: float) -> dict:
    """``phprof.sources.measure`` with a progress bar per source."""
    bars: dict[str, click.progressbar] = {}

    def progress(source: str, share: float) -> None:
        bar = bars.get(source)
        if bar is None:
            for other in bars.values():
                other.render_finish()
            bar = bars[source] = click.progressbar(length=100, label=f"sampling {source} for {seconds:g} s",
                                                   file=sys.stderr)
        bar.update(round(100 * share) - bar.pos)

    try:
        return sample(seconds, found, progress)
    finally:
        for bar in bars.values():
            bar.render_finish()


def _echo_observed(observed, seconds: float) -> None:
    rows, dropped = observed
    click.echo(f"      measured here over {seconds:g} s, polling as fast as the sensor answers:")
    if dropped:
        click.echo(f"      ({dropped} readings dropped: the buffer filled between drains; figures cover the rest)")
    click.echo(f"        {'channel':<22} {'reads/s':>9} {'read p50':>9} {'read p99':>9} {'changes':>8}  change interval")
    for o in rows:
        if o.change_interval_ms_median is None:
            interval = "no change seen" if o.changes == 0 else "one change seen"
        else:
            interval = (
                f"median {o.change_interval_ms_median:.1f} ms "
                f"(p10 {o.change_interval_ms_p10:.1f}, p90 {o.change_interval_ms_p90:.1f})"
            )
        errors = f", {o.errors} errors" if o.errors else ""
        click.echo(
            f"        {o.channel:<22} {o.reads_per_s:>9.0f} {o.call_us_p50:>7.1f}us {o.call_us_p99:>7.1f}us "
            f"{o.changes:>8}  {interval}{errors}"
        )
