"""`phprof trace`: a model's inferences under the power sampler and torch.profiler, into one file."""
from __future__ import annotations

import sys

import click

from . import command


@command(name="trace")
@click.argument("model_id")
@click.option("--task", help="One of the study's tasks (see `phprof models`); default: the model's own task.")
@click.option("-n", "--inferences", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Inferences to trace (the study's unit is 1,000).")
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True,
              help="Inferences run first and not recorded.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Trace file to write "
              "(default: traces/MODEL.TASK.TIME.h5).")
@click.option("--overwrite", is_flag=True, help="Replace the output file if it exists.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--seq-len", type=click.IntRange(min=1), help="Input tokens (default: the task's datasets).")
@click.option("--new-tokens", type=click.IntRange(min=1), help="Generated tokens per inference (generation tasks).")
@click.option("--steps", type=click.IntRange(min=1), help="Denoising steps (image generation).")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), default="float32", show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--weights", type=click.Choice(["random", "pretrained"]), default="random", show_default=True,
              help="random: built offline from the architecture's config (energy depends on shapes, not "
              "values); pretrained: from the local Hugging Face cache or a model directory.")
@click.option("--source", type=click.Choice(["auto", "nvml", "rapl", "none"]), default="auto", show_default=True,
              help="Power source (auto: NVML for a GPU, RAPL for the CPU when readable, else time only).")
@click.option("--size", type=click.Choice(["full", "tiny"]), default="full", show_default=True,
              help="tiny: the architecture shrunk to 2 narrow layers, for quick checks (its energy is not "
              "the real model's).")
@click.option("--anti-alias/--no-anti-alias", default=True, show_default=True,
              help="With a GPU sensor, pause a random time (up to one inference) once per sensor period so "
              "that its short averaging windows fall on every part of the inferences.")
@click.option("--idle", "idle_s", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="Seconds of idle power sampled before the run.")
def trace_command(model_id, task, inferences, warmup, output, overwrite, batch_size, seq_len, new_tokens, steps,
                  dtype, device, weights, size, source, anti_alias, idle_s) -> None:
    """Run MODEL_ID's inferences under the power sampler and torch.profiler, into one HDF5 file.

    MODEL_ID is a model of the study (see `phprof models`), a path to a config.json, or a
    model directory. Every module's forward, every inference and every generation or
    denoising step is recorded as a scope; power readings are stored with their times.
    Ctrl-C stops the run and leaves a valid file of the inferences done, with the
    status "interrupted".
    """
    from ..api import trace

    with click.progressbar(length=inferences, label=f"tracing {model_id}", file=sys.stderr,
                           show_eta=True, show_pos=True) as bar:
        def progress(done, total):
            bar.update(done - bar.pos)

        summary = trace(
            model_id, task, inferences=inferences, warmup=warmup, output=output, batch_size=batch_size,
            seq_len=seq_len, new_tokens=new_tokens, steps=steps, dtype=dtype, device=device, weights=weights,
            size=size, source=source, anti_alias=anti_alias, idle_s=idle_s, progress=progress,
            overwrite=overwrite,
        )
    _echo_summary(summary)
    if summary.status != "complete":
        sys.exit(130)


def _echo_summary(s) -> None:
    click.echo(f"{s.status}: {s.inferences} inferences of {s.model} ({s.task}), {s.inference_s:.2f} s of their "
               f"own time ({1e3 * s.seconds_per_inference:.2f} ms per inference, profiler overhead included)")
    e = s.energy
    if e is None or e.joules is None:
        click.echo("energy: not measured (the run had no power source; `phprof devices` lists this machine's)")
    else:
        j = s.joules_per_inference
        pm = f" +- {e.uncertainty_j:.2g} J" if e.uncertainty_j is not None else \
            " J" if e.low_j is None else f" J (at least {e.low_j:.4g} J, no upper bound)"
        gaps = s.span_s - s.inference_s
        click.echo(f"energy: {e.joules:.4g}{pm} over the profiler windows' {s.span_s:.2f} s ({e.kind}: "
                   f"{e.energy.method_text}, {e.device}), {gaps:.2f} s between inferences included")
        click.echo(f"  that is {j:.4g} J per inference, {j * 1000:.4g} J = {j * 1000 / 3.6e6:.3g} kWh per 1,000, "
                   "gaps included; `phprof report` gives the inferences' own")
    for note in dict.fromkeys(list(s.notes) + (list(e.notes) if e else [])):
        click.echo(f"  note: {note}")
    click.echo(f"written: {s.path}")
    if e is not None and e.joules is not None:
        click.echo(f"per layer: phprof report {s.path}")
