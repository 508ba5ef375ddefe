"""`phprof calibrate`: a GPU's power sensor measured, or fitted from a log recorded elsewhere."""
from __future__ import annotations

import click

from . import command


@command()
@click.option("--from-log", "driver_log", type=click.Path(dir_okay=False),
              help="Fit a log recorded elsewhere instead of running a load: an nvidia-smi-style CSV of the driver's "
              "power fields, or a phprof trace file (its power readings).")
@click.option("--schedule", "marks", type=click.Path(dir_okay=False),
              help="With --from-log: the load's switching marks (CSV, a time column; on, off, on... or a state column).")
@click.option("--meter", type=click.Path(dir_okay=False),
              help="With --from-log: an external meter's log (CSV, a time column and watts): the true power, so "
              "window and lag are fitted against it, and the driver's gain and offset.")
@click.option("--utc-offset", type=float, metavar="HOURS",
              help="Time zone of nvidia-smi's YYYY/MM/DD timestamps (default: this machine's).")
@click.option("--gpu", "gpu_index", type=click.IntRange(min=0), default=0, show_default=True,
              help="On a GPU: which one to calibrate.")
@click.option("--gpu-name", help="With --from-log: the GPU's name as NVML reports it, so that reports of its traces "
              "pick this calibration up (default: the trace file's, else unknown).")
@click.option("--driver", "driver_version", help="With --from-log: the driver version the log was recorded with.")
@click.option("--quick", is_flag=True, help="On a GPU: a short schedule (~15 s instead of ~60 s), wider intervals.")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Calibration file to write (default: one per GPU and driver in the calibration directory, "
              "$PHPROF_CALIBRATION_DIR or ~/.config/phprof/calibrations, where reports look for it; a log of an "
              "unnamed GPU is written only here).")
@click.option("--json", "as_json", is_flag=True, help="Print the calibration as JSON.")
def calibrate(driver_log, marks, meter, utc_offset, gpu_index, gpu_name, driver_version, quick, output,
              as_json) -> None:
    """Measure a GPU's power sensor: each field's update period and jitter, averaging window,
    lag, the load's levels as the field reads them, rise time and settling after a load step.

    \b
    On a GPU: CUDA load kernels (a compute burner and an idle spin, switched on the GPU's
    own timer) run square waves at several periods, including ones near the sensor's update
    period, and steps, while every NVML field is sampled at the sampler's full rate; idle
    power and the cost of one NVML read per field are measured too.
    --from-log: the same fit on a log recorded elsewhere (--schedule, --meter).

    Every figure comes with its 90% interval; one that reaches a limit of the search says so,
    and one the data cannot identify (a load that aliases with the update period, a fit no
    better than the readings' spread, a step that fixes only window + lag) is reported as not
    identified, with the reason. `phprof report`, `flamegraph` and `compare` then use the
    calibration of the trace's GPU and say which file they used.
    """
    from ..api import calibrate_from_log, calibrate_gpu
    from ..render import render
    from . import writable

    if output is not None:
        writable(output)
    if driver_log is None:
        if marks or meter:
            raise click.UsageError("--schedule and --meter go with --from-log")
        cal, path = calibrate_gpu(gpu_index, quick=quick, output=output,
                                  progress=lambda what: click.echo(what, err=True))
    else:
        cal, path = calibrate_from_log(driver_log, marks, meter, gpu=gpu_name, driver=driver_version,
                                       utc_offset_h=utc_offset, output=output)
    click.echo(render(cal, "json" if as_json else "text"), nl=False)
    click.echo(f"written: {path}" if path is not None else
               "not written: the GPU is unnamed (--gpu-name files it where reports find it; -o FILE keeps it)",
               err=True)
