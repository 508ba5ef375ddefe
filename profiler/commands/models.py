"""`phprof models`: the built-in models (the study's), with their task and size."""
from __future__ import annotations

import dataclasses
import json

import click

from . import command


@command()
@click.option("--task", help="Only the models of this task.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def models(task, as_json) -> None:
    """List the built-in models (the study's), with their task and parameter count.

    Any other architecture works through a config.json path or a model directory.
    """
    from ..models import TASKS, list_models

    if task and task not in TASKS:
        raise click.ClickException(f"unknown task {task!r} (tasks: {', '.join(TASKS)})")
    infos = list_models(task or None)
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(m) for m in infos], indent=2))
        return
    width = max(len(m.id) for m in infos)
    for m in infos:
        click.echo(f"{m.id:<{width}}  {m.task:<24} {m.model_type:<20} {m.params / 1e6:>9,.1f} M parameters")
