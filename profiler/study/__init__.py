"""`phprof study`: the study's grid of models and tasks, each cell its own `phprof trace`, resumable.

    import phprof
    run = phprof.study(quick=True, inferences=100, output="study")   # one small model per task (the package is callable)
    print(phprof.render(run.view, "markdown"))                       # the table, per task
    phprof.study_merge(["shard1", "shard2"], output="all")           # shards run on several machines

``grid`` plans the cells (and splits them into shards), ``runner`` runs them (one `phprof trace`
process per cell, one cell per GPU at a time, a manifest per cell so that a killed study
continues), ``table`` makes each cell's row from its trace's report and sets the paper's figures
beside them; the views render through ``phprof.render`` (``phprof.render.study``).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import OptionError
from .grid import Cell, grid_order, parse_shard, plan, shard
from .runner import (MANIFEST, PLAN_FILE, CellOptions, Outcome, StudyError, cell_dir, check_plan, devices, locked,
                     read_json, run_cells)
from .table import StudyView, cell_row, failed_row, study_view, with_carbon

__all__ = ["Cell", "CellOptions", "StudyError", "StudyRun", "StudyView", "plan", "shard", "study", "study_merge"]

TABLES = ("study.csv", "study.json", "study.md", "study.html")


@dataclass
class StudyRun:
    """What :func:`study` or :func:`study_merge` did: the table's view, the files written, and
    (a study) what its run over the cells did."""

    directory: Path
    view: StudyView
    files: list[Path]
    outcome: Outcome = field(default_factory=Outcome)
    cells: list[Cell] = field(default_factory=list)


def study(tasks=None, models=None, *, quick: bool = False, output: str | Path = "study", shard_of: str | None = None,
          gpus: str | None = "all", region: str | None = None, carbon_intensity: float | None = None,
          pue: float = 1.0, retry_failed: bool = False, progress=None, **cell_options) -> StudyRun:
    """Runs the grid (:func:`phprof.study.grid.plan` of ``tasks``, ``models``, ``quick``; the
    cells of shard ``shard_of`` = "i/n" only) into the folder ``output``, the cells already done
    there kept (see :mod:`phprof.study.runner`), and writes its tables and page there.
    ``cell_options``: those of each cell's `phprof trace` (:class:`CellOptions`: inferences,
    warmup, size, source, idle_s, dtype, batch_size, weights, new_tokens, steps, anti_alias);
    ``gpus``: "all" (every CUDA device torch sees, else the CPU), "none", or "0,2";
    ``region``/``carbon_intensity``/``pue``: the carbon, as in :func:`phprof.report`;
    ``retry_failed``: run again the cells that failed twice before; ``progress(text)`` is told
    what happens (the cell running, those finished, the time left)."""
    from ..api import grid_intensity

    try:
        options = CellOptions(**cell_options)
    except TypeError as e:
        raise OptionError(f"study: {e}") from None
    intensity = grid_intensity(region, carbon_intensity)
    part = parse_shard(shard_of)
    cells = shard(plan(tasks, models, quick), part)
    directory = Path(output)
    where = devices(gpus)
    say = progress or (lambda text: None)
    grid = _grid_text(tasks, models, quick, shard_of, len(cells))
    say(f"{grid}, on {', '.join(where)}, into {directory}")
    with locked(directory):
        check_plan(directory, options)

        def make_row(cell, trace_path, report_path):
            return cell_row(cell, trace_path, report_path, cell_dir(directory, cell))

        def tables():
            return _write(directory, cells, {c.key: directory for c in cells}, options, grid, intensity, pue)

        outcome = run_cells(directory, cells, options, make_row, where=where, progress=say,
                            retry_failed=retry_failed, on_change=tables)
        view, files = tables()
    return StudyRun(directory, view, files, outcome, cells)


def study_merge(folders, *, output: str | Path, region: str | None = None, carbon_intensity: float | None = None,
                pue: float = 1.0) -> StudyRun:
    """One table and page from several study folders (the shards of one grid, run on several
    machines): every cell of each, once; their cells' options must be the same."""
    from ..api import grid_intensity

    intensity = grid_intensity(region, carbon_intensity)
    folders = [Path(f) for f in folders]
    if not folders:
        raise OptionError("--merge needs at least one study folder")
    options = None
    found: dict[str, tuple[Cell, Path]] = {}
    for folder in folders:
        plan_ = read_json(folder / PLAN_FILE)
        if plan_ is None:
            raise StudyError(f"{folder} holds no study ({PLAN_FILE} is missing)")
        if options is None:
            options = plan_["options"]
        elif plan_["options"] != options:
            differ = sorted(k for k in options if plan_["options"].get(k) != options[k])
            raise StudyError(f"{folder} was run with other options than {folders[0]} ({', '.join(differ)}): its "
                             "cells cannot go in one table")
        for path in sorted((folder / "cells").glob(f"*/*/{MANIFEST}")):
            manifest = read_json(path)
            cell = Cell(**manifest["cell"])
            seen = found.get(cell.key)
            if seen is None or (manifest.get("status") == "done" and _status(seen) != "done"):
                found[cell.key] = (cell, folder)
            elif manifest.get("status") == "done" and _status(seen) == "done":
                raise StudyError(f"the cell {cell.key} is done in both {seen[1]} and {folder}: merge shards of one "
                                 "grid (each cell run once)")
    cells = sorted((c for c, _ in found.values()), key=grid_order)
    directory = Path(output)
    directory.mkdir(parents=True, exist_ok=True)
    grid = f"{len(cells)} cells merged from {', '.join(str(f) for f in folders)}"
    view, files = _write(directory, cells, {key: folder for key, (_, folder) in found.items()},
                         CellOptions(**options), grid, intensity, pue)
    return StudyRun(directory, view, files, cells=cells)


def _status(seen: tuple[Cell, Path]) -> str | None:
    cell, folder = seen
    return (read_json(cell_dir(folder, cell) / MANIFEST) or {}).get("status")


def _grid_text(tasks, models, quick, shard_of, n) -> str:
    what = "the study's grid" + (" (quick: one small model per task)" if quick else "")
    if tasks:
        what += f", tasks {', '.join(tasks)}"
    if models:
        what += f", models {', '.join(models)}"
    if shard_of:
        what += f", shard {shard_of}"
    return f"{what}: {n} cells"


def _write(directory: Path, cells: list[Cell], folder_of: dict[str, Path], options: CellOptions, grid: str,
           intensity, pue: float) -> tuple[StudyView, list[Path]]:
    """The rows of the cells (each from the study folder it is in, ``folder_of`` its key), and the
    tables written into ``directory``."""
    from ..render import render

    rows, missing = [], []
    for cell in cells:
        folder = cell_dir(folder_of[cell.key], cell)
        manifest = read_json(folder / MANIFEST) or {}
        if manifest.get("status") == "done":
            rows.append(with_carbon(manifest["row"], intensity, pue, folder, directory))
        elif manifest.get("status") == "failed":
            errors = [a.get("error", "") for a in manifest.get("attempts", []) if a.get("error")]
            rows.append(with_carbon(failed_row(cell, errors[-1] if errors else "failed"), intensity, pue, folder,
                                    directory))
        else:
            missing.append(f"{cell.task} / {cell.model}")
    view = study_view(rows, options.as_dict(), grid, intensity, pue, missing)
    files = []
    for name in TABLES:
        tmp = directory / f".{name}.tmp"
        render(view, tmp, fmt={"csv": "csv", "json": "json", "md": "markdown", "html": "html"}[name.rsplit(".", 1)[1]])
        final = directory / name
        tmp.replace(final)
        files.append(final)
    return view, files


class _CallableModule(sys.modules[__name__].__class__):
    """``phprof.study`` is this package and the library's call at once: ``phprof.study(quick=True)``
    is :func:`study`."""

    def __call__(self, *args, **kwargs):
        return study(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
