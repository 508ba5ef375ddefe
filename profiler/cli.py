"""The `phprof` command: a thin layer of options over the library."""
from __future__ import annotations

import dataclasses
import json
import sys
import time

import click

from . import __version__
from .sources import BehaviourTally, NvmlSource, RaplSource, probe_all


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="phprof")
def main() -> None:
    """phprof: where the joules of ML inference go.

    A native thread samples the GPU's (or CPU's) power and energy counters at
    high rate and records each reading with the exact time of the driver call,
    on the clock torch.profiler uses, so that energy can later be attributed to
    kernels and layers.
    """


@main.command()
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
    found = probe_all()
    observed = _measure(found, measure) if measure else {}
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
            _echo_device(a.source, d)
        if a.source in observed:
            _echo_observed(observed[a.source], measure)
        click.echo()


def _echo_device(source: str, d: dict) -> None:
    if source == "nvml":
        click.echo(f"      GPU {d['index']}: {d['name']}  {d['uuid']}")
        for field, f in d["fields"].items():
            if f["ok"]:
                value = f"{f['value']} {f['unit']}"
                click.echo(f"        {field:<14} ok   {value:>16}  read in {f['call_us']:.0f} us")
                click.echo(f"        {'':<14}      nominal: {f['behaviour']}")
            else:
                click.echo(f"        {field:<14} {f['error'] or 'error'} (NVML code {f['status']})")
    elif source == "rapl":
        default = "" if d["default"] else " (not sampled by default: part of another zone)"
        click.echo(f"      {d['name']:<12} {d['zone']}, wraps at {d['wraps_at_uj']} uJ{default}")


def _measure(found, seconds: float) -> dict:
    """Sample each available sensor as fast as it answers for `seconds`, draining as it goes."""
    sources = {}
    for a in found:
        if not a.available:
            continue
        if a.source == "nvml":
            sources["nvml"] = NvmlSource(gpus=[d["index"] for d in a.devices], interval_s=None)
        elif a.source == "rapl":
            sources["rapl"] = RaplSource(interval_s=None)
    observed = {}
    for name, src in sources.items():
        tally = BehaviourTally(src.channels)
        with click.progressbar(length=100, label=f"sampling {name} for {seconds:g} s", file=sys.stderr) as bar:
            src.start()
            start = time.monotonic()
            end = start + seconds
            while (now := time.monotonic()) < end:
                time.sleep(min(0.05, end - now))
                tally.add(src.drain())
                bar.update(min(100, round(100 * (time.monotonic() - start) / seconds)) - bar.pos)
            tally.add(src.stop())
        observed[name] = (tally.result(), tally.dropped)
    return observed


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


if __name__ == "__main__":  # pragma: no cover
    main()
