"""`phprof study`: the study's grid of models and tasks, each cell its own `phprof trace`, resumable."""
from __future__ import annotations

import sys

import click

from . import command, recording_options
from ._report_options import carbon_options, echo_regions


def _listed(values) -> list[str] | None:
    out = [x.strip() for v in values for x in v.split(",") if x.strip()]
    return out or None


def _study_options(f):
    for option in reversed(carbon_options()):
        f = option(f)
    return f


@command(name="study")
@click.argument("folders", nargs=-1, type=click.Path(file_okay=False))
@click.option("--tasks", multiple=True, metavar="TASK[,TASK...]",
              help="Only these tasks (see `phprof models`; repeat or separate by commas). Default: every task.")
@click.option("--models", multiple=True, metavar="MODEL[,MODEL...]",
              help="Only these models: catalogue ids, or paths to a config.json or model directory (run on "
              "their own task, or on --tasks). Default: every model of the catalogue.")
@click.option("--quick", is_flag=True, help="One small model per task (the catalogue's smallest).")
@click.option("-n", "--inferences", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Inferences per cell (the study's unit is 1,000).")
@click.option("-o", "--output", type=click.Path(file_okay=False), default="study", show_default=True,
              help="The study's folder: its cells' traces and reports, study.csv, .json, .md and .html. "
              "A folder holding a study of the same options continues it.")
@click.option("--shard", "shard_of", metavar="I/N",
              help="Run only the I-th of N shares of the grid (every N-th cell), e.g. one per job of a SLURM "
              "array ($SLURM_ARRAY_TASK_ID/N); `phprof study --merge` joins the shards' folders.")
@click.option("--merge", is_flag=True,
              help="Join the study FOLDERS given (shards of one grid) into one table and page in -o; runs nothing.")
@click.option("--gpus", default="all", show_default=True,
              help="GPUs to run cells on, one cell per GPU at a time: all (every CUDA device torch sees; else "
              "the CPU, one cell at a time), none (the CPU), or indices (0,2).")
@click.option("--retry-failed", is_flag=True, help="Run again the cells that failed twice before.")
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True,
              help="Inferences run first in each cell and not recorded.")
@click.option("--size", type=click.Choice(["full", "tiny"]), default="full", show_default=True,
              help="tiny: every architecture shrunk to 2 narrow layers, for quick checks (not the real models' "
              "energy).")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), default="float32", show_default=True,
              help="The study's was float32.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--weights", type=click.Choice(["random", "pretrained"]), default="random", show_default=True)
@click.option("--new-tokens", type=click.IntRange(min=1), help="Generated tokens per inference on the generation "
              "tasks (default: each task's, as the study ran them).")
@click.option("--steps", type=click.IntRange(min=1), help="Denoising steps for image generation (default: 50).")
@recording_options
@_study_options
@click.option("--list-regions", is_flag=True, help="List the bundled grid intensities and exit.")
def study_command(folders, tasks, models, quick, inferences, output, shard_of, merge, gpus, retry_failed, warmup,
                  size, dtype, batch_size, weights, new_tokens, steps, source, anti_alias, idle_s, region,
                  carbon_intensity, pue, list_regions) -> None:
    """Run the study's grid: its models on its tasks, each (model, task) cell as its own `phprof trace`.

    The grid is the 2023 study's (docs/paper.md): every model of the catalogue on its own task,
    and the multi-purpose models (Flan-T5, BLOOMz) on the three zero-shot tasks. Each cell runs
    in its own process, so a crash or an out-of-memory loses that cell only; a failed cell is
    retried once, then reported. Cells run one per GPU at a time (never two on one GPU: their
    energies would mix), one at a time on the CPU.

    Resumable: the folder keeps every cell done; run the same command again after a crash, a
    Ctrl-C or a kill, and it continues where it stopped. Ctrl-C stops the running cells after
    their current inference.

    Writes study.csv and study.json (a row per cell: parameters, device, sensor, time and energy
    per inference and per 1,000 with its interval and method, measured or estimated, gCO2eq),
    study.md (a table per task) and study.html (the plots, and this run beside the paper's
    figures), and prints the tables. Without a power sensor the study measures time, and says so.
    """
    from ..study import study, study_merge

    if list_regions:
        echo_regions()
        return
    if merge:
        if not folders:
            raise click.UsageError("--merge needs the study folders to join: phprof study --merge A B -o OUT")
        run = study_merge(folders, output=output, region=region, carbon_intensity=carbon_intensity, pue=pue)
    else:
        if folders:
            raise click.UsageError(f"unexpected arguments {' '.join(folders)} (folders go with --merge)")

        def say(text):
            click.echo(f"study: {text}", err=True)

        run = study(_listed(tasks), _listed(models), quick=quick, output=output, shard_of=shard_of, gpus=gpus,
                    region=region, carbon_intensity=carbon_intensity, pue=pue, retry_failed=retry_failed,
                    progress=say, inferences=inferences, warmup=warmup, size=size, source=source, idle_s=idle_s,
                    dtype=dtype, batch_size=batch_size, weights=weights, new_tokens=new_tokens, steps=steps,
                    anti_alias=anti_alias)
    from ..render import render

    click.echo(render(run.view, "text"), nl=False)
    for path in run.files:
        click.echo(f"written: {path}", err=True)
    out = run.outcome
    if out.interrupted:
        click.echo(f"study: interrupted with {len(out.left)} cells left: run the same command again to continue",
                   err=True)
        sys.exit(130)
    if out.failed:
        click.echo(f"study: {len(out.failed)} cells failed (see the table): "
                   + "; ".join(f"{c.task} / {c.model}" for c in out.failed), err=True)
        sys.exit(1)
