"""`phprof trace`: a model's inferences under the power sampler and torch.profiler, into one file."""
from __future__ import annotations

import signal
import sys

import click

from . import command, echo_summary, recording_options


@command(name="trace")
@click.argument("model_id")
@click.option("--task", help="One of the study's tasks (see `phprof models`); default: the model's own task.")
@click.option("-n", "--inferences", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Inferences to trace (the study's unit is 1,000).")
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True,
              help="Inferences run first and not recorded.")
@click.option("--measure-pass/--no-measure-pass", default=True, show_default=True,
              help="First run the inferences with the profiler off (the power sampler only, the same anti-aliasing "
              "pauses): the time and energy per inference without the profiler's own cost. The profiled pass then "
              "gives the split by layer, scaled to it, and `phprof report` shows the profiler's overhead.")
@click.option("--measure-inferences", type=click.IntRange(min=1),
              help="Inferences of the measurement pass (default: as many as --inferences).")
@click.option("--window-warmup", type=click.IntRange(min=0), default=1, show_default=True,
              help="Inferences run before each profiler window with the profiler on, not recorded (more are run, "
              "so that --inferences are recorded), so that a window does not start on a device idled by the last "
              "window's save. Their spans and the saves' are stored: the report gives each its own row, (window "
              "warm-up) and (window save), outside the inferences' energy.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Trace file to write "
              "(default: traces/MODEL.TASK.TIME.h5).")
@click.option("--overwrite", is_flag=True, help="Replace the output file if it exists.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--seq-len", type=click.IntRange(min=1), help="Input tokens (default: the task's datasets).")
@click.option("--new-tokens", type=click.IntRange(min=1), help="Generated tokens per inference (generation tasks).")
@click.option("--steps", type=click.IntRange(min=1), help="Denoising steps (image generation).")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), default="float32", show_default=True)
@click.option("--device", help="cpu, cuda or cuda:N (default: the first CUDA device torch sees, else the CPU).")
@click.option("--weights", type=click.Choice(["random", "pretrained"]), default="random", show_default=True,
              help="random: built offline from the architecture's config (energy depends on shapes, not "
              "values); pretrained: from the local Hugging Face cache or a model directory.")
@click.option("--size", type=click.Choice(["full", "tiny"]), default="full", show_default=True,
              help="tiny: the architecture shrunk to 2 narrow layers, for quick checks (its energy is not "
              "the real model's).")
@recording_options
def trace_command(model_id, task, inferences, warmup, measure_pass, measure_inferences, window_warmup, output,
                  overwrite, batch_size, seq_len, new_tokens, steps, dtype, device, weights, size, source, anti_alias,
                  idle_s) -> None:
    """Run MODEL_ID's inferences under the power sampler and torch.profiler, into one HDF5 file.

    MODEL_ID is a model of the study (see `phprof models`), a path to a config.json, or a
    model directory. Every module's forward, every inference and every generation or
    denoising step is recorded as a scope; power readings are stored with their times.
    By default the inferences run twice: a measurement pass with the profiler off (the
    run's time and energy per inference, per 1,000) and the profiled pass (the split by
    layer, scaled to the first); the summary and `phprof report` give both and the
    profiler's overhead in time and energy.
    Ctrl-C (or SIGTERM) stops the run after the current inference and leaves a valid
    file of the inferences done, with the status "interrupted"; a second one aborts,
    dropping the profiler window being saved.
    """
    from ..api import trace

    total = inferences + ((measure_inferences or inferences) if measure_pass else 0)
    with click.progressbar(length=total, label=f"tracing {model_id}", file=sys.stderr,
                           show_eta=True, show_pos=True) as bar:
        def progress(done, total):
            bar.update(done - bar.pos)

        summary = trace(
            model_id, task, inferences=inferences, warmup=warmup, output=output, batch_size=batch_size,
            seq_len=seq_len, new_tokens=new_tokens, steps=steps, dtype=dtype, device=device, weights=weights,
            size=size, source=source, anti_alias=anti_alias, idle_s=idle_s, progress=progress,
            overwrite=overwrite, window_warmup=window_warmup, measure_pass=measure_pass,
            measure_inferences=measure_inferences,
        )
    # the file is closed: a Ctrl-C from now on ends phprof at once, as the default SIGINT does, with no
    # KeyboardInterrupt raised into whatever Python runs at exit
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    echo_summary(summary)
    if summary.status != "complete":
        sys.exit(130)
