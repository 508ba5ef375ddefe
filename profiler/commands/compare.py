"""`phprof compare`: traces side by side per component, phase, token and parameter."""
from __future__ import annotations

import click

from . import command, echo_written, writable


@command(name="compare")
@click.argument("trace_files", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--json", "form", flag_value="json", help="Print the comparison as JSON.")
@click.option("--markdown", "form", flag_value="markdown", help="Print markdown tables (for an issue).")
@click.option("--html", "html", type=click.Path(dir_okay=False),
              help="Also write one self-contained HTML page: the tables and the differential flamegraph of the "
              "first two runs (red where the second spends more, blue where less).")
@click.option("--min-share", type=click.FloatRange(min=0, max=0.5), default=0.001, show_default=True,
              help="HTML: flamegraph frames below this share are collapsed into one per parent.")
@click.option("--recompute", is_flag=True, help="Attribute again even if a file holds results.")
def compare_command(trace_files, form, html, min_share, recompute) -> None:
    """Compare traces: energy per inference by component, token, parameter and phase.

    \b
    phprof compare A.h5 B.h5 [C.h5 ...]

    Each run's attributed energy (computed and stored in its file if needed, as by
    `phprof report`) is split by stack and component (embeddings, self-attention,
    cross-attention, MLP, norm, head...) per inference, per generated token and per
    parameter, with phases side by side; Δ columns are each run minus the first.
    Warnings (on stderr) name what differs besides the model: task, input shapes,
    device, sensor, method.
    """
    from ..api import compare
    from ..render import render

    if len(trace_files) < 2:
        raise click.UsageError(f"compare needs at least two trace files, got {len(trace_files)}")
    if html is not None:
        writable(html)
    comparison = compare(trace_files, recompute=recompute)
    for w in comparison.warnings:
        click.echo(f"warning: {w}", err=True)
    if html is not None:
        echo_written(render(comparison, html, fmt="html", min_share=min_share), err=True)
    click.echo(render(comparison, form or "text", warnings=False), nl=False)
