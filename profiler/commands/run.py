"""`phprof run`: a user's own program under the power sampler and torch.profiler, into one file."""
from __future__ import annotations

import os
import signal
import sys

import click

from . import command, echo_summary, recording_options


@command(name="run", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("-m", "module", is_flag=True, help="Run a module (as `python -m`): PROGRAM is its name.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Trace file to write "
              "(default: traces/PROGRAM.TIME.h5).")
@click.option("--overwrite", is_flag=True, help="Replace the output file if it exists.")
@click.option("--gpus", default="auto", show_default=True,
              help="auto (the first CUDA device torch sees, else the CPU), a CUDA index, several (0,1: a model "
              "split over GPUs, each measured on its own board), all, or none (the CPU).")
@click.option("--sensor-gpu", default=None, metavar="INDEX|local-rank",
              help="Read this NVML GPU's sensor although the work runs elsewhere (a CPU run measured on a GPU: "
              "the tests' fake GPUs); local-rank: each rank of a job its LOCAL_RANK.")
@click.option("--inferences", "rule", type=click.Choice(["auto", "marks", "calls"]), default="auto",
              show_default=True, help="What one inference is: the program's phprof.inference() / prof.inference() "
              "spans (marks), each outermost call of a module, a generate() or a diffusers pipeline (calls), or "
              "the marks once the program makes one and the calls until then (auto).")
@recording_options
@click.argument("program")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def run_command(module, output, overwrite, gpus, sensor_gpu, source, rule, anti_alias, idle_s, program, args) -> None:
    """Run PROGRAM (a Python script, or with -m a module) with ARGS, as `python` would, under
    the power sampler and torch.profiler, into one HDF5 file.

    The program sees the sys.argv, sys.path and __main__ plain Python gives it, and phprof
    exits with its exit status. Every torch.nn.Module that runs is a scope named by its path
    (model.layers.3.self_attn.q_proj); inferences are the program's own
    `with phprof.inference():` spans, or else each outermost call (a module's forward, a
    Hugging Face generate(), a diffusers pipeline), with generation and diffusion phases.
    Options for phprof come before PROGRAM; everything after it is the program's.

    Under a launcher (`torchrun ... -m phprof run script.py`, or `phprof run -- ...` in
    any launcher that sets RANK and WORLD_SIZE), each rank writes its own file,
    NAME.rank<r>.h5, with its rank, host, the job's run id, each measured GPU's UUID and
    its clock's offset to rank 0 (measured through the program's process group);
    `phprof report DIR` (or the files, or a glob) merges them.

    Whatever ends the program (its end, an exception, sys.exit, Ctrl-C, SIGTERM), the file
    is saved: complete, failed or interrupted. Ctrl-C or SIGTERM stops the program at the end
    of its current inference (at once between inferences); a second one aborts.
    """
    from ..api import run

    click.echo(f"phprof: recording {'-m ' if module else ''}{program} "
               f"(Ctrl-C stops it after the current inference and saves the trace)", err=True)
    ended = run(program, args, module=module, output=output, overwrite=overwrite, gpus=gpus, source=source,
                inferences=rule, anti_alias=anti_alias, idle_s=idle_s,
                sensor_gpu=int(sensor_gpu) if sensor_gpu and sensor_gpu.isdigit() else sensor_gpu)
    if ended.summary is not None:
        echo_summary(ended.summary, err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    if ended.signal is not None:  # the program died of a signal: so does phprof, as plain Python would
        signal.signal(ended.signal, signal.SIG_DFL)
        os.kill(os.getpid(), ended.signal)
    sys.exit(ended.code)

