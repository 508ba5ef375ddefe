"""The `phprof` command: one small module per subcommand, each parsing its
options, calling the library (``phprof.api``) and printing what it returns.

Errors meant for the user (``phprof.errors.PhprofError``) become one
``Error:`` line, bad option values a usage error; warnings meant for the user
(``PhprofWarning``) become ``note:`` lines on stderr.
"""
from __future__ import annotations

import functools
import warnings

import click

from .. import __version__
from ..errors import OptionError, PhprofError, PhprofWarning


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="phprof")
def main() -> None:
    """phprof: where the joules of ML inference go.

    `phprof trace` runs a model's inferences while a native thread samples the
    GPU's (or CPU's) power and energy counters, each reading stamped with the
    time of its driver call on the clock torch.profiler uses. `phprof report`
    then estimates each layer's and kernel's energy from them; `flamegraph` and
    `compare` show where the joules went. `phprof study` runs the 2023 study's grid
    of models and tasks, resumably, into one table and page beside its figures.
    """


def command(name: str | None = None, **settings):
    """``main.command``, with the library's errors and warnings shown as the user
    should see them (see the module's docstring)."""
    def decorate(f):
        @functools.wraps(f)
        def run(*args, **kwargs):
            with warnings.catch_warnings():
                warnings.simplefilter("always", PhprofWarning)
                shown = warnings.showwarning

                def show(message, category, *rest, **more):
                    if issubclass(category, PhprofWarning):
                        click.echo(f"note: {message}", err=True)
                    else:
                        shown(message, category, *rest, **more)

                warnings.showwarning = show
                try:
                    return f(*args, **kwargs)
                except OptionError as e:
                    raise click.UsageError(str(e)) from None
                except PhprofError as e:
                    raise click.ClickException(str(e)) from None

        return main.command(name, **settings)(run)

    return decorate


def recording_options(f):
    """The options of every recording command (`trace`, `run`): the power source, the
    anti-aliasing pauses and the idle period sampled first."""
    for option in reversed((
        click.option("--source", type=click.Choice(["auto", "nvml", "rapl", "none"]), default="auto",
                     show_default=True, help="Power source (auto: NVML for a GPU, an error without a working NVML, "
                     "with the host's RAPL package and DRAM counters beside it where readable (shown apart, kept "
                     "whole, added to the run's total); RAPL for the CPU when readable, else time only; nvml: the GPUs "
                     "alone; none: time only). On a GPU the NVML board "
                     "is the CUDA device's own, matched by UUID under CUDA_VISIBLE_DEVICES; a MIG slice is "
                     "refused. The summary says which device and source were used."),
        click.option("--anti-alias/--no-anti-alias", default=True, show_default=True,
                     help="With a GPU sensor, pause a random time (up to one inference) after an inference once "
                     "per sensor period, so that its short averaging windows fall on every part of the inferences."),
        click.option("--idle", "idle_s", type=click.FloatRange(min=0), default=2.0, show_default=True,
                     help="Seconds of idle power sampled before the recording starts."),
    )):
        f = option(f)
    return f


def echo_summary(summary, err: bool = False) -> None:
    """A recording's end-of-run summary (``phprof.render``'s text)."""
    from ..render import render

    click.echo(render(summary, "text"), nl=False, err=err)


def echo_written(path, err: bool = False) -> None:
    click.echo(f"written: {path} ({path.stat().st_size / 1e6:.1f} MB)", err=err)


def writable(path) -> None:
    """Fails before any work when a file to write has no folder to go in."""
    from pathlib import Path

    folder = Path(path).parent
    if not folder.is_dir():
        raise click.ClickException(f"cannot write {path}: the folder {folder} does not exist")


# the subcommands register themselves on `main`
from . import attribute, calibrate, compare, devices, flamegraph, models, report, run, study, trace  # noqa: E402, F401
